"""The driver: runs a run's trials, each in its own container, and records every episode.

Data flows one way: a :class:`~benchmark.experiment.RunConfig` is validated into a
:class:`Plan` (marathon, arms, agents, images, trials) before anything is written; then every
trial gets a :class:`~benchmark.sandbox.Sandbox`, plays its episodes in order (the arm's
controller runs the attempts; each attempt is committed, snapshotted and scored against every
gate active after the episode, with the trial's seed), and each finished episode is recorded at
once (:class:`~benchmark.records.RecordStore`), with the workspace archive it ended on.

Run directory layout (``<out>/<run id>/``)::

    manifest.json                  run config, versions, hashes, images, host, sessions
    trials|episodes|attempts|checks|usage.parquet   consolidated tables
    parts/<table>/<trial>.<episode>.parquet         one part per finished episode
    workspaces/<trial>/<episode>.tar                /workspace (with .git) after the episode
    capsules/<trial>.json, evidence/<trial>.jsonl    governed trials: capsule, evidence ledger
    artifacts/<trial>/<episode>/<attempt>/          prompt.md, transcript, workspace.diff, score.json
    errors.log                     tracebacks of trials that failed (the run stays resumable)

Crash safety: a killed driver (SIGKILL, power loss) loses at most the episodes in flight.
:func:`resume_run` removes the dead session's containers and network (found by label), and
restarts each unfinished trial at its first unfinished episode from the archived workspace of
the last finished one. SIGINT/SIGTERM stop cleanly: containers are removed at once, finished
episodes are kept, and the run is resumable.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from rich.console import Console

from benchmark.agents import (Agent, AttemptContext, AttemptResult, agent_hashes, agent_versions,
                              get_agent)
from benchmark.agents.declared import DeclaredAgent
from benchmark.arms import Arm, load_arm
from benchmark.controllers import get_controller
from benchmark.controllers.base import default_decision, gate_score, gate_verdicts
from benchmark.controllers.feedback_retry import failing_lines
from benchmark.docker_env import LABEL
from benchmark.errors import MarathonError
from benchmark.experiment import RunConfig, check_output_dir, plan_trials
from benchmark.images import ImageSet, build_images
from benchmark.manifest import (Manifest, Session, git_state, host_info, read_manifest,
                                simulated_models, utcnow, write_manifest)
from benchmark.marathon import EpisodeSpec, Marathon, load_marathon
from benchmark.model_access import ModelServices, model_upstreams
from benchmark.progress import LiveProgress
from benchmark.records import (AttemptRow, CheckRow, EpisodeRecords, EpisodeRow, RecordStore,
                               SelfCheckRow, TrialKeys, UsageRow)
from benchmark.sandbox import (TRIAL_LABEL, Sandbox, SandboxLimits, extract_snapshot,
                               remove_run_resources)
from benchmark.scorer import CheckResult, Outcome, ScorerLimits, score, scorer_processes


class Interrupted(Exception):
    """The run is stopping (SIGINT/SIGTERM): the current episode is abandoned, unrecorded."""


class Plan(BaseModel):
    """A validated run: everything resolved, nothing written yet."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    run_id: str
    """Id of the run."""
    config: RunConfig
    """The configuration."""
    marathon: Marathon
    """The loaded marathon."""
    arms: dict[str, Arm]
    """Arm name -> loaded arm."""
    images: ImageSet
    """Harness images (agent image included)."""
    trials: list[TrialKeys]
    """Every trial of the run."""
    model_upstreams: dict[str, str] = {}
    """Model -> where its calls go (the scripted model server, a simulation, or a vendor API's
    base URL); empty when no agent uses a model."""
    sandbox_limits: SandboxLimits = SandboxLimits()
    """Limits of each trial container."""
    scorer_limits: ScorerLimits = ScorerLimits()
    """Limits of each scoring container."""


