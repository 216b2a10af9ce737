"""``marathon mutate``: score mutants of a marathon's final reference against its gates.

Data flows one way: :func:`plan` enumerates the mutants (through the marathon's
:class:`~benchmark.mutation.source.MutantSource`), matches the reviewed equivalents, draws the
sample and finds what an earlier session already scored; :func:`score_pending` scores the rest
with the real scorer (:func:`benchmark.scorer.score`, the limits of ``marathon validate``), one
mutant at a time per worker, seed after seed until one kills it (a later seed cannot change a
killed mutant's outcome, so it is not scored: about a third of the scorings on 3 seeds) or one
runs out of time (a hung mutant would cost the whole time limit on every seed; not scoring it
again can only lower the kill rate), and appends each result to the session's store
the moment it is known; :mod:`benchmark.mutation.summary` turns the plan and the results into the
table and the Markdown summary.

Outcome of a scored mutant (:func:`classify`), over its seeds:

- ``killed``: some check of an active gate ``failed`` (an assertion against the product) on
  some seed;
- ``timeout``: not killed, and some check ran out of time on some seed (pytest-timeout's
  per-check limit, or the scoring's total limit);
- ``error``: neither, and some check gave no verdict for another reason (e.g. a fixture error);
- ``survived``: every check of every active gate passed on every seed.

A session lives in ``OUT/sessions/<fingerprint>/``; the fingerprint covers everything a result
depends on (final reference, gates, seeds, scorer image and limits, mutant source and its
configuration), so re-running the same command resumes, and changed inputs start a new session
without touching the old one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from benchmark.errors import MarathonError
from benchmark.marathon import Marathon, tree_hash
from benchmark.mutation.equivalents import EquivalentMutant, load_equivalents, match_equivalents
from benchmark.mutation.source import Mutant, MutantSource, mutant_source
from benchmark.scorer import CheckResult, Outcome, ScorerLimits, score
from benchmark.validate import scoring_limits

#: Messages of ``error`` check results that mean the check or the scoring ran out of time.
TIMEOUT_MESSAGES = ("Failed: Timeout", "scoring timed out")


class MutantOutcome(str, Enum):
    """What became of a mutant."""

    killed = "killed"
    """Some check of an active gate failed on some seed."""
    survived = "survived"
    """Every check of every active gate passed on every seed."""
    timeout = "timeout"
    """Not killed; some check (or the whole scoring) ran out of time on some seed."""
    error = "error"
    """Not killed, no timeout; some check gave no verdict (error) on some seed."""
    equivalent = "equivalent"
    """Listed in the reviewed equivalents file: not scored, not counted in the kill rate."""
    skipped = "skipped"
    """Not scored: filtered by the mutant source, or not drawn in the sample."""


class SeedVerdict(BaseModel):
    """The scorer's verdict on one mutant for one seed: the checks that did not pass."""

    seed: int
    """Seed passed to the checks."""
    failed: list[str] = []
    """``gate/check`` of every check that failed (an assertion against the product)."""
    timeouts: list[str] = []
    """``gate/check`` of every check that ran out of time (check or scoring limit)."""
    errors: list[str] = []
    """``gate/check`` of every other check without a verdict."""
    message: str = ""
    """First failure, timeout or error message (at most 500 characters); empty if all passed."""

    @classmethod
    def of(cls, seed: int, results: list[CheckResult]) -> "SeedVerdict":
        """The verdict of one scoring's check results."""
        failed, timeouts, errors, message = [], [], [], ""
        for r in results:
            if r.outcome == Outcome.passed:
                continue
            name = f"{r.gate}/{r.check}"
            if r.outcome == Outcome.failed:
                failed.append(name)
            elif r.message.startswith(TIMEOUT_MESSAGES):
                timeouts.append(name)
            else:
                errors.append(name)
            message = message or f"{name}: {r.message}"[:500]
        return cls(seed=seed, failed=failed, timeouts=timeouts, errors=errors, message=message)


class ScoredMutant(BaseModel):
    """One line of a session's store (``scored.jsonl``): a mutant scored seed after seed, up to
    the first seed that killed it or timed out (or on every seed)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    """The mutant's id."""
    verdicts: list[SeedVerdict]
    """One verdict per seed scored, in seed order; the last is the first that killed it or timed
    out, if any."""
    seconds: float = Field(ge=0)
    """Wall time of the mutant's scorings (copy, apply, every seed), seconds."""


