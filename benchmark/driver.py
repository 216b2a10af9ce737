"""The driver: runs a run's trials, each in its own container, and records every episode.

Data flows one way: a :class:`~benchmark.experiment.RunConfig` is validated into a
:class:`Plan` (marathons, arms, agents, images, trials) before anything is written; then every
trial gets a :class:`~benchmark.sandbox.Sandbox`, plays its marathon's episodes in order, each
from the workspace the last one left (``cumulative``) or from the previous episode's reference
(``isolated``; :meth:`TrialRunner.begin_episode`) (the arm's
controller runs the attempts; each attempt is committed, snapshotted and scored against every
gate active after the episode, with the trial's seed), and each finished episode is recorded at
once (:class:`~benchmark.records.RecordStore`), with the workspace archive it ended on.

Run directory layout (``<out>/<run id>/``)::

    manifest.json                  run config, versions, hashes, images, host, sessions
    trials|episodes|attempts|checks|usage.parquet   consolidated tables
    parts/<table>/<trial>.<episode>.parquet         one part per finished episode
    workspaces/<trial>/<episode>.tar                /workspace (with .git) after the episode
                                   (<episode>.git.tar: .git alone, when over the archive limits)
    capsules/<trial>.json, evidence/<trial>.jsonl    governed trials: capsule, evidence ledger
    artifacts/<trial>/<episode>/<attempt>/          prompt.md, transcript, workspace.diff, score.json
    errors.log                     tracebacks of trials that failed (the run stays resumable)
    .lock                          held by the driver working on the run (benchmark.rundir)

Crash safety: a killed driver (SIGKILL, power loss) loses at most the episodes in flight.
:func:`resume_run` checks that the plan recomputed from the manifest is the one the run started
with (:func:`plan_components`), removes the dead session's containers (found by the run's nonce
label, so never another run's), temp files and host temporary directories, and restarts each
unfinished trial at its first unfinished episode from the archived workspace of the last
finished one. SIGINT/SIGTERM stop cleanly: containers are removed at once, finished episodes are
kept, and the run is resumable. A storage fault (disk full, read-only directory) stops the run
the same way and is recorded as ``failed`` with its reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from collections.abc import Callable
from pathlib import Path

import docker.errors
from pydantic import BaseModel, ConfigDict
from rich.console import Console

from benchmark import rundir
from benchmark.agents import (Agent, AttemptContext, AttemptResult, agent_hashes, agent_versions,
                              get_agent)
from benchmark.agents.declared import DeclaredAgent
from benchmark.arms import Arm, load_arm
from benchmark.controllers import controller_class, get_controller
from benchmark.controllers.base import default_decision, gate_score, gate_verdicts
from benchmark.controllers.feedback_retry import failing_lines
from benchmark.errors import MarathonError
from benchmark.experiment import RunConfig, check_output_dir, plan_trials
from benchmark.images import ImageSet, build_images
from benchmark.manifest import (MANIFEST, Manifest, MarathonEntry, ProtocolRef, Session, git_state,
                                host_info, read_manifest, simulated_models, utcnow, write_manifest)
from benchmark.marathon import EpisodeSpec, Marathon, load_marathon
from benchmark.model_access import ModelServices, model_upstreams
from benchmark.progress import LiveProgress
from benchmark.records import (AttemptRow, CheckRow, EpisodeRecords, EpisodeRow, RecordStore,
                               SelfCheckRow, TrialKeys, UsageRow)
from benchmark.rundir import new_nonce
from benchmark.sandbox import (TRIAL_LABEL, WORKSPACE, ArchiveOverLimit, Sandbox, SandboxLimits,
                               extract_snapshot, remove_run_resources, run_labels)
from benchmark.scorer import (CheckResult, Outcome, ScorerLimits, Scoring, list_checks,
                              score_snapshot, scorer_processes)
from benchmark.storage import (SpaceReserve, copy_file, describe, naming, remove_temp_files,
                               storage_fault, write_bytes)


class Interrupted(Exception):
    """The run is stopping (SIGINT/SIGTERM): the current episode is abandoned, unrecorded."""


class Plan(BaseModel):
    """A validated run: everything resolved, nothing written yet."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    run_id: str
    """Id of the run."""
    nonce: str = ""
    """The run directory's nonce (:mod:`benchmark.rundir`): in the names and labels of the
    run's containers and host temporary directories."""
    config: RunConfig
    """The configuration."""
    marathons: dict[str, Marathon]
    """Marathon name -> the loaded marathon (cut to the run's ``episodes``), in config order."""
    arms: dict[str, Arm]
    """Arm name -> loaded arm."""
    images: dict[str, ImageSet]
    """Marathon name -> the harness images its trials use (agent images included; derived with
    the marathon's runtime if it has one)."""
    trials: list[TrialKeys]
    """Every trial of the run."""
    model_upstreams: dict[str, str] = {}
    """Model -> where its calls go (the scripted model server, a simulation, or a vendor API's
    base URL); empty when no agent uses a model."""
    sandbox_limits: SandboxLimits = SandboxLimits()
    """Limits of each trial container."""
    scorer_limits: ScorerLimits = ScorerLimits()
    """Limits of each scoring container."""

    def marathon_of(self, keys: TrialKeys) -> Marathon:
        """The marathon a trial plays."""
        return self.marathons[keys.marathon]

    def images_of(self, keys: TrialKeys) -> ImageSet:
        """The images a trial runs and is scored in."""
        return self.images[keys.marathon]

    def episodes_of(self, keys: TrialKeys) -> int:
        """How many episodes a trial plays."""
        return len(self.marathons[keys.marathon].episodes)


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
    reason: str | None = None
    """Why the session stopped ``failed``: a storage fault (``<file>: No space left on
    device``), or how many trials failed; null otherwise."""
    recorded: bool = True
    """Whether the session's end is in the manifest (not when the run directory became
    unwritable: the manifest then still says ``running``, and ``marathon status`` says
    ``dead``)."""
    wall_s: float
    """Wall time of the session in seconds."""


