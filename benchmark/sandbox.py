"""The trial sandbox: one agent container per trial, living across all its episodes.

A :class:`Sandbox` is a container of the agent image with ``/workspace`` a git repository
initialised from the marathon's starter (copied in with :meth:`Sandbox.put_directory`, never
mounted, then :meth:`Sandbox.init_repo`). Everything in it runs as the
non-root user uid 1000, PID 1 included (a tiny reaper, so processes left behind by an attempt are
collected); every capability is dropped; CPU, memory and process limits apply.

No container has a network (``network_mode="none"``: only ``lo``, no route anywhere), so it
cannot reach any address, on the host or beyond, whatever the engine's firewall settings. A
model agent's container reaches exactly one thing, the metering proxy: the trial's own proxy
socket sits alone in a per-trial host directory bind-mounted read-only at :data:`PROXY_DIR`
(into that trial's container only; the proxy accepts the trial's token on that socket alone),
and PID 1
keeps a forwarder running (``socat`` from ``127.0.0.1:``:data:`FORWARD_PORT` to that socket,
restarted whenever it dies, e.g. when the uid-1000 processes are killed after an attempt), so the
CLIs use ``http://127.0.0.1:<FORWARD_PORT>`` (:data:`PROXY_URL`). Containers are named
``marathon-<run id>-<nonce>-<trial id>`` and carry the labels :data:`~benchmark.docker_env.LABEL`
(run id), :data:`~benchmark.rundir.NONCE_LABEL` (the run directory's nonce) and
:data:`TRIAL_LABEL` (trial id), so the leftovers of a dead run, and only that run's, are found
and removed by :func:`remove_run_resources`.

Operations: :meth:`Sandbox.exec` with a time limit (every uid-1000 process is killed when it runs
over; output bounded in memory and on disk), :meth:`Sandbox.commit` (``git add -A; git commit
--allow-empty``), :meth:`Sandbox.archive` (a tar of ``/workspace`` with ``.git``, streamed to a
host file within :class:`SandboxLimits`' archive limits, which :meth:`Sandbox.restore` puts
back), :func:`extract_snapshot` (that tar to a host directory without ``.git``, for the scorer,
streamed) and :meth:`Sandbox.diff` (to a file).

What a hostile workspace can cost the host is bounded: archives never pass through memory and
stop at the first entry over :attr:`SandboxLimits.archive_max_bytes` (apparent sizes, so a
sparse file counts its full length) or :attr:`SandboxLimits.archive_max_files`
(:class:`ArchiveOverLimit`); a command's output is kept to its last 64 KiB in memory and to
:attr:`SandboxLimits.output_max_bytes` in a file.
"""

from __future__ import annotations

import collections
import hashlib
import io
import shlex
import tarfile
import threading
import time
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import docker.errors
from pydantic import BaseModel, Field

from benchmark.docker_env import LABEL, client
from benchmark.errors import MarathonError
from benchmark.rundir import NONCE_LABEL
from benchmark.storage import CHUNK_BYTES, atomic_file, naming, storage_fault

#: Label holding the trial id on a trial's container.
TRIAL_LABEL = "org.marathon.trial"
#: The workspace directory inside the container.
WORKSPACE = "/workspace"
#: The agent user and group inside the container.
AGENT_UID = 1000
AGENT_USER = f"{AGENT_UID}:{AGENT_UID}"
#: Home directory of the agent user in the agent image.
AGENT_HOME = "/home/agent"

#: Where the trial's proxy socket directory is mounted in a model agent's container.
PROXY_DIR = "/run/marathon"
#: File name of the proxy's Unix socket in that directory.
PROXY_SOCKET = "proxy.sock"
#: Loopback port in the container on which the forwarder serves the proxy.
FORWARD_PORT = 8790
#: Base URL of the proxy as a model agent's container reaches it.
PROXY_URL = f"http://127.0.0.1:{FORWARD_PORT}"
#: argv of the in-container forwarder to the proxy's socket.
FORWARDER = ["socat", f"TCP-LISTEN:{FORWARD_PORT},bind=127.0.0.1,reuseaddr,fork",
             f"UNIX-CONNECT:{PROXY_DIR}/{PROXY_SOCKET}"]