def classify(verdicts: Sequence[SeedVerdict]) -> MutantOutcome:
    """The outcome of a scored mutant: killed if some check failed on some seed, else timeout
    if some check timed out, else error if some check gave no verdict, else survived."""
    if any(v.failed for v in verdicts):
        return MutantOutcome.killed
    if any(v.timeouts for v in verdicts):
        return MutantOutcome.timeout
    if any(v.errors for v in verdicts):
        return MutantOutcome.error
    return MutantOutcome.survived


class Plan(BaseModel):
    """Everything ``marathon mutate`` knows before scoring (see :func:`plan`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    marathon: Marathon
    """The loaded marathon."""
    episode: str
    """Id of the final episode; its reference is mutated and every gate active after it scored."""
    reference: Path
    """The final reference (never modified)."""
    source: MutantSource
    """The mutant source serving the marathon's language."""
    image: str
    """Scorer image tag."""
    seeds: list[int]
    """Seeds every mutant is scored on."""
    sample: int | None
    """Sample size asked for (``None``: every candidate)."""
    sample_seed: int
    """Seed of the sample draw."""
    session: Path
    """The session directory (``OUT/sessions/<fingerprint>``)."""
    mutants: list[Mutant]
    """Every mutant the source enumerated, filtered ones included."""
    equivalents: list[EquivalentMutant]
    """Entries of the reviewed equivalents file."""
    equivalent_of: dict[str, int]
    """Mutant id -> index of the equivalents entry covering it."""
    stale: list[int]
    """Indices of equivalents entries matching no mutant."""
    candidates: int
    """Mutants neither filtered nor equivalent: the population the sample is drawn from."""
    selected: list[str]
    """Ids of the mutants to score (the sample, or every candidate), in draw order."""
    done: dict[str, ScoredMutant]
    """Results already in the session store, by mutant id."""

    @property
    def pending(self) -> list[Mutant]:
        """Selected mutants without a result yet, in draw order."""
        by_id = {m.id: m for m in self.mutants}
        return [by_id[i] for i in self.selected if i not in self.done]

    @property
    def store(self) -> Path:
        """The session's result store: one :class:`ScoredMutant` JSON object per line."""
        return self.session / "scored.jsonl"