def new_run_id() -> str:
    """A fresh run id: UTC start time plus 4 random hex digits, e.g. ``20261121T105000Z-3f2a``."""
    return f"{utcnow():%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def make_plan(config: RunConfig, run_id: str, nonce: str = "", log=lambda line: None) -> Plan:
    """Validate a configuration into a :class:`Plan`; write nothing.

    Checks, in order: marathons (each cut to its first ``config.episodes`` episodes when set),
    arms, agents, output directory, trials, model access (a known ``scripted/`` model, or the
    vendor key of a real model's agent in the environment), then the Docker engine and each
    marathon's images (built if their recipe changed).

    Raises:
        MarathonError: any bad input (unknown marathon, arm or agent, bad preset, unwritable
            output, too many episodes, a model agent without a model, a real model without its
            API key, Docker unreachable, two marathons of one name); the message names the file,
            field, flag or variable.
    """
    marathons: dict[str, Marathon] = {}
    for name in config.marathons:
        marathon = load_marathon(name)
        if config.episodes is not None:
            if config.episodes > len(marathon.episodes):
                raise MarathonError(f"--episodes: marathon {marathon.name} has {len(marathon.episodes)} "
                                    f"episodes, got {config.episodes}")
            kept = marathon.episodes[:config.episodes]
            ids = {e.id for e in kept}
            marathon = marathon.model_copy(update={
                "episodes": kept, "gate": [g for g in marathon.gate if g.active_from in ids]})
        if marathon.name in marathons:
            raise MarathonError(f"--marathon: two marathons are named {marathon.name!r} ({name})")
        marathons[marathon.name] = marathon
    arms: dict[str, Arm] = {}
    for name in config.arms:
        arm = load_arm(name)
        if arm.name in arms:
            raise MarathonError(f"--arm: arm {arm.name!r} given twice")
        arms[arm.name] = arm
    agents = {name: get_agent(name) for name in config.agents}
    for arm in arms.values():  # e.g. an operator's arm needs a terminal and --jobs 1
        controller_class(arm.controller).check_plan(arm, config.jobs, list(config.agents))
    check_output_dir(config.out)
    trials = plan_trials(config, run_id, list(marathons), {n: a.uses_model for n, a in agents.items()})
    upstreams = model_upstreams(trials, agents, providers=config.providers)
    for name, agent in agents.items():
        for effort in {t.effort for t in trials if t.agent == name}:
            agent.check_effort(effort)
    declared = [n for n, a in agents.items() if isinstance(a, DeclaredAgent)]
    images = {name: build_images(agent=True, log=log, runtime=m.runtime, agents=declared)
              for name, m in marathons.items()}
    return Plan(run_id=run_id, nonce=nonce, config=config, marathons=marathons, arms=arms,
                images=images, trials=trials, model_upstreams=upstreams)


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _image_tags(images: ImageSet) -> dict:
    return {"scorer": images.scorer, "agent": images.agent,
            **({"agents": images.agents} if images.agents else {})}


def suite_hash(hashes: dict[str, str]) -> str:
    """The ``marathon_hash`` of a run of several marathons: SHA-256 over their names and
    content hashes (a single marathon's run records its own content hash)."""
    return _digest(hashes)


def plan_components(plan: Plan) -> dict[str, str]:
    """SHA-256 of each component of a resolved plan, as recorded in the manifest
    (``plan_components``) and compared on resume.

    Components: ``config`` (every field but ``jobs``, ``out`` and ``cluster``, which do not
    change results),
    ``marathon`` (its content hash), ``episodes`` (the ids played), ``arms`` (each arm's config
    hash), ``images`` (scorer and agent tags), ``trials`` (every trial's keys and seed),
    ``limits`` (sandbox and scorer limits, but the scorer's process count, which follows
    ``jobs`` and does not change outcomes) and ``model_upstreams``. A run of several marathons
    hashes each marathon's content hash, episodes and images by name. A single-marathon
    cumulative plan hashes as harness versions before suites and modes did (so their runs
    resume).
    """
    config = plan.config.model_dump(mode="json", exclude={"jobs", "out", "cluster"})
    single = len(plan.marathons) == 1
    if single and config["mode"] == "cumulative":
        config["marathon"] = config.pop("marathons")[0]
        del config["mode"]
    trials = [t.model_dump(mode="json", exclude={"mode"} if t.mode == "cumulative" else None)
              for t in plan.trials]
    if single:
        m = next(iter(plan.marathons.values()))
        marathon, episodes = m.content_hash(), _digest(m.episode_ids)
        images = _digest(_image_tags(plan.images[m.name]))
    else:
        marathon = suite_hash({n: m.content_hash() for n, m in plan.marathons.items()})
        episodes = _digest({n: m.episode_ids for n, m in plan.marathons.items()})
        images = _digest({n: _image_tags(i) for n, i in plan.images.items()})
    return {
        "config": _digest(config),
        "marathon": marathon,
        "episodes": episodes,
        "arms": _digest({n: a.config_hash() for n, a in plan.arms.items()}),
        "images": images,
        "trials": _digest(trials),
        "limits": _digest({"sandbox": plan.sandbox_limits.model_dump(mode="json"),
                           "scorer": plan.scorer_limits.model_dump(mode="json", exclude={"processes"})}),
        "model_upstreams": _digest(plan.model_upstreams),
    }


