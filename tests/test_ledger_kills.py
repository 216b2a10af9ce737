"""Where the ledger's step-kill checks kill the product (``gates/ledger/_kills.py``): every
distinct commit step of a run gets a kill point whatever the seeded draw, so a regression at any
one of them (a file written in place, a checkpoint committed before the logs) is caught on every
seed, not on the seeds whose draw happens to land there."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

KILLS = Path(__file__).resolve().parents[1] / "gates" / "ledger" / "_kills.py"
_spec = importlib.util.spec_from_file_location("ledger_kills", KILLS)
kills = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kills)


def _trace(checkpoint_in_place: bool, rounds: int = 12) -> list[str]:
    """Step labels shaped like a traced ledger run: per checkpoint, three files each written to
    a temporary file and renamed (or the checkpoint written in place), logs appended, then the
    counts printed."""
    steps = ["mkdir:state", "append:events.jsonl", "append:ledger.log"]
    for _ in range(rounds):
        steps += ["write", "flush"] * 3
        for name in ("balances.json", "windows.json", "checkpoint.json"):
            if checkpoint_in_place and name == "checkpoint.json":
                steps += [f"open:{name}", "write"]
            else:
                steps += [f"open:.{name}.tmp", "write", f"rename:.{name}.tmp>{name}"]
    return [*steps, "print"]


def _commit_points(steps: list[str]) -> dict[str, set[int]]:
    """Each distinct commit step -> the kill points that stop the run just after one of its
    occurrences (a file opened in place, a rename) or just before it (``print``)."""
    wanted: dict[str, set[int]] = {"print": set(), "last": {len(steps)}}
    for number, label in enumerate(steps, start=1):
        if label.startswith("rename:") or (label.startswith("open:") and "tmp" not in label):
            wanted.setdefault(label, set()).add(number + 1)
        elif label == "print":
            wanted["print"].add(number)
    return wanted


def test_every_distinct_commit_step_gets_a_kill_point_on_every_draw():
    for in_place in (False, True):
        steps = _trace(in_place)
        wanted = _commit_points(steps)
        assert len(wanted) == 5  # three commits (renames or an in-place open), print, the last step
        for seed in range(300):
            points = kills.kill_points(steps, random.Random(seed), limit=6, anywhere=1)
            missed = [label for label, numbers in wanted.items() if not numbers & set(points)]
            assert not missed, f"seed {seed}, checkpoint in place {in_place}: no kill at {missed} ({points})"


def test_kill_points_are_distinct_sorted_in_range_and_seeded():
    steps = _trace(False)
    for seed in range(50):
        points = kills.kill_points(steps, random.Random(seed), limit=6, anywhere=1)
        assert points == sorted(set(points)) and len(points) == 6
        assert all(1 <= p <= len(steps) for p in points)
        assert points == kills.kill_points(steps, random.Random(seed), limit=6, anywhere=1)
    draws = {tuple(kills.kill_points(steps, random.Random(seed), limit=6, anywhere=1)) for seed in range(50)}
    assert len(draws) > 10  # the occurrences and the free point vary with the seed