def _fingerprint(marathon: Marathon, reference: Path, source: MutantSource, image: str,
                 seeds: Sequence[int]) -> tuple[str, dict]:
    inputs = {
        "marathon": marathon.name,
        "reference_and_gates_sha256": tree_hash(reference, marathon.gates),
        "seeds": list(seeds),
        "scorer_image": image,
        "scorer_limits": ScorerLimits().model_dump(exclude={"processes"}),
        "mutant_source": source.name,
        "mutation": marathon.mutation.model_dump(mode="json", exclude={"equivalents"}),
        "filters": source.filters,
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return digest[:16], inputs


def read_store(path: Path) -> dict[str, ScoredMutant]:
    """The results in a session store; a torn last line (a crash while writing) is ignored."""
    done: dict[str, ScoredMutant] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                r = ScoredMutant.model_validate_json(line)
            except ValidationError:
                continue
            done[r.id] = r
    return done


def draw(mutants: list[Mutant], eligible: set[str], sample: int | None, seed: int) -> list[str]:
    """The ids to score: every eligible id (sorted) when ``sample`` is ``None``; otherwise the
    first ``sample`` eligible ids of all ids shuffled by ``random.Random(seed)``.

    Shuffling all ids, not just the eligible ones, keeps a sample stable when an equivalent is
    added (only that mutant drops out), and a larger sample with the same seed extends a
    smaller one (so a resumed session reuses its results).
    """
    ids = sorted(m.id for m in mutants)
    if sample is None:
        return [i for i in ids if i in eligible]
    random.Random(seed).shuffle(ids)
    return [i for i in ids if i in eligible][:sample]


def plan(marathon: Marathon, out: Path, *, image: str, seeds: Sequence[int], sample: int | None = None,
         sample_seed: int = 0) -> Plan:
    """Enumerate, match equivalents, draw the sample and load earlier results.

    Args:
        marathon: the loaded marathon; its final episode's reference is mutated.
        out: output directory (created); the session goes to ``out/sessions/<fingerprint>``.
        image: scorer image tag.
        seeds: seeds every mutant is scored on (at least one).
        sample: score a random sample of this many candidates (``None``: all).
        sample_seed: seed of the sample draw.

    Raises:
        MarathonError: no seed, sample < 1, a malformed equivalents file, or the mutant source
            failed; one line naming the file, field or flag.
    """
    seeds = list(seeds)
    if not seeds:
        raise MarathonError("--seeds: at least one seed is needed")
    if sample is not None and sample < 1:
        raise MarathonError(f"--sample: must be at least 1 (got {sample})")
    episode = marathon.episode_ids[-1]
    reference = marathon.episode(episode).reference
    source = mutant_source(marathon.mutation)
    equivalents = load_equivalents(marathon.mutation.equivalents)
    fingerprint, inputs = _fingerprint(marathon, reference, source, image, seeds)
    session = out / "sessions" / fingerprint
    session.mkdir(parents=True, exist_ok=True)
    (session / "session.json").write_text(json.dumps(inputs, indent=2) + "\n", encoding="utf-8")
    mutants = source.mutants(reference, marathon.mutation, session)
    equivalent_of, stale = match_equivalents([m for m in mutants if m.skip_reason is None], equivalents)
    eligible = {m.id for m in mutants if m.skip_reason is None and m.id not in equivalent_of}
    return Plan(marathon=marathon, episode=episode, reference=reference, source=source, image=image,
                seeds=seeds, sample=sample, sample_seed=sample_seed, session=session,
                mutants=mutants, equivalents=equivalents, equivalent_of=equivalent_of, stale=stale,
                candidates=len(eligible), selected=draw(mutants, eligible, sample, sample_seed),
                done=read_store(session / "scored.jsonl"))


def check_baseline(p: Plan, *, jobs: int, scored: Callable[[], None] = lambda: None) -> None:
    """Score the unmutated final reference on every seed: every check must pass, or no mutant's
    outcome would mean anything.

    Raises:
        MarathonError: a check does not pass; names the seed and the check.
    """
    limits = scoring_limits(jobs)

    def one(seed: int) -> tuple[int, list[CheckResult]]:
        try:
            return seed, score(p.reference, p.marathon, p.episode, seed, image=p.image, limits=limits)
        finally:
            scored()

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for seed, results in pool.map(one, p.seeds):
            bad = next((r for r in results if r.outcome != Outcome.passed), None)
            if bad is not None:
                raise MarathonError(
                    f"{p.reference}: the unmutated final reference does not pass on seed {seed} "
                    f"({bad.gate}/{bad.check} {bad.outcome.value}: {bad.message[:200]}); "
                    f"fix it first (marathon validate {p.marathon.name})")


def score_pending(p: Plan, *, jobs: int, scored: Callable[[], None] = lambda: None,
                  finished: Callable[[Mutant, ScoredMutant], None] = lambda m, r: None) -> None:
    """Score every pending mutant seed after seed until one kills it or times out, ``jobs``
    mutants at a time, appending each result to the session store (flushed and fsynced) as
    soon as its last seed is scored.

    Each mutant is written into its own temporary copy of the reference. On an interruption
    (``KeyboardInterrupt``) queued mutants are cancelled, running ones finish and are stored,
    and the exception propagates: running the same command again resumes.

    Args:
        p: the plan.
        jobs: scorings run concurrently, each in its own scorer container.
        scored: called after each scoring (from a worker thread).
        finished: called with each mutant and its result once stored (from a worker thread).
    """
    limits = scoring_limits(jobs)
    lock = threading.Lock()

    def one(mutant: Mutant) -> None:
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="marathon-mutant-") as tmp:
            tree = Path(tmp) / "snapshot"
            shutil.copytree(p.reference, tree, ignore=shutil.ignore_patterns("__pycache__", ".git"))
            p.source.apply(mutant, tree)
            verdicts = []
            for seed in p.seeds:
                try:
                    results = score(tree, p.marathon, p.episode, seed, image=p.image, limits=limits)
                finally:
                    scored()
                verdicts.append(SeedVerdict.of(seed, results))
                if verdicts[-1].failed or verdicts[-1].timeouts:
                    # killed: no later seed can change the outcome; timed out: a hung mutant
                    # costs the scoring's whole time limit per seed, and not scoring it again
                    # can only keep it from being killed (a conservative rate)
                    break
        result = ScoredMutant(id=mutant.id, verdicts=verdicts, seconds=round(time.monotonic() - start, 3))
        with lock:
            with p.store.open("a", encoding="utf-8") as f:
                f.write(result.model_dump_json() + "\n")
                f.flush()
                os.fsync(f.fileno())
            p.done[mutant.id] = result
        finished(mutant, result)

    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        futures = [pool.submit(one, m) for m in p.pending]
        for fut in futures:
            fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