class RunOutcome(BaseModel):
    """What a driver session achieved."""

    run_dir: Path
    """The run directory."""
    status: str
    """``complete``, ``interrupted`` or ``failed`` (some trial raised; see ``errors.log``)."""
    trials_complete: int
    """Trials that finished every episode."""
    trials_total: int
    """Trials planned."""
    failures: list[str]
    """``<trial id>: <one-line error>`` for each trial that failed in this session."""
    wall_s: float
    """Wall time of the session in seconds."""


def new_run_id() -> str:
    """A fresh run id: UTC start time plus 4 random hex digits, e.g. ``20261121T105000Z-3f2a``."""
    return f"{utcnow():%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def make_plan(config: RunConfig, run_id: str, log=lambda line: None) -> Plan:
    """Validate a configuration into a :class:`Plan`; write nothing.

    Checks, in order: marathon (cut to its first ``config.episodes`` episodes when set), arms,
    agents, output directory, trials, model access (a known ``scripted/`` model, or the vendor
    key of a real model's agent in the environment), then the Docker engine and the images
    (built if their recipe changed).

    Raises:
        MarathonError: any bad input (unknown marathon, arm or agent, bad preset, unwritable
            output, too many episodes, a model agent without a model, a real model without its
            API key, Docker unreachable); the message names the file, field, flag or variable.
    """
    marathon = load_marathon(config.marathon)
    if config.episodes is not None:
        if config.episodes > len(marathon.episodes):
            raise MarathonError(f"--episodes: marathon {marathon.name} has {len(marathon.episodes)} "
                                f"episodes, got {config.episodes}")
        kept = marathon.episodes[:config.episodes]
        ids = {e.id for e in kept}
        marathon = marathon.model_copy(update={
            "episodes": kept, "gate": [g for g in marathon.gate if g.active_from in ids]})
    arms: dict[str, Arm] = {}
    for name in config.arms:
        arm = load_arm(name)
        if arm.name in arms:
            raise MarathonError(f"--arm: arm {arm.name!r} given twice")
        arms[arm.name] = arm
    agents = {name: get_agent(name) for name in config.agents}
    check_output_dir(config.out)
    trials = plan_trials(config, run_id, marathon.name, {n: a.uses_model for n, a in agents.items()})
    upstreams = model_upstreams(trials, agents, providers=config.providers)
    for name, agent in agents.items():
        for effort in {t.effort for t in trials if t.agent == name}:
            agent.check_effort(effort)
    images = build_images(agent=True, log=log,
                          agents=[n for n, a in agents.items() if isinstance(a, DeclaredAgent)])
    return Plan(run_id=run_id, config=config, marathon=marathon, arms=arms, images=images,
                trials=trials, model_upstreams=upstreams)


def _lock_run_dir(run_dir: Path):
    """Hold an exclusive lock on the run directory for this process (released at exit, also on
    SIGKILL). Raises MarathonError when another driver holds it."""
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise MarathonError(f"{run_dir}: another driver is working on this run") from None
    return fd


def start_run(config: RunConfig, *, display: bool = True, console: Console | None = None) -> RunOutcome:
    """Validate ``config``, create the run directory and run every trial.

    Raises:
        MarathonError: bad input (nothing is written then).
    """
    console = console or Console(stderr=True, highlight=False)
    run_id = config.run_id or new_run_id()
    run_dir = config.out / run_id
    if run_dir.exists():
        raise MarathonError(f"--run-id: run directory {run_dir} already exists (use --resume)")
    plan = make_plan(config, run_id, log=lambda line: console.print(f"[dim]{line}[/]"))
    git_commit, git_dirty = git_state()
    models = sorted({t.model for t in plan.trials})
    now = utcnow()
    run_dir.mkdir(parents=True)
    lock = _lock_run_dir(run_dir)
    manifest = Manifest(
        run_id=run_id, git_commit=git_commit, git_dirty=git_dirty, config=config,
        marathon=plan.marathon.name, marathon_hash=plan.marathon.content_hash(),
        episodes=plan.marathon.episode_ids,
        arm_hashes={n: a.config_hash() for n, a in plan.arms.items()}, images=plan.images,
        arm_settings={n: a.model_dump(mode="json", include={"controller", "feedback", "max_attempts",
                                                             "session_continuity", "budget",
                                                             "self_checks"})
                      for n, a in plan.arms.items()},
        agent_cli_versions=agent_versions(plan.config.agents),
        agent_hashes=agent_hashes(plan.config.agents),
        simulated=bool(simulated_models(models)), simulated_models=simulated_models(models),
        model_upstreams=plan.model_upstreams, trials=plan.trials, started_at=now,
        sessions=[Session(started_at=now, resume=False, pid=os.getpid(), jobs=config.jobs,
                          host=host_info())],
    )
    write_manifest(run_dir, manifest)
    try:
        return _execute(plan, run_dir, manifest, config.jobs, display, console)
    finally:
        os.close(lock)