# PID 1 of a trial container: reaps orphans forever and, when given an argv, keeps that command
# (the forwarder) running, restarting it whenever it exits (at most once a second when it keeps
# failing). As the init of its PID namespace it cannot be killed from inside, so killing every
# uid-1000 process after an attempt leaves it standing (and it restarts the forwarder at once).
_REAPER = (
    "import os, sys, time\n"
    "argv = sys.argv[1:]\n"
    "child, started = None, 0.0\n"
    "def spawn():\n"
    "    global child, started\n"
    "    started = time.monotonic()\n"
    "    child = os.spawnvp(os.P_NOWAIT, argv[0], argv)\n"
    "if argv:\n"
    "    spawn()\n"
    "while True:\n"
    "    try:\n"
    "        pid, _ = os.wait()\n"
    "    except ChildProcessError:\n"
    "        time.sleep(1)\n"
    "        continue\n"
    "    if argv and pid == child:\n"
    "        if time.monotonic() - started < 1:\n"
    "            time.sleep(1)\n"
    "        spawn()\n"
)


#: Bytes of a command's output kept in memory when it goes to no file (the last ones).
_TAIL_BYTES = 65536


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.1f} GiB"


class SandboxLimits(BaseModel):
    """Resource limits of a trial container."""

    mem_limit: str = "2g"
    """Memory limit (Docker syntax); swap is not allowed beyond it."""
    nano_cpus: int = Field(default=2_000_000_000, gt=0)
    """CPU quota in units of 1e-9 CPUs (default 2 CPUs)."""
    pids_limit: int = Field(default=512, gt=0)
    """Maximum number of processes in the container."""
    archive_max_bytes: int = Field(default=256 * 2**20, gt=0)
    """Largest workspace archived after an attempt, in bytes: the sum of the *apparent* sizes of
    the archive's entries (``.git`` included; a sparse file counts its full length), checked
    on each entry's header as the archive streams in, before its data is read. A workspace
    over it is not scored: its checks are recorded ``failed`` with the reason (it counts
    against the attempt, like any workspace the product cannot be checked in)."""
    archive_max_files: int = Field(default=50_000, gt=0)
    """Most entries (files, directories, links; ``.git`` included) in an archived workspace;
    over it, as over :attr:`archive_max_bytes`."""
    output_max_bytes: int = Field(default=128 * 2**20, gt=0)
    """Most bytes of a command's output written to a file (an agent's transcript, a
    ``workspace.diff``); the rest is read and dropped, and a last line says so."""


class ExecResult(BaseModel):
    """The outcome of one command run in a sandbox."""

    exit_code: int | None
    """Exit status of the command; ``None`` when it was killed on timeout."""
    timed_out: bool
    """Whether the command ran past its time limit and was killed."""
    duration_s: float
    """Wall time in seconds from start to exit (or kill)."""
    output: str
    """Combined stdout and stderr, decoded as UTF-8 (replacement characters for bad bytes);
    at most the last 64 KiB when ``output_file`` was not given, else empty."""
    output_bytes: int = 0
    """Bytes of output the command produced (all of them, also those not kept)."""


def container_name(run_id: str, nonce: str | None, trial_id: str) -> str:
    """Name of a trial's container: ``marathon-<run id>-<nonce>-<trial id>`` (without the
    nonce for callers that give none, e.g. tests)."""
    return "-".join(["marathon", run_id, *([nonce] if nonce else []), trial_id])


def run_labels(run_id: str, nonce: str | None) -> dict[str, str]:
    """Docker labels of every container of the run: :data:`~benchmark.docker_env.LABEL` (run
    id) and :data:`~benchmark.rundir.NONCE_LABEL` (the run directory's nonce, when given)."""
    return {LABEL: run_id, **({NONCE_LABEL: nonce} if nonce else {})}


