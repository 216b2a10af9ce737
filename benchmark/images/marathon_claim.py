"""pytest plugin of the scorer: checks shared between pytest processes, verdicts the product
cannot forge, and no product process outliving its check.

Installed in the scorer image; started by ``marathon_parallel``.

- With ``--claim-dir DIR`` it replaces pytest's run loop: every process collects the same
  checks and runs, in collection order, each one it is first to claim (an ``O_EXCL`` file in
  DIR named after the check's node id). A check therefore runs exactly once, in whichever
  process is free first, and appears in exactly one JUnit report; a process that dies takes its
  verdicts with it (its report is never written), which the scorer records as ``error``, never
  ``passed``.
- A check that cannot give a verdict gets the JUnit property :data:`NO_VERDICT` (the reason),
  which the scorer turns into ``error``: one that raised ``marathon_product.NoVerdict`` (e.g.
  the host starved a product run), and one that ran past its per-check time limit
  (pytest-timeout). The property is written by this trusted runner from the exception's type and
  the check's measured duration, never from text the product could print.
- With ``--runner-dir DIR`` (the scorer gives each pytest process its own), the process reads
  the trial's seed from ``DIR/seed`` into ``MARATHON_SEED`` (so it is in no process's initial
  environment, which ``/proc/PID/environ`` shows) and, once collection is done, erases DIR, where
  its copy of the gates is: while checks run, no file holds the gate source or the seed, so not
  even the runner can be tricked into reading them (e.g. through a symbolic link the product
  left where a check reads its output) and putting them in a failure message.
- After every check, every process of the product uid (``MARATHON_PRODUCT_UID``) is killed and
  every file it owns in ``/tmp`` and ``/dev/shm`` is removed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest

from marathon_product import NoVerdict, kill_user, product_uid, remove_user_files

#: JUnit property (name) of a check without a verdict; its value is the reason.
NO_VERDICT = "marathon_no_verdict"
#: A check that failed this close to its per-check time limit (seconds) ran into it.
TIMEOUT_SLACK_S = 0.05


def pytest_addoption(parser):
    """Add ``--claim-dir`` (the directory the processes of one session claim checks in) and
    ``--runner-dir`` (this process's private directory: seed and gates, erased after collection)."""
    parser.addoption("--claim-dir", default=None,
                     help="share the checks with other pytest processes claiming in this directory")
    parser.addoption("--runner-dir", default=None,
                     help="read the seed from DIR/seed; erase DIR once the checks are collected")


def pytest_configure(config):
    """With ``--runner-dir``, put the seed from ``DIR/seed`` into ``MARATHON_SEED``."""
    raw = config.getoption("--runner-dir")
    if raw:
        os.environ["MARATHON_SEED"] = (Path(raw) / "seed").read_text(encoding="ascii").strip()


def pytest_collection_finish(session):
    """With ``--runner-dir``, erase the directory (the gates are imported, the seed read)."""
    raw = session.config.getoption("--runner-dir")
    if raw:
        for entry in Path(raw).iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _time_limit(item) -> float | None:
    """The check's pytest-timeout limit in seconds (its ``timeout`` marker, else ``--timeout``)."""
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        raw = marker.kwargs.get("timeout", marker.args[0] if marker.args else None)
    else:
        raw = item.config.getoption("timeout", None)
    try:
        return float(raw) if raw else None
    except (TypeError, ValueError):
        return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Note when the check started (its per-check time limit covers setup, call and teardown)."""
    item._marathon_started = time.perf_counter()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Record :data:`NO_VERDICT` on a check that raised NoVerdict or ran into its time limit."""
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is None or any(name == NO_VERDICT for name, _ in item.user_properties):
        return
    reason = None
    if isinstance(call.excinfo.value, NoVerdict):
        reason = str(call.excinfo.value)
    else:
        limit = _time_limit(item)
        started = getattr(item, "_marathon_started", None)
        if limit and started is not None and time.perf_counter() - started >= limit - TIMEOUT_SLACK_S:
            reason = f"the check ran into its {limit:g} s time limit"
    if reason is not None:
        item.user_properties.append((NO_VERDICT, reason))
        if call.when == "teardown":  # the teardown report (whose properties JUnit writes) exists
            report.user_properties.append((NO_VERDICT, reason))


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """After the check's teardown, kill every process of the product uid, remove its files."""
    yield
    uid = product_uid()
    if uid is not None:
        kill_user(uid)
        remove_user_files(uid)


def _claim(directory: Path, nodeid: str) -> bool:
    """Atomically claim a check; False if another process already has it."""
    name = hashlib.sha256(nodeid.encode("utf-8")).hexdigest()
    try:
        os.close(os.open(directory / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    """Run each collected check this process is first to claim (the default loop otherwise).

    Claims one check ahead, so that pytest knows the next check it will run (``nextitem``) and
    tears fixtures down exactly as in a single process.
    """
    if session.config.option.collectonly:
        return None
    raw = session.config.getoption("--claim-dir")
    if raw is None:
        return None
    if session.testsfailed and not session.config.option.continue_on_collection_errors:
        raise session.Interrupted(f"{session.testsfailed} error(s) during collection")
    directory = Path(raw)
    items = session.items

    def next_claimed(start: int) -> int | None:
        for index in range(start, len(items)):
            if _claim(directory, items[index].nodeid):
                return index
        return None

    current = next_claimed(0)
    while current is not None:
        following = next_claimed(current + 1)
        nextitem = items[following] if following is not None else None
        items[current].config.hook.pytest_runtest_protocol(item=items[current], nextitem=nextitem)
        if session.shouldfail:
            raise session.Failed(session.shouldfail)
        if session.shouldstop:
            raise session.Interrupted(session.shouldstop)
        current = following
    return True