def resume_run(run_dir: Path, *, jobs: int | None = None, display: bool = True,
               console: Console | None = None) -> RunOutcome:
    """Finish an interrupted run: remove the dead session's containers and network, then run
    every unfinished trial from its first unfinished episode.

    Args:
        run_dir: the run directory.
        jobs: trials run concurrently (default: as configured).

    Raises:
        MarathonError: not a run directory, another driver holds it, or the marathon, an arm or
            an image changed since the run started (results would mix).
    """
    console = console or Console(stderr=True, highlight=False)
    manifest = read_manifest(run_dir)
    if jobs is not None and jobs < 1:
        raise MarathonError(f"--jobs: must be at least 1, got {jobs}")
    lock = _lock_run_dir(run_dir)
    try:
        config = manifest.config
        plan = make_plan(config, manifest.run_id, log=lambda line: console.print(f"[dim]{line}[/]"))
        if plan.marathon.content_hash() != manifest.marathon_hash:
            raise MarathonError(f"{run_dir}: marathon {plan.marathon.name!r} changed since the run started")
        for name, arm in plan.arms.items():
            if arm.config_hash() != manifest.arm_hashes.get(name):
                raise MarathonError(f"{run_dir}: arm {name!r} changed since the run started")
        for role in ("scorer", "agent"):
            if getattr(plan.images, role) != getattr(manifest.images, role):
                raise MarathonError(f"{run_dir}: the {role} image changed since the run started "
                                    f"({getattr(manifest.images, role)} -> {getattr(plan.images, role)})")
        for name, tag in plan.images.agents.items():
            if tag != manifest.images.agents.get(name):
                raise MarathonError(f"{run_dir}: the image of agent {name!r} changed since the run "
                                    f"started ({manifest.images.agents.get(name)} -> {tag})")
        if [t.trial_id for t in plan.trials] != [t.trial_id for t in manifest.trials]:
            raise MarathonError(f"{run_dir}: the planned trials differ from the manifest's")
        finished = RecordStore(run_dir).finished()
        for t in plan.trials:  # a resumed trial restarts from its last finished episode's workspace
            last = [e for e in plan.marathon.episode_ids if (t.trial_id, e) in finished][-1:]
            if last and not _workspace_path(run_dir, t.trial_id, last[0]).is_file():
                raise MarathonError(f"{_workspace_path(run_dir, t.trial_id, last[0])}: workspace "
                                    "archive of a finished episode is missing")
        containers, networks = remove_run_resources(manifest.run_id)
        jobs = jobs or config.jobs
        manifest.sessions.append(Session(started_at=utcnow(), resume=True, pid=os.getpid(),
                                         jobs=jobs, host=host_info(),
                                         leftovers_removed=containers + networks))
        manifest.status = "running"
        manifest.ended_at = None
        write_manifest(run_dir, manifest)
        return _execute(plan, run_dir, manifest, jobs, display, console)
    finally:
        os.close(lock)


