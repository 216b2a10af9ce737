"""``marathon validate``: prove a marathon's gates are sound before any agent meets them.

A marathon is valid when:

1. every gate has at least three checks, each tagged ``genuine`` or ``contract``;
2. the reference solution of every episode passes 100% of the gates active after it;
3. the untouched starter fails every gate (no gate is free);
4. every mutant (``<mutants>/<gate>/<name>.patch``, a small regression of the final
   reference) fails the gate it is filed under;
5. scoring one snapshot three times gives identical outcomes (determinism).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel

from benchmark.errors import MarathonError
from benchmark.marathon import Marathon
from benchmark.scorer import CheckResult, Outcome, list_checks, score

MIN_CHECKS_PER_GATE = 3


class Finding(BaseModel):
    """One validation item: what was checked, whether it held, and why not."""

    item: str
    """What was checked, e.g. ``reference e2`` or ``mutant privacy/raw_rejects``."""
    ok: bool
    """Whether the expectation held."""
    detail: str = ""
    """Outcome summary, e.g. ``14/14 checks passed`` or the first unexpected result."""


def _summary(results: list[CheckResult]) -> str:
    passed = sum(r.outcome == Outcome.passed for r in results)
    return f"{passed}/{len(results)} checks passed"


def _first_bad(results: list[CheckResult]) -> str:
    bad = next((r for r in results if r.outcome != Outcome.passed), None)
    return f"; {bad.gate}/{bad.check} {bad.outcome.value}: {bad.message}" if bad else ""


def apply_mutant(reference: Path, patch: Path, dest: Path) -> Path:
    """Copy ``reference`` to ``dest`` and apply the unified diff ``patch`` there (``git apply``).

    Raises:
        MarathonError: the patch does not apply; the message names the patch file.
    """
    shutil.copytree(reference, dest, ignore=shutil.ignore_patterns("__pycache__", ".git"))
    proc = subprocess.run(["git", "apply", "-p1", str(patch.resolve())], cwd=dest,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise MarathonError(f"{patch}: does not apply to {reference}: {proc.stderr.strip()}")
    return dest


def validate(marathon: Marathon, *, image: str, seed: int = 0, jobs: int = 2,
             progress: Callable[[Finding], None] = lambda f: None) -> list[Finding]:
    """Run every validation step; return one :class:`Finding` per item.

    Args:
        marathon: the loaded marathon.
        image: scorer image tag.
        seed: seed passed to the checks.
        jobs: scorings run concurrently (each in its own container).
        progress: called with each finding as soon as it is known.

    Raises:
        MarathonError: a gate module does not parse or a mutant does not apply.
    """
    findings: list[Finding] = []

    def note(f: Finding) -> None:
        findings.append(f)
        progress(f)

    last = marathon.episode_ids[-1]
    for gate in marathon.gate:
        checks = list_checks(marathon, [gate])
        untagged = [c.check for c in checks if c.tag is None]
        ok = len(checks) >= MIN_CHECKS_PER_GATE and not untagged
        detail = f"{len(checks)} checks" + (f"; untagged: {', '.join(untagged)}" if untagged else "")
        note(Finding(item=f"gate {gate.name} declares checks", ok=ok, detail=detail))

    with tempfile.TemporaryDirectory(prefix="marathon-validate-") as tmp:
        # (snapshot, episode, judge); judge None: a repeat scoring of the final reference.
        jobs_list: list[tuple[Path, str, Callable[[list[CheckResult]], Finding] | None]] = []
        for ep in marathon.episodes:
            def judge_ref(rs, ep=ep):
                ok = all(r.outcome == Outcome.passed for r in rs)
                return Finding(item=f"reference {ep.id} passes its active gates", ok=ok,
                               detail=_summary(rs) + _first_bad(rs))
            jobs_list.append((ep.reference, ep.id, judge_ref))

        def judge_starter(rs):
            gates = {r.gate for r in rs}
            free = sorted(g for g in gates if all(r.outcome == Outcome.passed for r in rs if r.gate == g))
            errors = [r for r in rs if r.outcome == Outcome.error]
            ok = not free and not errors
            detail = _summary(rs) + (f"; gates passed by the starter: {', '.join(free)}" if free else "")
            detail += f"; {len(errors)} checks errored" if errors else ""
            return Finding(item="starter fails every gate", ok=ok, detail=detail)
        jobs_list.append((marathon.starter, last, judge_starter))

        final_ref = marathon.episode(last).reference
        patches = sorted(marathon.mutants.glob("*/*.patch")) if marathon.mutants else []
        gate_names = {g.name for g in marathon.gate}
        for gate in marathon.gate:
            n = sum(p.parent.name == gate.name for p in patches)
            note(Finding(item=f"gate {gate.name} has mutants", ok=n >= 2, detail=f"{n} mutants"))
        for i, patch in enumerate(patches):
            gate = patch.parent.name
            if gate not in gate_names:
                raise MarathonError(f"{patch}: directory {gate!r} is not a gate of {marathon.name}")
            snap = apply_mutant(final_ref, patch, Path(tmp) / f"mutant{i}")

            def judge_mutant(rs, gate=gate, patch=patch):
                mine = [r for r in rs if r.gate == gate]
                caught = [r for r in mine if r.outcome == Outcome.failed]
                errors = [r for r in mine if r.outcome == Outcome.error]
                return Finding(item=f"mutant {gate}/{patch.stem} fails its gate",
                               ok=bool(caught) and not errors,
                               detail=f"{len(caught)}/{len(mine)} checks of {gate} failed"
                               + (f"; {len(errors)} errored" if errors else ""))
            jobs_list.append((snap, last, judge_mutant))

        jobs_list += [(final_ref, last, None)] * 2

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = [pool.submit(score, snap, marathon, ep_id, seed, image=image)
                       for snap, ep_id, _ in jobs_list]
            results = []
            for (_, _, judge), fut in zip(jobs_list, futures):
                results.append(fut.result())
                if judge is not None:
                    note(judge(results[-1]))

    # References come first, in episode order; the two repeats last.
    final_outcomes, repeats = results[len(marathon.episodes) - 1], results[-2:]

    def key(rs: list[CheckResult]) -> list[tuple[str, str, str]]:
        return [(r.gate, r.check, r.outcome.value) for r in rs]
    same = all(key(r) == key(final_outcomes) for r in repeats)
    note(Finding(item="scoring is deterministic (3 scorings of the final reference)", ok=same,
                 detail="identical outcomes" if same else "outcomes differ between scorings"))
    return findings
