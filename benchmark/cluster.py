"""Trials on a Ray cluster: :class:`RayBackend` (``marathon run --ray ADDRESS``) and
:class:`LocalCluster` (``--ray local:N``, a throwaway cluster on this machine).

Only :mod:`benchmark.driver`'s backend seam changes: where a trial runs and how its records
travel. Each trial is one Ray task (a generator) that needs one unit of the custom ``docker``
resource, so it lands on a node that offers a Docker engine (one unit per concurrent trial the
node can take); the driver stays on the head. On its node the task:

1. makes sure the run's images are on the node's engine (same content-hash tags; built there
   from the package's recipes when missing);
2. uses the marathon's directory at the head's path if its content hash matches, else unpacks
   the copy the driver put in Ray's object store (no shared filesystem is assumed);
3. starts its own metering proxy (and scripted model server) when the trial needs one: the
   vendor key comes from the Ray job's runtime environment (``env_vars``, set by the driver)
   or the node's own environment, and never enters a container;
4. plays the trial with :func:`benchmark.driver.run_trial`, the same function as the local
   backend, in a private staging directory standing in for the run directory;
5. after each finished episode yields the episode's records with every file the episode
   created or changed in the staging directory (artifacts, workspace archive, capsule,
   evidence ledger, the proxy's usage-log lines), and progress events on the way.

The driver writes the files into the run directory, then the records through its
:class:`~benchmark.records.RecordStore`, so tables, resume and report are those of a local run.
A node lost mid-trial (``NodeDiedError``, ``WorkerCrashedError``, a lost object) restarts the
trial from its last recorded episode on another node, with that episode's workspace archive (and
the governed arm's capsule and ledger) sent from the run directory; an unrecorded episode is
played again from scratch and its parts replace nothing (they never were written), so no row is
lost or duplicated.
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import ray
import ray.exceptions

from benchmark.errors import MarathonError

#: Object store of each node of a local cluster (bytes): small, the returns are episode files.
LOCAL_OBJECT_STORE = 200 * 2**20
#: How often a trial may lose its node before it fails.
MAX_NODE_LOSSES = 3
#: How often a local worker node is started before giving up.
NODE_START_TRIES = 3
#: Run-directory file the metering proxy appends to (:data:`benchmark.model_access.USAGE_LOG`).
_USAGE_LOG = "proxy-usage.jsonl"


def _package_root() -> Path:
    """The directory holding the ``benchmark`` package this driver runs."""
    import benchmark
    return Path(benchmark.__file__).resolve().parents[1]


class LocalCluster:
    """A throwaway Ray cluster on this machine: a head (no ``docker`` resource, no CPUs) and
    ``workers`` worker nodes with one ``docker`` unit each, every node a ``ray start --block``
    process in its own session, so :meth:`stop` ends exactly these processes (never ``ray stop``,
    which kills every Ray process on the machine).

    Nodes import the ``benchmark`` package the driver runs (``PYTHONPATH``); node deaths are
    noticed within about 3 s (fast health checks); task workers are not niced
    (``RAY_worker_niceness=0``; Ray's default is 15). Use as a context manager or call
    :meth:`start` / :meth:`stop`.
    """

    def __init__(self, workers: int, docker_units: int = 1, python_path: list[Path] = ()):
        self.n_workers = workers
        self.python_path = [_package_root(), *python_path]
        """What the nodes' ``PYTHONPATH`` starts with: the ``benchmark`` package's root and the
        directories of modules that register the run's agents."""
        self.docker_units = docker_units
        self.head: subprocess.Popen | None = None
        """The head node's ``ray start`` process (its PID is its process group)."""
        self.workers: list[subprocess.Popen] = []
        """The worker nodes' ``ray start`` processes."""
        self.address = ""
        """``127.0.0.1:PORT`` once started."""
        self._tmp: Path | None = None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (*map(str, self.python_path), env.get("PYTHONPATH")) if p)
        env.update(RAY_USAGE_STATS_ENABLED="0", RAY_health_check_period_ms="1000",
                   RAY_health_check_timeout_ms="1000", RAY_health_check_failure_threshold="3",
                   RAY_memory_monitor_refresh_ms="0", RAY_worker_niceness="0")
        env.pop("RAY_ADDRESS", None)
        return env

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen:
        ray_cli = Path(sys.executable).with_name("ray")
        cmd = [str(ray_cli) if ray_cli.exists() else "ray", "start", *args,
               f"--object-store-memory={LOCAL_OBJECT_STORE}", "--disable-usage-stats", "--block"]
        with open(log, "wb") as out:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self._env(),
                                    start_new_session=True)

    def start(self, timeout_s: float = 120.0) -> "LocalCluster":
        """Start the head and the worker nodes; return when every worker offers its ``docker``
        units.

        Raises:
            MarathonError: a node did not come up within ``timeout_s`` (its log is named).
        """
        self._tmp = Path(tempfile.mkdtemp(prefix="mray-", dir="/tmp"))
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        try:
            self.head = self._spawn(["--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
                                     f"--temp-dir={self._tmp}"], self._tmp / "head.log")
            head_log = self._tmp / "head.log"
            self._wait_for(lambda: b"Ray runtime started" in head_log.read_bytes(), timeout_s, head_log)
            self.workers = [self._spawn_worker(i, 0) for i in range(self.n_workers)]
            for i in range(self.n_workers):
                for attempt in range(1, NODE_START_TRIES + 1):
                    log = self._tmp / f"worker{i}.{attempt - 1}.log"
                    proc = self.workers[i]
                    try:
                        self._wait_for(lambda: b"Ray runtime started" in log.read_bytes()
                                       or proc.poll() is not None, timeout_s, log)
                    except MarathonError:
                        if attempt == NODE_START_TRIES:
                            raise
                    if proc.poll() is None and b"Ray runtime started" in log.read_bytes():
                        break
                    # On a loaded host a raylet may miss Ray's fixed 30 s registration window:
                    # that node gave up; start it again.
                    _killpg(proc, signal.SIGKILL)
                    proc.wait()
                    if attempt == NODE_START_TRIES:
                        self._wait_for(lambda: False, 0, log)  # raises, naming the log
                    self.workers[i] = self._spawn_worker(i, attempt)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn_worker(self, index: int, attempt: int) -> subprocess.Popen:
        # Ports of their own: nodes started at once on one host otherwise can pick the same
        # ones and hang; workers bind random ports (0).
        ports = [_free_port() for _ in range(6)]
        return self._spawn(
            [f"--address={self.address}", "--num-cpus=1",
             f'--resources={{"docker": {self.docker_units}}}',
             f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
             f"--metrics-export-port={ports[2]}", f"--dashboard-agent-grpc-port={ports[3]}",
             f"--dashboard-agent-listen-port={ports[4]}", f"--runtime-env-agent-port={ports[5]}",
             "--min-worker-port=0", "--max-worker-port=0"], self._tmp / f"worker{index}.{attempt}.log")

    def _wait_for(self, ready: Callable[[], bool], timeout_s: float, log: Path) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if time.monotonic() > deadline or (self.head is not None and self.head.poll() is not None):
                tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
                raise MarathonError(f"--ray local:{self.n_workers}: the local Ray cluster did not start "
                                    f"({log}: {tail[0] if tail else 'no output'})")
            time.sleep(0.2)

    def wait_for_workers(self, timeout_s: float = 90.0) -> None:
        """Wait (connected with :func:`ray.init`) until every worker offers its ``docker`` units.

        Raises:
            MarathonError: they did not within ``timeout_s``.
        """
        want = self.n_workers * self.docker_units
        self._wait_for(lambda: ray.cluster_resources().get("docker", 0) >= want, timeout_s,
                       self._tmp / "worker0.0.log")

    def kill_worker(self, index: int) -> None:
        """SIGKILL every process of worker node ``index`` (raylet, workers, agents): a node
        lost mid-trial, for tests."""
        _killpg(self.workers[index], signal.SIGKILL)

    def stop(self) -> None:
        """Stop the workers, then the head (SIGTERM to each node's process group, SIGKILL what
        is left after 3 s); remove the cluster's temp directory. Idempotent."""
        procs = [p for p in [*self.workers, self.head] if p is not None]
        for p in procs:
            _killpg(p, signal.SIGTERM)
        deadline = time.monotonic() + 3  # the nodes drain for up to 30 s: nothing to wait for
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in procs:
            _killpg(p, signal.SIGKILL)
            p.wait()
        self.workers, self.head = [], None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _killpg(proc: subprocess.Popen, sig: int) -> None:
    """Signal the process group of a node started by :class:`LocalCluster` (its session)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _marathon_bundle(marathon) -> bytes:
    """A tar of a marathon's directory (``root/``) and its gates (``gates/``), for nodes that
    do not have it at the head's path."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(marathon.root), arcname="root")
        tar.add(str(marathon.gates), arcname="gates")
    return buf.getvalue()


