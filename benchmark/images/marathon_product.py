"""Run the product under test for a gate's checks: as its own uid, bounded, and judged fairly.

Installed in the scorer image beside ``marathon_parallel`` and ``marathon_claim``; gate
conftests import it (``from marathon_product import Product``). A :class:`Product` is one
check's product: a private copy of the snapshot (its working directory), a HOME and a scratch
directory for the check's inputs and the product's state. A run goes to completion
(:meth:`Product.run`, :meth:`Product.spawn`), is fed its stdin piecemeal (:meth:`Product.start`),
or is a server the check talks to (:class:`Service`). Its runs:

- run as the product's uid: in the scorer container the runner (pytest) is uid 0 holding only
  the capabilities it needs to manage the product, and pytest process K runs every product
  process as uid and gid ``MARATHON_PRODUCT_UID`` (2000 + K, set by ``marathon_parallel``) with
  no supplementary group and no capability, so the product cannot write the reports, signal or
  trace the runner, read the runner's ``/proc`` entries or environment (the seed), or enter
  ``/scorer`` (gates, reports). Without ``MARATHON_PRODUCT_UID`` (gates run on a development
  host) the product runs as the current user;
- get a scrubbed environment (``PATH``, ``HOME``, ``LANG`` or the gate's choice, plus extras),
  their own session (process group: killing a run kills its group), and ``oom_score_adj``
  1000 (under memory pressure the kernel kills product processes before the runner);
- have their output captured up to :data:`OUTPUT_LIMIT` bytes per stream (the rest is read and
  dropped), so a product that writes without end cannot exhaust the runner's memory;
- have a time limit. A run past it is killed and fails the check (the product hung or is too
  slow), unless the kernel's scheduler statistics show the host starved it of CPU: then the
  check gets no verdict (:class:`NoVerdict`; the scorer records ``error`` and the harness
  scores again). See :class:`CpuUse` for the rule.

After every check, ``marathon_claim`` kills every process of the product uid
(:func:`kill_user`) and removes every file it owns in ``/tmp`` and ``/dev/shm``
(:func:`remove_user_files`), so nothing of the product outlives its check.
"""

from __future__ import annotations

import array
import fcntl
import os
import platform
import re
import select
import selectors
import shutil
import signal
import stat
import subprocess
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path

#: Environment variable holding the uid (and gid) product processes run as.
PRODUCT_UID_ENV = "MARATHON_PRODUCT_UID"
#: Bytes of stdout (and of stderr) kept per product run; the rest is read and dropped.
OUTPUT_LIMIT = 8 * 1024 * 1024
#: Default time limit of one product run, in seconds.
DEFAULT_TIMEOUT = 20.0
#: A run past its limit is starved when it waited for a CPU for at least this share of its
#: wall time ...
STARVED_WAIT_SHARE = 0.5
#: ... ran for at most this share of it ...
STARVED_CPU_SHARE = 0.25
#: ... and the whole scorer container used at most this many CPUs on average meanwhile (a
#: product that loads the CPU itself, e.g. with busy child processes, is not starved by the host).
STARVED_CONTAINER_CPUS = 0.5


class NoVerdict(Exception):
    """The check cannot give a verdict on the product (e.g. the host starved a product run).

    Raised by runner code only; ``marathon_claim`` records its message as the JUnit property
    ``marathon_no_verdict`` of the check, which the scorer turns into ``error``. The product has
    no way to raise it in the runner or to write that property.
    """


def product_uid() -> int | None:
    """The uid product processes run as (``MARATHON_PRODUCT_UID``), or None: the current user."""
    raw = os.environ.get(PRODUCT_UID_ENV, "").strip()
    return int(raw) if raw else None


# --- processes ---------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` after the command name (state first), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rpartition(")")[2].split()
    except OSError:
        return None


def _real_uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _user_processes(uid: int) -> list[tuple[int, str, int]]:
    """``(pid, state, parent pid)`` of every process whose real uid is ``uid``, except this one
    (state: the first field of ``/proc/PID/stat``, e.g. ``R``, ``T``, ``Z``)."""
    out = []
    for pid in _pids():
        if pid == os.getpid() or _real_uid(pid) != uid:
            continue
        fields = _stat_fields(pid)
        if fields is not None:
            out.append((pid, fields[0], int(fields[1])))
    return out