def _execute(plan: Plan, run_dir: Path, manifest: Manifest, jobs: int, display: bool,
             console: Console) -> RunOutcome:
    started = time.monotonic()
    # Concurrent trials share the cores between their scorings' pytest processes.
    plan = plan.model_copy(update={"scorer_limits": plan.scorer_limits.model_copy(
        update={"processes": scorer_processes(jobs, plan.scorer_limits)})})
    store = RecordStore(run_dir)
    n_episodes = len(plan.marathon.episodes)
    planned = [(t, n_episodes) for t in plan.trials]
    store.consolidate(planned)
    finished = store.finished()
    done = {t.trial_id: sum((t.trial_id, e) in finished for e in plan.marathon.episode_ids)
            for t in plan.trials}
    last_scores = {}
    for row in store.episode_rows():
        if row.episode_index == done.get(row.trial_id):
            last_scores[row.trial_id] = row.score
    todo = [t for t in plan.trials if done[t.trial_id] < n_episodes]

    stop = threading.Event()
    failures: list[str] = []
    services = None
    if any(get_agent(t.agent).uses_model or plan.arms[t.arm].self_checks for t in todo):
        services = ModelServices.start(plan.run_id, run_dir, plan.config.marathon, todo,
                                       plan.config.providers)

    cleaners: list[threading.Thread] = []

    def on_signal(signum, frame):
        if stop.is_set():
            return
        stop.set()
        console.print(f"[yellow]{signal.Signals(signum).name}: stopping; finished episodes are "
                      f"kept; resume with `marathon run --resume {run_dir}`[/]")
        # Removing the containers ends in-flight agent runs at once; their trials see `stop`.
        cleaner = threading.Thread(target=remove_run_resources, args=(plan.run_id,),
                                   kwargs={"networks": False}, daemon=True)
        cleaner.start()
        cleaners.append(cleaner)

    in_main = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    progress = LiveProgress(plan.trials, n_episodes, done, last_scores, console=console, live=display)
    try:
        with progress, ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="trial") as pool:
            futures = {
                pool.submit(_run_trial, plan, keys, done[keys.trial_id], run_dir, store, planned,
                            services, stop, progress): keys
                for keys in todo
            }
            pending = set(futures)
            while pending:
                finished_now, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in finished_now:
                    keys = futures[fut]
                    err = fut.exception()
                    if err is None:
                        continue
                    if stop.is_set() or isinstance(err, Interrupted):
                        progress.update(keys.trial_id, phase="interrupted")
                        continue
                    line = str(err).splitlines()[0] if str(err) else err.__class__.__name__
                    failures.append(f"{keys.trial_id}: {line}")
                    progress.update(keys.trial_id, phase=f"failed: {line[:60]}")
                    with open(run_dir / "errors.log", "a", encoding="utf-8") as log:
                        log.write(f"{utcnow().isoformat()} trial {keys.trial_id}\n")
                        log.write("".join(traceback.format_exception(err)))
    finally:
        if in_main:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        for cleaner in cleaners:
            cleaner.join()
        remove_run_resources(plan.run_id)
        if services is not None:
            services.stop()
        store.consolidate(planned)
        complete = sum(
            sum((t.trial_id, e) in store.finished() for e in plan.marathon.episode_ids) == n_episodes
            for t in plan.trials)
        status = ("complete" if complete == len(plan.trials) else
                  "interrupted" if stop.is_set() else "failed" if failures else "interrupted")
        now = utcnow()
        manifest.sessions[-1].ended_at = now
        manifest.sessions[-1].status = status
        manifest.status = status
        manifest.ended_at = now
        write_manifest(run_dir, manifest)
    return RunOutcome(run_dir=run_dir, status=status, trials_complete=complete,
                      trials_total=len(plan.trials), failures=failures,
                      wall_s=time.monotonic() - started)


def _workspace_path(run_dir: Path, trial_id: str, episode: str) -> Path:
    return run_dir / "workspaces" / trial_id / f"{episode}.tar"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _AttemptMeta(BaseModel):
    commit: str | None
    snapshot_sha256: str
    scoring_s: float