def _rebase(value, moves: list[tuple[Path, Path]]):
    """``value`` (a dumped model) with every path under an old base moved to its new base."""
    if isinstance(value, dict):
        return {k: _rebase(v, moves) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebase(v, moves) for v in value]
    if isinstance(value, Path):
        for old, new in moves:
            if value == old or old in value.parents:
                return new / value.relative_to(old)
    return value


def node_marathon(marathon, content_hash: str, bundle: bytes | Callable[[], bytes]):
    """The run's marathon as a node sees it: the head's copy when this node has it at the
    same path with the same content hash, else the bundle unpacked under the node's temp
    directory (reused across trials) with every path moved there.

    Raises:
        MarathonError: the unpacked bundle does not have the content hash (corrupt).
    """
    from benchmark.marathon import Marathon, tree_hash

    if marathon.root.is_dir() and marathon.gates.is_dir() and tree_hash(marathon.root, marathon.gates) == content_hash:
        return marathon
    dest = Path(tempfile.gettempdir()) / f"marathon-bundle-{content_hash[:16]}"
    if not (dest.is_dir() and tree_hash(dest / "root", dest / "gates") == content_hash):
        tmp = Path(tempfile.mkdtemp(prefix="marathon-bundle-tmp-"))
        data = bundle() if callable(bundle) else bundle
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(tmp, filter="data")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    if tree_hash(dest / "root", dest / "gates") != content_hash:
        raise MarathonError(f"node: the marathon {marathon.name} unpacked at {dest} does not match the run's content hash")
    moved = _rebase(marathon.model_dump(), [(marathon.gates, dest / "gates"), (marathon.root, dest / "root")])
    return Marathon.model_validate(moved)


