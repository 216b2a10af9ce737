"""The relay marathon (TypeScript on Node.js, a declared [runtime]) through the driver: the
oracle scores 100% after every episode and nop 0%, in the images derived for its runtime, which
the manifest records."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from benchmark.driver import start_run
from benchmark.experiment import load_config

pytestmark = pytest.mark.docker


def test_oracle_full_and_nop_zero_on_relay_in_its_runtime_images(tmp_path: Path):
    config = load_config(None, {"marathon": "relay", "arms": ("prompt-only",),
                                "agents": ("oracle", "nop"), "jobs": 2, "out": tmp_path,
                                "run_id": "relay"})
    outcome = start_run(config, display=False, console=Console(file=open(os.devnull, "w")))
    assert outcome.status == "complete", outcome.failures
    run = tmp_path / "relay"
    eps = pd.read_parquet(run / "episodes.parquet").sort_values(["agent", "episode_index"])
    oracle, nop = eps[eps.agent == "oracle"], eps[eps.agent == "nop"]
    assert list(oracle.episode) == list(nop.episode) == ["e1", "e2", "e3", "e4"]
    assert list(oracle.score) == [1.0] * 4 and list(oracle.gates_active) == [2, 5, 6, 7]
    assert list(nop.score) == [0.0] * 4
    images = json.loads((run / "manifest.json").read_text())["images"]
    assert images["runtime"] == {"apt": [], "node": "22.23.5"}
    assert images["scorer"].startswith("marathon-scorer-runtime:")
    assert images["agent"].startswith("marathon-agent-runtime:")
    assert images["derived_from"][images["scorer"]].startswith("marathon-scorer:")
