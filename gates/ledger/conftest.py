"""Trusted harness code for the hidden ``ledger`` gates.

- Registers the two check tags, ``genuine`` and ``contract``; every check must
  carry exactly one of them. The tag is recorded as the JUnit XML property
  ``tag``.
- ``seed``: the trial seed, int env ``MARATHON_SEED`` (default 0).
- ``ledger``: runs the product under test, ``python3 -m ledger ARGS...``, in a
  fresh copy of the snapshot (env ``MARATHON_SNAPSHOT``), as a black box.

Every run gets a scrubbed environment (PATH, HOME, LANG only, plus a fixed
``PYTHONHASHSEED`` derived from the seed, the check and the call number, so
that a product that depends on set or hash order behaves the same way on
every run of the gates, yet differently from one call to the next) and a
timeout that fails the check instead of hanging it. Independent runs of one
check may be started together (:meth:`LedgerRunner.spawn`) and collected
later; call numbers follow the order in which runs are started, so the hash
seeds stay the same from one scoring to the next.
"""

from __future__ import annotations

import array
import fcntl
import os
import platform
import shutil
import subprocess
import termios
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

TAGS = ("genuine", "contract")
DEFAULT_TIMEOUT = 20.0


def pytest_configure(config):
    """Register the check tags (and the scheduling hint ``slow``) as markers."""
    config.addinivalue_line(
        "markers", "genuine: a property any competent implementation of the briefs must have"
    )
    config.addinivalue_line(
        "markers", "contract: an interface detail that only the brief states (exact code, name or format)"
    )
    config.addinivalue_line(
        "markers", "slow: a check that takes several times longer than most (scheduled first)"
    )


def pytest_collection_modifyitems(session, config, items):
    """Run ``slow`` checks first (stable order otherwise).

    When the scorer shares the checks between several pytest processes, the
    checks left at the end decide how long one process idles while another
    finishes; starting the long ones first leaves only short ones for the end.
    The order is the same in every process, and no check depends on another,
    so outcomes do not change.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _check_tag(request):
    """Require exactly one tag marker per check and record it as property ``tag``.

    The property is appended to the check's ``user_properties``, which is
    exactly what the ``record_property`` fixture does, minus that fixture's
    warning under the default ``xunit2`` JUnit family (pytest writes the
    property to the JUnit XML report under every family).
    """
    tags = [mark.name for mark in request.node.iter_markers() if mark.name in TAGS]
    if len(tags) != 1:
        pytest.fail(
            f"{request.node.nodeid}: a check needs exactly one of "
            f"@pytest.mark.genuine / @pytest.mark.contract, found {tags or 'none'}",
            pytrace=False,
        )
    request.node.user_properties.append(("tag", tags[0]))


@pytest.fixture
def seed() -> int:
    """The trial seed (env ``MARATHON_SEED``, default 0)."""
    raw = os.environ.get("MARATHON_SEED", "0").strip() or "0"
    try:
        return int(raw)
    except ValueError:
        raise pytest.UsageError(f"MARATHON_SEED must be an integer, got {raw!r}") from None


@dataclass
class Result:
    """The outcome of one product run (stdout and stderr decoded as UTF-8)."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        """A short human-readable summary for assertion messages."""
        return (
            f"`ledger {' '.join(self.args)}` exited {self.returncode}\n"
            f"stdout: {self.stdout[-800:]!r}\nstderr: {self.stderr[-1500:]!r}"
        )


def _decode(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def _fionread(fd: int) -> int:
    """Bytes written to a pipe and not yet read by the other end."""
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


def _proc_state(pid: int) -> str:
    """The scheduler state letter of a process (``S`` = sleeping), ``?`` if unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return "?"


#: Number of the ``read`` system call, by machine (for ``/proc/PID/syscall``).
_READ_SYSCALL = {"x86_64": 0, "amd64": 0, "aarch64": 63, "arm64": 63}.get(platform.machine().lower())