def _user_pids(uid: int, skip_states: str) -> list[int]:
    """Processes whose real uid is ``uid``, except this one and those in ``skip_states``."""
    return [pid for pid, state, _ in _user_processes(uid) if state not in skip_states]


def _signal_until_none(uid: int, sig: int, skip_states: str, deadline: float) -> int:
    """Send ``sig`` to every process of ``uid`` not in ``skip_states``, scan after scan, until a
    scan finds none or ``deadline`` (monotonic seconds) passes; return how many were signalled."""
    signalled = 0
    while True:
        pids = _user_pids(uid, skip_states)
        for pid in pids:
            try:
                os.kill(pid, sig)
                signalled += 1
            except (ProcessLookupError, PermissionError):
                pass
        if not pids or time.monotonic() > deadline:
            return signalled
        time.sleep(0.001)


def kill_user(uid: int, limit_s: float = 5.0) -> int:
    """SIGKILL every live process whose real uid is ``uid``; return how many were killed.

    Two passes over ``/proc``, each repeated until a scan finds nothing left to signal (or
    ``limit_s`` seconds pass in all). First every process is stopped (SIGSTOP): a stopped process
    cannot fork, and stopping one frees no process slot, so a fork bomb that keeps the process
    limit reached cannot refill it while it is being stopped (killing one at a time, each kill
    freed a slot that another bomb process took at once). Then every process, stopped or not, is
    killed (SIGKILL). Returns once the killed processes are reaped (they hold their process slots
    until then), except this process's own children, which it reaps itself. Needs ``CAP_KILL``
    when ``uid`` is not the caller's; forks nothing, so it works when the process limit is reached.
    """
    if not _user_pids(uid, ""):  # the usual case after a check: nothing left, one scan
        return 0
    deadline = time.monotonic() + limit_s
    # Skip stopped ("T"), traced ("t"), dead ("X") and zombie ("Z") processes: none can fork.
    _signal_until_none(uid, signal.SIGSTOP, "TtXZ", deadline)
    killed = _signal_until_none(uid, signal.SIGKILL, "XZ", deadline + limit_s)
    # A killed process holds its slot of the process limit until its parent reaps it: orphans
    # are reaped by the container's PID 1 (marathon_parallel), so wait for that, or the next
    # check could find the limit still reached. This process's own children are left to it.
    while time.monotonic() < deadline + 2 * limit_s and any(
            parent != os.getpid() for _, _, parent in _user_processes(uid)):
        time.sleep(0.001)
    return killed


#: Where a product can write outside its scratch directory (the root file system is read-only).
WRITABLE_ROOTS = ("/tmp", "/dev/shm")


def remove_user_files(uid: int, roots: tuple[str, ...] = WRITABLE_ROOTS) -> int:
    """Remove every file, directory and link owned by ``uid`` under ``roots`` (never following a
    link); return how many top entries were removed. Run after :func:`kill_user`, so nothing
    of the product's writes outlives its check (a product cannot fill ``/tmp`` for later checks).
    """
    removed = 0
    for root in roots:
        for top, dirs, files in os.walk(root, onerror=lambda error: None):
            for name in [*dirs, *files]:
                path = os.path.join(top, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if st.st_uid != uid:
                    continue
                if name in dirs:
                    dirs.remove(name)  # not walked into: removed whole (or unlinked, if a link)
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    try:
                        os.unlink(path)
                    except OSError:
                        continue
                removed += 1
    return removed


def _session_pids(session: int) -> list[int]:
    """Live processes whose session id is ``session`` (a product run and what it started)."""
    out = []
    for pid in _pids():
        fields = _stat_fields(pid)
        if fields is not None and len(fields) > 3 and fields[3] == str(session):
            out.append(pid)
    return out


def _schedstat(pid: int) -> tuple[int, int]:
    """``(ns on a CPU, ns waiting on a run queue)`` of a process (``/proc/PID/schedstat``)."""
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as handle:
            on_cpu, waiting, _ = handle.read().split()
        return int(on_cpu), int(waiting)
    except (OSError, ValueError):
        return 0, 0


#: CPU usage files of this container's cgroup, in ns (v1) or as ``usage_usec`` (v2).
_CGROUP_V1 = ("/sys/fs/cgroup/cpuacct/cpuacct.usage", "/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage")
_CGROUP_V2 = "/sys/fs/cgroup/cpu.stat"


def container_cpu_ns() -> int | None:
    """CPU time used so far by every process of this container's cgroup, in ns; None if unknown."""
    for path in _CGROUP_V1:
        try:
            with open(path, encoding="ascii") as handle:
                return int(handle.read())
        except (OSError, ValueError):
            continue
    try:
        with open(_CGROUP_V2, encoding="ascii") as handle:
            for line in handle:
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) * 1000
    except (OSError, ValueError):
        pass
    return None