_checked_images: set[str] = set()


def ensure_images(plan, keys, log=lambda line: None) -> None:
    """Make sure the run's images are on this node's Docker engine: any missing tag is built
    from the package's recipes (content-hash tags, so the same recipes give the same tags).

    Raises:
        MarathonError: a tag is still missing after the build (the node runs another version
            of the package; install the head's).
    """
    from benchmark.agents.declared import DeclaredAgent
    from benchmark.agents import get_agent
    from benchmark.images import build_images
    from benchmark.sandbox import client

    images = plan.images_of(keys)
    tags = {images.scorer, images.agent, *images.agents.values()} - {None, ""}
    missing = tags - _checked_images
    if not missing:
        return
    api = client()

    def absent() -> set[str]:
        out = set()
        for tag in missing:
            try:
                api.images.get(tag)
            except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound, or any engine error
                out.add(tag)
        return out

    if absent():
        agents = [n for n in plan.config.agents if isinstance(get_agent(n), DeclaredAgent)]
        build_images(agent=True, log=log, runtime=plan.marathon_of(keys).runtime, agents=agents)
        still = absent()
        if still:
            raise MarathonError(f"node {socket.gethostname()}: image(s) {', '.join(sorted(still))} "
                                "missing and not built by this node's recipes: install the head's "
                                "version of marathon-bench on every node")
    _checked_images.update(missing)


