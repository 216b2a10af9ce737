"""Trusted harness code for the hidden ``ledger`` gates.

- Registers the two check tags, ``genuine`` and ``contract``; every check must
  carry exactly one of them. The tag is recorded as the JUnit XML property
  ``tag``.
- ``seed``: the trial seed, int env ``MARATHON_SEED`` (default 0).
- ``ledger``: runs the product under test, ``python3 -m ledger ARGS...``, in a
  fresh copy of the snapshot (env ``MARATHON_SNAPSHOT``), as a black box.

The product runs through ``marathon_product`` (installed in the scorer image):
as its own uid, with a scrubbed environment (PATH, HOME, LANG only, plus a
fixed ``PYTHONHASHSEED`` derived from the seed, the check and the call number,
so that a product that depends on set or hash order behaves the same way on
every run of the gates, yet differently from one call to the next) and a
timeout that fails the check instead of hanging it (or gives no verdict when
the host starved the run). Independent runs of one check may be started
together (:meth:`LedgerRunner.spawn`) and collected later; call numbers follow
the order in which runs are started, so the hash seeds stay the same from one
scoring to the next.
"""

from __future__ import annotations

import os
import shutil
import zlib
from pathlib import Path

import pytest
from marathon_product import DEFAULT_TIMEOUT, Pending, Product, Result, Streaming  # noqa: F401

TAGS = ("genuine", "contract")

#: Time zones and locales the product runs under, one of each per run (from the seed, the check
#: and the call number): the briefs fix every time as UTC and every file's bytes, so nothing
#: may depend on the host's zone or locale. POSIX ``C`` is coerced to UTF-8 by Python 3.7+.
TIME_ZONES = ("UTC", "America/Los_Angeles", "Asia/Kathmandu", "Pacific/Kiritimati",
              "Australia/Lord_Howe", "America/St_Johns", "EST5EDT")
LOCALES = ("C.UTF-8", "C", "POSIX")

#: The fault hook (see ``_fault_hook.py``), read now: the gates directory is erased once the
#: checks are collected, and the hook is written into each check's scratch directory at run time.
FAULT_HOOK = (Path(__file__).parent / "_fault_hook.py").read_text(encoding="utf-8")


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


class LedgerRunner(Product):
    """Runs ``python3 -m ledger`` in a private copy of the snapshot under test.

    ``tmp`` is a scratch directory for inputs and state directories (outside
    the copy); :meth:`path` hands out paths in it. Runs: :meth:`run`,
    :meth:`spawn` (background, ``.result()`` later), :meth:`start` (stdin fed
    piecemeal, for kill tests), :meth:`ingest` / :meth:`spawn_ingest`.
    """

    def __init__(self, snapshot: Path, tmp: Path, seed: int, check: str):
        super().__init__(snapshot, tmp, ["python3", "-m", "ledger"])
        self._seed = seed
        self._check = check
        self._calls = 0

    def env(self) -> dict:
        """Environment of the next run, from the seed, the check and the call number:
        ``PYTHONHASHSEED``, a time zone ``TZ`` and a locale (``LANG`` and ``LC_ALL``)."""
        self._calls += 1
        key = f"{self._seed}/{self._check}/{self._calls}".encode("utf-8")
        digest = zlib.crc32(key)
        locale = LOCALES[(digest >> 8) % len(LOCALES)]
        return {"LANG": locale, "LC_ALL": locale, "TZ": TIME_ZONES[(digest >> 4) % len(TIME_ZONES)],
                "PYTHONHASHSEED": str(digest % 4_000_000_000 + 1)}

    def fault_env(self, kill_at: int | None = None, trace: Path | None = None) -> dict:
        """Extra environment that loads the fault hook into the product's Python.

        ``kill_at=N``: the process SIGKILLs itself just before its Nth state-changing step
        (file opened for writing, rename, truncate, write, flush, fsync, print; see
        ``_fault_hook.py``). ``trace``: at a normal exit the labels of every step are written
        there, one per line (:meth:`steps` reads them).
        """
        hook = self.path("fault-hook/sitecustomize.py")
        if not hook.exists():
            hook.write_text(FAULT_HOOK, encoding="utf-8")
        env = {"PYTHONPATH": str(hook.parent)}
        if kill_at:
            env["MARATHON_FAULT_KILL_AT"] = str(kill_at)
        if trace is not None:
            env["MARATHON_FAULT_TRACE"] = str(trace)
        return env

    @staticmethod
    def steps(trace: Path) -> list[str]:
        """The step labels a traced run wrote (empty if it wrote none)."""
        return trace.read_text(encoding="utf-8").splitlines() if trace.is_file() else []

    def clone(self, source: Path, name: str) -> Path:
        """Copy the state directory ``source`` to :meth:`path` ``name``, owned by the product
        uid as if the product had written it (so runs on the copy may change every file)."""
        target = self.path(name)
        shutil.copytree(source, target, symlinks=True)
        if self.uid is not None:
            for top, dirs, files in os.walk(target):
                os.chown(top, self.uid, self.uid)
                for entry in dirs + files:
                    os.chown(os.path.join(top, entry), self.uid, self.uid, follow_symlinks=False)
        return target

    def ingest(self, source, state: Path, *extra, stdin: bytes | str | None = None,
               expect_ok: bool = True, env: dict | None = None) -> Result:
        """Run ``ingest SOURCE --state STATE EXTRA...``; by default require exit 0."""
        return self.spawn_ingest(source, state, *extra, stdin=stdin, expect_ok=expect_ok,
                                 env=env).result()

    def spawn_ingest(self, source, state: Path, *extra, stdin: bytes | str | None = None,
                     expect_ok: bool = True, env: dict | None = None) -> Pending:
        """Start ``ingest SOURCE --state STATE EXTRA...`` in the background (see :meth:`spawn`)."""
        return self.spawn("ingest", source, "--state", state, *extra, stdin=stdin,
                          expect_ok="ingest failed: " if expect_ok else None, env=env)


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