def plan_differences(manifest: Manifest, plan: Plan) -> list[str]:
    """What differs between the plan a run started with (its manifest) and ``plan``,
    recomputed from the manifest's config now: one phrase per differing component, with the
    recorded and current values where the manifest keeps them. Manifests of older harness
    versions (no ``plan_components``) are compared on the marathon, arms, images, episodes
    and trials."""
    now = plan_components(plan)
    recorded = dict(manifest.plan_components) or {
        "marathon": manifest.marathon_hash, "episodes": _digest(manifest.episodes),
        "arms": _digest(manifest.arm_hashes),
        "images": _digest({"scorer": manifest.images.scorer, "agent": manifest.images.agent}),
        "trials": _digest([t.model_dump(mode="json") for t in manifest.trials]),
    }
    out = []
    entries = manifest.marathons or {manifest.marathon: None}
    for key, value in recorded.items():
        if now.get(key) == value:
            continue
        if key == "marathon":
            changed = [n for n, m in plan.marathons.items()
                       if entries.get(n) is None or entries[n].hash != m.content_hash()]
            out.append(f"marathon(s) {', '.join(repr(n) for n in changed)} changed (files or gates)")
        elif key == "episodes":
            was = "; ".join(", ".join(e.episodes) for e in entries.values() if e) or ", ".join(manifest.episodes)
            now_ids = "; ".join(", ".join(m.episode_ids) for m in plan.marathons.values())
            out.append(f"episodes ({was} -> {now_ids})")
        elif key == "arms":
            names = sorted(n for n, a in plan.arms.items() if manifest.arm_hashes.get(n) != a.config_hash())
            names += sorted(set(manifest.arm_hashes) - set(plan.arms))
            out.append(f"arm(s) {', '.join(names) or '?'} changed")
        elif key == "images":
            for marathon, images in plan.images.items():
                entry = entries.get(marathon)
                old = entry.images if entry is not None else manifest.images
                for role in ("scorer", "agent"):
                    if getattr(images, role) != getattr(old, role):
                        out.append(f"the {role} image changed ({getattr(old, role)} -> "
                                   f"{getattr(images, role)})")
                for name, tag in images.agents.items():
                    if tag != old.agents.get(name):
                        out.append(f"the image of agent {name!r} changed "
                                   f"({old.agents.get(name)} -> {tag})")
        elif key == "trials":
            out.append(f"the planned trials ({len(manifest.trials)} recorded, {len(plan.trials)} now)")
        elif key == "config":
            out.append("config (the manifest's recorded config was changed)")
        elif key == "limits":
            out.append("sandbox or scorer limits (the harness changed)")
        elif key == "model_upstreams":
            out.append(f"model upstreams ({manifest.model_upstreams} -> {plan.model_upstreams})")
    return out


class ThreadBackend:
    """Where a run's trials run and how their records travel: the one seam between the driver
    and a cluster. This default runs each trial in a thread of the driver process, on this
    host's Docker engine, with the driver's model services, and its records go straight to the
    run's :class:`RecordStore`. :class:`benchmark.cluster.RayBackend` runs them as Ray tasks
    instead. Every backend plays a trial with :func:`run_trial`, so a change to trials is made
    once."""

    own_model_access = False
    """Whether the backend serves the trials' model access itself (each Ray node runs its own
    metering proxy) instead of the driver's :class:`ModelServices`."""

    def open(self, plan: Plan, console: Console) -> None:
        """Get ready to run ``plan``'s trials (nothing to do here).

        Raises:
            MarathonError: the backend cannot run them (e.g. no cluster at the address).
        """

    def concurrency(self, jobs: int, trials: int) -> int:
        """How many trials the driver hands over at once: ``jobs`` here."""
        return jobs

    def run(self, plan: Plan, keys: TrialKeys, start_index: int, run_dir: Path,
            record: Callable[[EpisodeRecords], None], services: ModelServices | None,
            stop: threading.Event, progress: LiveProgress, work: Path) -> None:
        """Run one trial from episode ``start_index`` to the end (see :func:`run_trial`)."""
        run_trial(plan, keys, start_index, run_dir, record, services, stop, progress, work)

    def halt(self) -> None:
        """The run is stopping: end the trials in flight (here the containers' removal does)."""

    def close(self) -> None:
        """Release what :meth:`open` took (idempotent)."""


def make_backend(config: RunConfig, ray: str | None = None) -> ThreadBackend:
    """The backend of a run: Ray at ``ray`` (a ``--ray`` flag), else at the config's
    ``[cluster] ray`` address, else local threads (``ray`` is imported only for a Ray run).

    Raises:
        MarathonError: Ray is asked for but not installed, or the address is malformed.
    """
    address = ray or (config.cluster.ray if config.cluster is not None else None)
    if address is None:
        return ThreadBackend()
    from benchmark.cluster import RayBackend
    return RayBackend(address)


