"""The run manifest: ``<run dir>/manifest.json``, everything needed to know what a run ran.

It records the full configuration, the harness version and git commit, each marathon's content
hash, episodes and images (:class:`MarathonEntry`), each arm's config hash, the image tags and ids, the agent CLI versions, the host, the
planned trials, and the start and end of every driver session (the first and each resume).
Runs with simulated models (names starting ``scripted/``) are flagged. The file is rewritten
atomically (temp file + ``os.replace``) whenever it changes.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from benchmark import __version__
from benchmark.docker_env import client
from benchmark.errors import MarathonError
from benchmark.experiment import SIMULATED_PREFIX, RunConfig
from benchmark.images import ImageSet
from benchmark.paths import PROJECT_ROOT
from benchmark.records import SCHEMA_VERSION, TrialKeys
from benchmark.storage import write_bytes

MANIFEST = "manifest.json"

#: State of a run or of one driver session.
RunStatus = Literal["running", "complete", "interrupted", "failed"]


def utcnow() -> datetime:
    """The current time, UTC, timezone-aware."""
    return datetime.now(timezone.utc)


class HostInfo(BaseModel):
    """The machine a driver session ran on."""

    hostname: str
    """Host name."""
    platform: str
    """``platform.platform()``, e.g. ``Linux-6.1.0-x86_64-with-glibc2.36``."""
    python: str
    """Python version of the driver."""
    cpus: int
    """Logical CPUs."""
    memory_bytes: int | None
    """Physical memory in bytes, when known."""
    docker_server_version: str
    """Version of the Docker engine."""


class Session(BaseModel):
    """One driver process working on the run: the first start or a resume."""

    started_at: datetime
    """Start of the session (UTC)."""
    ended_at: datetime | None = None
    """End of the session (UTC); null while running or if the driver was killed."""
    resume: bool
    """Whether the session resumed an earlier one."""
    pid: int
    """Process id of the driver."""
    jobs: int
    """Trials run concurrently in this session."""
    status: RunStatus = "running"
    """How the session ended; ``running`` if it is running or was killed."""
    host: HostInfo
    """The machine."""
    leftovers_removed: int = 0
    """Containers and networks of a dead session removed at the start of this one."""
    reason: str | None = None
    """Why the session ended ``failed``: a storage fault (``<file>: No space left on
    device``) or the number of trials that failed (tracebacks in ``errors.log``); null
    otherwise."""


class MarathonEntry(BaseModel):
    """One marathon of a run, as the run played it."""

    hash: str
    """SHA-256 over the marathon's files and gates (:meth:`Marathon.content_hash`)."""
    episodes: list[str]
    """Episode ids played, in order."""
    images: ImageSet
    """Images its trials ran and were scored in (derived with its ``[runtime]``, if any)."""


class ProtocolRef(BaseModel):
    """The pre-registered protocol a run was started from (``marathon run --protocol``)."""

    name: str
    """The protocol's ``name``."""
    path: str
    """The protocol file as given."""
    sha256: str
    """SHA-256 of the protocol file's bytes (:func:`benchmark.protocol.protocol_hash`)."""


