"""The inventory marathon (a Python HTTP service) through the real scorer: the final reference
passes every check of every gate, and the untouched starter passes none, each in its own scoring
container on the same seed (the full acceptance check is ``marathon validate inventory``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from benchmark.marathon import load_marathon
from benchmark.scorer import Outcome, score
from benchmark.validate import scoring_limits
from tests.answer_fixtures import scorer_image  # noqa: F401

pytestmark = pytest.mark.docker


def test_reference_passes_and_starter_fails_every_gate(scorer_image, tmp_path):  # noqa: F811
    marathon = load_marathon("inventory")
    final = marathon.episode_ids[-1]
    snapshots = {"reference": marathon.episode(final).reference, "starter": marathon.starter}
    limits = scoring_limits(2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(score, path, marathon, final, 3, image=scorer_image, limits=limits,
                                     tmp_dir=tmp_path) for name, path in snapshots.items()}
        results = {name: future.result() for name, future in futures.items()}
    gates = {g.name for g in marathon.gate}
    reference, starter = results["reference"], results["starter"]
    assert {r.gate for r in reference} == gates and len(reference) >= 3 * len(gates)
    assert all(r.outcome == Outcome.passed for r in reference), \
        [(r.gate, r.name, r.message[:200]) for r in reference if r.outcome != Outcome.passed]
    assert all(r.outcome == Outcome.failed for r in starter), \
        [(r.gate, r.name, r.outcome) for r in starter if r.outcome != Outcome.failed]