def remove_run_resources(run_id: str, nonce: str | None = None, *,
                         networks: bool = True) -> tuple[int, int]:
    """Remove every container (and, with ``networks``, every network) of a run: labelled with
    ``run_id`` and, when ``nonce`` is given, with that nonce, so another run directory that
    shares the run id keeps its containers. The leftovers of a dead session, or the containers
    of an interrupted one. (Runs no longer create networks; ones labelled by older harness
    versions are still removed.) Resources that vanish meanwhile (removed by another thread)
    are skipped.

    Returns:
        (containers removed, networks removed).
    """
    api = client().api
    filters = {"label": [f"{k}={v}" for k, v in run_labels(run_id, nonce).items()]}

    def ids() -> list[str]:
        # The low-level listing: the high-level one inspects each container and fails when one
        # vanishes between listing and inspection.
        return [c["Id"] for c in api.containers(all=True, filters=filters)]

    containers = ids()
    for cid in containers:
        try:
            api.remove_container(cid, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if e.status_code != 409:  # 409: another thread is removing it already
                raise
    deadline = time.monotonic() + 60
    while ids() and time.monotonic() < deadline:
        time.sleep(0.2)  # removals by another thread are still in progress
    found = [n["Id"] for n in api.networks(filters=filters)] if networks else []
    for nid in found:
        try:
            api.remove_network(nid)
        except docker.errors.NotFound:
            pass
    return len(containers), len(found)


def tar_directory(src: Path, arcname: str, *, uid: int = AGENT_UID) -> bytes:
    """A tar of directory ``src`` under ``arcname``, owned by ``uid``, without ``.git`` and
    ``__pycache__``. Symbolic links are kept as links."""
    buf = io.BytesIO()

    def own(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = PurePosixPath(info.name).parts
        if ".git" in parts[1:] or "__pycache__" in parts:
            return None
        info.uid = info.gid = uid
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(src), arcname=arcname, filter=own)
    return buf.getvalue()


def tar_files(files: dict[str, bytes], *, uid: int = AGENT_UID) -> bytes:
    """A tar of in-memory files (``path -> content``, paths relative, parent directories
    created), owned by ``uid``, mode 0644 (directories 0755)."""
    buf = io.BytesIO()
    dirs: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, data in files.items():
            for parent in reversed(PurePosixPath(path).parents[:-1]):
                if str(parent) not in dirs:
                    dirs.add(str(parent))
                    info = tarfile.TarInfo(str(parent))
                    info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, 0o755, uid, uid
                    info.mtime = int(time.time())
                    tar.addfile(info)
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.uid, info.gid = len(data), 0o644, uid, uid
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class ArchiveOverLimit(Exception):
    """A workspace is over :attr:`SandboxLimits.archive_max_bytes` or
    :attr:`SandboxLimits.archive_max_files`; the message says which, by how much (one line)."""


class ArchiveInfo(BaseModel):
    """What :meth:`Sandbox.archive` wrote."""

    path: Path
    """The tar file on the host."""
    sha256: str
    """SHA-256 (hex) of the tar file."""
    bytes: int
    """Size of the tar file in bytes."""
    entries: int
    """Entries (files, directories, links) in it."""
    apparent_bytes: int
    """Sum of the entries' apparent sizes in bytes."""


class _TeeReader(io.RawIOBase):
    """A readable stream over an iterator of byte chunks that copies every byte it serves to
    ``out`` and into a SHA-256 (so ``tarfile`` can parse the archive as it is written)."""

    def __init__(self, chunks, out: BinaryIO):
        self._chunks, self._out = iter(chunks), out
        self._buf, self._pos = memoryview(b""), 0
        self.hash = hashlib.sha256()
        self.count = 0
        """Bytes read from the chunks so far."""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self._pos >= len(self._buf):
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._out.write(chunk)
            self.hash.update(chunk)
            self.count += len(chunk)
            self._buf, self._pos = memoryview(chunk), 0
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos:self._pos + n]
        self._pos += n
        return n

    def drain(self) -> None:
        """Copy the rest of the stream (the archive's end blocks) to ``out``."""
        self._pos = len(self._buf)
        for chunk in self._chunks:
            self._out.write(chunk)
            self.hash.update(chunk)
            self.count += len(chunk)


def extract_snapshot(archive: Path | bytes, dest: Path) -> Path:
    """Extract a workspace archive (a tar file from :meth:`Sandbox.archive`, or its bytes) into
    ``dest`` without ``.git``, streaming from the file.

    Members that would land outside ``dest`` (absolute paths, ``..``, links pointing out) and
    special files are skipped, so a hostile workspace cannot write elsewhere on the host.

    Returns:
        ``dest``, holding the workspace's files.
    """
    dest.mkdir(parents=True, exist_ok=True)
    source = io.BytesIO(archive) if isinstance(archive, bytes) else open(archive, "rb")
    with naming(dest), source, tarfile.open(fileobj=source, mode="r|") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if len(parts) < 2 or parts[1] == ".git":
                continue
            member.name = str(PurePosixPath(*parts[1:]))
            if member.islnk():
                lparts = PurePosixPath(member.linkname).parts
                if len(lparts) < 2 or lparts[1] == ".git":
                    continue
                member.linkname = str(PurePosixPath(*lparts[1:]))
            try:
                safe = tarfile.data_filter(member, str(dest))
            except tarfile.FilterError:
                continue
            try:
                tar.extract(safe, str(dest), filter="fully_trusted", set_attrs=True)
            except tarfile.TarError:
                continue  # e.g. a hard link to a member that was skipped
    return dest