class Manifest(BaseModel):
    """The contents of ``manifest.json``."""

    schema_version: int = SCHEMA_VERSION
    """Version of the results layout (see docs/results-schema.md)."""
    run_id: str
    """Id of the run, also the run directory's name."""
    nonce: str | None = None
    """12 random hex digits unique to this run directory (:mod:`benchmark.rundir`): in the
    names and labels of the run's containers and of its host temporary directories, so two
    runs sharing a run id never touch each other's resources. Null in manifests of older
    harness versions (a resume draws one)."""
    harness_version: str = __version__
    """Version of the ``marathon-bench`` package."""
    git_commit: str | None
    """Commit of the harness checkout; null outside a git checkout."""
    git_dirty: bool | None
    """Whether the checkout had uncommitted changes."""
    config: RunConfig
    """The full run configuration."""
    marathon: str
    """Marathon name; in a run of several marathons, their names joined by ``+`` (each in
    :attr:`marathons`)."""
    marathon_hash: str
    """SHA-256 over the marathon's files and gates (:meth:`Marathon.content_hash`); in a run of
    several marathons, SHA-256 over their names and hashes."""
    episodes: list[str]
    """Episode ids, in order (of the first marathon in a run of several)."""
    marathons: dict[str, MarathonEntry] = {}
    """Marathon name -> content hash, episodes and images, for every marathon of the run
    (empty in manifests of older harness versions: then :attr:`marathon` alone)."""
    protocol: ProtocolRef | None = None
    """The protocol the run was started from; null when none."""
    arm_hashes: dict[str, str]
    """Arm name -> SHA-256 over its TOML, instructions and skill (:meth:`Arm.config_hash`)."""
    arm_settings: dict[str, dict] = {}
    """Arm name -> its settings: controller, feedback level (``names``/``messages``),
    max_attempts, session_continuity, budget (tokens, USD; null when none)."""
    images: ImageSet
    """Tags and ids of the harness images (of the first marathon in a run of several; each
    marathon's in :attr:`marathons`)."""
    agent_cli_versions: dict[str, str]
    """Declared agent -> the version its ``agents/NAME.toml`` installs (e.g. ``claude-code``:
    ``2.1.330``)."""
    agent_hashes: dict[str, str] = {}
    """Declared agent -> SHA-256 over its TOML and the files shipped beside it (their image
    tags, in ``images.agents``, change with them)."""
    simulated: bool
    """Whether any model of the run is simulated (name starts with ``scripted/``)."""
    simulated_models: list[str]
    """The simulated models."""
    model_upstreams: dict[str, str] = {}
    """Model -> where its calls went: ``scripted model server (simulation)`` or the vendor API's
    base URL (empty when no agent uses a model)."""
    trials: list[TrialKeys]
    """Every planned trial."""
    started_at: datetime
    """Start of the first session (UTC)."""
    ended_at: datetime | None = None
    """End of the last session, when it ended (UTC)."""
    status: RunStatus = "running"
    """``complete`` once every trial finished every episode; ``running`` also when the
    driver was killed (``marathon status`` tells a live driver from a dead one by the run's
    lock)."""
    reason: str | None = None
    """Why the last session ended ``failed`` (see :attr:`Session.reason`); null otherwise."""
    plan_hash: str | None = None
    """SHA-256 over :attr:`plan_components`: the resolved plan the run started with. A resume
    recomputes it from the recorded config and refuses to go on when it differs."""
    plan_components: dict[str, str] = {}
    """Component of the plan (``config``, ``marathon``, ``episodes``, ``arms``, ``images``,
    ``trials``, ``limits``, ``model_upstreams``) -> SHA-256 of its canonical JSON, so a refused
    resume can say what differs."""
    sessions: list[Session]
    """Every driver session, in order."""


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the harness checkout, or (None, None) when it is not a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(["git", "status", "--porcelain"], cwd=PROJECT_ROOT,
                                capture_output=True, text=True, timeout=30)
        return commit.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def host_info() -> HostInfo:
    """Facts about this machine and its Docker engine."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = None
    return HostInfo(
        hostname=socket.gethostname(), platform=platform.platform(),
        python=platform.python_version(), cpus=os.cpu_count() or 1, memory_bytes=memory,
        docker_server_version=str(client().version().get("Version", "unknown")),
    )


def simulated_models(models: list[str]) -> list[str]:
    """The models of a list that are simulated (``scripted/...``)."""
    return [m for m in models if m.startswith(SIMULATED_PREFIX)]


def write_manifest(run_dir: Path, manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically.

    Raises:
        OSError: naming the file (e.g. the disk is full; the old manifest is kept).
    """
    write_bytes(run_dir / MANIFEST, manifest.model_dump_json(indent=2) + "\n")


def read_manifest(run_dir: Path) -> Manifest:
    """Read a run directory's manifest.

    Raises:
        MarathonError: the directory or its manifest is missing or unreadable.
    """
    path = run_dir / MANIFEST
    if not path.is_file():
        raise MarathonError(f"{run_dir}: not a run directory ({MANIFEST} not found)")
    try:
        return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise MarathonError(f"{path}: unreadable manifest: {str(e).splitlines()[0]}") from None