def _blocked_reading_stdin(pid: int) -> bool:
    """True if the process is blocked in ``read`` on file descriptor 0 (its stdin)."""
    if _READ_SYSCALL is None:
        return False
    try:
        with open(f"/proc/{pid}/syscall", encoding="ascii", errors="replace") as handle:
            fields = handle.read().split()
        return int(fields[0]) == _READ_SYSCALL and int(fields[1], 16) == 0
    except (OSError, ValueError, IndexError):
        return False  # "running", no permission, or no such file: use the other test


def _tree_signature(root: Path) -> tuple:
    """Names, sizes and mtimes of every file under ``root`` (to detect activity)."""
    sig = []
    for path in sorted(root.rglob("*")) if root.exists() else ():
        try:
            st = path.stat()
        except OSError:
            continue
        sig.append((str(path), st.st_size, st.st_mtime_ns))
    return tuple(sig)


class Streaming:
    """A product run whose stdin is a pipe that the check feeds piecemeal."""

    def __init__(self, proc: subprocess.Popen, args: list[str]):
        self.proc = proc
        self.args = args

    def feed(self, data: bytes | str) -> None:
        """Write ``data`` to the process's stdin and flush (stdin stays open)."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the process already exited; the check sees it in the final state

    def wait_idle(self, watch: Path, limit: float = 10.0, settle: float = 0.05) -> None:
        """Wait until the process has read all fed input and blocks for more.

        Idle means: the pipe holds no unread bytes and either the process is
        blocked in ``read`` on its stdin (seen on two polls in a row: it has
        handled everything it read), or, where that cannot be seen (another
        thread reads, ``select``, no ``/proc/PID/syscall``), it is sleeping
        and nothing under ``watch`` changed for ``settle`` seconds. Returns
        early if the process exits; gives up quietly after ``limit`` s.
        """
        deadline = time.monotonic() + limit
        last, quiet_since, reading = None, None, 0
        while time.monotonic() < deadline and self.proc.poll() is None:
            empty = _fionread(self.proc.stdin.fileno()) == 0
            reading = reading + 1 if empty and _blocked_reading_stdin(self.proc.pid) else 0
            if reading >= 2:
                return
            now = time.monotonic()
            sig = _tree_signature(watch)
            idle = empty and _proc_state(self.proc.pid) in "S?"
            if not (idle and sig == last):
                quiet_since = now
            elif now - quiet_since >= settle:
                return
            last = sig
            time.sleep(0.005 if reading else 0.01)

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass


class Pending:
    """A product run started with :meth:`LedgerRunner.spawn`; :meth:`result` waits for it.

    Like ``subprocess.run``: stdin, stdout and stderr are pipes, and a thread
    feeds stdin and collects the output while the check goes on.
    """

    def __init__(self, proc: subprocess.Popen, args: list[str], stdin: bytes, timeout: float,
                 expect_ok: str | None):
        self.proc = proc
        self.args = args
        self._timeout = timeout
        self._expect_ok = expect_ok
        self._output: tuple[bytes, bytes] = (b"", b"")
        self._timed_out = False
        self._thread = threading.Thread(target=self._communicate, args=(stdin,), daemon=True)
        self._thread.start()

    def _communicate(self, stdin: bytes) -> None:
        try:
            self._output = self.proc.communicate(stdin, timeout=self._timeout)
        except subprocess.TimeoutExpired:
            self._timed_out = True
            self.proc.kill()
            self._output = self.proc.communicate()
        except Exception:  # noqa: BLE001 - reported by result() as a crash of the run
            self.proc.kill()
            self.proc.wait()

    def result(self) -> Result:
        """Wait for the run to finish (failing the check past its timeout) and return its Result."""
        self._thread.join()
        out, err = self._output
        if self._timed_out:
            pytest.fail(
                f"`ledger {' '.join(self.args)}` did not finish within {self._timeout:g} s "
                f"(stderr so far: {_decode(err)[-500:]!r})",
                pytrace=False,
            )
        result = Result(self.args, self.proc.returncode, _decode(out), _decode(err))
        if self._expect_ok:
            assert result.returncode == 0, self._expect_ok + result.describe()
        return result

    def kill(self) -> None:
        """SIGKILL the run if it is still going (cleanup only)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self._thread.join()


