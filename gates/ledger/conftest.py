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
timeout that fails the check instead of hanging it.
"""

from __future__ import annotations

import array
import fcntl
import os
import shutil
import subprocess
import termios
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

TAGS = ("genuine", "contract")
DEFAULT_TIMEOUT = 20.0


def pytest_configure(config):
    """Register the check tags as markers."""
    config.addinivalue_line(
        "markers", "genuine: a property any competent implementation of the briefs must have"
    )
    config.addinivalue_line(
        "markers", "contract: an interface detail that only the brief states (exact code, name or format)"
    )


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

    def wait_idle(self, watch: Path, limit: float = 10.0, settle: int = 2) -> None:
        """Wait until the process has read all fed input and blocks for more.

        Idle means: the pipe holds no unread bytes, the process is sleeping,
        and nothing under ``watch`` changed over ``settle`` consecutive polls.
        Returns early if the process exits; gives up quietly after ``limit`` s.
        """
        deadline = time.monotonic() + limit
        last, quiet = None, 0
        while time.monotonic() < deadline and self.proc.poll() is None:
            sig = _tree_signature(watch)
            idle = _fionread(self.proc.stdin.fileno()) == 0 and _proc_state(self.proc.pid) in "S?"
            quiet = quiet + 1 if idle and sig == last else 0
            if quiet >= settle:
                return
            last = sig
            time.sleep(0.025)

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass


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

    def run(self, *args, stdin: bytes | str | None = None, timeout: float = DEFAULT_TIMEOUT) -> Result:
        """Run ``python3 -m ledger ARGS`` to completion and return its Result.

        ``stdin`` (bytes or str) is fed to the process; without it stdin is
        empty. A run exceeding ``timeout`` seconds fails the check.
        """
        if isinstance(stdin, str):
            stdin = stdin.encode("utf-8")
        argv = self._argv(args)
        try:
            done = subprocess.run(
                argv, cwd=self.workdir, env=self._env(), input=stdin or b"",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(
                f"`ledger {' '.join(argv[3:])}` did not finish within {timeout:g} s "
                f"(stderr so far: {_decode(exc.stderr)[-500:]!r})",
                pytrace=False,
            )
        return Result(argv[3:], done.returncode, _decode(done.stdout), _decode(done.stderr))

    def ingest(self, source, state: Path, *extra, stdin: bytes | str | None = None,
               expect_ok: bool = True) -> Result:
        """Run ``ingest SOURCE --state STATE EXTRA...``; by default require exit 0."""
        result = self.run("ingest", source, "--state", state, *extra, stdin=stdin)
        if expect_ok:
            assert result.returncode == 0, "ingest failed: " + result.describe()
        return result

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
        """Kill any streaming run still alive."""
        for stream in self._streams:
            stream.kill()


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