class ScoreFile(BaseModel):
    """Contents of an attempt's ``score.json`` artifact."""

    trial_id: str
    """Id of the trial."""
    episode: str
    """Episode id."""
    attempt: int
    """Attempt number, 1-based."""
    seed: int
    """The seed the checks ran with."""
    commit: str | None
    """Workspace commit that was scored."""
    score: float
    """Share of active gates passing, 0..1."""
    gates: dict[str, bool]
    """Gate -> whether it passes."""
    checks: list[CheckResult]
    """Every check's verdict."""


class TrialRunner:
    """Plays one trial's episodes in its sandbox (implements the controllers' ``TrialContext``)."""

    def __init__(self, plan: Plan, keys: TrialKeys, sandbox: Sandbox, agent: Agent, run_dir: Path,
                 stop: threading.Event, progress: LiveProgress, token: str | None = None):
        self.plan, self.keys, self.sandbox, self.agent = plan, keys, sandbox, agent
        self.token = token
        """The trial's proxy token (``None`` without a channel): ``marathon-check`` presents it."""
        self.arm = plan.arms[keys.arm]
        self.run_dir, self.stop, self.progress = run_dir, stop, progress
        self.marathon = plan.marathon
        self.controller = get_controller(self.arm)
        self._meta: dict[int, _AttemptMeta] = {}
        self._last_archive: bytes | None = None
        self._head: str | None = None
        # Self-checks: one at a time, and never while an attempt is being scored.
        self._check_lock = threading.Lock()
        self._current: tuple[EpisodeSpec, int] | None = None
        self._self_checks: list[SelfCheckRow] = []

    def _artifacts(self, episode: str, attempt: int | None = None) -> Path:
        base = self.run_dir / "artifacts" / self.keys.trial_id / episode
        return base if attempt is None else base / str(attempt)

    def attempt_context(self, episode: EpisodeSpec, attempt: int, prompt: str) -> AttemptContext:
        """Create the attempt's artifacts directory with ``prompt.md``; return its context.

        Raises:
            Interrupted: the run is stopping.
        """
        if self.stop.is_set():
            raise Interrupted()
        art = self._artifacts(episode.id, attempt)
        art.mkdir(parents=True, exist_ok=True)
        (art / "prompt.md").write_text(prompt, encoding="utf-8")
        self.progress.update(self.keys.trial_id, episode=episode.id, attempt=attempt, phase="agent")
        with self._check_lock:
            self._current = (episode, attempt)
        check_env = {"MARATHON_TOKEN": self.token} if self.arm.self_checks and self.token else {}
        return AttemptContext(trial_id=self.keys.trial_id, episode=episode, attempt=attempt,
                              arm=self.arm, model=self.keys.model, effort=self.keys.effort,
                              time_limit_s=self.plan.config.time_limit_s,
                              transcript=art / "transcript", check_env=check_env)

    def _score_archive(self, archive: bytes, episode: EpisodeSpec) -> list[CheckResult]:
        """Score a workspace archive against every gate active after ``episode``, with the
        trial's seed (the one scoring path of attempts and self-checks)."""
        with tempfile.TemporaryDirectory(prefix="marathon-snapshot-") as tmp:
            snapshot = extract_snapshot(archive, Path(tmp) / "snapshot")
            return score(snapshot, self.plan.marathon, episode.id, self.keys.seed,
                         image=self.plan.images.scorer, limits=self.plan.scorer_limits,
                         labels={LABEL: self.plan.run_id, TRIAL_LABEL: self.keys.trial_id})

    def self_check(self) -> dict:
        """Serve one ``marathon-check`` of the running attempt (called by the proxy, in a worker
        thread): score the workspace as it stands, exactly as after an attempt, and answer what
        the arm's feedback level allows; at most ``arm.self_checks`` counted ones per episode.
        Every request is recorded as a :class:`SelfCheckRow`.

        Returns:
            ``{"status": green|red|limit_reached|no_verdict|unavailable, "text": ...}``.
        """
        with self._check_lock:
            if self._current is None or self.stop.is_set():
                return {"status": "unavailable",
                        "text": "marathon-check: no attempt is running now; nothing was scored."}
            episode, attempt = self._current
            limit = self.arm.self_checks
            used = sum(r.counted for r in self._self_checks)
            base = dict(**self.keys.model_dump(), episode=episode.id, attempt=attempt,
                        index=len(self._self_checks) + 1, at=utcnow())
            if used >= limit:
                text = (f"marathon-check: the limit of {limit} self-check{'s' * (limit != 1)} for "
                        "this episode is reached; nothing was scored.")
                self._self_checks.append(SelfCheckRow(
                    **base, status="limit_reached", counted=False, commit=None, score=None,
                    gates_active=None, gates_passed=None, checks_total=None, checks_passed=None,
                    scoring_s=0.0, shown=text))
                return {"status": "limit_reached", "text": text}
            t0 = time.monotonic()
            try:
                commit = self.sandbox.snapshot_commit(f"marathon: {episode.id} self-check")
                checks = self._score_archive(self.sandbox.archive(), episode)
            except Exception as e:  # a harness failure is not a verdict on the workspace
                checks, commit = [], None
                why = f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            else:
                why = ""
            elapsed = time.monotonic() - t0
            if not checks or any(c.outcome == Outcome.error for c in checks):
                text = ("marathon-check: the harness could not score the workspace this time (no "
                        "verdict); this self-check is not counted, try again.")
                self._self_checks.append(SelfCheckRow(
                    **base, status="no_verdict", counted=False, commit=commit, score=None,
                    gates_active=None, gates_passed=None, checks_total=None, checks_passed=None,
                    scoring_s=elapsed, shown=text))
                if why:
                    self.progress.update(self.keys.trial_id, phase=f"self-check failed: {why[:50]}")
                return {"status": "no_verdict", "text": text}
            verdicts = gate_verdicts(checks)
            green = all(verdicts.values())
            head = f"marathon-check {used + 1}/{limit}"
            if green:
                text = f"{head}: every active gate passes."
            else:
                text = "\n".join([f"{head}: some hidden gates fail.", "", "Failing gates and checks:",
                                  *failing_lines(checks, self.arm.feedback)])
            self._self_checks.append(SelfCheckRow(
                **base, status="green" if green else "red", counted=True, commit=commit,
                score=gate_score(checks), gates_active=len(verdicts),
                gates_passed=sum(verdicts.values()), checks_total=len(checks),
                checks_passed=sum(c.outcome == Outcome.passed for c in checks),
                scoring_s=elapsed, shown=text))
            return {"status": "green" if green else "red", "text": text}

    def _score(self, episode: EpisodeSpec, attempt: int, result: AttemptResult) -> list[CheckResult]:
        if self.stop.is_set():
            raise Interrupted()
        self.progress.update(self.keys.trial_id, phase="scoring")
        with self._check_lock:  # waits for a self-check in flight; later ones are refused
            self._current = None
        t0 = time.monotonic()
        self.sandbox.kill_agent_processes()
        commit = self.sandbox.commit(f"marathon: {episode.id} attempt {attempt}")
        archive = self.sandbox.archive()
        checks = self._score_archive(archive, episode)
        art = self._artifacts(episode.id, attempt)
        (art / "workspace.diff").write_text(self.sandbox.diff(self._head, commit), encoding="utf-8")
        (art / "score.json").write_text(ScoreFile(
            trial_id=self.keys.trial_id, episode=episode.id, attempt=attempt, seed=self.keys.seed,
            commit=commit, score=gate_score(checks), gates=gate_verdicts(checks), checks=checks,
        ).model_dump_json(indent=2) + "\n", encoding="utf-8")
        self._meta[attempt] = _AttemptMeta(commit=commit, snapshot_sha256=hashlib.sha256(archive).hexdigest(),
                                           scoring_s=time.monotonic() - t0)
        self._last_archive = archive
        self._head = commit or self._head
        return checks

    def snapshot_of(self, attempt: int) -> tuple[str | None, str]:
        """``(commit, SHA-256 of the workspace archive)`` scored after ``attempt`` of the current
        episode."""
        meta = self._meta[attempt]
        return meta.commit, meta.snapshot_sha256

    def rollback(self, commit: str) -> None:
        """Reset the workspace to ``commit`` (a governed controller's rollback); the next
        attempt's ``workspace.diff`` starts from it.

        Raises:
            Interrupted: the run is stopping.
            MarathonError: the reset failed (e.g. the agent broke the repository).
        """
        if self.stop.is_set():
            raise Interrupted()
        self.sandbox.kill_agent_processes()
        self.sandbox.reset_to(commit)
        self._head = commit

    def start(self, start_index: int) -> None:
        """Set up the workspace: the starter plus the arm's material (first episode), or the
        archived workspace of the last finished episode (resume)."""
        self.progress.update(self.keys.trial_id, phase="starting")
        if start_index == 0:
            self.sandbox.put_directory(self.plan.marathon.starter)
            self.agent.prepare(self.sandbox, self.arm)
            self._head = self.sandbox.init_repo()
        else:
            prev = self.plan.marathon.episode_ids[start_index - 1]
            self.sandbox.restore(_workspace_path(self.run_dir, self.keys.trial_id, prev).read_bytes())
            self._head = self.sandbox.head()

    def run_episode(self, index: int, episode: EpisodeSpec) -> EpisodeRecords:
        """Run one episode's attempts through the arm's controller and build its records.

        Raises:
            Interrupted: the run is stopping (nothing of the episode is recorded).
        """
        if self.stop.is_set():
            raise Interrupted()
        shutil.rmtree(self._artifacts(episode.id), ignore_errors=True)  # a crashed earlier try
        self._meta.clear()
        with self._check_lock:
            self._self_checks = []
        started_at, t0 = utcnow(), time.monotonic()
        attempts = self.controller.run(self, episode, self.plan.marathon.brief_text(episode.id),
                                       self.agent, lambda n, r: self._score(episode, n, r))
        assert self._last_archive is not None
        _write_atomic(_workspace_path(self.run_dir, self.keys.trial_id, episode.id), self._last_archive)
        keys = self.keys.model_dump()
        gate_from = {g.name: g.active_from for g in self.plan.marathon.gate}
        attempt_rows, check_rows, usage_rows = [], [], []
        for a in attempts:
            meta = self._meta[a.number]
            passed = sum(c.outcome.value == "passed" for c in a.checks)
            attempt_rows.append(AttemptRow(
                **keys, episode=episode.id, attempt=a.number, recovery=a.number > 1,
                outcome=a.result.outcome.value, exit_code=a.result.exit_code, error=a.result.error,
                duration_s=a.result.duration_s, time_limit_s=self.plan.config.time_limit_s,
                score=a.score, gates_active=len(a.gate_verdicts), gates_passed=a.gates_passed,
                checks_total=len(a.checks), checks_passed=passed, scoring_s=meta.scoring_s,
                commit=meta.commit,
                artifacts=self._artifacts(episode.id, a.number).relative_to(self.run_dir).as_posix(),
                rolled_back=a.rolled_back, decision=_decision(a, self.arm.max_attempts),
                **_usage_columns(a.result),
            ))
            for c in a.checks:
                check_rows.append(CheckRow(
                    **keys, episode=episode.id, attempt=a.number, gate=c.gate,
                    gate_active_from=gate_from[c.gate], check=c.check, tag=c.tag,
                    outcome=c.outcome.value, message=c.message, duration_s=c.duration_s))
            for i, u in enumerate(a.result.usage):
                usage_rows.append(UsageRow(**keys, **u.model_dump(), episode=episode.id,
                                           attempt=a.number, call=i))
        final = attempts[-1]
        rollbacks = sum(a.rolled_back for a in attempts)
        agent_s = sum(a.result.duration_s for a in attempts)
        wall_s = time.monotonic() - t0
        row = EpisodeRow(
            **keys, episode=episode.id, episode_index=index + 1, attempts=len(attempts),
            recovery_attempts=len(attempts) - 1 + rollbacks, rollbacks=rollbacks,
            decision=_decision(final, self.arm.max_attempts), score=final.score,
            gates_active=len(final.gate_verdicts), gates_passed=final.gates_passed,
            checks_total=len(final.checks),
            checks_passed=sum(c.outcome.value == "passed" for c in final.checks),
            started_at=started_at, ended_at=utcnow(), wall_s=wall_s, agent_s=agent_s,
            scoring_s=sum(m.scoring_s for m in self._meta.values()),
            overhead_s=max(0.0, wall_s - agent_s), commit=self._meta[final.number].commit,
            self_checks=sum(r.counted for r in self._self_checks),
            self_check_recoveries=sum(r.status == "red" for r in self._self_checks),
        )
        return EpisodeRecords(episode=row, attempts=attempt_rows, checks=check_rows, usage=usage_rows,
                              self_checks=list(self._self_checks))


