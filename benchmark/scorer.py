"""The scorer: run a marathon's active gates against a workspace snapshot, in a sealed container.

:func:`score` returns one :class:`CheckResult` per check of every gate active after an episode;
:func:`score_snapshot` scores again while some check has no verdict and raises
:class:`ScoringFailure` when one still lacks it (the harness's rule: an ``error`` is never a
verdict). The checks run in a fresh container of the scorer image: network disabled, read-only
root file system, scratch space (``/tmp``) a sized tmpfs, memory, CPU and process limits, the
checks shared out between N pytest processes (``marathon_parallel``, installed in the image).

Two uids: the runner (pytest) is uid 0 with only the capabilities it needs to manage the product
(:data:`RUNNER_CAPABILITIES`) and ``no-new-privileges``; it runs every product process as an
unprivileged uid (``marathon_product``, 2000 + the pytest process's index), with no capability.
The gates and the report directory are mounted inside ``/scorer`` (mode 0700), which the product
cannot enter; it cannot signal, trace or read the runner's ``/proc`` entries (the seed is in the
runner's environment) either. Nothing from the snapshot reaches the test runner:

- pytest runs as ``python3 -I`` (no ``PYTHON*`` variables, no user site, no current directory
  on ``sys.path``), so a ``sitecustomize``/``usercustomize`` or ``.pth`` file in the snapshot is
  never imported by the runner;
- its configuration is the scorer image's own ``pytest.ini`` passed with ``-c``, the rootdir and
  conftest cut-off are the gates directory, and the snapshot lives outside it, so no
  ``conftest.py``, ``pytest.ini``, ``tox.ini``, ``setup.cfg`` or ``pyproject.toml`` of the
  snapshot is read;
- outcomes come from the JUnit XML reports (exactly ``junit-K.xml`` for each pytest process K),
  matched against the list of checks read from the gate modules' source on the host: a check
  missing from every report, reported twice, or reported in a malformed report, and every check
  when the report directory holds anything unexpected, is ``error``, never ``passed``; so is a
  check the runner marked as without a verdict (JUnit property ``marathon_no_verdict``: a
  product run the host starved of CPU, a check past its time limit).

The threat model is documented in ``docs/scorer.md``.
"""

from __future__ import annotations

import ast
import functools
import os
import shutil
import tempfile
import threading
import xml.etree.ElementTree as ET
from enum import Enum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from benchmark.docker_env import LABEL, client
from benchmark.errors import MarathonError
from benchmark.marathon import GateSpec, Marathon

#: Tags a check may carry (a pytest marker on the check function).
Tag = Literal["genuine", "contract"]

#: Directory of the snapshot inside the scorer container (read-only; the product may read it).
SNAPSHOT_DIR = "/snapshot"
#: Directory of the pytest processes' private directories inside the scorer container (the
#: product cannot enter ``/scorer``): process K's, ``RUNNER_DIR/K``, holds its copy of the gates
#: (``gates/``) and the seed (``seed``), and is erased once it has collected the checks.
RUNNER_DIR = "/scorer/runner"
#: Directory of the JUnit XML reports (one per pytest process) inside the scorer container.
REPORT_DIR = "/scorer/report"
#: pytest process K runs the product as uid and gid ``PRODUCT_UID_BASE + K``.
PRODUCT_UID_BASE = 2000
#: The runner's capabilities (it runs as uid 0; every other capability is dropped):
#: SETUID/SETGID to start product processes as the product uid, KILL to kill them, CHOWN to give
#: the product its copy of the snapshot, DAC_OVERRIDE and FOWNER to read, write and remove the
#: product's files whatever modes it set, SYS_PTRACE to read ``/proc/PID/syscall`` of a product
#: process (is it blocked reading its stdin?).
RUNNER_CAPABILITIES = ("SETUID", "SETGID", "KILL", "CHOWN", "DAC_OVERRIDE", "FOWNER", "SYS_PTRACE")
#: JUnit property the runner (``marathon_claim``) sets on a check without a verdict.
NO_VERDICT_PROPERTY = "marathon_no_verdict"


