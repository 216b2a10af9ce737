"""Shared by the proxy tests: a controllable fake upstream that records every request it gets
(whatever the path), and a raw HTTP/1.1 client that sends a request target byte for byte over
TCP or a Unix socket."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading

from aiohttp import web

from benchmark.proxy import BackgroundServer

ANTHROPIC_EVENTS = [
    {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                          "model": "claude-sonnet-4-5-20250929", "content": [],
                                          "usage": {"input_tokens": 120, "output_tokens": 1,
                                                    "cache_creation_input_tokens": 30,
                                                    "cache_read_input_tokens": 400}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 57}},
    {"type": "message_stop"},
]
OPENAI_EVENTS = [
    {"type": "response.created", "response": {"id": "r1", "model": "gpt-5-codex", "status": "in_progress"}},
    {"type": "response.output_item.done", "output_index": 0, "item": {"type": "message", "role": "assistant",
                                                                      "content": [{"type": "output_text", "text": "hi"}]}},
    {"type": "response.completed", "response": {
        "id": "r1", "model": "gpt-5-codex", "status": "completed",
        "usage": {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 600},
                  "output_tokens": 300, "output_tokens_details": {"reasoning_tokens": 200}}}},
]
CHAT_MODEL = "qwen3-coder-30b"
CHAT_USAGE = {"prompt_tokens": 1000, "completion_tokens": 300, "total_tokens": 1300,
              "prompt_tokens_details": {"cached_tokens": 600},
              "completion_tokens_details": {"reasoning_tokens": 200}}
CHAT_CHUNKS = [
    {"id": "c1", "object": "chat.completion.chunk", "model": CHAT_MODEL,
     "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}]},
    {"id": "c1", "object": "chat.completion.chunk", "model": CHAT_MODEL,
     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
]


def sse(event: dict) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


class FakeUpstream(BackgroundServer):
    """An upstream whose behaviour each test sets, recording every request in :attr:`seen`
    (any method, any path: a request the proxy should have refused shows up here). ``mode`` is
    ``stream`` (events; after the first one it waits for ``release``), ``status`` (answer
    ``status_code`` with a JSON error), ``drop`` (first event, then the connection is cut),
    ``json`` (a non-streamed body) or ``no_usage`` (Chat Completions: never sends usage).
    Paths other than the three metered ones answer 200 ``{"ok": true}``."""

    def __init__(self):
        super().__init__("127.0.0.1", 0)
        self.mode = "stream"
        self.status_code = 529
        self.release = threading.Event()
        self.release.set()
        self.seen: list[dict] = []

    async def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append({"headers": dict(request.headers), "body": body, "method": request.method,
                          "path": request.path_qs, "raw": request.raw_path})
        events = {"/v1/messages": ANTHROPIC_EVENTS, "/v1/responses": OPENAI_EVENTS,
                  "/v1/chat/completions": "chat"}.get(request.path)
        if request.method != "POST" or events is None:
            return web.json_response({"ok": True})
        if self.mode == "status":
            return web.json_response({"type": "error", "error": {"type": "overloaded_error",
                                                                 "message": "Overloaded"}},
                                     status=self.status_code, headers={"x-upstream": "yes"})
        if events == "chat":
            return await self.chat(request, json.loads(body))
        if self.mode == "json":
            last = events[-1]
            doc = last.get("response") or {"model": events[0]["message"]["model"],
                                           "usage": {**events[0]["message"]["usage"], "output_tokens": 57}}
            return web.json_response(doc)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(sse(events[0]))
        if self.mode == "drop":
            await asyncio.sleep(0.05)
            request.transport.abort()
            return resp
        while not self.release.is_set():
            await asyncio.sleep(0.01)
        for event in events[1:]:
            await resp.write(sse(event))
        await resp.write_eof()
        return resp

    async def chat(self, request: web.Request, doc: dict) -> web.StreamResponse:
        usage = None if self.mode == "no_usage" else CHAT_USAGE
        if not doc.get("stream"):
            answer = {"id": "c1", "object": "chat.completion", "model": CHAT_MODEL, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}
            return web.json_response(answer if usage is None else dict(answer, usage=usage))
        wants = (doc.get("stream_options") or {}).get("include_usage") is True and usage is not None
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for chunk in CHAT_CHUNKS:
            await resp.write(f"data: {json.dumps(dict(chunk, usage=None) if wants else chunk)}\n\n".encode())
        if wants:
            usage_chunk = {"id": "c1", "object": "chat.completion.chunk", "model": CHAT_MODEL,
                           "choices": [], "usage": usage}
            # split across writes, as a network may deliver it
            data = f"data: {json.dumps(usage_chunk)}\n\n".encode()
            await resp.write(data[:20])
            await resp.write(data[20:])
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def raw_request(where: tuple[str, int] | str, method: str, target: str, *,
                token: str | None = None, body: bytes | dict | None = None,
                auth: str = "x-api-key", headers: dict | None = None) -> tuple[int, dict, bytes]:
    """Send ``method target`` exactly as given (no client-side normalisation) to a TCP address
    or a Unix socket path; return (status, headers, body)."""
    if isinstance(where, str):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(where)
    else:
        sock = socket.create_connection(where)
    sock.settimeout(10)
    data = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    lines = [f"{method} {target} HTTP/1.1", "Host: proxy", f"Content-Length: {len(data)}",
             "Content-Type: application/json", "Connection: close"]
    if token is not None:
        lines.append(f"x-api-key: {token}" if auth == "x-api-key" else f"Authorization: Bearer {token}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
    resp = http.client.HTTPResponse(sock, method=method)
    resp.begin()
    out = resp.read()
    sock.close()
    return resp.status, dict(resp.getheaders()), out