def start_run(config: RunConfig, *, display: bool = True, console: Console | None = None,
              protocol: ProtocolRef | None = None) -> RunOutcome:
    """Validate ``config``, create the run directory and run every trial.

    Args:
        protocol: the protocol ``config`` was made from (recorded in the manifest), if any.

    Raises:
        MarathonError: bad input (nothing is written then), e.g. the run directory exists
            already or cannot be created.
    """
    console = console or Console(stderr=True, highlight=False)
    run_id = config.run_id or new_run_id()
    run_dir = config.out / run_id
    if run_dir.exists():
        raise MarathonError(f"--run-id: run directory {run_dir} already exists (use --resume)")
    nonce = new_nonce()
    plan = make_plan(config, run_id, nonce, log=lambda line: console.print(f"[dim]{line}[/]"))
    backend = make_backend(config)
    backend.open(plan, console)  # before anything is written: a bad cluster writes nothing
    try:
        return _start(config, plan, backend, run_dir, display, console, protocol)
    finally:
        backend.close()


def _start(config: RunConfig, plan: Plan, backend: ThreadBackend, run_dir: Path, display: bool,
           console: Console, protocol: ProtocolRef | None) -> RunOutcome:
    run_id, nonce = plan.run_id, plan.nonce
    git_commit, git_dirty = git_state()
    models = sorted({t.model for t in plan.trials})
    now = utcnow()
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir()
    except FileExistsError:
        raise MarathonError(f"--run-id: run directory {run_dir} already exists (another run "
                            "created it meanwhile; use another --run-id)") from None
    except OSError as e:
        raise MarathonError(f"--out: cannot create {run_dir}: {e.strerror}") from None
    components = plan_components(plan)
    entries = {n: MarathonEntry(hash=m.content_hash(), episodes=m.episode_ids, images=plan.images[n])
               for n, m in plan.marathons.items()}
    first = next(iter(entries))
    manifest = Manifest(
        run_id=run_id, nonce=nonce, git_commit=git_commit, git_dirty=git_dirty, config=config,
        marathon="+".join(entries), marathons=entries, protocol=protocol,
        marathon_hash=(entries[first].hash if len(entries) == 1
                       else suite_hash({n: e.hash for n, e in entries.items()})),
        episodes=entries[first].episodes,
        arm_hashes={n: a.config_hash() for n, a in plan.arms.items()}, images=plan.images[first],
        arm_settings={n: a.model_dump(mode="json", include={"controller", "feedback", "max_attempts",
                                                             "session_continuity", "budget",
                                                             "self_checks"})
                      for n, a in plan.arms.items()},
        agent_cli_versions=agent_versions(plan.config.agents),
        agent_hashes=agent_hashes(plan.config.agents),
        simulated=bool(simulated_models(models)), simulated_models=simulated_models(models),
        model_upstreams=plan.model_upstreams, trials=plan.trials, started_at=now,
        plan_hash=_digest(components), plan_components=components,
        sessions=[Session(started_at=now, resume=False, pid=os.getpid(), jobs=config.jobs,
                          host=host_info())],
    )
    try:
        lock = rundir.acquire(run_dir)
        write_manifest(run_dir, manifest)
    except OSError as e:
        shutil.rmtree(run_dir, ignore_errors=True)  # nothing of the run exists yet
        raise MarathonError(f"--out: cannot write the run directory: {describe(e)}") from None
    try:
        return _execute(plan, run_dir, manifest, config.jobs, display, console, backend)
    finally:
        os.close(lock)


def resume_run(run_dir: Path, *, jobs: int | None = None, ray: str | None = None,
               display: bool = True, console: Console | None = None) -> RunOutcome:
    """Finish an interrupted run: remove the dead session's containers, temp files and host
    temporary directories, then run every unfinished trial from its first unfinished episode.

    Args:
        run_dir: the run directory.
        jobs: trials run concurrently (default: as configured).
        ray: run the trials on the Ray cluster at this address (default: where the run's
            config says, ``[cluster] ray``; local threads when it says nothing).

    Raises:
        MarathonError: not a run directory, another driver holds it, a part of a finished
            episode is unreadable, the run directory is not writable, or the plan recomputed
            from the manifest's config differs from the one the run started with (the
            marathon, an arm, an image, the config...: results would mix).
    """
    console = console or Console(stderr=True, highlight=False)
    manifest = read_manifest(run_dir)
    if jobs is not None and jobs < 1:
        raise MarathonError(f"--jobs: must be at least 1, got {jobs}")
    try:
        lock = rundir.acquire(run_dir)
    except OSError as e:
        raise MarathonError(f"--resume: cannot lock the run directory: {describe(e)}") from None
    try:
        config = manifest.config
        legacy_nonce = manifest.nonce is None
        nonce = manifest.nonce or new_nonce()
        plan = make_plan(config, manifest.run_id, nonce, log=lambda line: console.print(f"[dim]{line}[/]"))
        differences = plan_differences(manifest, plan)
        if differences:
            raise MarathonError(f"{run_dir / MANIFEST}: the run's plan differs from the one it "
                                f"started with: {'; '.join(differences)}; refusing to resume "
                                "(results would mix)")
        finished = RecordStore(run_dir).finished()
        for t in plan.trials:  # a resumed trial restarts from its last finished episode's workspace
            n = _finished_prefix(plan, t, finished)
            last = plan.marathon_of(t).episode_ids[n - 1] if n else None
            if n and _episode_archive(run_dir, t.trial_id, last) is None:
                raise MarathonError(f"{_workspace_path(run_dir, t.trial_id, last)}: "
                                    "workspace archive of a finished episode is missing")
        containers, networks = remove_run_resources(manifest.run_id, manifest.nonce)
        if legacy_nonce:  # containers of an older harness carry the run id only
            c, n = remove_run_resources(manifest.run_id)
            containers, networks = containers + c, networks + n
        rundir.remove_host_tmp(nonce)
        jobs = jobs or config.jobs
        backend = make_backend(config, ray)
        backend.open(plan, console)
        try:
            remove_temp_files(run_dir)
            manifest.nonce = nonce
            if not manifest.plan_components:
                manifest.plan_components = plan_components(plan)
                manifest.plan_hash = _digest(manifest.plan_components)
            manifest.sessions.append(Session(started_at=utcnow(), resume=True, pid=os.getpid(),
                                             jobs=jobs, host=host_info(),
                                             leftovers_removed=containers + networks))
            manifest.status = "running"
            manifest.reason = None
            manifest.ended_at = None
            write_manifest(run_dir, manifest)
        except OSError as e:
            backend.close()
            raise MarathonError(f"--resume: cannot write the run directory: {describe(e)}") from None
        try:
            return _execute(plan, run_dir, manifest, jobs, display, console, backend)
        finally:
            backend.close()
    finally:
        os.close(lock)


