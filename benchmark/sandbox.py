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
CLIs use ``http://127.0.0.1:<FORWARD_PORT>`` (:data:`PROXY_URL`). Containers carry the labels
:data:`~benchmark.docker_env.LABEL` (run id) and :data:`TRIAL_LABEL` (trial id), so the leftovers
of a dead run are found and removed by :func:`remove_run_resources`.

Operations: :meth:`Sandbox.exec` with a time limit (every uid-1000 process is killed when it runs
over), :meth:`Sandbox.commit` (``git add -A; git commit --allow-empty``), :meth:`Sandbox.archive`
(a tar of ``/workspace`` with ``.git``, which :meth:`Sandbox.restore` puts back),
:func:`extract_snapshot` (that tar to a host directory without ``.git``, for the scorer) and
:meth:`Sandbox.diff`.
"""

from __future__ import annotations

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


class SandboxLimits(BaseModel):
    """Resource limits of a trial container."""

    mem_limit: str = "2g"
    """Memory limit (Docker syntax); swap is not allowed beyond it."""
    nano_cpus: int = Field(default=2_000_000_000, gt=0)
    """CPU quota in units of 1e-9 CPUs (default 2 CPUs)."""
    pids_limit: int = Field(default=512, gt=0)
    """Maximum number of processes in the container."""


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


def remove_run_resources(run_id: str, *, networks: bool = True) -> tuple[int, int]:
    """Remove every container (and, with ``networks``, every network) labelled with ``run_id``:
    the leftovers of a dead run, or the containers of an interrupted one. (Runs no longer create
    networks; ones labelled by older harness versions are still removed.)

    Returns:
        (containers removed, networks removed).
    """
    c = client()
    label = f"{LABEL}={run_id}"
    containers = c.containers.list(all=True, filters={"label": label})
    for container in containers:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if e.status_code != 409:  # 409: another thread is removing it already
                raise
    deadline = time.monotonic() + 60
    while c.containers.list(all=True, filters={"label": label}) and time.monotonic() < deadline:
        time.sleep(0.2)  # removals by another thread are still in progress
    found = c.networks.list(filters={"label": label}) if networks else []
    for network in found:
        try:
            network.remove()
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


def extract_snapshot(archive: bytes, dest: Path) -> Path:
    """Extract a workspace archive (from :meth:`Sandbox.archive`) into ``dest`` without ``.git``.

    Members that would land outside ``dest`` (absolute paths, ``..``, links pointing out) and
    special files are skipped, so a hostile workspace cannot write elsewhere on the host.

    Returns:
        ``dest``, holding the workspace's files.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
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
            tar.extract(safe, str(dest), filter="fully_trusted", set_attrs=True)
    return dest


class Sandbox:
    """A running trial container. Create it with :meth:`create`; remove it with :meth:`remove`.

    Methods are called by one thread at a time (the trial's), except :meth:`remove`, which may
    come from a signal handler's clean-up thread.
    """

    def __init__(self, container, *, run_id: str, trial_id: str):
        self.container = container
        """The Docker SDK container object."""
        self.run_id = run_id
        """Id of the run the trial belongs to."""
        self.trial_id = trial_id
        """Id of the trial."""

    @classmethod
    def create(cls, *, run_id: str, trial_id: str, image: str, proxy_dir: Path | None = None,
               limits: SandboxLimits | None = None) -> "Sandbox":
        """Start a trial container from ``image`` with an empty ``/workspace`` and no network
        (only loopback).

        Args:
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
        name = f"marathon-{run_id}-{trial_id}"
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
                labels={LABEL: run_id, TRIAL_LABEL: trial_id},
            )
        except docker.errors.APIError as e:
            raise MarathonError(f"cannot start the container of trial {trial_id}: {e.explanation or e}") from None
        sandbox = cls(container, run_id=run_id, trial_id=trial_id)
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
            output_file: binary file receiving stdout and stderr as they come; when ``None`` the
                output is returned in :attr:`ExecResult.output` (last 64 KiB).

        Raises:
            docker.errors.APIError: the container is gone (e.g. removed on interrupt).
        """
        api = client().api
        exec_id = api.exec_create(self.container.id, cmd, user=AGENT_USER, workdir=workdir,
                                  environment={"HOME": AGENT_HOME, **(environment or {})},
                                  stdout=True, stderr=True)["Id"]
        chunks: list[bytes] = []
        failure: list[BaseException] = []
        start = time.monotonic()
        stream = api.exec_start(exec_id, stream=True, demux=False)

        def pump() -> None:
            try:
                for chunk in stream:
                    if output_file is not None:
                        output_file.write(chunk)
                        output_file.flush()
                    else:
                        chunks.append(chunk)
            except Exception as e:  # the connection dropped: the container was removed
                failure.append(e)

        reader = threading.Thread(target=pump, daemon=True, name=f"exec-{self.trial_id}")
        reader.start()
        reader.join(timeout_s)
        timed_out = reader.is_alive()
        if timed_out:
            self.kill_agent_processes()
            reader.join(30)
        duration = time.monotonic() - start
        if failure and not timed_out:
            raise failure[0]
        info = api.exec_inspect(exec_id)
        exit_code = None if timed_out or info.get("Running") else info.get("ExitCode")
        text = b"".join(chunks)[-65536:].decode("utf-8", errors="replace")
        return ExecResult(exit_code=exit_code, timed_out=timed_out, duration_s=duration, output=text)

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

    def put_tar(self, archive: bytes, dest: str = "/") -> None:
        """Extract a tar into the container at ``dest`` (ownership from the tar headers).

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

    def diff(self, base: str | None, head: str | None) -> str:
        """``git diff --binary base head`` of the workspace (empty if either commit is unknown)."""
        if not base or not head:
            return ""
        res = self.exec(["git", "diff", "--binary", base, head], timeout_s=120)
        return res.output if res.exit_code == 0 else ""

    def reset_to(self, commit: str) -> None:
        """Roll the workspace back to ``commit``: ``git reset --hard`` then ``git clean -fdx``
        (untracked and ignored files go too), so ``/workspace`` holds exactly that commit's tree.
        Later commits stay in the object store (unreachable), so nothing recorded is lost.

        Raises:
            MarathonError: the reset failed (unknown commit, or no usable repository).
        """
        self.run(f"git reset -q --hard {shlex.quote(commit)} && git clean -q -fdx")

    def archive(self) -> bytes:
        """A tar of ``/workspace`` (``.git`` included) as the container holds it now.

        Raises:
            MarathonError: the workspace cannot be read.
        """
        try:
            stream, _ = self.container.get_archive(WORKSPACE)
            return b"".join(stream)
        except docker.errors.APIError as e:
            raise MarathonError(f"trial {self.trial_id}: reading the workspace failed: {e.explanation or e}") from None

    def restore(self, archive: bytes) -> None:
        """Replace ``/workspace`` with an archive made by :meth:`archive` (files, history and
        ownership as they were)."""
        self.run(f"find {WORKSPACE} -mindepth 1 -maxdepth 1 -exec rm -rf {{}} +")
        self.put_tar(archive, "/")

    def remove(self) -> None:
        """Kill and remove the container (idempotent)."""
        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if "already in progress" not in str(e):
                raise