class Sandbox:
    """A running trial container. Create it with :meth:`create`; remove it with :meth:`remove`.

    Methods are called by one thread at a time (the trial's), except :meth:`remove`, which may
    come from a signal handler's clean-up thread.
    """

    def __init__(self, container, *, run_id: str, trial_id: str,
                 limits: SandboxLimits | None = None):
        self.container = container
        """The Docker SDK container object."""
        self.run_id = run_id
        """Id of the run the trial belongs to."""
        self.trial_id = trial_id
        """Id of the trial."""
        self.limits = limits or SandboxLimits()
        """The container's limits, and those of archives and outputs taken from it."""

    @classmethod
    def create(cls, *, run_id: str, trial_id: str, image: str, nonce: str | None = None,
               proxy_dir: Path | None = None, limits: SandboxLimits | None = None) -> "Sandbox":
        """Start a trial container from ``image`` with an empty ``/workspace`` and no network
        (only loopback).

        Args:
            nonce: the run directory's nonce (:mod:`benchmark.rundir`), in the container's name
                and labels, so runs sharing a run id never collide.
            proxy_dir: for model agents, the host directory holding only the trial's own socket
                of the metering proxy (:data:`PROXY_SOCKET`): it is bind-mounted read-only at
                :data:`PROXY_DIR` and PID 1 runs the forwarder, so the container reaches the proxy
                at :data:`PROXY_URL` and nothing else. ``None`` (agents that call no model): no
                mount, no forwarder.

        Raises:
            MarathonError: Docker refuses to create or start the container, or the forwarder
                does not listen within 10 s.
        """
        limits = limits or SandboxLimits()
        name = container_name(run_id, nonce, trial_id)
        c = client()
        mounts = {}
        if proxy_dir is not None:
            mounts = {str(Path(proxy_dir).resolve()): {"bind": PROXY_DIR, "mode": "ro"}}
        try:
            container = c.containers.run(
                image, ["python3", "-c", _REAPER, *(FORWARDER if proxy_dir is not None else [])],
                name=name, detach=True, user=AGENT_USER, working_dir=WORKSPACE,
                network_mode="none", volumes=mounts,
                environment={"HOME": AGENT_HOME},
                mem_limit=limits.mem_limit, memswap_limit=limits.mem_limit,
                nano_cpus=limits.nano_cpus, pids_limit=limits.pids_limit,
                cap_drop=["ALL"], security_opt=["no-new-privileges"],
                labels={**run_labels(run_id, nonce), TRIAL_LABEL: trial_id},
            )
        except docker.errors.APIError as e:
            raise MarathonError(f"cannot start the container of trial {trial_id}: {e.explanation or e}") from None
        sandbox = cls(container, run_id=run_id, trial_id=trial_id, limits=limits)
        if proxy_dir is not None:
            try:
                sandbox.wait_for_forwarder()
            except BaseException:
                sandbox.remove()
                raise
        return sandbox

    def wait_for_forwarder(self, timeout_s: float = 10.0) -> None:
        """Wait until the forwarder to the proxy listens on ``127.0.0.1:FORWARD_PORT`` in the
        container (it is restarted by PID 1 within about a second whenever it dies).

        Raises:
            MarathonError: it does not listen within ``timeout_s`` seconds (e.g. ``socat`` is
                missing from the image).
        """
        script = ("import socket, sys, time\n"
                  f"deadline = time.monotonic() + {timeout_s}\n"
                  "while True:\n"
                  "    try:\n"
                  f"        socket.create_connection(('127.0.0.1', {FORWARD_PORT}), timeout=1).close()\n"
                  "        break\n"
                  "    except OSError:\n"
                  "        if time.monotonic() > deadline:\n"
                  "            sys.exit(1)\n"
                  "        time.sleep(0.05)\n")
        res = self.exec(["python3", "-c", script], timeout_s=timeout_s + 20)
        if res.exit_code != 0:
            raise MarathonError(f"trial {self.trial_id}: the forwarder to the metering proxy "
                                f"({' '.join(FORWARDER[:1])}) does not listen on 127.0.0.1:"
                                f"{FORWARD_PORT} in the container: {res.output.strip()[-200:]}")

    # -- running commands -------------------------------------------------------------------

    def exec(self, cmd: list[str], *, timeout_s: float, workdir: str = WORKSPACE,
             environment: dict[str, str] | None = None,
             output_file: BinaryIO | None = None) -> ExecResult:
        """Run ``cmd`` as uid 1000 in the container, killing it when it runs past ``timeout_s``.

        On timeout every uid-1000 process in the container is killed (``pkill -KILL -u 1000``:
        the command and anything it started, background processes included); PID 1 survives.

        Args:
            cmd: argv of the command.
            timeout_s: time limit in seconds.
            workdir: working directory in the container.
            environment: extra environment variables.
            output_file: binary file receiving stdout and stderr as they come, at most
                :attr:`SandboxLimits.output_max_bytes` (then a last line says the rest was
                dropped); when ``None`` the output is returned in :attr:`ExecResult.output`
                (last 64 KiB; memory stays bounded whatever the command prints).

        Raises:
            docker.errors.APIError: the container is gone (e.g. removed on interrupt).
            OSError: writing ``output_file`` failed (e.g. the disk is full).
        """
        api = client().api
        exec_id = api.exec_create(self.container.id, cmd, user=AGENT_USER, workdir=workdir,
                                  environment={"HOME": AGENT_HOME, **(environment or {})},
                                  stdout=True, stderr=True)["Id"]
        tail: collections.deque[bytes] = collections.deque()
        kept = [0, 0]  # bytes in tail, bytes produced
        cap = self.limits.output_max_bytes
        failure: list[BaseException] = []
        start = time.monotonic()
        stream = api.exec_start(exec_id, stream=True, demux=False)

        def pump() -> None:
            try:
                for chunk in stream:
                    seen = kept[1]
                    kept[1] += len(chunk)
                    if output_file is not None:
                        if seen <= cap:  # the chunk that crosses the cap writes the note
                            output_file.write(chunk[:cap - seen])
                            if kept[1] > cap:
                                output_file.write(f"\n[marathon: output over {cap} bytes; the rest "
                                                  "was dropped]\n".encode())
                            output_file.flush()
                        continue
                    tail.append(chunk)
                    kept[0] += len(chunk)
                    while kept[0] - len(tail[0]) >= _TAIL_BYTES:
                        kept[0] -= len(tail.popleft())
            except Exception as e:  # the connection dropped (container removed), or a write failed
                failure.append(e)

        reader = threading.Thread(target=pump, daemon=True, name=f"exec-{self.trial_id}")
        reader.start()
        reader.join(timeout_s)
        timed_out = reader.is_alive()
        if timed_out:
            self.kill_agent_processes()
            reader.join(30)
        duration = time.monotonic() - start
        if failure and (not timed_out or storage_fault(failure[0])):
            raise failure[0]
        info = api.exec_inspect(exec_id)
        exit_code = None if timed_out or info.get("Running") else info.get("ExitCode")
        text = b"".join(tail)[-_TAIL_BYTES:].decode("utf-8", errors="replace")
        return ExecResult(exit_code=exit_code, timed_out=timed_out, duration_s=duration, output=text,
                          output_bytes=kept[1])

    def run(self, script: str, *, timeout_s: float = 120.0) -> str:
        """Run a shell script as uid 1000 in ``/workspace`` (harness housekeeping) and return
        its output.

        Raises:
            MarathonError: the script fails or times out; the message names the trial.
        """
        res = self.exec(["sh", "-c", script], timeout_s=timeout_s)
        if res.timed_out or res.exit_code != 0:
            tail = res.output.strip().splitlines()[-1:] or ["no output"]
            why = "timed out" if res.timed_out else f"exit {res.exit_code}"
            raise MarathonError(f"trial {self.trial_id}: `{script.splitlines()[0]}` failed ({why}): {tail[0]}")
        return res.output

    def kill_agent_processes(self) -> None:
        """Kill every uid-1000 process in the container except PID 1 (leftovers of an attempt)."""
        api = client().api
        try:
            kill = api.exec_create(self.container.id, ["pkill", "-KILL", "-u", str(AGENT_UID)],
                                   user=AGENT_USER)["Id"]
            api.exec_start(kill)
        except docker.errors.APIError:
            pass

    # -- files --------------------------------------------------------------------------------

    def put_tar(self, archive: bytes | BinaryIO, dest: str = "/") -> None:
        """Extract a tar (bytes, or a binary file streamed) into the container at ``dest``
        (ownership from the tar headers).

        Raises:
            MarathonError: Docker refuses the archive.
        """
        try:
            ok = self.container.put_archive(dest, archive)
        except docker.errors.APIError as e:
            raise MarathonError(f"trial {self.trial_id}: copying into {dest} failed: {e.explanation or e}") from None
        if not ok:
            raise MarathonError(f"trial {self.trial_id}: copying into {dest} failed")

    def put_directory(self, src: Path, dest: str = WORKSPACE) -> None:
        """Copy the contents of host directory ``src`` into ``dest``, owned by uid 1000, without
        ``.git`` and ``__pycache__``."""
        dest_path = PurePosixPath(dest)
        self.put_tar(tar_directory(src, dest_path.name), str(dest_path.parent))

    def put_files(self, files: dict[str, bytes], dest: str = WORKSPACE) -> None:
        """Write in-memory files (``relative path -> content``) under ``dest``, owned by uid 1000."""
        self.put_tar(tar_files(files), dest)

    def get_file(self, path: str, *, limit: int) -> bytes | None:
        """The content of regular file ``path`` in the container, or ``None`` when it is
        missing, not a regular file, or larger than ``limit`` bytes."""
        try:
            stream, stat = self.container.get_archive(path)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as e:
            raise MarathonError(f"trial {self.trial_id}: reading {path} failed: {e.explanation or e}") from None
        if int(stat.get("size") or 0) > limit:
            return None
        data = b"".join(stream)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = next((m for m in tar.getmembers()), None)
            if member is None or not member.isfile() or member.size > limit:
                return None
            f = tar.extractfile(member)
            return f.read() if f is not None else None

    def clear_workspace(self) -> None:
        """Delete everything in ``/workspace`` except ``.git``."""
        self.run(f"find {WORKSPACE} -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {{}} +")

    # -- workspace as a git repository -------------------------------------------------------

    def init_repo(self) -> str:
        """Make ``/workspace`` (as it stands: starter and arm material) a git repository on
        branch ``main`` and commit everything as ``marathon: starter``.

        Returns:
            The commit id (hex) of the starter commit.
        """
        self.run("git init -q -b main && git add -A && git commit -q --allow-empty -m 'marathon: starter'")
        return self.head()

    def head(self) -> str | None:
        """The commit id of ``HEAD``, or ``None`` when the workspace is no longer a repository."""
        res = self.exec(["git", "rev-parse", "HEAD"], timeout_s=60)
        return res.output.strip() if res.exit_code == 0 else None

    def commit(self, message: str) -> str | None:
        """Commit everything in the workspace (``git add -A; git commit --allow-empty``).

        Returns:
            The new commit id, or ``None`` when the agent left no usable repository (the
            attempt is still scored from the files).
        """
        script = f"git add -A && git commit -q --allow-empty --no-verify -m {shlex.quote(message)}"
        res = self.exec(["sh", "-c", script], timeout_s=120)
        return self.head() if res.exit_code == 0 else None

    def snapshot_commit(self, message: str) -> str | None:
        """A commit object of the workspace as it stands, made with a private index and not put
        on any branch: ``HEAD``, the index and the files stay as they are (safe while the agent
        works). Its parent is ``HEAD``.

        Returns:
            The commit id, or ``None`` when the workspace is not a usable repository.
        """
        script = ('idx=$(mktemp) && trap \'rm -f "$idx"\' EXIT && '
                  '{ cp .git/index "$idx" 2>/dev/null || true; } && '
                  'GIT_INDEX_FILE="$idx" git add -A && tree=$(GIT_INDEX_FILE="$idx" git write-tree) && '
                  f'git commit-tree "$tree" -p HEAD -m {shlex.quote(message)}')
        res = self.exec(["sh", "-c", script], timeout_s=120)
        commit = res.output.strip().splitlines()[-1:] if res.exit_code == 0 else []
        return commit[0] if commit and len(commit[0]) == 40 else None

    def diff(self, base: str | None, head: str | None, dest: Path) -> int:
        """Write ``git diff --binary base head`` of the workspace to ``dest`` (atomically, at
        most :attr:`SandboxLimits.output_max_bytes`); empty when either commit is unknown or
        git fails.

        Returns:
            Bytes of diff git produced (more than ``dest`` holds when it was cut).

        Raises:
            OSError: writing ``dest`` failed.
        """
        with atomic_file(dest) as f:
            if not base or not head:
                return 0
            res = self.exec(["git", "diff", "--binary", base, head], timeout_s=120, output_file=f)
            if res.exit_code != 0:
                f.seek(0)
                f.truncate()
                return 0
            return res.output_bytes

    def reset_to(self, commit: str) -> None:
        """Roll the workspace back to ``commit``: ``git reset --hard`` then ``git clean -fdx``
        (untracked and ignored files go too), so ``/workspace`` holds exactly that commit's tree.
        Later commits stay in the object store (unreachable), so nothing recorded is lost.

        Raises:
            MarathonError: the reset failed (unknown commit, or no usable repository).
        """
        self.run(f"git reset -q --hard {shlex.quote(commit)} && git clean -q -fdx")

    def archive(self, dest: Path, path: str = WORKSPACE) -> ArchiveInfo:
        """Stream a tar of ``path`` in the container (default ``/workspace``, ``.git``
        included) to the host file ``dest``, never holding it in memory, within
        :attr:`SandboxLimits.archive_max_bytes` and :attr:`SandboxLimits.archive_max_files`:
        each entry's header is checked as it arrives, before its data is read, and the
        transfer is abandoned at the first entry over a limit.

        Raises:
            ArchiveOverLimit: the workspace is over a limit (``dest`` is removed).
            MarathonError: the workspace cannot be read.
            OSError: writing ``dest`` failed.
        """
        api = client().api
        limits = self.limits
        try:
            # docker's APIClient.get_archive, keeping the response so that an abandoned
            # transfer is closed at once (the engine stops sending).
            res = api._get(api._url("/containers/{0}/archive", self.container.id),
                           params={"path": path}, stream=True, headers={"Accept-Encoding": "identity"})
            api._raise_for_status(res)
        except docker.errors.APIError as e:
            raise MarathonError(f"trial {self.trial_id}: reading {path} failed: {e.explanation or e}") from None
        entries = apparent = 0
        try:
            with naming(dest), open(dest, "wb") as out:
                tee = _TeeReader(res.iter_content(CHUNK_BYTES, False), out)
                with tarfile.open(fileobj=tee, mode="r|") as tar:
                    for member in tar:
                        entries += 1
                        apparent += member.size
                        if entries > limits.archive_max_files:
                            raise ArchiveOverLimit(
                                f"workspace over the archive limit of {limits.archive_max_files} "
                                "entries (SandboxLimits.archive_max_files)")
                        if apparent > limits.archive_max_bytes:
                            raise ArchiveOverLimit(
                                f"workspace over the archive limit of "
                                f"{_mib(limits.archive_max_bytes)} (SandboxLimits."
                                f"archive_max_bytes): at least {_mib(apparent)} (apparent "
                                f"sizes), {member.name} {_mib(member.size)}")
                tee.drain()
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        finally:
            res.close()
        return ArchiveInfo(path=dest, sha256=tee.hash.hexdigest(), bytes=tee.count,
                           entries=entries, apparent_bytes=apparent)

    def restore(self, archive: Path) -> None:
        """Replace ``/workspace`` with an archive made by :meth:`archive` (a tar file on the
        host, streamed): files, history and ownership as they were. An archive of
        ``/workspace/.git`` alone (``*.git.tar``, kept when the workspace was over the archive
        limits) restores the history and checks out its ``HEAD``."""
        self.run(f"find {WORKSPACE} -mindepth 1 -maxdepth 1 -exec rm -rf {{}} +")
        history_only = archive.name.endswith(".git.tar")
        with open(archive, "rb") as f:
            self.put_tar(f, WORKSPACE if history_only else "/")
        if history_only:
            self.run("git reset -q --hard HEAD")

    def remove(self) -> None:
        """Kill and remove the container (idempotent)."""
        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if "already in progress" not in str(e):
                raise
