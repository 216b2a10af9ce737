"""The scorer: run a marathon's active gates against a workspace snapshot, in a sealed container.

:func:`score` returns one :class:`CheckResult` per check of every gate active after an episode.
The checks run in a fresh container of the scorer image: network disabled, non-root, memory
and process limits, the gates directory mounted read-only, the snapshot copied in, scratch
space (``/tmp``) in memory, the checks shared out between N pytest processes
(``marathon_parallel``, installed in the image). Nothing from the snapshot reaches the test
runner:

- pytest runs as ``python3 -I`` (no ``PYTHON*`` variables, no user site, no current directory
  on ``sys.path``), so a ``sitecustomize``/``usercustomize`` or ``.pth`` file in the snapshot is
  never imported by the runner;
- its configuration is the scorer image's own ``pytest.ini`` passed with ``-c``, the rootdir and
  conftest cut-off are the gates directory, and the snapshot lives outside it, so no
  ``conftest.py``, ``pytest.ini``, ``tox.ini``, ``setup.cfg`` or ``pyproject.toml`` of the
  snapshot is read;
- outcomes come from the JUnit XML reports (one per pytest process), matched against the list
  of checks read from the gate modules' source on the host; a check missing from every report,
  or no report at all, is ``error``, never ``passed``.

The product under test runs as a subprocess of the checks (``python3 -m <package>`` in a copy
of the snapshot). It is trusted not to attack the runner process itself (same uid); the threat
model is documented in ``docs/scorer.md``.
"""

from __future__ import annotations

import ast
import functools
import io
import os
import tarfile
import tempfile
import threading
import xml.etree.ElementTree as ET
from enum import Enum
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import BaseModel, Field

from benchmark.docker_env import LABEL, client
from benchmark.errors import MarathonError
from benchmark.marathon import GateSpec, Marathon

#: Tags a check may carry (a pytest marker on the check function).
Tag = Literal["genuine", "contract"]

#: Directory of the snapshot inside the scorer container.
SNAPSHOT_DIR = "/snapshot"
#: Put into the scorer container once the snapshot is complete; no check runs before it exists.
READY_PATH = "/snapshot.ready"
#: Mount point of the gates directory inside the scorer container.
GATES_DIR = "/gates"
#: Directory of the JUnit XML reports (one per pytest process) inside the scorer container.
REPORT_DIR = "/report"


class Outcome(str, Enum):
    """Result of one check."""

    passed = "passed"
    """The check ran and its assertions held."""
    failed = "failed"
    """The check ran and an assertion failed: the product does not meet the gate."""
    error = "error"
    """The check could not give a verdict: scorer crash, timeout, missing report or check."""


class CheckSpec(BaseModel):
    """A check as declared in a gate module: ``test_*`` function with one tag marker."""

    gate: str
    """Gate name (the module ``test_<gate>.py``)."""
    check: str
    """Check name: the test function's name."""
    tag: Tag | None
    """``genuine`` (any competent implementation must pass) or ``contract`` (brief-only detail);
    ``None`` if the function carries neither marker (the gate conftest then errors it)."""


class CheckResult(CheckSpec):
    """The scorer's verdict on one check of one snapshot."""

    outcome: Outcome
    """passed, failed or error."""
    message: str = ""
    """First line(s) of the failure or error, at most 500 characters; empty when passed."""
    duration_s: float = Field(ge=0)
    """Wall time of the check in seconds, as pytest measured it (0 when it did not run)."""


class ScorerLimits(BaseModel):
    """Resource limits of one scoring container."""

    check_timeout_s: float = 60.0
    """Per-check time limit in seconds (pytest-timeout); a check over it is ``error``."""
    total_timeout_s: float = 300.0
    """Limit for the whole scoring in seconds; past it the container is killed and every check
    without a verdict is ``error``."""
    processes: int = Field(default=2, ge=1)
    """pytest processes running the checks side by side (``marathon_parallel`` in the scorer
    image: each takes the next check nobody has claimed). Checks are independent (own temp
    directories and inputs), so outcomes do not depend on it; 2 nearly halves the wall time of
    the ledger gates on a 2-core machine."""
    mem_limit: str = "1g"
    """Container memory limit (Docker syntax); the ``/tmp`` tmpfs counts against it."""
    tmp_size: str = "512m"
    """Size of the tmpfs mounted at ``/tmp`` (Docker syntax), where the checks keep their copies
    of the snapshot and the product's state directories. In memory rather than in the
    container's overlay layer: the checks create thousands of small files, which on the overlay
    made scoring about 0.5 s slower and far more variable, and the container slow to remove."""
    pids_limit: int = 256
    """Maximum number of processes in the container."""
    nano_cpus: int = 2_000_000_000
    """CPU quota in units of 1e-9 CPUs (2 CPUs)."""