def _finished_prefix(plan: Plan, keys: TrialKeys, finished: set[tuple[str, str]]) -> int:
    """How many of a trial's episodes, from the first, are finished (a trial restarts at the
    first unfinished one; a finished episode after a gap is played again)."""
    n = 0
    for e in plan.marathon_of(keys).episode_ids:
        if (keys.trial_id, e) not in finished:
            break
        n += 1
    return n


def _execute(plan: Plan, run_dir: Path, manifest: Manifest, jobs: int, display: bool,
             console: Console, backend: ThreadBackend | None = None) -> RunOutcome:
    """Run the unfinished trials of a run whose lock this process holds and whose manifest
    records this session; record how the session ended.

    A storage fault (:func:`benchmark.storage.storage_fault`: disk full, read-only file
    system, I/O error) in any trial stops the whole run like an interrupt: containers are
    removed, the space reserve is freed, and the manifest says ``failed`` with the reason
    (when the directory can still be written). Any other trial failure is written to
    ``errors.log`` and the other trials go on.
    """
    started = time.monotonic()
    backend = backend or ThreadBackend()
    # Concurrent trials share the cores between their scorings' pytest processes.
    plan = plan.model_copy(update={"scorer_limits": plan.scorer_limits.model_copy(
        update={"processes": scorer_processes(jobs, plan.scorer_limits)})})
    planned = [(t, plan.episodes_of(t)) for t in plan.trials]
    reserve = SpaceReserve(run_dir)
    reserve.allocate()
    stop = threading.Event()
    failures: list[str] = []
    tracebacks: list[str] = []
    fault: list[str] = []  # one-line reason of the first storage fault
    cleaners: list[threading.Thread] = []
    services = None
    work = rundir.make_host_tmp(plan.nonce, "work")
    store = None

    def halt(message: str | None = None) -> None:
        """Stop every trial; removing the containers ends in-flight agent runs at once."""
        if stop.is_set():
            return
        stop.set()
        if message:
            console.print(message)
        backend.halt()
        cleaner = threading.Thread(target=remove_run_resources, args=(plan.run_id, plan.nonce),
                                   kwargs={"networks": False}, daemon=True)
        cleaner.start()
        cleaners.append(cleaner)

    def on_signal(signum, frame):
        halt(f"[yellow]{signal.Signals(signum).name}: stopping; finished episodes are kept; "
             f"resume with `marathon run --resume {run_dir}`[/]")

    def on_fault(error: OSError) -> None:
        if not fault:  # unnamed faults come from writes into the run directory (e.g. a transcript)
            fault.append(describe(error) if error.filename else f"{run_dir}: {describe(error)}")
        halt(f"[red]storage fault: {fault[0]}: stopping the run[/]")

    def _watch(pending: set) -> None:
        """Wait for the trials; record each failure as it comes."""
        while pending:
            finished_now, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in finished_now:
                keys = futures[fut]
                err = fut.exception()
                if err is None:
                    continue
                storage = storage_fault(err)
                if storage is not None:
                    on_fault(storage)
                elif stop.is_set() or isinstance(err, Interrupted):
                    progress.update(keys.trial_id, phase="interrupted")
                    continue
                line = str(err).splitlines()[0] if str(err) else err.__class__.__name__
                if storage is None:
                    failures.append(f"{keys.trial_id}: {line}")
                progress.update(keys.trial_id, phase=f"failed: {line[:60]}")
                tracebacks.append(f"{utcnow().isoformat()} trial {keys.trial_id}\n"
                                  + "".join(traceback.format_exception(err)))
                if storage is None:
                    try:
                        _append_errors(run_dir, tracebacks)
                    except OSError as e:
                        if storage_fault(e) is None:
                            raise
                        on_fault(e)

    in_main = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        store = RecordStore(run_dir)
        store.consolidate(planned)
        finished = store.finished()
        done = {t.trial_id: _finished_prefix(plan, t, finished) for t in plan.trials}
        last_scores = {}
        for row in store.episode_rows():
            if row.episode_index == done.get(row.trial_id):
                last_scores[row.trial_id] = row.score
        todo = [t for t in plan.trials if done[t.trial_id] < plan.episodes_of(t)]
        if not backend.own_model_access and any(
                get_agent(t.agent).uses_model or plan.arms[t.arm].self_checks for t in todo):
            services = ModelServices.start(plan.nonce, run_dir,
                                           {n: m.root for n, m in plan.marathons.items()}, todo,
                                           plan.config.providers)
        # An operator's terminal is not shared with a live display.
        live = display and not any(controller_class(a.controller).uses_terminal
                                   for a in plan.arms.values())
        progress = LiveProgress(plan.trials, {t.trial_id: plan.episodes_of(t) for t in plan.trials},
                                done, last_scores, console=console, live=live)
        record = lambda records: store.write_episode(records, planned)  # noqa: E731
        with progress, ThreadPoolExecutor(max_workers=max(1, backend.concurrency(jobs, len(todo))),
                                          thread_name_prefix="trial") as pool:
            futures = {
                pool.submit(backend.run, plan, keys, done[keys.trial_id], run_dir, record,
                            services, stop, progress, work): keys
                for keys in todo
            }
            pending = set(futures)
            try:
                _watch(pending)
            except BaseException:
                halt()  # the trials stop before the pool's exit waits for them
                raise
    except Exception as err:  # the driver itself failed: record it like a trial failure
        storage = storage_fault(err)
        if storage is not None:
            on_fault(storage)
        else:
            halt()
            failures.append(f"driver: {str(err).splitlines()[0] if str(err) else err.__class__.__name__}")
        tracebacks.append(f"{utcnow().isoformat()} driver\n" + "".join(traceback.format_exception(err)))
    finally:
        if in_main:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        for cleaner in cleaners:
            cleaner.join()
        try:
            remove_run_resources(plan.run_id, plan.nonce)
        except docker.errors.DockerException as err:  # the engine is gone: a resume cleans up
            tracebacks.append(f"{utcnow().isoformat()} driver (clean-up)\n"
                              + "".join(traceback.format_exception(err)))
        if services is not None:
            services.stop()
        shutil.rmtree(work, ignore_errors=True)
        if store is not None and not fault:
            try:
                store.consolidate(planned)
            except OSError as e:
                if storage_fault(e) is None:
                    raise
                on_fault(e)
        finished = store.finished() if store is not None else set()
        complete = sum(_finished_prefix(plan, t, finished) == plan.episodes_of(t) for t in plan.trials)
        if fault:
            status, reason = "failed", f"storage fault: {fault[0]}"
            reserve.release()  # room for the manifest and errors.log on a full disk
        elif complete == len(plan.trials):
            status, reason = "complete", None
        elif failures:
            status = "failed"
            reason = (f"{len(failures)} trial(s) failed (tracebacks in errors.log)"
                      if not failures[-1].startswith("driver: ") else failures[-1])
        else:
            status, reason = "interrupted", None
        now = utcnow()
        manifest.sessions[-1].ended_at = now
        manifest.sessions[-1].status = status
        manifest.sessions[-1].reason = reason
        manifest.status = status
        manifest.reason = reason
        manifest.ended_at = now
        recorded = True
        try:
            write_manifest(run_dir, manifest)
        except OSError as e:
            if storage_fault(e) is None:
                raise
            recorded = False
        try:
            _append_errors(run_dir, tracebacks)
        except OSError:
            pass  # written if it can be: the manifest holds the reason
        reserve.release()
    return RunOutcome(run_dir=run_dir, status=status, trials_complete=complete,
                      trials_total=len(plan.trials), failures=failures, reason=reason,
                      recorded=recorded, wall_s=time.monotonic() - started)


