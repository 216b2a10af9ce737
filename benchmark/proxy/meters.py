"""Usage meters, one per protocol: the token figures of one model response, read from its event
stream or JSON body while the proxy passes it on.

Token kinds follow :class:`~benchmark.records.UsageCall`: ``input_tokens`` excludes cache reads
and writes; ``output_tokens`` includes reasoning where the vendor bills it as output (OpenAI),
with ``reasoning_tokens`` recorded apart.

- :class:`AnthropicMessagesMeter`: ``message_start.message.usage`` (``input_tokens``,
  ``cache_creation_input_tokens``, ``cache_read_input_tokens``) and
  ``message_delta.usage.output_tokens`` (the delta's usage is cumulative: a figure it carries
  replaces ``message_start``'s); a JSON body's ``usage``.
- :class:`OpenAIResponsesMeter`: ``response.completed`` (also ``response.incomplete`` /
  ``response.failed``) ``response.usage``: ``input_tokens`` with
  ``input_tokens_details.cached_tokens`` (subtracted from input, recorded as cache reads),
  ``output_tokens`` with ``output_tokens_details.reasoning_tokens``; a JSON body's ``usage``.
- :class:`OpenAIChatMeter`: the ``usage`` of a chunk (the last one carrying it wins: the final
  ``choices: []`` chunk sent for ``stream_options.include_usage``), or of a JSON body:
  ``prompt_tokens`` with ``prompt_tokens_details.cached_tokens``, ``completion_tokens`` with
  ``completion_tokens_details.reasoning_tokens``.
"""

from __future__ import annotations

import json
from typing import Any

from benchmark.proxy.sse import SSEParser

#: Largest non-streamed body kept for parsing, in bytes (larger bodies are passed on unparsed).
MAX_BODY = 16 * 1024 * 1024


class UsageMeter:
    """Base of the meters: token counters, fed with an event stream or a JSON body. Subclasses
    implement :meth:`event` (one decoded event of a stream) and :meth:`body` (a decoded body)."""

    def __init__(self):
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
            self.feed_event_data(data)

    def feed_event_data(self, data: str) -> None:
        """Feed the ``data`` of one event (JSON; anything else, e.g. ``[DONE]``, is skipped)."""
        try:
            event = json.loads(data)
        except ValueError:
            return
        if isinstance(event, dict):
            self.event(event)

    def feed_body(self, chunk: bytes) -> None:
        """Feed a chunk of a non-streamed (JSON) body; parsed by :meth:`finish_body`."""
        if len(self._body) < MAX_BODY:
            self._body += chunk

    def finish_body(self) -> None:
        """Parse the JSON body fed so far."""
        try:
            doc = json.loads(self._body)
        except ValueError:
            return
        if isinstance(doc, dict):
            self.body(doc)

    def event(self, event: dict) -> None:
        """Take the figures of one stream event."""
        raise NotImplementedError

    def body(self, doc: dict) -> None:
        """Take the figures of a non-streamed answer."""
        raise NotImplementedError

    def _model(self, model: Any) -> None:
        if isinstance(model, str) and model:
            self.model = model

    def _openai_style(self, usage: dict, input_key: str, output_key: str) -> None:
        """OpenAI usage: input includes its cached tokens (subtracted here), output includes
        reasoning."""
        self.seen_usage = True
        total_in = _int(usage.get(input_key))
        cached = _int(_dict(usage.get(input_key + "_details")).get("cached_tokens"))
        self.cache_read_tokens = cached
        self.input_tokens = max(0, total_in - cached)
        self.output_tokens = _int(usage.get(output_key))
        self.reasoning_tokens = _int(_dict(usage.get(output_key + "_details")).get("reasoning_tokens"))


class AnthropicMessagesMeter(UsageMeter):
    """Anthropic Messages API (``POST /v1/messages``)."""

    def event(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "message_start" and isinstance(event.get("message"), dict):
            msg = event["message"]
            self._usage(msg.get("usage"), msg.get("model"))
        elif kind == "message_delta":
            self._usage(event.get("usage"), None)

    def body(self, doc: dict) -> None:
        self._usage(doc.get("usage"), doc.get("model"))

    def _usage(self, usage: Any, model: Any) -> None:
        self._model(model)
        if not isinstance(usage, dict):
            return
        self.seen_usage = True
        for src, attr in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                          ("cache_creation_input_tokens", "cache_write_tokens"),
                          ("cache_read_input_tokens", "cache_read_tokens")):
            value = usage.get(src)
            if isinstance(value, int) and value >= 0:
                setattr(self, attr, value)


class OpenAIResponsesMeter(UsageMeter):
    """OpenAI Responses API (``POST /v1/responses``)."""

    def event(self, event: dict) -> None:
        if event.get("type") in ("response.completed", "response.incomplete", "response.failed") \
                and isinstance(event.get("response"), dict):
            self.body(event["response"])

    def body(self, doc: dict) -> None:
        self._model(doc.get("model"))
        if isinstance(doc.get("usage"), dict):
            self._openai_style(doc["usage"], "input_tokens", "output_tokens")


class OpenAIChatMeter(UsageMeter):
    """OpenAI Chat Completions API (``POST /v1/chat/completions``)."""

    def event(self, event: dict) -> None:
        self.body(event)

    def body(self, doc: dict) -> None:
        self._model(doc.get("model"))
        if isinstance(doc.get("usage"), dict):
            self._openai_style(doc["usage"], "prompt_tokens", "completion_tokens")


#: The meter class of each protocol.
METERS: dict[str, type[UsageMeter]] = {
    "anthropic-messages": AnthropicMessagesMeter,
    "openai-responses": OpenAIResponsesMeter,
    "openai-chat": OpenAIChatMeter,
}


def is_usage_chunk(event: dict) -> bool:
    """Whether a Chat Completions stream chunk is the usage-only chunk that
    ``stream_options.include_usage`` adds (``choices`` empty, ``usage`` an object)."""
    return event.get("choices") == [] and isinstance(event.get("usage"), dict)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}