def _remove_trial_containers(plan, trial_id: str) -> None:
    """Remove this node's containers of ``trial_id`` in this run (an earlier try's orphans)."""
    import docker.errors

    from benchmark.sandbox import TRIAL_LABEL, client, run_labels

    api = client().api
    labels = [f"{k}={v}" for k, v in run_labels(plan.run_id, plan.nonce).items()]
    for c in api.containers(all=True, filters={"label": [*labels, f"{TRIAL_LABEL}={trial_id}"]}):
        try:
            api.remove_container(c["Id"], force=True)
        except docker.errors.APIError:
            pass


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, mtime ns) of every file under ``root``."""
    out = {}
    for p in root.rglob("*"):
        if p.is_file():
            st = p.stat()
            out[p.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


class _RelayProgress:
    """The node's stand-in for the driver's progress display: events go to the driver."""

    def __init__(self, events: queue.Queue):
        self._events = events

    def update(self, trial_id: str, **changes) -> None:
        self._events.put(("progress", changes))

    def episode_done(self, trial_id: str, episode: str, score: float, attempts: int) -> None:
        self._events.put(("done", (episode, score, attempts)))


def node_name() -> str:
    """This Ray node as shown in the progress display: ``<ip>/<first 8 hex of its node id>``."""
    return f"{ray.util.get_node_ip_address()}/{ray.get_runtime_context().get_node_id()[:8]}"


def _not_niced() -> None:
    """Undo Ray's default worker niceness (15) for this thread and the threads it starts, when
    allowed: a trial's host-side work (archives, scoring set-up) is no background job, and at
    niceness 15 on a loaded host it took twice as long. Nodes started with
    ``RAY_worker_niceness=0`` (as :class:`LocalCluster` does) need nothing."""
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) > 0:
            os.setpriority(os.PRIO_PROCESS, 0, 0)
    except OSError:  # not allowed to lower it: the node's own setting stands
        pass


@ray.remote(num_cpus=0, max_retries=0)
def trial_task(plan, content_hash: str, bundle_ref: list, keys, start_index: int,
               seed: dict[str, bytes], agent_modules: list[str] = ()):
    """Play one trial from ``start_index`` on this node (a Ray generator task).

    Args:
        plan: the run's :class:`~benchmark.driver.Plan`, as the driver holds it.
        content_hash: the content hash of the trial's marathon.
        bundle_ref: ``[ObjectRef]`` of that marathon's bundle (wrapped: fetched only when needed).
        keys: the trial.
        start_index: first episode to play (0-based).
        seed: run-directory files the trial resumes from (relative path -> bytes).
        agent_modules: modules to import first: they register the run's agents that are not
            the package's own (e.g. a plug-in's), and must be importable on the node.

    Yields:
        ``("node", name)``, ``("progress", changes)``, ``("episode", {"records", "files",
        "removed", "usage"})`` and ``("done", (episode, score, attempts))``.

    Raises:
        Exception: the trial failed (as :func:`~benchmark.driver.run_trial`).
    """
    from benchmark import rundir
    from benchmark.agents import get_agent
    from benchmark.driver import run_trial
    from benchmark.model_access import ModelServices

    yield ("node", node_name())
    _not_niced()
    for module in agent_modules:
        importlib.import_module(module)
    events: queue.Queue = queue.Queue()
    events.put(("progress", {"phase": "images"}))
    ensure_images(plan, keys)
    marathon = node_marathon(plan.marathon_of(keys), content_hash, lambda: ray.get(bundle_ref[0]))
    if marathon is not plan.marathon_of(keys):
        plan = plan.model_copy(update={"marathons": {**plan.marathons, keys.marathon: marathon}})
    _remove_trial_containers(plan, keys.trial_id)
    staging = rundir.make_host_tmp(plan.nonce, "node")
    work = rundir.make_host_tmp(plan.nonce, "work")
    for rel, data in seed.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes(data)
    seen = _tree(staging)
    usage_offset = [0]

    def record(records) -> None:
        nonlocal seen
        now = _tree(staging)
        files = {rel: (staging / rel).read_bytes() for rel, meta in now.items()
                 if rel != _USAGE_LOG and seen.get(rel) != meta}
        removed = [rel for rel in seen if rel not in now]
        usage = b""
        log = staging / _USAGE_LOG
        if log.exists():
            with open(log, "rb") as f:
                f.seek(usage_offset[0])
                usage = f.read()
            usage = usage[:usage.rfind(b"\n") + 1]  # whole lines only
            usage_offset[0] += len(usage)
        seen = now
        events.put(("episode", {"records": records, "files": files, "removed": removed, "usage": usage}))

    stop = threading.Event()
    agent = get_agent(keys.agent)
    services = None
    if agent.uses_model or plan.arms[keys.arm].self_checks:
        # A nonce of its own: proxies of concurrent trials on one node never clean up each
        # other's socket directories.
        services = ModelServices.start(f"{plan.nonce}-{os.urandom(2).hex()}", staging,
                                       {keys.marathon: plan.marathon_of(keys).root}, [keys],
                                       plan.config.providers)

    def target() -> None:
        try:
            run_trial(plan, keys, start_index, staging, record, services, stop,
                      _RelayProgress(events), work)
            events.put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the driver
            events.put(("error", e))

    thread = threading.Thread(target=target, name=f"trial-{keys.trial_id}", daemon=True)
    thread.start()
    try:
        while True:
            try:
                kind, payload = events.get(timeout=1.0)
            except queue.Empty:
                continue
            if kind == "end":
                return
            if kind == "error":
                raise payload
            yield (kind, payload)
    finally:
        stop.set()
        _remove_trial_containers(plan, keys.trial_id)  # ends an attempt in flight at once
        thread.join(60)
        if services is not None:
            services.stop()
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


class RayBackend:
    """Runs each trial as a Ray task on a node with a ``docker`` resource (see the module
    docstring); the driver writes what comes back. Implements the backend seam of
    :class:`benchmark.driver.ThreadBackend`."""

    own_model_access = True

    def __init__(self, address: str):
        self.address = address
        """The Ray address given (``local:N`` for a throwaway local cluster)."""
        self.cluster: LocalCluster | None = None
        """The local cluster this backend started (``local:N``), stopped by :meth:`close`."""
        self._hashes: dict[str, str] = {}
        self._bundles: dict[str, object] = {}
        self._plans: dict[int, object] = {}
        self._inflight: dict[str, object] = {}
        self._lock = threading.Lock()
        self._connected = False
        self._agent_modules: list[str] = []

    def open(self, plan, console) -> None:
        """Start the local cluster (``local:N``) or connect to the one at the address, with the
        trials' vendor keys in the job's runtime environment; check that some node offers a
        ``docker`` resource; put the marathon bundle in the object store.

        Raises:
            MarathonError: an arm needs the operator's terminal (a human-operator arm), no
                cluster at the address, or no node offers ``docker``.
        """
        from benchmark.agents import get_agent
        from benchmark.controllers import controller_class
        from benchmark.model_access import trial_route

        for arm in plan.arms.values():
            if controller_class(arm.controller).uses_terminal:
                raise MarathonError(f"--ray: arm {arm.name!r} needs the operator's terminal: "
                                    "run it without --ray")
        agents = [get_agent(n) for n in plan.config.agents]
        self._agent_modules = sorted({type(a).__module__ for a in agents
                                      if not type(a).__module__.startswith("benchmark.")})
        paths = sorted({Path(sys.modules[m].__file__).resolve().parent for m in self._agent_modules})
        env: dict[str, str] = {}
        for t in plan.trials:
            agent = get_agent(t.agent)
            if agent.uses_model:
                route = trial_route(t, agent, plan.config.providers)
                if route.key_env:
                    env[route.key_env] = os.environ[route.key_env]
        address = self.address
        try:
            if address.startswith("local:"):
                n = int(address.split(":", 1)[1])
                console.print(f"[dim]starting a local Ray cluster of {n} worker node(s)[/]")
                self.cluster = LocalCluster(n, python_path=paths).start()
                address = self.cluster.address
            try:
                ray.init(address=address, runtime_env={"env_vars": env} if env else None,
                         log_to_driver=False, logging_level=logging.WARNING,
                         configure_logging=True, namespace="marathon")
            except Exception as e:  # noqa: BLE001 - ConnectionError and Ray's own
                line = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
                raise MarathonError(f"--ray: cannot connect to the Ray cluster at {address}: {line}") from None
            self._connected = True
            if self.cluster is not None:
                self.cluster.wait_for_workers()
            units = ray.cluster_resources().get("docker", 0)
            if units < 1:
                raise MarathonError(f"--ray: no node of the Ray cluster at {address} offers a 'docker' "
                                    "resource (start worker nodes with --resources='{\"docker\": 1}')")
            console.print(f"[dim]Ray cluster at {address}: {len(ray.nodes())} node(s), "
                          f"{units:g} docker unit(s)[/]")
            for name, marathon in plan.marathons.items():
                self._hashes[name] = marathon.content_hash()
                self._bundles[name] = ray.put(_marathon_bundle(marathon))
        except BaseException:
            self.close()
            raise

    def concurrency(self, jobs: int, trials: int) -> int:
        """Every trial is handed to Ray at once; the ``docker`` units decide how many run."""
        return trials

    def _plan_ref(self, plan):
        with self._lock:
            if id(plan) not in self._plans:
                self._plans = {id(plan): (plan, ray.put(plan))}
            return self._plans[id(plan)][1]

    def run(self, plan, keys, start_index: int, run_dir: Path, record, services, stop,
            progress, work) -> None:
        """Run one trial on the cluster from ``start_index``; write each finished episode's
        files into ``run_dir`` and hand its records to ``record``; restart the trial from its
        last recorded episode when its node is lost (at most :data:`MAX_NODE_LOSSES` times).

        Raises:
            Interrupted: the run is stopping.
            MarathonError: the trial lost its node too often.
            Exception: the trial failed on its node (the node's exception, chained to Ray's).
        """
        from benchmark.driver import Interrupted

        index, losses = start_index, 0
        while True:
            if stop.is_set():
                raise Interrupted()
            gen = trial_task.options(resources={"docker": 1}, name=f"trial {keys.trial_id}").remote(
                self._plan_ref(plan), self._hashes[keys.marathon], [self._bundles[keys.marathon]], keys, index,
                _seed_files(plan, run_dir, keys, index), self._agent_modules)
            with self._lock:
                self._inflight[keys.trial_id] = gen
            progress.update(keys.trial_id, phase="queued on cluster", node="")
            try:
                for ref in gen:
                    kind, payload = ray.get(ref)
                    if kind == "node":
                        progress.update(keys.trial_id, node=payload, phase="starting")
                    elif kind == "progress":
                        progress.update(keys.trial_id, **payload)
                    elif kind == "episode":
                        _write_episode(run_dir, keys.trial_id, payload)
                        record(payload["records"])
                        index += 1
                    elif kind == "done":
                        progress.episode_done(keys.trial_id, *payload)
                return
            except ray.exceptions.TaskCancelledError:
                raise Interrupted() from None
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if e.cause is not None else e
                if stop.is_set() or isinstance(cause, Interrupted):
                    raise Interrupted() from None
                raise cause from e
            except ray.exceptions.RayError as e:  # the node, its worker or its objects are gone
                if stop.is_set():
                    raise Interrupted() from None
                losses += 1
                line = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
                if losses > MAX_NODE_LOSSES:
                    raise MarathonError(f"trial {keys.trial_id}: lost its node {losses} times "
                                        f"(last: {e.__class__.__name__}: {line})") from e
                what = f"node lost ({e.__class__.__name__}); restarting at episode {index + 1}"
                progress.update(keys.trial_id, node="", phase=what)
                progress.console.print(f"[yellow]{keys.trial_id}: {what} on another node[/]")
            finally:
                with self._lock:
                    self._inflight.pop(keys.trial_id, None)

    def halt(self) -> None:
        """Cancel every trial in flight (its node removes its containers)."""
        with self._lock:
            gens = list(self._inflight.values())
        for gen in gens:
            try:
                ray.cancel(gen)
            except Exception:  # noqa: BLE001 - already finished or its node gone
                pass

    def close(self) -> None:
        """Disconnect; stop the local cluster this backend started (exactly its processes)."""
        if self._connected:
            ray.shutdown()
            self._connected = False
        self._plans.clear()
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


def _seed_files(plan, run_dir: Path, keys, start_index: int) -> dict[str, bytes]:
    """The run-directory files a trial resumes from at episode ``start_index``: the workspace
    archive of the episode before (either form) and, when they exist, the trial's capsule and
    evidence ledger (the governed arm's)."""
    from benchmark.capsule import capsule_path
    from benchmark.evidence import evidence_path

    trial_id = keys.trial_id
    paths = [capsule_path(run_dir, trial_id), evidence_path(run_dir, trial_id)]
    if start_index > 0:
        prev = plan.marathon_of(keys).episode_ids[start_index - 1]
        base = run_dir / "workspaces" / trial_id
        paths += [base / f"{prev}.tar", base / f"{prev}.git.tar"]
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in paths if p.is_file()}


def _write_episode(run_dir: Path, trial_id: str, payload: dict) -> None:
    """Write an episode's files, shipped from its node, into the run directory: its artifacts
    directory replaced as a whole, every other file written atomically, removed files removed,
    usage-log lines appended. The caller records the episode afterwards, so it counts as
    finished only once its files are on disk."""
    from benchmark.storage import naming, write_bytes

    records = payload["records"]
    shutil.rmtree(run_dir / "artifacts" / trial_id / records.episode.episode, ignore_errors=True)
    for rel, data in payload["files"].items():
        path = run_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, data)
    for rel in payload["removed"]:
        (run_dir / rel).unlink(missing_ok=True)
    if payload["usage"]:
        log = run_dir / _USAGE_LOG
        with naming(log), open(log, "ab") as f:
            f.write(payload["usage"])
            f.flush()
            os.fsync(f.fileno())
