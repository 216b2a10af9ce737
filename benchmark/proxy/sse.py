"""An incremental parser of server-sent event streams (``text/event-stream``)."""

from __future__ import annotations

import codecs
import re


class SSEParser:
    """Incremental parser of a ``text/event-stream`` body: feed bytes as they come, get the
    ``data`` payload of each complete event (per the WHATWG event-stream rules: lines end with
    CRLF, LF or CR; an empty line dispatches; ``data:`` lines are joined with LF)."""

    def __init__(self):
        self._buf = ""
        self._data: list[str] = []
        self._decoder = None

    def feed(self, chunk: bytes) -> list[str]:
        """Parse a chunk; return the data of every event it completed."""
        if self._decoder is None:
            self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf += self._decoder.decode(chunk)
        events = []
        while True:
            m = re.search(r"\r\n|\n|\r", self._buf)
            if m is None or (m.group() == "\r" and m.end() == len(self._buf)):
                break  # no full line yet (a lone CR at the end may be half of CRLF)
            line, self._buf = self._buf[:m.start()], self._buf[m.end():]
            if line == "":
                if self._data:
                    events.append("\n".join(self._data))
                self._data = []
            elif line.startswith("data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(" ") else value)
        return events



# An empty line ends an event; a line ends with CRLF, LF or CR (a CR directly before LF is CRLF).
_EVENT_END = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
_LINE_END = re.compile(r"\r\n|\r|\n")


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Cut the complete events off the front of an event-stream buffer.

    Returns:
        (the raw bytes of each complete event, its terminating empty line included; the bytes
        left over, the start of an event not complete yet). Joining both gives ``buffer`` back.
    """
    events, start = [], 0
    for m in _EVENT_END.finditer(buffer):
        if m.start() < start:
            continue
        events.append(buffer[start:m.end()])
        start = m.end()
    return events, buffer[start:]


def event_data(raw: bytes) -> str | None:
    """The ``data`` of one raw event (its ``data:`` lines joined with LF), or ``None`` when it
    has none (a comment, or an ``event:`` line alone)."""
    data = []
    for line in _LINE_END.split(raw.decode("utf-8", errors="replace")):
        if line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    return "\n".join(data) if data else None