def _decision(attempt, max_attempts: int) -> str:
    """The controller's decision after an attempt (the default rule when it recorded none)."""
    return attempt.decision or default_decision(attempt.green, attempt.number, max_attempts)


def _usage_columns(result: AttemptResult) -> dict:
    """The attempts-table columns on model usage: proxy calls, cost, reconciliation verdict."""
    rec = result.reconciliation
    if rec is None:
        return {}
    proxy = [u for u in result.usage if u.source == "proxy"]
    costs = [u.cost_usd for u in proxy]
    return {"proxy_calls": len(proxy),
            "cost_usd": None if any(c is None for c in costs) else float(sum(costs)),
            "reconciliation": rec.verdict,
            "reconciliation_diff": ", ".join(f"{k} {v:+d}" for k, v in rec.difference.items())}


def _run_trial(plan: Plan, keys: TrialKeys, start_index: int, run_dir: Path, store: RecordStore,
               planned: list[tuple[TrialKeys, int]], services: ModelServices | None,
               stop: threading.Event, progress: LiveProgress) -> None:
    """Run one trial from episode ``start_index`` (0-based) to the end, recording each episode.

    A model agent's container reaches only the metering proxy (see :mod:`benchmark.sandbox`);
    the agent gets a fresh per-trial token. A resumed trial is a new container, so its CLI
    starts a new session.

    Raises:
        Interrupted: the run is stopping.
        Exception: a harness failure; finished episodes stay recorded.
    """
    if stop.is_set():
        raise Interrupted()
    agent = get_agent(keys.agent)
    arm = plan.arms[keys.arm]
    endpoint = None
    if agent.uses_model or arm.self_checks:
        if services is None:
            raise MarathonError(f"trial {keys.trial_id}: agent {keys.agent} needs the metering proxy")
        endpoint = services.open_trial(keys)
        if agent.uses_model:
            agent.attach(endpoint)
    # No container has a network; a model agent's reaches the proxy's socket through a forwarder.
    try:
        sandbox = Sandbox.create(run_id=plan.run_id, trial_id=keys.trial_id,
                                 image=plan.images.for_agent(agent.name),
                                 proxy_dir=endpoint.socket_dir if endpoint is not None else None,
                                 limits=plan.sandbox_limits)
    except BaseException:
        if endpoint is not None:
            services.close_trial(endpoint)
        raise
    try:
        token = endpoint.token.get_secret_value() if endpoint is not None else None
        runner = TrialRunner(plan, keys, sandbox, agent, run_dir, stop, progress, token=token)
        if arm.self_checks and endpoint is not None:
            services.proxy.set_self_check(token, runner.self_check)
        runner.start(start_index)
        for index in range(start_index, len(plan.marathon.episodes)):
            episode = plan.marathon.episodes[index]
            records = runner.run_episode(index, episode)  # complete and valid even if stopping now
            store.write_episode(records, planned)
            progress.episode_done(keys.trial_id, episode.id, records.episode.score,
                                  records.episode.attempts)
    except Exception:
        if stop.is_set():
            raise Interrupted() from None
        raise
    finally:
        sandbox.remove()
        if endpoint is not None:
            services.close_trial(endpoint)
