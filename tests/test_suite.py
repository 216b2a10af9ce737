"""Suite runs (several marathons in one run) and isolated mode, end to end with real containers
on the tiny (two episodes) and double (one episode) test marathons, with the no-model agents."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from benchmark.driver import resume_run, start_run
from benchmark.experiment import load_config
from benchmark.manifest import read_manifest
from benchmark.marathon import load_marathon
from conftest import HERE, TINY, unique_run_id

pytestmark = pytest.mark.docker

QUIET = Console(file=open(os.devnull, "w"))
DOUBLE = HERE / "fixtures" / "double"


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory) -> Path:
    """One run: tiny + double, prompt-only, oracle and nop, both modes, one replicate."""
    out = tmp_path_factory.mktemp("suite")
    run_id = unique_run_id("suite")
    config = load_config(None, {"marathons": (str(TINY), str(DOUBLE)), "arms": ("prompt-only",),
                                "agents": ("oracle", "nop"), "mode": "both", "replicates": 1,
                                "jobs": 2, "out": out, "run_id": run_id})
    outcome = start_run(config, display=False, console=QUIET)
    assert outcome.status == "complete" and outcome.trials_complete == outcome.trials_total == 8
    return out / run_id


def _files(archive: Path) -> dict[str, bytes]:
    """Regular files of a workspace archive (``workspace/...``), ``.git`` left out."""
    out = {}
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            rel = m.name.split("/", 1)[1] if "/" in m.name else ""
            if m.isfile() and not rel.startswith(".git/") and rel:
                out[rel] = tar.extractfile(m).read()
    return out


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def test_trials_are_planned_per_marathon_and_mode(suite_run: Path):
    trials = pd.read_parquet(suite_run / "trials.parquet")
    assert set(trials.trial_id) == {
        f"{m}.prompt-only.{a}.none.none.r1{suffix}" for m in ("tiny", "double")
        for a in ("oracle", "nop") for suffix in ("", ".isolated")}
    assert dict(trials.groupby("marathon").episodes_planned.first()) == {"tiny": 2, "double": 1}
    assert set(zip(trials.trial_id.str.endswith(".isolated"), trials["mode"])) == {
        (False, "cumulative"), (True, "isolated")}
    assert trials.groupby("marathon").seed.nunique().eq(1).all()  # one seed per replicate
    eps = pd.read_parquet(suite_run / "episodes.parquet")
    assert set(eps["mode"]) == {"cumulative", "isolated"}
    assert (eps[eps.agent == "oracle"].score == 1.0).all()
    assert (eps[(eps.agent == "nop") & (eps["mode"] == "cumulative")].score == 0.0).all()

    m = read_manifest(suite_run)
    assert m.marathon == "tiny+double" and m.config.mode == "both"
    assert {n: (e.hash, e.episodes) for n, e in m.marathons.items()} == {
        "tiny": (load_marathon(TINY).content_hash(), ["e1", "e2"]),
        "double": (load_marathon(DOUBLE).content_hash(), ["e1"])}


def test_isolated_episode_starts_from_the_previous_reference(suite_run: Path):
    """nop changes nothing, so what an isolated nop trial's episode ended on is what it started
    from: e1 from the starter, e2 from e1's reference (and e2 then passes e1's gate only)."""
    tiny = load_marathon(TINY)
    ws = suite_run / "workspaces" / "tiny.prompt-only.nop.none.none.r1.isolated"
    assert _files(ws / "e1.tar") == _tree(tiny.starter)
    assert _files(ws / "e2.tar") == _tree(tiny.episodes[0].reference)
    diff = suite_run / "artifacts" / "tiny.prompt-only.nop.none.none.r1.isolated" / "e2" / "1" / "workspace.diff"
    assert diff.read_text() == ""  # the agent's diff starts at the isolated start commit
    eps = pd.read_parquet(suite_run / "episodes.parquet").set_index("trial_id")
    assert eps.loc["tiny.prompt-only.nop.none.none.r1.isolated"].set_index("episode").score.to_dict() == {
        "e1": 0.0, "e2": 0.5}
    # cumulative nop keeps its own (starter) workspace
    assert _files(suite_run / "workspaces" / "tiny.prompt-only.nop.none.none.r1" / "e2.tar") == _tree(tiny.starter)


def test_resume_replays_an_unfinished_isolated_episode(suite_run: Path, tmp_path: Path):
    run = tmp_path / suite_run.name
    shutil.copytree(suite_run, run)
    trial = "tiny.prompt-only.nop.none.none.r1.isolated"
    for table in ("episodes", "attempts", "checks", "usage", "self_checks"):
        (run / "parts" / table / f"{trial}.e2.parquet").unlink(missing_ok=True)
    (run / "workspaces" / trial / "e2.tar").unlink()
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["status"] = "interrupted"
    (run / "manifest.json").write_text(json.dumps(manifest))
    outcome = resume_run(run, display=False, console=QUIET)
    assert outcome.status == "complete" and outcome.trials_complete == 8
    assert _files(run / "workspaces" / trial / "e2.tar") == _tree(load_marathon(TINY).episodes[0].reference)
    eps = pd.read_parquet(run / "episodes.parquet")
    assert len(eps) == 2 * (2 + 1) * 2
    assert eps.set_index(["trial_id", "episode"]).loc[(trial, "e2"), "score"] == 0.5


def test_governed_isolated_episode_rolls_back_to_its_isolated_start(tmp_path: Path):
    """In an isolated trial the governed runtime's last all-green commit, when an episode
    starts, is that episode's isolated start commit (the previous reference), not the agent's
    own earlier workspace."""
    run_id = unique_run_id("gov-iso")
    config = load_config(None, {"marathons": (str(TINY),), "arms": ("governed-runtime",),
                                "agents": ("oracle",), "mode": "isolated", "out": tmp_path,
                                "run_id": run_id})
    assert start_run(config, display=False, console=QUIET).status == "complete"
    trial = "governed-runtime.oracle.none.none.r1.isolated"
    events = [json.loads(line) for line in
              (tmp_path / run_id / "evidence" / f"{trial}.jsonl").read_text().splitlines()]
    started = {e["episode"]: e for e in events if e["kind"] == "episode_started"}
    assert started["e2"]["data"]["last_green_commit"] == started["e2"]["snapshot"]
    accepted_e1 = [e for e in events if e["episode"] == "e1" and e["kind"] == "scored"][-1]
    assert started["e2"]["snapshot"] != accepted_e1.get("snapshot")