def _append_errors(run_dir: Path, tracebacks: list[str]) -> None:
    """Append the pending tracebacks to ``errors.log`` (and forget them once written)."""
    if not tracebacks:
        return
    path = run_dir / "errors.log"
    with naming(path), open(path, "a", encoding="utf-8") as log:
        log.write("".join(tracebacks))
        log.flush()
        os.fsync(log.fileno())
    tracebacks.clear()


def _workspace_path(run_dir: Path, trial_id: str, episode: str) -> Path:
    return run_dir / "workspaces" / trial_id / f"{episode}.tar"


def _episode_archive(run_dir: Path, trial_id: str, episode: str) -> Path | None:
    """The archive a finished episode's workspace was kept in: ``<episode>.tar`` (the whole
    ``/workspace``), or ``<episode>.git.tar`` (its history only, when the workspace was over
    the archive limits); ``None`` when neither exists."""
    full = _workspace_path(run_dir, trial_id, episode)
    history = full.with_name(f"{episode}.git.tar")
    return full if full.is_file() else history if history.is_file() else None


class _AttemptMeta(BaseModel):
    commit: str | None
    snapshot_sha256: str
    """SHA-256 of the scored workspace archive; empty when it was over the archive limits."""
    scoring_s: float
    archive: Path | None
    """The attempt's workspace archive on the host (in the run's work directory); ``None``
    when the workspace was over the archive limits."""
    scorings: int
    rescore_reasons: list[str]


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
    """Every check's verdict (``passed`` or ``failed``)."""
    scorings: int = 1
    """How many scorings of the snapshot it took to get a verdict on every check (1: the
    first; each earlier one had a check without a verdict)."""
    rescore_reasons: list[str] = []
    """Why each earlier scoring was not used, one line each."""