class LedgerRunner:
    """Runs ``python3 -m ledger`` in a private copy of the snapshot under test.

    ``tmp`` is a scratch directory for inputs and state directories (outside
    the copy); :meth:`path` hands out paths in it.
    """

    def __init__(self, snapshot: Path, tmp: Path, seed: int, check: str):
        self.tmp = tmp
        self.workdir = tmp / "workspace"
        self.home = tmp / "home"
        self.home.mkdir()
        shutil.copytree(snapshot, self.workdir, symlinks=True,
                        ignore=shutil.ignore_patterns(".git", "__pycache__"))
        self._seed = seed
        self._check = check
        self._calls = 0
        self._streams: list[Streaming] = []
        self._pending: list[Pending] = []

    def path(self, name: str) -> Path:
        """A path in the scratch directory (parents created)."""
        path = self.tmp / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _env(self) -> dict:
        self._calls += 1
        key = f"{self._seed}/{self._check}/{self._calls}".encode("utf-8")
        return {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": str(zlib.crc32(key) % 4_000_000_000 + 1),
        }

    def _argv(self, args) -> list[str]:
        return ["python3", "-m", "ledger", *[str(arg) for arg in args]]

    def spawn(self, *args, stdin: bytes | str | None = None, timeout: float = DEFAULT_TIMEOUT,
              expect_ok: str | None = None) -> Pending:
        """Start ``python3 -m ledger ARGS`` in the background; ``.result()`` collects it.

        Runs that do not depend on each other can go on at the same time.
        ``expect_ok``: if given, ``.result()`` requires exit 0 and prefixes
        the failure message with it.
        """
        if isinstance(stdin, str):
            stdin = stdin.encode("utf-8")
        argv = self._argv(args)
        proc = subprocess.Popen(
            argv, cwd=self.workdir, env=self._env(), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        pending = Pending(proc, argv[3:], stdin or b"", timeout, expect_ok)
        self._pending.append(pending)
        return pending

    def run(self, *args, stdin: bytes | str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Result:
        """Run ``python3 -m ledger ARGS`` to completion and return its Result.

        ``stdin`` (bytes or str) is fed to the process; without it stdin is
        empty. A run exceeding ``timeout`` seconds fails the check.
        """
        return self.spawn(*args, stdin=stdin, timeout=timeout).result()

    def ingest(self, source, state: Path, *extra, stdin: bytes | str | None = None,
               expect_ok: bool = True) -> Result:
        """Run ``ingest SOURCE --state STATE EXTRA...``; by default require exit 0."""
        return self.spawn_ingest(source, state, *extra, stdin=stdin, expect_ok=expect_ok).result()

    def spawn_ingest(self, source, state: Path, *extra, stdin: bytes | str | None = None,
                     expect_ok: bool = True) -> Pending:
        """Start ``ingest SOURCE --state STATE EXTRA...`` in the background (see :meth:`spawn`)."""
        return self.spawn("ingest", source, "--state", state, *extra, stdin=stdin,
                          expect_ok="ingest failed: " if expect_ok else None)

    def start(self, *args) -> Streaming:
        """Start ``python3 -m ledger ARGS`` with a stdin pipe (for kill tests)."""
        argv = self._argv(args)
        proc = subprocess.Popen(
            argv, cwd=self.workdir, env=self._env(), stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        stream = Streaming(proc, argv[3:])
        self._streams.append(stream)
        return stream

    def close(self) -> None:
        """Kill any run still alive."""
        for stream in self._streams:
            stream.kill()
        for pending in self._pending:
            pending.kill()


@pytest.fixture
def ledger(tmp_path, seed, request) -> LedgerRunner:
    """A runner for the snapshot under test, in a fresh copy (env MARATHON_SNAPSHOT)."""
    raw = os.environ.get("MARATHON_SNAPSHOT")
    if not raw:
        raise pytest.UsageError("MARATHON_SNAPSHOT is not set: point it at the snapshot to test")
    snapshot = Path(raw).resolve()
    if not snapshot.is_dir():
        raise pytest.UsageError(f"MARATHON_SNAPSHOT is not a directory: {snapshot}")
    runner = LedgerRunner(snapshot, tmp_path, seed, request.node.name)
    yield runner
    runner.close()
