"""pytest plugin: several pytest processes share one session's checks, each taking the next free one.

Installed in the scorer image; started by ``marathon_parallel``. With ``--claim-dir DIR``, it
replaces pytest's run loop: every process collects the same checks and runs, in collection
order, each one it is first to claim (an ``O_EXCL`` file in DIR named after the check's node
id). A check therefore runs exactly once, in whichever process is free first, and appears in
exactly one JUnit report; a process that dies takes its verdicts with it (its report is never
written), which the scorer records as ``error``, never ``passed``. With ``--wait-for FILE``, no
check runs before FILE exists (see :func:`pytest_runtestloop`).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest


#: Longest wait for the ``--wait-for`` file, in seconds (the scorer's total limit ends it sooner).
WAIT_LIMIT_S = 120.0


def pytest_addoption(parser):
    """Add ``--claim-dir`` (the directory the processes of one session claim checks in) and
    ``--wait-for`` (a file that must exist before the first check runs)."""
    parser.addoption("--claim-dir", default=None,
                     help="share the checks with other pytest processes claiming in this directory")
    parser.addoption("--wait-for", default=None,
                     help="start running checks only once this file exists (checked every 5 ms)")


def _wait_for(session, path: str) -> None:
    """Wait until ``path`` exists; past :data:`WAIT_LIMIT_S` stop the session with an error."""
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise session.Interrupted(f"{path} did not appear within {WAIT_LIMIT_S:g} s")
        time.sleep(0.005)


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

    With ``--wait-for FILE``, first wait for FILE: the scorer starts pytest (about 0.4 s of
    imports and collection) while it is still copying the snapshot into the container, and puts
    FILE there once the copy is complete. Claims one check ahead, so that pytest knows the next
    check it will run (``nextitem``) and tears fixtures down exactly as in a single process.
    """
    if session.config.option.collectonly:
        return None
    if session.config.getoption("--wait-for"):
        _wait_for(session, session.config.getoption("--wait-for"))
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