class Outcome(str, Enum):
    """Result of one check."""

    passed = "passed"
    """The check ran and its assertions held."""
    failed = "failed"
    """The check ran and an assertion failed: the product does not meet the gate."""
    error = "error"
    """No verdict: the scorer crashed or timed out, the host starved a product run, the check is
    missing from the reports or they are malformed. Never counted as red (see
    :func:`score_snapshot`)."""


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
    total_timeout_s: float = 1200.0
    """Limit for the whole scoring in seconds; past it the container is killed and every check
    without a verdict is ``error``. A backstop, set above what a hung product costs: each of
    its checks fails at its first product run past the run's limit (20 s), so the 34 checks of
    the largest gate set here take at most about 700 s even in a single pytest process. At
    300 s (before 2026-12-02) a product that never started made the scoring run out of time,
    every check lost its verdict and the trial stopped as a scoring failure instead of
    scoring red gates."""
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
    made scoring about 0.5 s slower and far more variable, and the container slow to remove.
    The root file system is read-only, so this and ``/dev/shm`` are all a product can fill."""
    shm_size: str = "64m"
    """Size of ``/dev/shm`` (Docker syntax), the other place a product can write to."""
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


def copy_snapshot(src: Path, dest: Path) -> Path:
    """Copy the snapshot ``src`` to the new directory ``dest`` for the scorer container to mount.

    Leaves out ``.git`` and ``__pycache__``; copies directories (mode 0755), regular files (0755
    if any execute bit was set, else 0644: readable by the product uid whatever modes the agent
    left) and symbolic links as links (never followed: they resolve inside the container);
    skips every other kind of file (FIFOs, sockets, devices).

    Returns:
        ``dest``.
    """
    dest.mkdir(mode=0o755)
    dest.chmod(0o755)
    with os.scandir(src) as entries:
        for entry in entries:
            if entry.name in (".git", "__pycache__"):
                continue
            target = dest / entry.name
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), target)
            elif entry.is_dir(follow_symlinks=False):
                copy_snapshot(Path(entry.path), target)
            elif entry.is_file(follow_symlinks=False):
                shutil.copyfile(entry.path, target, follow_symlinks=False)
                executable = entry.stat(follow_symlinks=False).st_mode & 0o111
                target.chmod(0o755 if executable else 0o644)
    return dest


#: A JUnit report larger than this (bytes) is not read: its checks count as unreported.
MAX_REPORT_BYTES = 64 * 1024 * 1024


class Reports(BaseModel):
    """What the pytest processes left in the report directory."""

    found: dict[str, bytes] = {}
    """Report file name (``junit-K.xml``) -> content, for each expected report that is a regular
    file of at most :data:`MAX_REPORT_BYTES`."""
    rejected: dict[str, str] = {}
    """Expected report file name -> why it was not read (not a regular file, too large)."""
    unexpected: list[str] = []
    """Names of entries that are not expected reports (the directory is then not trusted)."""


def read_reports(report_dir: Path, processes: int) -> Reports:
    """Read the JUnit XML reports ``junit-K.xml`` (K < ``processes``) from the report directory.

    Read on the host from the bind-mounted directory, after the container has stopped. Only
    regular files are read (a symbolic link made in the container would otherwise be followed
    on the host), at most :data:`MAX_REPORT_BYTES` each; any other entry is listed as
    unexpected. A missing report is simply absent (its checks are unreported).
    """
    expected = {f"junit-{k}.xml" for k in range(processes)}
    out = Reports()
    for entry in sorted(os.scandir(report_dir), key=lambda e: e.name):
        if entry.name not in expected:
            out.unexpected.append(entry.name)
        elif not entry.is_file(follow_symlinks=False):
            out.rejected[entry.name] = "not a regular file"
        elif entry.stat(follow_symlinks=False).st_size > MAX_REPORT_BYTES:
            out.rejected[entry.name] = f"larger than {MAX_REPORT_BYTES} bytes"
        else:
            out.found[entry.name] = Path(entry.path).read_bytes()
    return out


def _first_lines(text: str, limit: int = 500) -> str:
    text = " ".join(line.strip() for line in text.strip().splitlines()[:3])
    return text[:limit]


def _case_result(case: ET.Element, gate: str, name: str) -> CheckResult:
    """The verdict in one ``<testcase>``: the runner's no-verdict property first, then its
    ``failure`` (failed), ``error`` or ``skipped`` (error: gates never skip) child."""
    duration = float(case.get("time") or 0.0)
    for prop in case.iter("property"):
        if prop.get("name") == NO_VERDICT_PROPERTY:
            return CheckResult(gate=gate, check=name, tag=None, outcome=Outcome.error,
                               message=_first_lines(prop.get("value") or "no verdict"),
                               duration_s=duration)
    outcome, message = Outcome.passed, ""
    for child in case:
        if child.tag == "failure":
            outcome, message = Outcome.failed, child.get("message") or child.text or "failed"
        elif child.tag == "error":
            outcome, message = Outcome.error, child.get("message") or child.text or "error"
        elif child.tag == "skipped":
            outcome, message = Outcome.error, "skipped: " + (child.get("message") or "")
        else:
            continue
        break
    return CheckResult(gate=gate, check=name, tag=None, outcome=outcome,
                       message=_first_lines(message), duration_s=duration)


def parse_junit(reports: dict[str, bytes] | list[bytes], checks: list[CheckSpec],
                missing: str = "check not reported by the runner") -> list[CheckResult]:
    """Match JUnit XML reports (pytest, xunit1; one per pytest process) to the declared checks.

    A report is used whole or not at all: one that is not well-formed XML (its process was
    killed while writing it) or names a check that was not declared is set aside, and its
    checks count as unreported. A declared check reported by no usable report is ``error``
    (message ``missing``, plus why a report was set aside), one reported more than once is
    ``error``, a skipped check is ``error`` (gates never skip), and one carrying the runner's
    :data:`NO_VERDICT_PROPERTY` is ``error`` with its reason. Never ``passed`` without one
    clean report of a pass.

    Args:
        reports: report name -> XML (a list is named by position).
        checks: the declared checks.
        missing: message for a check no report mentions.
    """
    if not isinstance(reports, dict):
        reports = {f"report {k}": xml for k, xml in enumerate(reports)}
    declared = {(c.gate, c.check) for c in checks}
    seen: dict[tuple[str, str], list[CheckResult]] = {}
    set_aside: list[str] = []
    for name, xml in reports.items():
        try:
            cases = list(ET.fromstring(xml).iter("testcase"))
        except ET.ParseError:
            set_aside.append(f"{name} is not well-formed XML")
            continue
        results = []
        for case in cases:
            gate = case.get("classname", "").rsplit(".", 1)[-1].removeprefix("test_")
            check = case.get("name", "")
            if (gate, check) not in declared:
                set_aside.append(f"{name} names an undeclared check {gate}/{check}")
                break
            results.append(_case_result(case, gate, check))
        else:
            for result in results:
                seen.setdefault((result.gate, result.check), []).append(result)
    why = f"{missing} ({'; '.join(set_aside)})" if set_aside else missing
    out = []
    for spec in checks:
        got = seen.get((spec.gate, spec.check), [])
        if len(got) == 1:
            out.append(got[0].model_copy(update={"tag": spec.tag}))
            continue
        message = why if not got else f"check reported {len(got)} times"
        out.append(CheckResult(**spec.model_dump(), outcome=Outcome.error,
                               message=_first_lines(message), duration_s=0.0))
    return out


def score(snapshot: Path, marathon: Marathon, through_episode: str, seed: int, *,
          image: str, limits: ScorerLimits | None = None,
          labels: dict[str, str] | None = None, tmp_dir: Path | None = None) -> list[CheckResult]:
    """Score a snapshot against every gate active after ``through_episode``, once.

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
        One :class:`CheckResult` per declared check, in gate then source order; ``error`` for
        each check without a verdict (see :func:`score_snapshot` for what the harness does then).

    Raises:
        MarathonError: the snapshot is not a directory, or Docker is unreachable. A crash or
            timeout of the scoring itself is not raised: it yields ``error`` outcomes.
    """
    limits = limits or ScorerLimits()
    if not snapshot.is_dir():
        raise MarathonError(f"snapshot {snapshot} is not a directory")
    gates = marathon.active_gates(through_episode)
    checks = list_checks(marathon, gates)
    gates_dir = f"{RUNNER_DIR}/{{worker}}/gates"  # marathon_parallel puts K for {worker}
    command = [
        "python3", "-I", "-B", "-m", "marathon_parallel", "--product-uid", str(PRODUCT_UID_BASE),
        str(limits.processes), REPORT_DIR, "--",
        "-c", "/opt/marathon/pytest.ini", f"--runner-dir={RUNNER_DIR}/{{worker}}",
        f"--rootdir={gates_dir}", f"--confcutdir={gates_dir}", "-p", "no:cacheprovider",
        "-q", "--no-header", "-rN", f"--timeout={limits.check_timeout_s:g}",
        *(f"{gates_dir}/{g.filename}" for g in gates),
    ]
    docker_client = client()
    # The snapshot and the gates go in and the reports come back through bind-mounted host
    # directories inside a private (0700) one no other host user can enter; in the container
    # the product uid cannot write the snapshot (read-only) nor enter /scorer at all.
    with tempfile.TemporaryDirectory(prefix="marathon-score-", dir=tmp_dir,
                                     ignore_cleanup_errors=True) as private:
        report_dir = Path(private) / "report"
        report_dir.mkdir(mode=0o700)
        copy_snapshot(snapshot, Path(private) / "snapshot")
        _runner_dirs(Path(private) / "runner", marathon, seed, limits.processes)
        container = docker_client.containers.create(
            image, command, user="0:0", network_disabled=True, working_dir="/scorer",
            cap_drop=["ALL"], cap_add=list(RUNNER_CAPABILITIES),
            security_opt=["no-new-privileges"], read_only=True,
            environment={"MARATHON_SNAPSHOT": SNAPSHOT_DIR},
            volumes={str(Path(private) / "runner"): {"bind": RUNNER_DIR, "mode": "rw"},
                     str(Path(private) / "snapshot"): {"bind": SNAPSHOT_DIR, "mode": "ro"},
                     str(report_dir): {"bind": REPORT_DIR, "mode": "rw"}},
            tmpfs={"/tmp": f"rw,exec,nosuid,nodev,size={limits.tmp_size},mode=1777"},
            shm_size=limits.shm_size, mem_limit=limits.mem_limit, pids_limit=limits.pids_limit,
            nano_cpus=limits.nano_cpus, labels={LABEL: "scorer", **(labels or {})}, detach=True,
        )
        try:
            container.start()
            try:
                container.wait(timeout=limits.total_timeout_s)
                crashed = None
            except Exception:  # requests' ReadTimeout / ConnectionError: the scoring ran over
                container.kill()
                crashed = f"scoring timed out after {limits.total_timeout_s:g} s"
            reports = read_reports(report_dir, limits.processes)
            if reports.unexpected:
                reason = f"unexpected entries in the report directory: {', '.join(reports.unexpected)}"
                return _all_errors(checks, reason)
            if not reports.found:
                tail = container.logs(tail=5).decode(errors="replace")
                return _all_errors(checks, crashed or "scorer produced no report: "
                                   + (_first_lines(tail) or "no output"))
            missing = crashed or "check not reported by the runner"
            if reports.rejected:
                missing += " (" + "; ".join(f"{n}: {why}" for n, why in reports.rejected.items()) + ")"
            return parse_junit(reports.found, checks, missing=missing)
        finally:
            container.remove(force=True)


def _runner_dirs(root: Path, marathon: Marathon, seed: int, processes: int) -> None:
    """Give each pytest process K its private directory ``root/K``: a copy of the gates directory
    (without ``__pycache__`` and the mutants) and the seed. Each process erases its own once it
    has collected the checks (``marathon_claim --runner-dir``)."""
    mutants = marathon.mutants.resolve() if marathon.mutants else None

    def ignore(directory: str, names: list[str]) -> set[str]:
        return {n for n in names if n == "__pycache__" or (Path(directory, n).resolve() == mutants)}

    root.mkdir(mode=0o700)
    for k in range(processes):
        shutil.copytree(marathon.gates, root / str(k) / "gates", ignore=ignore)
        (root / str(k) / "seed").write_text(f"{seed}\n", encoding="ascii")


def _all_errors(checks: list[CheckSpec], reason: str) -> list[CheckResult]:
    return [CheckResult(**c.model_dump(), outcome=Outcome.error, message=_first_lines(reason),
                        duration_s=0.0) for c in checks]


#: Scorings of one snapshot after the first, at most, while some check has no verdict.
RESCORES = 2


class ScoringFailure(MarathonError):
    """A snapshot whose scoring still leaves checks without a verdict after every re-score.

    Not a verdict on the product: the driver stops the trial (recorded in ``errors.log``; the
    run stays resumable) instead of recording a score or showing anything to the agent.
    """

    def __init__(self, message: str, checks: list[CheckResult]):
        super().__init__(message)
        self.checks = checks
        """The last scoring's results."""