@dataclass
class CpuUse:
    """Where a product run's wall time went, from the kernel's scheduler statistics.

    Rule (starved = no verdict): the run's processes waited for a CPU for at least
    :data:`STARVED_WAIT_SHARE` of the wall time, ran for at most :data:`STARVED_CPU_SHARE` of
    it, and the whole scorer container used at most :data:`STARVED_CONTAINER_CPUS` CPUs on
    average meanwhile (when the cgroup's usage is readable). A hung run sleeps: it neither runs
    nor waits, so it is not starved; a run that spins runs most of the time; a product that
    starves itself with its own busy processes makes the container use the CPU. Source:
    ``/proc/PID/schedstat`` (on-CPU and run-queue wait time, ``Documentation/scheduler/sched-stats.rst``)
    and the container cgroup's CPU usage (throttling under a CPU quota counts as run-queue wait).
    """

    wall_s: float
    """Wall time of the run so far, seconds."""
    on_cpu_s: float
    """Time the run's live processes spent on a CPU, seconds."""
    waiting_s: float
    """Time they spent runnable, waiting for a CPU, seconds."""
    container_cpu_s: float | None
    """CPU time the whole scorer container used during the run, seconds (None: unknown)."""

    @property
    def starved(self) -> bool:
        """Whether the host, not the product, kept the run from finishing (see the rule above)."""
        wall = max(self.wall_s, 1e-9)
        busy_container = (self.container_cpu_s is not None
                          and self.container_cpu_s > STARVED_CONTAINER_CPUS * wall)
        return (self.waiting_s >= STARVED_WAIT_SHARE * wall
                and self.on_cpu_s <= STARVED_CPU_SHARE * wall and not busy_container)

    def describe(self) -> str:
        """E.g. ``on a CPU 0.4 s, waiting for one 19.3 s of 20.0 s; container used 0.9 CPU-s``."""
        text = f"on a CPU {self.on_cpu_s:.1f} s, waiting for one {self.waiting_s:.1f} s of {self.wall_s:.1f} s"
        if self.container_cpu_s is not None:
            text += f"; the scorer container used {self.container_cpu_s:.1f} CPU-s"
        return text


def measure(session: int, started: float, container_ns_at_start: int | None) -> CpuUse:
    """CPU use of the live processes of a run's session since ``started`` (``time.monotonic()``)."""
    on_cpu = waiting = 0
    for pid in _session_pids(session):
        run, wait = _schedstat(pid)
        on_cpu += run
        waiting += wait
    now_ns = container_cpu_ns()
    container = (None if now_ns is None or container_ns_at_start is None
                 else (now_ns - container_ns_at_start) / 1e9)
    return CpuUse(wall_s=time.monotonic() - started, on_cpu_s=on_cpu / 1e9,
                  waiting_s=waiting / 1e9, container_cpu_s=container)


# --- pipes and idleness ------------------------------------------------------------------


def _fionread(fd: int) -> int:
    """Bytes written to a pipe and not yet read by the other end."""
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


def _proc_state(pid: int) -> str:
    """The scheduler state letter of a process (``S`` = sleeping), ``?`` if unknown."""
    fields = _stat_fields(pid)
    return fields[0] if fields else "?"


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


