"""Usage meters: the token figures of one model response, read from its event stream or JSON
body while the proxy passes it on."""

from __future__ import annotations

import json
from typing import Any

from benchmark.proxy.protocols import Api
from benchmark.proxy.sse import SSEParser


class UsageMeter:
    """Extracts the usage of one response of one API, from its event stream or JSON body."""

    def __init__(self, api: Api):
        self.api = api
        """The API of the response."""
        self.model: str | None = None
        """Model named by the response, when it names one."""
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_write_tokens = 0
        self.cache_read_tokens = 0
        self.reasoning_tokens = 0
        self.seen_usage = False
        """Whether any usage figure was found."""
        self._sse = SSEParser()
        self._body = bytearray()

    def feed_stream(self, chunk: bytes) -> None:
        """Feed a chunk of an event-stream body."""
        for data in self._sse.feed(chunk):
            try:
                event = json.loads(data)
            except ValueError:
                continue
            if isinstance(event, dict):
                self._event(event)

    def feed_body(self, chunk: bytes) -> None:
        """Feed a chunk of a non-streamed (JSON) body; parsed by :meth:`finish_body`."""
        if len(self._body) < 16 * 1024 * 1024:
            self._body += chunk

    def finish_body(self) -> None:
        """Parse the JSON body fed so far (an Anthropic message or an OpenAI response)."""
        try:
            doc = json.loads(self._body)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        if self.api == "anthropic":
            self._anthropic_usage(doc.get("usage"), doc.get("model"))
        else:
            self._openai_usage(doc.get("usage"), doc.get("model"))

    def _event(self, event: dict) -> None:
        kind = event.get("type")
        if self.api == "anthropic":
            if kind == "message_start" and isinstance(event.get("message"), dict):
                msg = event["message"]
                self._anthropic_usage(msg.get("usage"), msg.get("model"))
            elif kind == "message_delta":
                self._anthropic_usage(event.get("usage"), None)
        elif kind in ("response.completed", "response.incomplete", "response.failed") \
                and isinstance(event.get("response"), dict):
            resp = event["response"]
            self._openai_usage(resp.get("usage"), resp.get("model"))

    def _anthropic_usage(self, usage: Any, model: Any) -> None:
        if isinstance(model, str) and model:
            self.model = model
        if not isinstance(usage, dict):
            return
        self.seen_usage = True
        # message_delta's usage is cumulative: a figure it carries replaces message_start's.
        for src, attr in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                          ("cache_creation_input_tokens", "cache_write_tokens"),
                          ("cache_read_input_tokens", "cache_read_tokens")):
            value = usage.get(src)
            if isinstance(value, int) and value >= 0:
                setattr(self, attr, value)

    def _openai_usage(self, usage: Any, model: Any) -> None:
        if isinstance(model, str) and model:
            self.model = model
        if not isinstance(usage, dict):
            return
        self.seen_usage = True
        total_in = _int(usage.get("input_tokens"))
        cached = _int((usage.get("input_tokens_details") or {}).get("cached_tokens"))
        self.cache_read_tokens = cached
        self.input_tokens = max(0, total_in - cached)
        self.output_tokens = _int(usage.get("output_tokens"))
        self.reasoning_tokens = _int((usage.get("output_tokens_details") or {}).get("reasoning_tokens"))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0
