"""``marathon validate``: prove a marathon's gates are sound before any agent meets them.

A marathon is valid when its structural findings hold (:mod:`benchmark.structure`, read from
its files alone: no placeholder left, every gate has at least three checks, each tagged
``genuine`` or ``contract``, and at least two hand-written mutants, DESIGN.md's traps and
traceability tables are complete), and, on **every** validation seed (``0, 1, 2`` by default;
the checks draw their inputs from the seed):

1. the reference solution of every episode passes 100% of the gates active after it;
2. the untouched starter fails every gate (no gate is free);
3. every mutant (``<mutants>/<gate>/<name>.patch``, a small regression of the final
   reference) fails the gate it is filed under. A mutant caught on one seed and missed on
   another is a failed finding of its own kind (*seed-dependent*): the gate's verdict on that
   regression depends on the input draw;
4. scoring the final reference three times on the first seed gives identical outcomes
   (determinism).

Each (snapshot, seed) pair is one scoring in its own scorer container; ``jobs`` of them run at
once. A marathon with a placeholder left (a fresh ``marathon new`` skeleton) is not scored.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from benchmark.errors import MarathonError
from benchmark.marathon import Marathon
from benchmark.scorer import CheckResult, Outcome, ScorerLimits, score, scorer_processes
from benchmark.structure import Finding, structure

#: The seeds ``marathon validate`` and ``marathon mutate`` score on unless told otherwise.
DEFAULT_SEEDS = (0, 1, 2)


def scoring_limits(jobs: int) -> ScorerLimits:
    """The scorer limits of validation and mutation scorings when ``jobs`` run at once: the
    default limits, with the cores shared out between the concurrent scorings
    (:func:`~benchmark.scorer.scorer_processes`). Outcomes never depend on the share."""
    limits = ScorerLimits()
    return limits.model_copy(update={"processes": scorer_processes(jobs, limits)})


def parse_seeds(text: str) -> list[int]:
    """Parse a comma-separated list of distinct non-negative seeds, e.g. ``"0,1,2"``.

    Raises:
        MarathonError: empty, not integers, negative or repeated; the message names ``--seeds``.
    """
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise MarathonError(f"--seeds: {text!r} is not a comma-separated list of integers") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise MarathonError(f"--seeds: {text!r}: seeds must be distinct and non-negative")
    return seeds


def _seeds(seeds: Sequence[int]) -> str:
    return ", ".join(map(str, seeds))


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


#: Judges the scorings of one item, seed -> results, into a finding.
Judge = Callable[[dict[int, list[CheckResult]]], Finding]


def judge_reference(episode: str) -> Judge:
    """Reference of ``episode``: every check passes on every seed."""
    def judge(by_seed: dict[int, list[CheckResult]]) -> Finding:
        item = f"reference {episode} passes its active gates"
        for seed, rs in by_seed.items():
            if any(r.outcome != Outcome.passed for r in rs):
                return Finding(item=item, ok=False, detail=f"seed {seed}: {_summary(rs)}{_first_bad(rs)}")
        rs = next(iter(by_seed.values()))
        return Finding(item=item, ok=True, detail=f"{_summary(rs)} on seeds {_seeds(by_seed)}")
    return judge


def judge_starter(by_seed: dict[int, list[CheckResult]]) -> Finding:
    """Starter: on every seed every gate has a non-passing check and no check errors."""
    problems = []
    for seed, rs in by_seed.items():
        free = sorted({r.gate for r in rs} - {r.gate for r in rs if r.outcome != Outcome.passed})
        errors = [r for r in rs if r.outcome == Outcome.error]
        if free:
            problems.append(f"seed {seed}: gates passed by the starter: {', '.join(free)}")
        if errors:
            problems.append(f"seed {seed}: {len(errors)} checks errored{_first_bad(errors)}")
    rs = next(iter(by_seed.values()))
    detail = "; ".join(problems) if problems else f"{_summary(rs)} on seeds {_seeds(by_seed)}"
    return Finding(item="starter fails every gate", ok=not problems, detail=detail)


def judge_mutant(gate: str, name: str) -> Judge:
    """Mutant filed under ``gate``: on every seed some check of ``gate`` fails and none errors.

    Caught on some seeds and missed on others is reported as seed-dependent, naming both.
    """
    def judge(by_seed: dict[int, list[CheckResult]]) -> Finding:
        item = f"mutant {gate}/{name} fails its gate"
        caught, missed, errored, counts = [], [], [], []
        for seed, rs in by_seed.items():
            mine = [r for r in rs if r.gate == gate]
            failed = sum(r.outcome == Outcome.failed for r in mine)
            errors = [r for r in mine if r.outcome == Outcome.error]
            counts.append(f"{failed}/{len(mine)} on seed {seed}")
            if errors:
                errored.append(f"seed {seed}: {len(errors)} checks of {gate} errored{_first_bad(errors)}")
            (caught if failed else missed).append(seed)
        if caught and missed:
            return Finding(item=item, ok=False,
                           detail=f"seed-dependent: caught on seeds {_seeds(caught)}, missed on seeds "
                                  f"{_seeds(missed)}")
        if errored:
            return Finding(item=item, ok=False, detail="; ".join(errored))
        detail = f"checks of {gate} failed: {', '.join(counts)}"
        return Finding(item=item, ok=not missed, detail=detail)
    return judge


def validate(marathon: Marathon, *, image: str, seeds: Sequence[int] = DEFAULT_SEEDS, jobs: int = 2,
             progress: Callable[[Finding], None] = lambda f: None,
             scored: Callable[[], None] = lambda: None) -> list[Finding]:
    """Run every validation step on every seed; return one :class:`Finding` per item.

    The structural findings (:func:`~benchmark.structure.structure`) come first; when a part is
    still a placeholder, nothing is scored and only they are returned.

    Args:
        marathon: the loaded marathon.
        image: scorer image tag.
        seeds: seeds passed to the checks (at least one); every item is scored on each.
        jobs: scorings run concurrently (each in its own container).
        progress: called with each finding as soon as it is known, in item order.
        scored: called (from a worker thread) after each scoring, e.g. to advance a bar;
            :func:`scoring_count` scorings in all.

    Raises:
        MarathonError: no seed, a gate module does not parse, or a mutant does not apply.
    """
    seeds = list(seeds)
    if not seeds:
        raise MarathonError("--seeds: at least one seed is needed")
    findings: list[Finding] = []

    def note(f: Finding) -> None:
        findings.append(f)
        progress(f)

    last = marathon.episode_ids[-1]
    shape = structure(marathon)
    for f in shape.findings:
        note(f)
    if not shape.scorable:
        return findings

    patches = sorted(marathon.mutants.glob("*/*.patch")) if marathon.mutants else []
    gate_names = {g.name for g in marathon.gate}

    limits = scoring_limits(jobs)
    with tempfile.TemporaryDirectory(prefix="marathon-validate-") as tmp:
        # (snapshot, episode, judge): every item is scored once per seed.
        items: list[tuple[Path, str, Judge]] = [
            (ep.reference, ep.id, judge_reference(ep.id)) for ep in marathon.episodes]
        items.append((marathon.starter, last, judge_starter))
        final_ref = marathon.episode(last).reference
        for i, patch in enumerate(patches):
            gate = patch.parent.name
            if gate not in gate_names:
                raise MarathonError(f"{patch}: directory {gate!r} is not a gate of {marathon.name}")
            snap = apply_mutant(final_ref, patch, Path(tmp) / f"mutant{i}")
            items.append((snap, last, judge_mutant(gate, patch.stem)))

        def one(snap: Path, episode: str, seed: int) -> list[CheckResult]:
            try:
                return score(snap, marathon, episode, seed, image=image, limits=limits)
            finally:
                scored()

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures: list[dict[int, Future]] = [
                {seed: pool.submit(one, snap, ep_id, seed) for seed in seeds}
                for snap, ep_id, _ in items]
            repeats = [pool.submit(one, final_ref, last, seeds[0]) for _ in range(2)]
            try:
                for (_, _, judge), by_seed in zip(items, futures):
                    note(judge({seed: fut.result() for seed, fut in by_seed.items()}))
                final_outcomes = futures[len(marathon.episodes) - 1][seeds[0]].result()
                repeat_outcomes = [f.result() for f in repeats]
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    def key(rs: list[CheckResult]) -> list[tuple[str, str, str]]:
        return [(r.gate, r.check, r.outcome.value) for r in rs]
    same = all(key(r) == key(final_outcomes) for r in repeat_outcomes)
    note(Finding(item="scoring is deterministic (3 scorings of the final reference)", ok=same,
                 detail=f"identical outcomes on seed {seeds[0]}" if same
                 else f"outcomes differ between scorings on seed {seeds[0]}"))
    return findings


def scoring_count(marathon: Marathon, seeds: Sequence[int]) -> int:
    """How many scorings :func:`validate` runs on a marathon without placeholders: references,
    starter and mutants on every seed, plus two repeats of the final reference."""
    patches = list(marathon.mutants.glob("*/*.patch")) if marathon.mutants else []
    return (len(marathon.episodes) + 1 + len(patches)) * len(seeds) + 2
