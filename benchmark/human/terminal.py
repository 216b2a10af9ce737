"""A recorded terminal relay: attach the operator's terminal to a command on a pseudo-terminal
and record the session as a timed cast file.

:func:`relay` runs ``argv`` (e.g. ``docker exec -it ... bash``) with a new pseudo-terminal as
its standard input, output and error, puts the operator's terminal in raw mode, and copies
bytes both ways until the command ends (or its time limit, or the run stops). Every chunk is
also appended to the cast file, in the asciinema v2 format (replay with ``asciinema play
FILE``): a JSON header line ``{"version": 2, "width", "height", "timestamp", "title", "env"}``,
then one JSON array per event, ``[seconds since start, code, data]`` with code ``o`` (output
shown to the operator), ``i`` (input the operator typed) or ``r`` (the terminal was resized to
``"COLSxROWS"``). Output is decoded as UTF-8 (bad bytes replaced), split sequences kept whole.

The window size of the operator's terminal is polled (signals can only be handled in the main
thread; the relay runs in a trial's thread) and passed on, so full-screen programs redraw.
"""

from __future__ import annotations

import codecs
import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import termios
import threading
import time
import tty
from pathlib import Path

from pydantic import BaseModel

#: Seconds between checks of the time limit, the stop event and the window size.
_TICK_S = 0.2


class RelayEnd(BaseModel):
    """How a relayed session ended."""

    exit_code: int | None
    """Exit status of the command; ``None`` when it was killed."""
    timed_out: bool
    """Whether it ran past its time limit and was killed."""
    terminal_closed: bool
    """Whether the operator's terminal closed (end of input) and the command was killed."""
    stopped: bool
    """Whether the run was stopping (the command was killed)."""
    duration_s: float
    """Wall time of the session in seconds."""


def is_terminal(fd_in: int = 0, fd_out: int = 1) -> bool:
    """Whether both descriptors are terminals (an operator can be attached)."""
    return os.isatty(fd_in) and os.isatty(fd_out)


def window_size(fd: int) -> tuple[int, int]:
    """``(columns, rows)`` of the terminal ``fd``; ``(80, 24)`` when it has none."""
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return 80, 24
    return (cols or 80), (rows or 24)


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class CastWriter:
    """Appends events to a cast file (asciinema v2), flushing each one (a killed driver leaves
    a valid prefix)."""

    def __init__(self, path: Path, width: int, height: int, title: str, env: dict[str, str]):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a", encoding="utf-8")
        self.start = time.monotonic()
        if self._f.tell() == 0:
            self._write({"version": 2, "width": width, "height": height,
                         "timestamp": int(time.time()), "title": title, "env": env})
        else:  # a later session of the same episode continues the file's clock
            self.start -= last_event_time(path)

    def _write(self, obj) -> None:
        self._f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self._f.flush()

    def event(self, code: str, data: str) -> None:
        """Record one event ``code`` (``o``, ``i``, ``r``) with ``data``, timed now."""
        if data:
            self._write([round(time.monotonic() - self.start, 6), code, data])

    def close(self) -> None:
        """Close the file (events written so far stay)."""
        self._f.close()


def last_event_time(path: Path) -> float:
    """Time of the last event of a cast file (0 without events)."""
    last = 0.0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("["):
                try:
                    last = float(json.loads(line)[0])
                except (ValueError, IndexError):
                    continue
    return last


def relay(argv: list[str], cast: Path, *, time_limit_s: float, title: str,
          stop: threading.Event | None = None, fd_in: int = 0, fd_out: int = 1) -> RelayEnd:
    """Run ``argv`` on a new pseudo-terminal attached to the operator's terminal (``fd_in``,
    ``fd_out``) and record the session to ``cast`` (appended to when it exists).

    The command is killed (SIGKILL to its process group) when it runs past ``time_limit_s``,
    when the operator's terminal reaches end of input, or when ``stop`` is set. The
    operator's terminal settings are restored in every case.

    Raises:
        OSError: ``fd_in`` is not a terminal, or the cast file cannot be written.
    """
    cols, rows = window_size(fd_out)
    master, slave = os.openpty()
    _set_size(slave, cols, rows)
    writer = CastWriter(cast, cols, rows, title,
                        {"TERM": os.environ.get("TERM", "xterm-256color"), "SHELL": "/bin/bash"})
    saved = termios.tcgetattr(fd_in)
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            close_fds=True)
    os.close(slave)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    typed = codecs.getincrementaldecoder("utf-8")(errors="replace")
    timed_out = closed = stopped = False
    try:
        tty.setraw(fd_in)
        while True:
            if time.monotonic() - start > time_limit_s:
                timed_out = True
                break
            if stop is not None and stop.is_set():
                stopped = True
                break
            size = window_size(fd_out)
            if size != (cols, rows):
                cols, rows = size
                _set_size(master, cols, rows)
                writer.event("r", f"{cols}x{rows}")
            ready, _, _ = select.select([fd_in, master], [], [], _TICK_S)
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the command closed the terminal
                    data = b""
                if not data:
                    break
                os.write(fd_out, data)
                writer.event("o", decoder.decode(data))
            if fd_in in ready:
                data = os.read(fd_in, 4096)
                if not data:
                    closed = True
                    break
                os.write(master, data)
                writer.event("i", typed.decode(data))
    finally:
        termios.tcsetattr(fd_in, termios.TCSADRAIN, saved)
        if proc.poll() is None and (timed_out or closed or stopped):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            exit_code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            exit_code = proc.wait()
        os.close(master)
        writer.close()
    killed = timed_out or closed or stopped
    return RelayEnd(exit_code=None if killed else exit_code, timed_out=timed_out,
                    terminal_closed=closed, stopped=stopped, duration_s=time.monotonic() - start)


def read_cast(path: Path) -> tuple[dict, list[tuple[float, str, str]]]:
    """The header and events ``(seconds, code, data)`` of a cast file (a torn last line is
    skipped).

    Raises:
        OSError: the file cannot be read.
        ValueError: the first line is not a cast header.
    """
    events: list[tuple[float, str, str]] = []
    with open(path, encoding="utf-8") as f:
        header = json.loads(f.readline())
        if not isinstance(header, dict) or header.get("version") != 2:
            raise ValueError(f"{path}: not an asciinema v2 cast")
        for line in f:
            try:
                t, code, data = json.loads(line)
            except ValueError:
                continue
            events.append((float(t), str(code), str(data)))
    return header, events