def _decode(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


# --- runs --------------------------------------------------------------------------------


@dataclass
class Result:
    """The outcome of one product run (stdout and stderr decoded as UTF-8)."""

    program: str
    """How the product is named in messages, e.g. ``ledger``."""
    args: list[str]
    """The arguments after the program."""
    returncode: int
    """Exit status (negative: killed by that signal)."""
    stdout: str
    """Standard output, at most :data:`OUTPUT_LIMIT` bytes of it."""
    stderr: str
    """Standard error, at most :data:`OUTPUT_LIMIT` bytes of it."""

    def describe(self) -> str:
        """A short human-readable summary for assertion messages."""
        return (
            f"`{self.program} {' '.join(self.args)}` exited {self.returncode}\n"
            f"stdout: {self.stdout[-800:]!r}\nstderr: {self.stderr[-1500:]!r}"
        )


class _Run:
    """A started product process in its own session (its pid is its process group id)."""

    def __init__(self, product: "Product", proc: subprocess.Popen, args: list[str]):
        self.product = product
        self.proc = proc
        self.args = args
        self.started = time.monotonic()
        self._container_ns = container_cpu_ns()
        try:  # the kernel kills product processes first when memory runs out (inherited on fork)
            with open(f"/proc/{proc.pid}/oom_score_adj", "w", encoding="ascii") as handle:
                handle.write("1000")
        except OSError:
            pass

    @property
    def command(self) -> str:
        """The run as a shell-like string for messages, e.g. ```ledger ingest a.jsonl```."""
        return f"`{self.product.name} {' '.join(self.args)}`"

    def cpu_use(self) -> CpuUse:
        """CPU use of the run's live processes so far (see :class:`CpuUse`)."""
        return measure(self.proc.pid, self.started, self._container_ns)

    def kill_group(self) -> None:
        """SIGKILL every process of the run's process group (cleanup; the per-check sweep gets
        the ones that left it)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.kill()

    def kill(self) -> None:
        """SIGKILL the run's process group and reap the run."""
        self.kill_group()
        self.proc.wait()


def _exchange(proc: subprocess.Popen, stdin: bytes, deadline: float) -> tuple[bytearray, bytearray, bool]:
    """Feed ``stdin`` and collect stdout/stderr (each capped at OUTPUT_LIMIT) until both reach
    EOF and the process exits, or ``deadline`` (``time.monotonic()``) passes.

    Returns ``(stdout, stderr, timed_out)``; on time-out the pipes stay open for :func:`_drain`.
    """
    out, err = bytearray(), bytearray()
    buffers = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    with selectors.DefaultSelector() as sel:
        for fd in buffers:
            sel.register(fd, selectors.EVENT_READ)
        view, offset = memoryview(stdin), 0
        if stdin:
            sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return out, err, True
            for key, _ in sel.select(remaining):
                if key.fd in buffers:
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fd)
                        continue
                    buf = buffers[key.fd]
                    if len(buf) < OUTPUT_LIMIT:
                        buf += chunk[:OUTPUT_LIMIT - len(buf)]
                else:
                    try:
                        offset += os.write(key.fd, view[offset:offset + select.PIPE_BUF])
                    except BrokenPipeError:
                        offset = len(view)
                    if offset >= len(view):
                        sel.unregister(key.fd)
                        proc.stdin.close()
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return out, err, True
    return out, err, False


def _drain(proc: subprocess.Popen, out: bytearray, err: bytearray, limit_s: float = 1.0) -> None:
    """After a kill: read what is left in the pipes for at most ``limit_s`` s, then close them
    (a process outside the killed group may still hold them open)."""
    deadline = time.monotonic() + limit_s
    buffers = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    with selectors.DefaultSelector() as sel:
        for fd in buffers:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fd)
                elif len(buffers[key.fd]) < OUTPUT_LIMIT:
                    buffers[key.fd] += chunk[:OUTPUT_LIMIT - len(buffers[key.fd])]


