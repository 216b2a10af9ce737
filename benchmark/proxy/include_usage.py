"""Streamed Chat Completions requests that do not ask for usage.

A streamed ``POST /v1/chat/completions`` carries token usage only when the request sets
``stream_options.include_usage``: the upstream then sends one more chunk before ``data: [DONE]``,
with ``choices: []`` and the ``usage`` of the whole request (and ``"usage": null`` on the other
chunks, per OpenAI's API reference). A client that does not ask would get tokens nobody counts,
so the proxy asks for it: :func:`add_include_usage` sets ``stream_options.include_usage = true``
in the forwarded request (the other ``stream_options`` are kept), and :class:`UsageChunkFilter`
takes the usage chunk out of the answer (after the meter has read it), so the client sees the
stream it asked for, except for ``"usage": null`` members on its chunks. The record says so
(``include_usage_added``). An upstream that ignores the option gives a row with
``usage_missing`` (tokens unknown, cost null), never a guess.
"""

from __future__ import annotations

import json
from typing import Any

from benchmark.proxy.meters import UsageMeter, is_usage_chunk
from benchmark.proxy.sse import event_data, split_events


def asks_for_usage(doc: dict[str, Any]) -> bool:
    """Whether a Chat Completions request gets usage without help: it is not streamed, or it
    sets ``stream_options.include_usage`` to ``true``."""
    if doc.get("stream") is not True:
        return True
    options = doc.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def add_include_usage(doc: dict[str, Any]) -> bytes:
    """The request body with ``stream_options.include_usage = true`` (JSON, UTF-8)."""
    options = doc.get("stream_options")
    doc = dict(doc, stream_options={**(options if isinstance(options, dict) else {}),
                                     "include_usage": True})
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


class UsageChunkFilter:
    """Passes a Chat Completions event stream on event by event, feeding each event to the
    meter and holding back the usage-only chunk (:func:`~benchmark.proxy.meters.is_usage_chunk`).
    Every other byte is passed on unchanged and in order; an event split across chunks is passed
    on once complete."""

    def __init__(self, meter: UsageMeter):
        self.meter = meter
        """The meter fed with every event."""
        self.dropped = 0
        """Number of usage chunks held back."""
        self._buf = b""

    def feed(self, chunk: bytes) -> bytes:
        """The bytes of ``chunk`` (with any held partial event) to pass on now."""
        events, self._buf = split_events(self._buf + chunk)
        out = []
        for raw in events:
            data = event_data(raw)
            if data is not None:
                self.meter.feed_event_data(data)
                if self._is_usage(data):
                    self.dropped += 1
                    continue
            out.append(raw)
        return b"".join(out)

    def flush(self) -> bytes:
        """The bytes still held at the end of the stream (an unterminated last event)."""
        rest, self._buf = self._buf, b""
        data = event_data(rest) if rest else None
        if data is not None:
            self.meter.feed_event_data(data)
            if self._is_usage(data):
                self.dropped += 1
                return b""
        return rest

    @staticmethod
    def _is_usage(data: str) -> bool:
        if '"usage"' not in data:
            return False
        try:
            event = json.loads(data)
        except ValueError:
            return False
        return isinstance(event, dict) and is_usage_chunk(event)
