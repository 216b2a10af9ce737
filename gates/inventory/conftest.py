"""Trusted harness code for the hidden ``inventory`` gates.

- Registers the two check tags, ``genuine`` and ``contract`` (every check carries exactly one;
  recorded as the JUnit XML property ``tag``), and the scheduling hint ``slow``.
- ``seed``: the trial seed, int env ``MARATHON_SEED`` (default 0).
- ``inventory``: a :class:`ServiceRunner` that starts the product under test,
  ``python3 -m inventory --state DIR --port 0 FLAGS...``, in a fresh copy of the snapshot (env
  ``MARATHON_SNAPSHOT``), as a black box driven over HTTP on 127.0.0.1.

The product runs through ``marathon_product`` (installed in the scorer image): as its own uid,
in a copy of the snapshot it owns, with a scrubbed environment (PATH, HOME, LANG).
:class:`ServiceProcess` (readiness, kill) is kept small and separate from the checks' logic in
``_inventory.py``. Every wait is bounded: a service that does not report its port, answer, or exit,
fails the check instead of hanging it, unless the kernel shows the host starved it of CPU
(then the check has no verdict, and the scoring is repeated).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from marathon_product import OUTPUT_LIMIT, NoVerdict, Product

from _inventory import Client

TAGS = ("genuine", "contract")
#: Seconds a service may take to start listening (start-up on a loaded machine).
START_TIMEOUT = 20.0
#: Seconds a run-to-completion or a stopping service may take.
EXIT_TIMEOUT = 20.0
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


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
    """Run ``slow`` checks first (stable order otherwise), so that only short ones are left for
    the end when the scorer shares the checks between pytest processes."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _check_tag(request):
    """Require exactly one tag marker per check and record it as property ``tag``."""
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


class _Drain(threading.Thread):
    """Reads a pipe to the end into memory; calls ``on_line`` with each complete line."""

    def __init__(self, pipe, on_line=None):
        super().__init__(daemon=True)
        self.pipe, self.on_line, self.data = pipe, on_line, bytearray()
        self.start()

    def run(self):
        for line in iter(self.pipe.readline, b""):
            if len(self.data) < OUTPUT_LIMIT:  # a service that writes without end is bounded
                self.data += line[:OUTPUT_LIMIT - len(self.data)]
            if self.on_line:
                self.on_line(line)
        self.pipe.close()

    def text(self) -> str:
        return bytes(self.data).decode("utf-8", errors="replace")


class ServiceProcess:
    """One running service: its process, its port once listening, its captured stdout/stderr."""

    def __init__(self, product: Product, args: list[str]):
        self.argv = [*product.command, *args]
        self.port: int | None = None
        self._listening = threading.Event()
        self.run = product.popen(*args)
        self.proc = self.run.proc
        self._out = _Drain(self.proc.stdout, self._line)
        self._err = _Drain(self.proc.stderr)

    def _line(self, line: bytes) -> None:
        match = LISTENING.search(line.decode("utf-8", errors="replace"))
        if match and self.port is None:
            self.port = int(match.group(1))
            self._listening.set()

    def wait_listening(self) -> "ServiceProcess":
        """Wait until the service printed its listening line; fail the check if it exits first."""
        deadline = time.monotonic() + START_TIMEOUT
        while not self._listening.wait(0.01):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self._no_verdict_if_starved("did not start listening", START_TIMEOUT)
                self.kill()
                pytest.fail(f"the service did not print `listening on http://127.0.0.1:PORT` "
                            f"({self.describe()})", pytrace=False)
        return self

    @property
    def client(self) -> Client:
        """An HTTP client for this service."""
        assert self.port is not None
        return Client(self.port, self._no_verdict_if_starved)

    def _no_verdict_if_starved(self, what: str, limit: float) -> None:
        """Past a wait's limit: no verdict if the host starved the service (see marathon_product)."""
        if self.proc.poll() is None:
            use = self.run.cpu_use()
            if use.starved:
                self.kill()
                raise NoVerdict(f"the service {what} within {limit:g} s ({use.describe()}): "
                                "the host starved it of CPU")

    def kill(self) -> None:
        """SIGKILL the service (and anything it started) and reap it."""
        if self.proc.poll() is None:
            self.run.kill_group()
        self.proc.wait()
        self._out.join(5)
        self._err.join(5)

    def terminate(self) -> int:
        """SIGTERM the service and wait for it to exit; its exit status. A service still running
        :data:`EXIT_TIMEOUT` s later is killed and fails the check (SIGTERM stops the service)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                pytest.fail(f"the service did not stop within {EXIT_TIMEOUT:g} s of SIGTERM", pytrace=False)
        self.kill()
        return self.proc.returncode

    def wait(self) -> int:
        """Wait for the service to exit by itself (it is killed past the limit; the check fails)."""
        try:
            self.proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._no_verdict_if_starved("did not exit", EXIT_TIMEOUT)
            self.kill()
            pytest.fail(f"`{' '.join(self.argv[1:])}` did not exit within {EXIT_TIMEOUT:g} s", pytrace=False)
        self.kill()
        return self.proc.returncode

    @property
    def stdout(self) -> str:
        return self._out.text()

    @property
    def stderr(self) -> str:
        return self._err.text()

    def describe(self) -> str:
        """Exit status and output tail, for failure messages."""
        code = self.proc.poll()
        return (f"{'running' if code is None else f'exited {code}'}; stdout {self.stdout[-300:]!r}; "
                f"stderr {self.stderr[-800:]!r}")


class ServiceRunner(Product):
    """Starts services from a private copy of the snapshot, as the product uid; keeps every
    process it started (killed by :meth:`close`)."""

    def __init__(self, snapshot: Path, tmp: Path):
        super().__init__(snapshot, tmp, ["python3", "-m", "inventory"], name="inventory",
                         ignore=(".git", "__pycache__"))

    def env(self) -> dict:
        return {"LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}

    def spawn(self, *args) -> ServiceProcess:
        """Start ``python3 -m inventory ARGS...`` without waiting for anything."""
        return ServiceProcess(self, [str(a) for a in args])

    def start(self, state: Path, *flags) -> ServiceProcess:
        """Start a service on ``state`` (``--port 0``) and wait until it listens."""
        return self.spawn("--state", state, "--port", "0", *flags).wait_listening()


@pytest.fixture
def inventory(tmp_path) -> ServiceRunner:
    """A runner for the snapshot under test, in a fresh copy (env MARATHON_SNAPSHOT)."""
    raw = os.environ.get("MARATHON_SNAPSHOT")
    if not raw:
        raise pytest.UsageError("MARATHON_SNAPSHOT is not set: point it at the snapshot to test")
    snapshot = Path(raw).resolve()
    if not snapshot.is_dir():
        raise pytest.UsageError(f"MARATHON_SNAPSHOT is not a directory: {snapshot}")
    runner = ServiceRunner(snapshot, tmp_path)
    yield runner
    runner.close()