class Pending(_Run):
    """A product run started with :meth:`Product.spawn`; :meth:`result` waits for it.

    Like ``subprocess.run``: stdin, stdout and stderr are pipes, and a thread feeds stdin and
    collects the output while the check goes on.
    """

    def __init__(self, product: "Product", proc: subprocess.Popen, args: list[str], stdin: bytes,
                 timeout: float, expect_ok: str | None):
        super().__init__(product, proc, args)
        self._timeout = timeout
        self._expect_ok = expect_ok
        self._output: tuple[bytes, bytes] = (b"", b"")
        self._overrun: CpuUse | None = None
        self._crash: Exception | None = None
        self._thread = threading.Thread(target=self._communicate, args=(stdin,), daemon=True)
        self._thread.start()

    def _communicate(self, stdin: bytes) -> None:
        out, err = bytearray(), bytearray()
        try:
            out, err, timed_out = _exchange(self.proc, stdin, self.started + self._timeout)
            if timed_out:
                self._overrun = self.cpu_use()  # before the kill: the processes are still there
                self.kill_group()
                _drain(self.proc, out, err)
        except Exception as error:  # noqa: BLE001 - reported by result(): no verdict
            self._crash = error
            self.kill_group()
        finally:
            for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                try:
                    stream.close()
                except OSError:
                    pass
            self.proc.wait()
            self._output = (bytes(out), bytes(err))

    def result(self) -> Result:
        """Wait for the run to finish and return its Result.

        Raises:
            NoVerdict: the run overran its time limit because the host starved it, or the
                runner failed while feeding or reading it.
            pytest's Failed: the run overran its time limit otherwise (it hung or is too slow),
                or ``expect_ok`` was given and it exited non-zero.
        """
        import pytest

        self._thread.join()
        out, err = self._output
        if self._crash is not None:
            raise NoVerdict(f"the runner failed while running {self.command}: {self._crash!r}")
        if self._overrun is not None:
            text = (f"{self.command} did not finish within {self._timeout:g} s "
                    f"({self._overrun.describe()})")
            if self._overrun.starved:
                raise NoVerdict(f"{text}: the host starved it of CPU")
            pytest.fail(f"{text}; stderr so far: {_decode(err)[-500:]!r}", pytrace=False)
        result = Result(self.product.name, self.args, self.proc.returncode, _decode(out), _decode(err))
        if self._expect_ok:
            assert result.returncode == 0, self._expect_ok + result.describe()
        return result

    def kill(self) -> None:
        """SIGKILL the run if it is still going (cleanup only)."""
        if self.proc.poll() is None:
            self.kill_group()
        self._thread.join()


class Streaming(_Run):
    """A product run whose stdin is a pipe that the check feeds piecemeal (output discarded)."""

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

        Idle means: the pipe holds no unread bytes and either the process is blocked in
        ``read`` on its stdin (seen on two polls in a row: it has handled everything it read),
        or, where that cannot be seen (another thread reads, ``select``, no
        ``/proc/PID/syscall``), it is sleeping and nothing under ``watch`` changed for
        ``settle`` seconds. Returns early if the process exits; gives up quietly after
        ``limit`` s.
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
        """SIGKILL the run (its whole process group) and reap it."""
        self.kill_group()
        self.proc.wait()
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass


#: The line a server product prints on stdout once it listens (group 1: the port).
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


class _Drain(threading.Thread):
    """Reads a pipe to its end, keeping at most :data:`OUTPUT_LIMIT` bytes of it (the rest is read
    and dropped); calls ``on_line`` with each line read."""

    def __init__(self, pipe, on_line=None):
        super().__init__(daemon=True)
        self.pipe, self.on_line, self.data = pipe, on_line, bytearray()
        self.start()

    def run(self):
        for line in iter(self.pipe.readline, b""):
            if len(self.data) < OUTPUT_LIMIT:  # a product that writes without end is bounded
                self.data += line[:OUTPUT_LIMIT - len(self.data)]
            if self.on_line:
                self.on_line(line)
        self.pipe.close()

    def text(self) -> str:
        return _decode(bytes(self.data))