#: ``ast.parse`` is not thread-safe in CPython 3.11 ("AST constructor recursion depth
#: mismatch" when trials score concurrently), so gate modules are parsed under a lock, once.
_PARSE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=256)
def _module_checks(path: Path, gate: str, mtime_ns: int) -> tuple[CheckSpec, ...]:
    with _PARSE_LOCK:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except SyntaxError as e:
            raise MarathonError(f"{path}: line {e.lineno}: {e.msg}") from None
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            tags = {
                d.attr for d in node.decorator_list
                if isinstance(d, ast.Attribute) and d.attr in ("genuine", "contract")
            }
            tag = tags.pop() if len(tags) == 1 else None
            out.append(CheckSpec(gate=gate, check=node.name, tag=tag))
    return tuple(out)


def scorer_processes(concurrent_scorings: int, limits: ScorerLimits, cores: int | None = None) -> int:
    """pytest processes per scoring when ``concurrent_scorings`` run at once.

    Returns ``cores // concurrent_scorings``, capped at the CPUs one scoring container may use
    (``limits.nano_cpus``), at least 1: more processes than CPUs only add start-up time.
    ``cores`` defaults to ``os.cpu_count()``. Outcomes never depend on it.
    """
    share = (cores or os.cpu_count() or 1) // max(1, concurrent_scorings)
    return max(1, min(share, limits.nano_cpus // 1_000_000_000))


def list_checks(marathon: Marathon, gates: list[GateSpec]) -> list[CheckSpec]:
    """Read the checks of the given gates from their modules' source (no import, no execution).

    Returns module-level ``test_*`` functions in source order with their tag marker. Safe to
    call from several threads; a module is parsed again only when it changes.

    Raises:
        MarathonError: a gate module does not parse.
    """
    out: list[CheckSpec] = []
    for gate in gates:
        path = marathon.gates / gate.filename
        out.extend(_module_checks(path, gate.name, path.stat().st_mtime_ns))
    return out


def _snapshot_tar(src: Path, buf: BinaryIO) -> None:
    """Write to ``buf`` a tar of ``src`` as :data:`SNAPSHOT_DIR` (without ``.git`` and
    ``__pycache__``, owned by root, world-readable), ending with the empty file
    :data:`READY_PATH`. (The caller gives a temp file, so a large snapshot never sits in the
    driver's memory.)

    Docker extracts the members in order, so READY_PATH exists only once the whole snapshot does.
    """

    def scrub(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if ".git" in parts or "__pycache__" in parts:
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
        return info

    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(src), arcname=SNAPSHOT_DIR.lstrip("/"), filter=scrub)
        tar.addfile(tarfile.TarInfo(READY_PATH.lstrip("/")), io.BytesIO(b""))


#: A JUnit report larger than this (bytes) is not read: its checks count as unreported.
MAX_REPORT_BYTES = 64 * 1024 * 1024


def _read_reports(report_dir: Path) -> list[bytes]:
    """The JUnit XML reports the pytest processes wrote (``junit-K.xml``), empty if none.

    Read on the host from the bind-mounted directory, after the container has stopped. Only
    regular files are read: a symbolic link made in the container would otherwise be followed
    on the host. A file over :data:`MAX_REPORT_BYTES` is skipped.
    """
    reports = []
    for path in sorted(report_dir.glob("junit-*.xml")):
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_REPORT_BYTES:
            continue
        reports.append(path.read_bytes())
    return reports


def _first_lines(text: str, limit: int = 500) -> str:
    text = " ".join(line.strip() for line in text.strip().splitlines()[:3])
    return text[:limit]


def parse_junit(reports: list[bytes], checks: list[CheckSpec],
                missing: str = "check not reported by the runner") -> list[CheckResult]:
    """Match JUnit XML reports (pytest, xunit1; one per pytest process) to the declared checks.

    A declared check absent from every report is ``error`` with message ``missing``; a skipped
    check is ``error`` too (gates never skip). A report that is not well-formed XML (its process
    was killed while writing it) is ignored, so its checks are missing.
    """
    cases = []
    for xml in reports:
        try:
            cases.extend(ET.fromstring(xml).iter("testcase"))
        except ET.ParseError:
            continue
    seen: dict[tuple[str, str], CheckResult] = {}
    for case in cases:
        gate = case.get("classname", "").rsplit(".", 1)[-1].removeprefix("test_")
        name = case.get("name", "")
        duration = float(case.get("time") or 0.0)
        outcome, message = Outcome.passed, ""
        for child in case:
            if child.tag == "failure":
                message = child.get("message") or child.text or "failed"
                # pytest-timeout reports the scorer's per-check limit as a failure: no verdict.
                timed_out = message.startswith("Failed: Timeout")
                outcome = Outcome.error if timed_out else Outcome.failed
            elif child.tag == "error":
                outcome, message = Outcome.error, child.get("message") or child.text or "error"
            elif child.tag == "skipped":
                outcome, message = Outcome.error, "skipped: " + (child.get("message") or "")
            else:
                continue
            break
        seen[(gate, name)] = CheckResult(
            gate=gate, check=name, tag=None, outcome=outcome,
            message=_first_lines(message), duration_s=duration,
        )
    results = []
    for spec in checks:
        got = seen.get((spec.gate, spec.check))
        if got is None:
            results.append(CheckResult(**spec.model_dump(), outcome=Outcome.error,
                                       message=missing, duration_s=0.0))
        else:
            results.append(got.model_copy(update={"tag": spec.tag}))
    return results


def score(snapshot: Path, marathon: Marathon, through_episode: str, seed: int, *,
          image: str, limits: ScorerLimits | None = None,
          labels: dict[str, str] | None = None, tmp_dir: Path | None = None) -> list[CheckResult]:
    """Score a snapshot against every gate active after ``through_episode``.

    Args:
        snapshot: directory holding the workspace as the agent left it (``.git`` is ignored).
        marathon: the loaded marathon.
        through_episode: episode id; its gates and every earlier episode's gates are scored.
        seed: the trial's seed, passed to the checks as ``MARATHON_SEED`` to generate inputs.
        image: tag of the scorer image (see :func:`benchmark.images.build_images`).
        limits: container limits and timeouts; defaults to :class:`ScorerLimits()`.
        labels: extra Docker labels for the scoring container (the driver passes the run id
            under :data:`~benchmark.docker_env.LABEL` so a dead run's leftovers are found).
        tmp_dir: host directory for the scoring's private temporary directory (the driver
            gives its run's, so a killed run's leftovers are found); default: the system's.

    Returns:
        One :class:`CheckResult` per declared check, in gate then source order.

    Raises:
        MarathonError: the snapshot is not a directory, or Docker is unreachable. A crash or
            timeout of the scoring itself is not raised: it yields ``error`` outcomes.
    """
    limits = limits or ScorerLimits()
    if not snapshot.is_dir():
        raise MarathonError(f"snapshot {snapshot} is not a directory")
    gates = marathon.active_gates(through_episode)
    checks = list_checks(marathon, gates)
    command = [
        "python3", "-I", "-m", "marathon_parallel", str(limits.processes), REPORT_DIR, "--",
        "-c", "/opt/marathon/pytest.ini",
        f"--rootdir={GATES_DIR}", f"--confcutdir={GATES_DIR}", "-p", "no:cacheprovider",
        "-q", "--no-header", "-rN", f"--timeout={limits.check_timeout_s:g}", f"--wait-for={READY_PATH}",
        *(f"{GATES_DIR}/{g.filename}" for g in gates),
    ]
    docker_client = client()
    # The reports come back through a bind-mounted host directory (reading them with
    # get_archive cost ~0.1 s); it is world-writable for the container's uid, inside a private
    # (0700) directory no other host user can enter.
    with tempfile.TemporaryDirectory(prefix="marathon-score-", dir=tmp_dir,
                                     ignore_cleanup_errors=True) as private:
        report_dir = Path(private) / "report"
        report_dir.mkdir()
        report_dir.chmod(0o777)
        container = docker_client.containers.create(
            image, command, user="1000:1000", network_disabled=True, working_dir=REPORT_DIR,
            environment={"MARATHON_SEED": str(seed), "MARATHON_SNAPSHOT": SNAPSHOT_DIR},
            volumes={str(marathon.gates): {"bind": GATES_DIR, "mode": "ro"},
                     str(report_dir): {"bind": REPORT_DIR, "mode": "rw"}},
            tmpfs={"/tmp": f"rw,exec,nosuid,nodev,size={limits.tmp_size},mode=1777"},
            mem_limit=limits.mem_limit, pids_limit=limits.pids_limit, nano_cpus=limits.nano_cpus,
            labels={LABEL: "scorer", **(labels or {})}, detach=True,
        )
        try:
            # pytest starts (imports, collection) while the snapshot is copied in; the checks
            # wait for READY_PATH, the last member of the archive.
            container.start()
            with tempfile.TemporaryFile(dir=private) as tar:
                _snapshot_tar(snapshot, tar)
                tar.seek(0)
                container.put_archive("/", tar)
            try:
                container.wait(timeout=limits.total_timeout_s)
                crashed = None
            except Exception:  # requests' ReadTimeout / ConnectionError: the scoring ran over
                container.kill()
                crashed = f"scoring timed out after {limits.total_timeout_s:g} s"
            reports = _read_reports(report_dir)
            if not reports:
                tail = container.logs(tail=5).decode(errors="replace")
                reason = crashed or f"scorer produced no report: {_first_lines(tail) or 'no output'}"
                return [CheckResult(**c.model_dump(), outcome=Outcome.error, message=reason,
                                    duration_s=0.0) for c in checks]
            return parse_junit(reports, checks, missing=crashed or "check not reported by the runner")
        finally:
            container.remove(force=True)