class TrialRunner:
    """Plays one trial's episodes in its sandbox (implements the controllers' ``TrialContext``)."""

    def __init__(self, plan: Plan, keys: TrialKeys, sandbox: Sandbox, agent: Agent, run_dir: Path,
                 stop: threading.Event, progress: LiveProgress, work: Path,
                 token: str | None = None):
        self.plan, self.keys, self.sandbox, self.agent = plan, keys, sandbox, agent
        self.token = token
        """The trial's proxy token (``None`` without a channel): ``marathon-check`` presents it."""
        self.arm = plan.arms[keys.arm]
        self.run_dir, self.stop, self.progress = run_dir, stop, progress
        self.work = work / keys.trial_id
        """The trial's host work directory (attempt archives, snapshots), in the run's."""
        self.work.mkdir(parents=True, exist_ok=True)
        self.marathon = plan.marathon_of(keys)
        """The marathon the trial plays."""
        self.images = plan.images_of(keys)
        """The images the trial runs and is scored in."""
        self.controller = get_controller(self.arm)
        self._meta: dict[int, _AttemptMeta] = {}
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
        write_bytes(art / "prompt.md", prompt)
        self.progress.update(self.keys.trial_id, episode=episode.id, attempt=attempt, phase="agent")
        with self._check_lock:
            self._current = (episode, attempt)
        check_env = {"MARATHON_TOKEN": self.token} if self.arm.self_checks and self.token else {}
        return AttemptContext(trial_id=self.keys.trial_id, episode=episode, attempt=attempt,
                              arm=self.arm, model=self.keys.model, effort=self.keys.effort,
                              time_limit_s=self.plan.config.time_limit_s,
                              transcript=art / "transcript", check_env=check_env)

    def _score_workspace(self, episode: EpisodeSpec, archive: Path) -> tuple[Scoring, object]:
        """Stream the workspace as it stands to ``archive`` (within the sandbox's archive
        limits) and score it to a verdict on every check (:func:`~benchmark.scorer.score_snapshot`:
        re-scored while a check has no verdict) against every gate active after ``episode``,
        with the trial's seed: the one scoring path of attempts and self-checks. A workspace
        over the limits is not scored: every active check is ``failed`` with the reason (the
        agent's doing).

        Returns:
            ``(Scoring, ArchiveInfo or None when over the limits)``.

        Raises:
            ScoringFailure: checks still without a verdict after every re-score.
        """
        try:
            info = self.sandbox.archive(archive)
        except ArchiveOverLimit as e:
            return Scoring(scorings=1, checks=[
                CheckResult(**c.model_dump(), outcome=Outcome.failed, duration_s=0.0,
                            message=f"workspace not scored: {e}")
                for c in list_checks(self.marathon, self.marathon.active_gates(episode.id))]), None
        snapshot = self.work / "snapshot"
        shutil.rmtree(snapshot, ignore_errors=True)
        try:
            extract_snapshot(archive, snapshot)
            scoring = score_snapshot(
                snapshot, self.marathon, episode.id, self.keys.seed,
                image=self.images.scorer, limits=self.plan.scorer_limits,
                labels={**run_labels(self.plan.run_id, self.plan.nonce), TRIAL_LABEL: self.keys.trial_id},
                tmp_dir=self.work)
        finally:
            shutil.rmtree(snapshot, ignore_errors=True)
        return scoring, info

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
                archive = self.work / f"{episode.id}.self-check.tar"
                try:
                    checks = self._score_workspace(episode, archive)[0].checks
                finally:
                    archive.unlink(missing_ok=True)
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
        """Commit the workspace, stream its archive to the trial's work directory (within the
        sandbox's archive limits), and score the snapshot, re-scoring while a check lacks a
        verdict. A workspace over the limits is not scored: every active check is ``failed``
        with the reason (the agent's doing, so it counts against the attempt).

        Raises:
            Interrupted: the run is stopping.
            ScoringFailure: a check still had no verdict after the re-scores: the trial stops.
        """
        if self.stop.is_set():
            raise Interrupted()
        self.progress.update(self.keys.trial_id, phase="scoring")
        with self._check_lock:  # waits for a self-check in flight; later ones are refused
            self._current = None
        t0 = time.monotonic()
        self.sandbox.kill_agent_processes()
        commit = self.sandbox.commit(f"marathon: {episode.id} attempt {attempt}")
        archive = self.work / f"{episode.id}.{attempt}.tar"
        scoring, info = self._score_workspace(episode, archive)
        checks = scoring.checks
        art = self._artifacts(episode.id, attempt)
        self.sandbox.diff(self._head, commit, art / "workspace.diff")
        write_bytes(art / "score.json", ScoreFile(
            trial_id=self.keys.trial_id, episode=episode.id, attempt=attempt, seed=self.keys.seed,
            commit=commit, score=gate_score(checks), gates=gate_verdicts(checks), checks=checks,
            scorings=scoring.scorings, rescore_reasons=scoring.rescore_reasons,
        ).model_dump_json(indent=2) + "\n")
        for old in self._meta.values():  # only the last attempt's archive is kept
            if old.archive is not None:
                old.archive.unlink(missing_ok=True)
        self._meta[attempt] = _AttemptMeta(commit=commit, snapshot_sha256=info.sha256 if info else "",
                                           scoring_s=time.monotonic() - t0,
                                           archive=info.path if info else None,
                                           scorings=scoring.scorings,
                                           rescore_reasons=scoring.rescore_reasons)
        self._head = commit or self._head
        return checks

    def _keep_workspace(self, episode: str, final: _AttemptMeta) -> None:
        """Keep the workspace the episode ended on in the run directory, for a resume: the
        final attempt's archive (``<episode>.tar``), or, when it was over the archive limits,
        an archive of ``/workspace/.git`` alone (``<episode>.git.tar``, also within the
        limits); the other form is removed.

        Raises:
            MarathonError: even the history is over the limits (the trial fails: it could not
                be resumed from this episode).
        """
        full = _workspace_path(self.run_dir, self.keys.trial_id, episode)
        history = full.with_name(f"{episode}.git.tar")
        if final.archive is not None:
            copy_file(final.archive, full)
            history.unlink(missing_ok=True)
            return
        tmp = self.work / f"{episode}.git.tar"
        try:
            self.sandbox.archive(tmp, f"{WORKSPACE}/.git")
        except ArchiveOverLimit as e:
            raise MarathonError(f"trial {self.keys.trial_id}: the workspace after {episode} "
                                f"cannot be kept for a resume, even its history alone: {e}") from None
        copy_file(tmp, history)
        tmp.unlink(missing_ok=True)
        full.unlink(missing_ok=True)

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
            self.sandbox.put_directory(self.marathon.starter)
            self.agent.prepare(self.sandbox, self.arm)
            self._head = self.sandbox.init_repo()
        else:
            prev = self.marathon.episode_ids[start_index - 1]
            archive = _episode_archive(self.run_dir, self.keys.trial_id, prev)
            if archive is None:
                raise MarathonError(f"{_workspace_path(self.run_dir, self.keys.trial_id, prev)}: "
                                    "workspace archive of a finished episode is missing")
            self.sandbox.restore(archive)
            self._head = self.sandbox.head()

    def begin_episode(self, index: int) -> None:
        """Set up the workspace an episode starts from. ``cumulative``: as the previous episode
        left it (nothing to do). ``isolated``, from the second episode on: the files of the
        previous episode's reference solution plus the arm's material replace the workspace's
        (its history is kept, so a governed rollback still finds its commits), committed as
        ``marathon: isolated start of <episode> (reference <previous>)``."""
        if self.keys.mode != "isolated" or index == 0:
            return
        prev, episode = self.marathon.episodes[index - 1], self.marathon.episodes[index]
        self.sandbox.clear_workspace()
        self.sandbox.put_directory(prev.reference)
        self.agent.prepare(self.sandbox, self.arm)
        self._head = (self.sandbox.commit(f"marathon: isolated start of {episode.id} "
                                          f"(reference {prev.id})") or self._head)

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
        attempts = self.controller.run(self, episode, self.marathon.brief_text(episode.id),
                                       self.agent, lambda n, r: self._score(episode, n, r))
        self._keep_workspace(episode.id, self._meta[attempts[-1].number])
        keys = self.keys.model_dump()
        gate_from = {g.name: g.active_from for g in self.marathon.gate}
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
                scorings=meta.scorings, rescore_reasons=" | ".join(meta.rescore_reasons),
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
                              self_checks=list(self._self_checks),
                              steering=self.controller.steering_rows(episode.id))


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