class Service:
    """A server product run that the check talks to itself (e.g. over HTTP on 127.0.0.1).

    Started at once through :meth:`Product.popen` (stdin empty; killed by :meth:`Product.close`
    too), it is ready when it prints ``listening on http://127.0.0.1:PORT`` on stdout
    (:data:`LISTENING`): :meth:`wait_listening` sets :attr:`port`. Two threads read its stdout
    and stderr all along, keeping at most :data:`OUTPUT_LIMIT` bytes of each (:attr:`stdout`,
    :attr:`stderr`). Every wait is bounded by ``timeout`` seconds: past it the service is killed
    and the check fails, unless the kernel shows the host starved it of CPU (:class:`CpuUse`):
    then the check has no verdict (:class:`NoVerdict`). The command line (and its port flag) is
    the gate's: ``Service(product, ["--state", state, "--port", "0"])``.

    Args:
        product: the check's product.
        args: the arguments after the product's command (``str()`` of each is passed).
        timeout: seconds each wait may take: to start listening, to exit by itself, to stop
            after SIGTERM.

    Attributes:
        argv: the whole command line, ``product.command`` then ``args``.
        port: the port from the listening line (int), None until it is printed.
        run: the product run (:meth:`_Run.cpu_use`, :meth:`_Run.kill_group`).
        proc: its ``subprocess.Popen``.
    """

    def __init__(self, product: "Product", args, timeout: float = DEFAULT_TIMEOUT):
        args = [str(arg) for arg in args]
        self.name = product.name
        self.argv = [*product.command, *args]
        self.timeout = timeout
        self.port: int | None = None
        self._listening = threading.Event()
        self.run = product.popen(*args)
        self.proc = self.run.proc
        self._out = _Drain(self.proc.stdout, self._line)
        self._err = _Drain(self.proc.stderr)

    def _line(self, line: bytes) -> None:
        match = LISTENING.search(_decode(line))
        if match and self.port is None:
            self.port = int(match.group(1))
            self._listening.set()

    def wait_listening(self) -> "Service":
        """Wait until the service prints its listening line; return self (``port`` set).

        Raises:
            NoVerdict: ``timeout`` s passed and the host starved the service.
            pytest's Failed: it exited first, or ``timeout`` s passed otherwise (it is killed).
        """
        deadline = time.monotonic() + self.timeout
        while not self._listening.wait(0.01):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.no_verdict_if_starved("did not start listening", self.timeout)
                self.kill()
                _fail(f"the {self.name} did not print `listening on http://127.0.0.1:PORT` "
                      f"({self.describe()})")
        return self

    def no_verdict_if_starved(self, what: str, limit: float) -> None:
        """Call when a wait on the running service passed its limit (``limit`` s; ``what`` the
        service failed to do, for the message): raises :class:`NoVerdict` (after killing it) if
        the host starved it of CPU; returns otherwise, e.g. if it exited."""
        if self.proc.poll() is None:
            use = self.run.cpu_use()
            if use.starved:
                self.kill()
                raise NoVerdict(f"the {self.name} {what} within {limit:g} s ({use.describe()}): "
                                "the host starved it of CPU")

    def kill(self) -> None:
        """SIGKILL the service (and anything it started in its process group) and reap it."""
        if self.proc.poll() is None:
            self.run.kill_group()
        self.proc.wait()
        self._out.join(5)
        self._err.join(5)

    def terminate(self) -> int:
        """SIGTERM the service and wait for it to exit; its exit status (negative: the signal).

        Raises:
            pytest's Failed: still running ``timeout`` s later (it is killed; SIGTERM stops a
                service).
        """
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(self.timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                _fail(f"the {self.name} did not stop within {self.timeout:g} s of SIGTERM")
        self.kill()
        return self.proc.returncode

    def wait(self) -> int:
        """Wait for the service to exit by itself (e.g. on a bad command line); its exit status.

        Raises:
            NoVerdict: still running ``timeout`` s later and the host starved it.
            pytest's Failed: still running ``timeout`` s later otherwise (it is killed).
        """
        try:
            self.proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            self.no_verdict_if_starved("did not exit", self.timeout)
            self.kill()
            _fail(f"`{' '.join(self.argv[1:])}` did not exit within {self.timeout:g} s")
        self.kill()
        return self.proc.returncode

    @property
    def stdout(self) -> str:
        """Its standard output so far (at most :data:`OUTPUT_LIMIT` bytes), decoded as UTF-8."""
        return self._out.text()

    @property
    def stderr(self) -> str:
        """Its standard error so far (at most :data:`OUTPUT_LIMIT` bytes), decoded as UTF-8."""
        return self._err.text()

    def describe(self) -> str:
        """Exit status and output tails, for failure messages."""
        code = self.proc.poll()
        return (f"{'running' if code is None else f'exited {code}'}; stdout {self.stdout[-300:]!r}; "
                f"stderr {self.stderr[-800:]!r}")


#: Where Debian's ``libfaketime`` package puts its preload library (any architecture).
FAKETIME_LIBRARIES = "/usr/lib/*/faketime/libfaketime.so.1"


def shifted_clock(days: int) -> dict[str, str] | None:
    """Environment variables that move a run's wall clock ``days`` days ahead, or None where
    ``libfaketime`` is not installed (a development host): pass them as a run's ``env``.

    ``libfaketime`` (https://github.com/wolfcw/libfaketime), preloaded into the run and every
    process it starts, offsets what the C library reports for the wall clock (``time``,
    ``gettimeofday``, ``clock_gettime(CLOCK_REALTIME)``: Python's ``time.time`` and
    ``datetime.now``, ``date``). The monotonic clocks are left alone (``FAKETIME_DONT_FAKE_MONOTONIC``;
    timeouts keep working) and so are file times. A check compares such a run with an unshifted
    one to catch wall-clock stamps at any granularity down to the year, without waiting for the
    clock to move. A statically linked program or one that reads the clock without the C
    library (raw ``syscall``) is not moved.
    """
    import glob

    found = sorted(glob.glob(FAKETIME_LIBRARIES))
    if not found:
        return None
    return {"LD_PRELOAD": found[0], "FAKETIME": f"+{int(days)}d", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def _fail(message: str) -> None:
    """Fail the check with ``message`` (pytest's Failed, no traceback)."""
    import pytest

    pytest.fail(message, pytrace=False)


# --- the product of one check ------------------------------------------------------------


def _open_for_product(path: Path) -> None:
    """Let other users traverse ``path`` and those of its parents we own that they cannot yet
    (pytest makes its temporary directories 0700); listing them stays private."""
    for directory in (path, *path.parents):
        try:
            st = directory.stat()
        except OSError:
            return
        if st.st_mode & 0o001:
            return
        if st.st_uid != os.geteuid():
            return
        directory.chmod((st.st_mode & 0o7777) | 0o011)


def _shared_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) a directory the product may add entries to but not
    remove the runner's from (mode 1777, like /tmp)."""
    missing = [p for p in (path, *path.parents) if not p.exists()][::-1]
    for directory in missing:
        directory.mkdir()
        directory.chmod(0o1777)
    return path


class Product:
    """The product under test for one check, run as the product uid in a private copy of the
    snapshot.

    Layout under ``scratch`` (an empty directory of the runner's, e.g. pytest's ``tmp_path``,
    which the product may traverse but not list):
    ``workspace/`` (the copy, owned by the product uid; its working directory), ``home/`` (its
    HOME) and ``data/`` (:meth:`path`: the check's inputs, written by the runner, and the
    product's state directories, created by the product). Call :meth:`close` at the end of the
    check.

    Args:
        snapshot: the snapshot directory (readable by the product uid).
        scratch: an empty directory of the runner's.
        command: the product's command, e.g. ``["python3", "-m", "ledger"]``.
        name: how the product is named in messages (default: the last word of ``command``).
        ignore: glob patterns of snapshot entries not copied (e.g. ``node_modules``).
    """

    def __init__(self, snapshot: Path, scratch: Path, command: list[str], name: str | None = None,
                 ignore: tuple[str, ...] = ()):
        self.command = list(command)
        self._ignore = ignore
        self.name = name or self.command[-1]
        self.uid = product_uid()
        self.tmp = scratch
        self.workdir = scratch / "workspace"
        _open_for_product(scratch)
        self.home = _shared_dir(scratch / "home")
        _shared_dir(scratch / "data")
        self._runs: list[_Run] = []
        self._unusable: str | None = None
        self._copy_snapshot(snapshot)

    def _copy_snapshot(self, snapshot: Path) -> None:
        """Copy the snapshot to ``workspace/`` and give it to the product uid (``CAP_CHOWN``), so
        the product owns its working directory as it would on a developer's machine.

        A copy that fails (no space left: the snapshot or the product's writes fill ``/tmp``)
        fails the check at the first run (a verdict: it is the product's doing, not the
        scorer's; failing here, in the check's set-up, would make it an error).
        """
        try:
            shutil.copytree(snapshot, self.workdir, symlinks=True,
                            ignore=shutil.ignore_patterns(*self._ignore) if self._ignore else None)
            if self.uid is not None:
                for top, dirs, files in os.walk(self.workdir):
                    os.chown(top, self.uid, self.uid)
                    for name in dirs + files:
                        os.chown(os.path.join(top, name), self.uid, self.uid, follow_symlinks=False)
        except (OSError, shutil.Error) as error:
            self._unusable = f"the snapshot could not be copied for the product: {str(error)[:300]}"

    def _popen(self, args, stdout, env: dict | None = None, stdin=subprocess.PIPE,
               stderr=None) -> subprocess.Popen:
        if self._unusable:
            import pytest

            pytest.fail(self._unusable, pytrace=False)
        environment = self._environment(env)
        return subprocess.Popen(
            self._as_product([*self.command, *[str(arg) for arg in args]], environment), cwd=self.workdir,
            env=environment, stdin=stdin, stdout=stdout,
            stderr=stdout if stderr is None else stderr,
            start_new_session=True)

    def _as_product(self, argv: list[str], environment: dict[str, str]) -> list[str]:
        """``argv`` run as the product uid and gid with no supplementary group (``setpriv``,
        util-linux; it drops every capability with the uid), or as is outside the scorer.

        Variables of the dynamic loader (``LD_*``, e.g. :func:`shifted_clock`'s ``LD_PRELOAD``)
        are taken out of ``environment`` (changed in place) and set by ``env`` once the uid is
        switched, so the switch, which starts as the runner, never loads a library a check chose
        (a preloaded ``libfaketime`` would also leave its root-owned semaphore in ``/dev/shm``,
        which the product's processes then cannot open).

        Not ``Popen(user=...)``: that makes CPython fork the whole pytest process instead of
        ``vfork``: 8.4 ms of CPU per run against 2.4 ms through ``setpriv`` for a 40 MB process
        in the scorer image (a plain ``vfork`` and exec: 0.9 ms).
        """
        if self.uid is None:
            return argv
        loader = [f"{name}={environment.pop(name)}" for name in sorted(environment) if name.startswith("LD_")]
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups", "--",
                *(["env", *loader] if loader else []), *argv]

    def path(self, name: str) -> Path:
        """A path in the scratch directory ``data/`` (parents created, open to the product).

        A symbolic link found on the way that leads out of the scratch directory is removed
        first: the product may have left one where the check is about to write an input, to
        make the runner (root) write through it.
        """
        path = self.tmp / "data" / name
        scratch = self.tmp.resolve()
        relative = path.relative_to(self.tmp)
        for part in [*reversed(relative.parents), relative][1:]:
            candidate = self.tmp / part
            if candidate.is_symlink() and not candidate.resolve().is_relative_to(scratch):
                candidate.unlink()
        _shared_dir(path.parent)
        return path

    def env(self) -> dict[str, str]:
        """Environment variables of the next run besides PATH and HOME (called once per run, in
        the order runs start); default ``LANG=C.UTF-8``. Gates override it, e.g. to vary
        ``PYTHONHASHSEED`` from run to run."""
        return {"LANG": "C.UTF-8"}

    def _environment(self, extra: dict | None) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
                "HOME": str(self.home), **self.env(), **(extra or {})}

    def spawn(self, *args, stdin: bytes | str | None = None, timeout: float = DEFAULT_TIMEOUT,
              expect_ok: str | None = None, env: dict | None = None) -> Pending:
        """Start the product with ``args`` in the background; ``.result()`` collects it.

        Runs that do not depend on each other can go on at the same time. ``stdin`` (bytes or
        str) is fed to the process (empty without it). ``expect_ok``: if given, ``.result()``
        requires exit 0 and prefixes the failure message with it. ``env``: variables added to
        this run's environment.
        """
        if isinstance(stdin, str):
            stdin = stdin.encode("utf-8")
        run = Pending(self, self._popen(args, subprocess.PIPE, env), [str(a) for a in args],
                      stdin or b"", timeout, expect_ok)
        self._runs.append(run)
        return run

    def run(self, *args, stdin: bytes | str | None = None, timeout: float = DEFAULT_TIMEOUT,
            env: dict | None = None) -> Result:
        """Run the product with ``args`` to completion and return its Result (see :meth:`spawn`;
        a run over ``timeout`` seconds fails the check, or gives no verdict if starved)."""
        return self.spawn(*args, stdin=stdin, timeout=timeout, env=env).result()

    def start(self, *args, env: dict | None = None) -> Streaming:
        """Start the product with a stdin pipe the check feeds (output discarded; for kill tests)."""
        run = Streaming(self, self._popen(args, subprocess.DEVNULL, env), [str(a) for a in args])
        self._runs.append(run)
        return run

    def popen(self, *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
              env: dict | None = None) -> _Run:
        """Start the product with ``args`` and hand the process over, for a check that drives
        it itself (e.g. a server it talks to): ``.proc`` is the ``Popen``; ``.cpu_use()``
        tells a starved run from a hung one when the check's own wait runs out (raise
        :class:`NoVerdict` when ``.starved``); killed by :meth:`close`. The check reads the
        pipes itself and must bound what it keeps (:data:`OUTPUT_LIMIT`); :class:`Service` does
        all this for a server."""
        run = _Run(self, self._popen(args, stdout, env, stdin=stdin, stderr=stderr),
                   [str(a) for a in args])
        self._runs.append(run)
        return run

    def close(self) -> None:
        """Kill every process of the product uid (first: one that left its run's process group
        may hold the run's pipes open), then every run still alive."""
        if self.uid is not None:
            kill_user(self.uid)
        for run in self._runs:
            run.kill()