class Scoring(BaseModel):
    """A snapshot scored to a verdict on every check (see :func:`score_snapshot`)."""

    checks: list[CheckResult]
    """Every check's verdict, ``passed`` or ``failed`` only."""
    scorings: int = Field(ge=1)
    """How many scorings it took: 1 when the first one gave every check a verdict."""
    rescore_reasons: list[str] = []
    """Why each earlier scoring was not used (one line each: which checks lacked a verdict)."""


def no_verdict_summary(results: list[CheckResult], limit: int = 300) -> str:
    """One line naming the checks without a verdict and the first reason, e.g.
    ``2 checks without a verdict: replay/test_x, replay/test_y (the host starved ...)``."""
    errors = [r for r in results if r.outcome == Outcome.error]
    names = ", ".join(f"{r.gate}/{r.check}" for r in errors[:5]) + (", ..." if len(errors) > 5 else "")
    line = f"{len(errors)} check{'s' if len(errors) != 1 else ''} without a verdict: {names}"
    if errors:
        line += f" ({errors[0].message})"
    return line[:limit]


def score_snapshot(snapshot: Path, marathon: Marathon, through_episode: str, seed: int, *,
                   image: str, limits: ScorerLimits | None = None,
                   labels: dict[str, str] | None = None, tmp_dir: Path | None = None,
                   rescores: int = RESCORES, score_once=None) -> Scoring:
    """Score a snapshot until every check has a verdict: the harness's scoring rule.

    An ``error`` is not a verdict (the scorer crashed or timed out, the host starved a product
    run, a report was missing or malformed), so a scoring with any ``error`` is not used: the
    snapshot is scored again, at most ``rescores`` more times, each reason recorded.

    Args:
        snapshot, marathon, through_episode, seed, image, limits, labels, tmp_dir: as
            :func:`score`.
        rescores: re-scores allowed after the first scoring.
        score_once: the single scoring function (default :func:`score`, same arguments).

    Returns:
        The first scoring with a verdict on every check, how many scorings it took and why.

    Raises:
        ScoringFailure: the last scoring still had checks without a verdict.
        MarathonError: as :func:`score`.
    """
    score_once = score_once or score
    reasons: list[str] = []
    for _ in range(rescores + 1):
        results = score_once(snapshot, marathon, through_episode, seed, image=image,
                             limits=limits, labels=labels, tmp_dir=tmp_dir)
        if all(r.outcome != Outcome.error for r in results):
            return Scoring(checks=results, scorings=len(reasons) + 1, rescore_reasons=reasons)
        reasons.append(no_verdict_summary(results))
    raise ScoringFailure(
        f"scoring failure after {len(reasons)} scorings of the snapshot: " + " | ".join(reasons),
        results)
