"""Writing into a run directory: atomic writes that name their file when they fail, streaming
copies, and what counts as a *storage fault* (the disk is full, the file system is read-only,
an I/O error), which stops a run cleanly instead of failing its trials one by one.

Every file the driver writes goes through a temp file in the same directory (``.<name>.<pid>.
<thread>.tmp``), ``fsync`` and ``os.replace``: readers see the old file or the new one, never a
torn one. A write interrupted by a crash leaves its temp file behind;
:func:`remove_temp_files` clears them when a driver next takes the run's lock.

A run directory keeps a small *space reserve* (:class:`SpaceReserve`, a file of
:data:`RESERVE_BYTES` allocated at the start of every session): on a storage fault it is freed
first, so the manifest and ``errors.log`` can still say why the run stopped on a full disk.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

#: ``errno`` values that make a write into the run directory a storage fault.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG})

#: Size of the space reserve (bytes): room for the manifest and errors.log on a full disk.
RESERVE_BYTES = 1 << 20
#: File name of the space reserve in the run directory.
RESERVE_FILE = ".space-reserve"
#: Size of the chunks streamed copies read and write (bytes).
CHUNK_BYTES = 1 << 20


def storage_fault(error: BaseException) -> OSError | None:
    """The :class:`OSError` that makes ``error`` a storage fault, searching its causes and
    contexts (a fault is often wrapped, e.g. by a thread that streamed a transcript); ``None``
    when it is something else."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            return e
        stack += [e.__cause__, e.__context__]
    return None


def describe(error: OSError) -> str:
    """One line for an :class:`OSError`: ``<file>: <reason>`` (the reason without pyarrow's
    detail), or just the reason when no file is known."""
    reason = os.strerror(error.errno) if error.errno else str(error)
    return f"{error.filename}: {reason}" if error.filename else reason


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """Re-raise an :class:`OSError` of the block with ``path`` as its file name when it has
    none (``write`` errors carry no file name; ``open`` errors do)."""
    try:
        yield
    except OSError as e:
        if e.filename or e.errno is None:
            raise
        raise OSError(e.errno, os.strerror(e.errno), str(path)) from e


def temp_path(path: Path) -> Path:
    """The temp file of an atomic write of ``path``: same directory, hidden, unique per
    process and thread."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Open a temp file for writing ``path`` in binary mode; on success fsync it and replace
    ``path`` with it; on failure remove it (the old ``path``, if any, stays as it was).

    Raises:
        OSError: with ``path`` as its file name.
    """
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def write_bytes(path: Path, data: bytes | str) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def copy_file(src: Path, dest: Path) -> str:
    """Copy ``src`` to ``dest`` atomically, streaming (never all in memory).

    Returns:
        SHA-256 (hex) of the contents.
    """
    h = hashlib.sha256()
    with atomic_file(dest) as out, naming(src), open(src, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
            out.write(chunk)
    return h.hexdigest()


def remove_temp_files(run_dir: Path) -> int:
    """Remove the temp files of interrupted atomic writes (``.*.tmp``) anywhere in a run
    directory. Call it only while holding the run's lock (no writer is alive then).

    Returns:
        The number of files removed.
    """
    n = 0
    for path in run_dir.rglob(".*.tmp"):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            n += 1
    return n


class SpaceReserve:
    """A file of :data:`RESERVE_BYTES` in the run directory, allocated on disk, freed on a
    storage fault so that the run's stop can still be recorded.

    Allocation is best effort: on a disk that is already too full for it the reserve is
    simply absent (a fault is then recorded only if some space is left).
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / RESERVE_FILE
        """The reserve file."""

    def allocate(self) -> bool:
        """Allocate the reserve (again); returns whether it is in place."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
            return True
        except OSError:
            self.release()
            return False

    def release(self) -> None:
        """Free the reserve's space (idempotent)."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