def run_trial(plan: Plan, keys: TrialKeys, start_index: int, run_dir: Path,
              record: Callable[[EpisodeRecords], None], services: ModelServices | None,
              stop: threading.Event, progress: LiveProgress, work: Path) -> None:
    """Run one trial from episode ``start_index`` (0-based) to the end, handing each finished
    episode's records to ``record`` (the local backend writes them to the run's
    :class:`RecordStore`; a Ray node ships them, with the files the episode wrote under
    ``run_dir``, to the driver). Every backend runs trials through this one function.

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
        sandbox = Sandbox.create(run_id=plan.run_id, nonce=plan.nonce, trial_id=keys.trial_id,
                                 image=plan.images_of(keys).for_agent(agent.name),
                                 proxy_dir=endpoint.socket_dir if endpoint is not None else None,
                                 limits=plan.sandbox_limits)
    except BaseException:
        if endpoint is not None:
            services.close_trial(endpoint)
        raise
    try:
        token = endpoint.token.get_secret_value() if endpoint is not None else None
        runner = TrialRunner(plan, keys, sandbox, agent, run_dir, stop, progress, work, token=token)
        if arm.self_checks and endpoint is not None:
            services.proxy.set_self_check(token, runner.self_check)
        runner.start(start_index)
        for index in range(start_index, plan.episodes_of(keys)):
            episode = plan.marathon_of(keys).episodes[index]
            runner.begin_episode(index)
            records = runner.run_episode(index, episode)  # complete and valid even if stopping now
            record(records)
            progress.episode_done(keys.trial_id, episode.id, records.episode.score,
                                  records.episode.attempts)
    except Exception:
        if stop.is_set():
            raise Interrupted() from None
        raise
    finally:
        sandbox.remove()
        shutil.rmtree(work / keys.trial_id, ignore_errors=True)
        if endpoint is not None:
            services.close_trial(endpoint)
