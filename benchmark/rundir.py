"""A run directory's custody: the lock a driver holds while it works on the run, whether a
run is alive, and the run's *nonce*.

Lock: ``<run dir>/.lock``, an exclusive ``flock`` held by the driver process for its whole
session (released by the kernel when the process ends, SIGKILL included). A run whose manifest
says ``running`` while nobody holds the lock is **dead** (its driver was killed; resumable).

Nonce: 12 random hex digits drawn when a run directory is created and recorded in its manifest.
Run ids are chosen by users (``--run-id``), so two run directories (say under two ``--out``)
can share one; the nonce cannot be shared. Everything a run creates outside its directory
carries it: container names ``marathon-<run id>-<nonce>-<trial>``, the Docker label
:data:`NONCE_LABEL` (clean-up and resume remove only containers carrying the run's nonce), and
host temporary directories ``/tmp/marathon-<nonce>-<purpose>-<random>`` (proxy socket,
workspace archives and snapshots, scorer reports), which a new session of the run removes
(a SIGKILLed session cannot) and never touches another run's.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from benchmark.errors import MarathonError

#: File name of the run's lock in the run directory.
LOCK_FILE = ".lock"
#: Docker label holding the run's nonce on every container of the run.
NONCE_LABEL = "org.marathon.run-nonce"
#: Where a run's host temporary directories go. Fixed, and short: the proxy's Unix socket path
#: in one of them must stay under the 108-byte limit whatever ``TMPDIR`` says.
HOST_TMP = Path("/tmp")


def new_nonce() -> str:
    """A fresh run nonce: 12 random hex digits."""
    return secrets.token_hex(6)


def host_tmp_prefix(nonce: str) -> str:
    """Name prefix of every host temporary directory of the run with ``nonce``:
    ``marathon-<nonce>-``."""
    return f"marathon-{nonce}-"


def make_host_tmp(nonce: str, purpose: str) -> Path:
    """Create a private (0700) host temporary directory of the run,
    ``/tmp/marathon-<nonce>-<purpose>-<random>``."""
    return Path(tempfile.mkdtemp(prefix=f"{host_tmp_prefix(nonce)}{purpose}-", dir=HOST_TMP))


def remove_host_tmp(nonce: str) -> int:
    """Remove every host temporary directory of the run with ``nonce`` (left by a killed
    session; call it holding the run's lock). Returns how many were removed."""
    n = 0
    for path in HOST_TMP.glob(f"{host_tmp_prefix(nonce)}*"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            n += 1
    return n


def acquire(run_dir: Path, wait_s: float = 1.0) -> int:
    """Take the run's lock for this process (released when the process ends, even on
    SIGKILL, or with ``os.close`` of the returned descriptor). A conflicting holder is retried
    for ``wait_s`` seconds (``status`` probes the lock for an instant).

    Returns:
        The lock file's descriptor.

    Raises:
        MarathonError: another driver holds the lock.
        OSError: the lock file cannot be created (e.g. a read-only run directory).
    """
    # Read-only: flock needs no write access, and a file open for writing would keep the file
    # system from being remounted read-only.
    fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise MarathonError(f"{run_dir}: another driver is working on this run "
                                    "(it holds the run's lock)") from None
            time.sleep(0.05)


def driver_alive(run_dir: Path) -> bool:
    """Whether a driver process holds the run's lock now (a shared lock is tried for an
    instant and released; nothing is written)."""
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def live_status(run_dir: Path, recorded: str) -> str:
    """The run's status as it stands: ``running`` while a driver holds the lock, ``dead`` when
    the manifest says ``running`` but no driver holds it (killed: resumable), else the
    recorded status (``complete``, ``interrupted``, ``failed``)."""
    if driver_alive(run_dir):
        return "running"
    return "dead" if recorded == "running" else recorded


def resume_hint(run_dir: Path, status: str) -> str:
    """What to do about a run in ``status`` (from :func:`live_status`): how to resume it, or
    an empty string when it is complete or running."""
    if status in ("dead", "interrupted", "failed"):
        return f"resume with: marathon run --resume {run_dir}"
    return ""
