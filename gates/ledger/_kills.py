"""Choosing where to kill the product, from the steps of a traced run (see ``_fault_hook.py``).

A traced run lists the product's state-changing steps in order (``open:balances.json``,
``write``, ``rename:.checkpoint.json.tmp>checkpoint.json``, ``print``, ...). A kill *before*
step N leaves the state as it was after step N-1: killing just after a file is opened for
writing shows a torn file, just before or after a rename shows one file committed and the next
not, just before or after ``print`` separates the output from the state commit. The points
are drawn with the check's seeded generator, so a snapshot and seed always get the same ones.
"""

from __future__ import annotations

import random
import re

#: Steps after which the state on disk may be half-way between two consistent states.
_STRUCTURAL = ("open:", "rename:", "truncate:", "remove:", "fsync", "fdatasync", "ftruncate", "print")


def _key(label: str) -> str:
    """A step's kind and file, with the random parts of temporary names taken out."""
    label = re.sub(r"tmp[A-Za-z0-9_]{6,}", "tmp*", label)
    return re.sub(r"[0-9]+", "#", label)


def kill_points(steps: list[str], rng: random.Random, limit: int, anywhere: int = 0) -> list[int]:
    """Up to ``limit`` distinct kill points (1-based step numbers, for ``kill_at``), sorted.

    First, one point for each distinct commit step (occurrences drawn at random): just after
    every file opened for writing (a torn write) and every rename (one file committed, the
    next not yet), just before ``print`` and the last step (output and commit); then a second
    occurrence of each file opened and each rename (another point of the input); then points
    just before or after other structural steps; then any step. Each distinct commit step thus
    gets a point before any gets two: with ``limit - anywhere`` at least their number, every
    one is killed at, whatever the draw.
    ``anywhere`` of the points are drawn among all steps first (mid-stream states). Without a
    trace (the product exited abnormally or not through Python), points are drawn from 1..40.
    """
    total = len(steps)
    if not total:
        return sorted(rng.sample(range(1, 41), min(limit, 40)))
    occurrences: dict[str, list[int]] = {}
    for number, label in enumerate(steps, start=1):
        if label.startswith(_STRUCTURAL):
            occurrences.setdefault(_key(label), []).append(number)
    first: list[int] = [total]  # just before the last step
    again: list[int] = []  # a commit step's second occurrence
    second: list[int] = []
    for key in sorted(occurrences):
        number = rng.choice(occurrences[key])
        temporary = key.startswith("open:") and (key[5:].startswith(".") or "tmp" in key)
        if key.startswith(("open:", "rename:", "truncate:")):
            # the step done, the next not yet (a temporary file just opened: less telling);
            # a commit step twice, at two different points of the input
            if temporary:
                second.append(number + 1)
            else:
                picked = [other + 1 for other in rng.sample(occurrences[key], min(2, len(occurrences[key])))]
                first.append(picked[0])
                again += picked[1:]
            second.append(number)
        elif key == "print":
            first.append(number)
            second.append(number + 1)
        else:
            second += [number, number + 1]
    rng.shuffle(first)
    rng.shuffle(again)
    rng.shuffle(second)
    rest = list(range(1, total + 1))
    rng.shuffle(rest)
    points: list[int] = []
    for number in rest[:anywhere] + first + again + second + rest[anywhere:]:
        if 1 <= number <= total and number not in points:
            points.append(number)
        if len(points) == limit:
            break
    return sorted(points)
