"""The scripted model server: a simulated model speaking the Anthropic Messages API, the OpenAI
Responses API and the OpenAI Chat Completions API, for offline runs of the real agent CLIs.

This is a **simulation**. It demonstrates the pipeline (CLI in the sandbox -> metering proxy ->
model -> tools -> workspace -> scorer) and the arms' control loops; it says nothing about any
real model's behaviour. Its model names all start with ``scripted/``; the policy is the part
after the slash (see :mod:`benchmark.scripted.policy`), plus two fault policies for tests:
``scripted/overloaded`` answers every request with HTTP 529 (an overloaded error), and
``scripted/drop-stream`` starts a stream and then drops the connection.

Streaming protocols (``stream: true``; a non-streamed request gets the same content as one
JSON body):

- Anthropic ``POST /v1/messages``: ``message_start`` (with ``message.usage``), per content block
  ``content_block_start`` / ``content_block_delta`` (``text_delta``, or one
  ``input_json_delta`` carrying the whole tool input) / ``content_block_stop``, then
  ``message_delta`` (``stop_reason`` ``tool_use`` or ``end_turn``, ``usage.output_tokens``) and
  ``message_stop``. A command is run through the request's ``Bash`` tool.
- OpenAI ``POST /v1/responses``: ``response.created``, ``response.output_item.done`` for each
  output item (a ``function_call`` of the shell tool found among the request's ``tools``, or an
  assistant ``message``), then ``response.completed`` with ``response.usage``.
- OpenAI ``POST /v1/chat/completions``: ``chat.completion.chunk`` events (``data:`` lines only):
  the role, the text as one ``content`` delta, for a command one ``tool_calls`` delta with the
  whole arguments (a function of the request's ``tools`` taking ``command`` or ``cmd``:
  ``bash`` for mini-swe-agent, ``run_shell_command`` for Qwen Code), a chunk with
  ``finish_reason`` (``tool_calls`` or ``stop``), then, only when the request sets
  ``stream_options.include_usage``, a ``choices: []`` chunk with ``usage`` (and ``"usage":
  null`` on the other chunks, as OpenAI does), and ``data: [DONE]``. A non-streamed request gets
  a ``chat.completion`` object, always with ``usage``. A conversation whose messages name
  mini-swe-agent's finish marker (``COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT``) ends each turn by
  running ``echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT`` instead of with text alone (that agent
  finishes only on that command).

Usage rule (documented, deterministic; the proxy and the CLIs both see these figures):

- ``input_tokens = ceil(len(request body in bytes) / 4)``;
- ``output_tokens = ceil(len(response content in bytes) / 4)``, where the content is the UTF-8
  text of every text block / message plus the JSON text of every tool input / call arguments;
- cache write, cache read and reasoning tokens are 0. Cost is 0 (``pricing.toml``:
  ``scripted/*``, source ``simulation``).

Ids (message, tool call, response) are derived from a hash of the request body, so the same
request always gets the same bytes back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import threading
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from benchmark.errors import MarathonError
from benchmark.marathon import load_marathon
from benchmark.proxy import BackgroundServer
from benchmark.scripted.policy import POLICIES, Action, Library, Turn, decide

#: Prefix of every scripted model name.
PREFIX = "scripted/"


def input_tokens(body: bytes) -> int:
    """Simulated input tokens of a request: ``ceil(len(body) / 4)``."""
    return math.ceil(len(body) / 4)


def output_tokens(content: str) -> int:
    """Simulated output tokens of a response: ``ceil(len(content.encode()) / 4)``."""
    return math.ceil(len(content.encode("utf-8")) / 4)


class ScriptedConfig(BaseModel):
    """Configuration of a :class:`ScriptedServer`."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    """Address to listen on (loopback: only the proxy on the host talks to it)."""
    port: int = Field(default=0, ge=0, le=65535)
    """Port; 0 picks a free one."""
    marathon: str | list[str] = "ledger"
    """Marathon (name or path) whose episodes the policies recognize and solve, or several (a
    run of several marathons: a conversation is answered from the first marathon one of whose
    brief headings it holds)."""
    capture_dir: Path | None = None
    """If set, every request body is saved there as ``NNNN-<api>.json`` (for debugging)."""


# -- conversations -------------------------------------------------------------------------------

def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text_of(c.get("text", c.get("content", ""))) if isinstance(c, dict) else str(c)
                         for c in content)
    return "" if content is None else str(content)


def anthropic_turns(doc: dict) -> list[Turn]:
    """The conversation of a Messages API request. Within one message, tool results come after
    its text blocks (Claude Code adds reminders next to tool results). Messages with role
    ``system`` (Claude Code 2.1 sends its environment description as one, after the first
    prompt) are context, not part of the conversation, like the top-level ``system``."""
    turns: list[Turn] = []
    for i, msg in enumerate(doc.get("messages") or []):
        if msg.get("role") == "system":
            continue
        role = "assistant" if msg.get("role") == "assistant" else "user"
        content = msg.get("content")
        if isinstance(content, str):
            turns.append(Turn(role, "text", content, i))
            continue
        results = []
        for block in content or []:
            kind = block.get("type")
            if kind == "text":
                turns.append(Turn(role, "text", block.get("text", ""), i))
            elif kind == "tool_use":
                turns.append(Turn(role, "tool_call", json.dumps(block.get("input")), i))
            elif kind == "tool_result":
                results.append(Turn("user", "tool_result", _text_of(block.get("content")), i))
        turns += results
    return turns


def openai_turns(doc: dict) -> list[Turn]:
    """The conversation of a Responses API request (``input`` items; ``instructions`` and
    system/developer messages are not part of it)."""
    items = doc.get("input")
    if isinstance(items, str):
        return [Turn("user", "text", items, 0)]
    turns: list[Turn] = []
    for i, item in enumerate(items or []):
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role in ("user", "assistant"):
                turns.append(Turn(role, "text", _text_of(item.get("content")), i))
        elif kind in ("function_call", "custom_tool_call", "local_shell_call"):
            turns.append(Turn("assistant", "tool_call",
                              str(item.get("arguments") or item.get("input") or item.get("action")), i))
        elif kind.endswith("_output"):
            turns.append(Turn("user", "tool_result", _text_of(item.get("output")), i))
    return turns


def shell_call(tools: list[dict], command: str) -> tuple[str, str, str] | None:
    """How to run ``command`` with the request's tools: ``(item type, tool name, arguments
    JSON)``, or ``None`` when no shell tool is offered.

    Recognized: a function tool taking ``cmd`` (string) or ``command`` (string, or array of
    argv); preferred names ``exec_command``, ``shell_command``, ``shell``, ``bash``,
    ``run_shell_command``; or a ``local_shell`` tool.
    """
    funcs = {t.get("name"): t for t in tools if t.get("type") == "function" and t.get("name")}
    for name in ("exec_command", "shell_command", "shell", "bash", "run_shell_command", *sorted(funcs)):
        tool = funcs.get(name)
        if tool is None:
            continue
        props = (tool.get("parameters") or {}).get("properties") or {}
        args: dict[str, Any] = {}
        if props.get("cmd", {}).get("type") == "string":
            args["cmd"] = command
        elif "command" in props:
            args["command"] = (["bash", "-lc", command] if props["command"].get("type") == "array"
                               else command)
        else:
            continue
        if "workdir" in props:
            args["workdir"] = "/workspace"
        return "function_call", name, json.dumps(args)
    if any(t.get("type") == "local_shell" for t in tools):
        return "local_shell_call", "local_shell", json.dumps(
            {"type": "exec", "command": ["bash", "-lc", command], "working_directory": "/workspace"})
    return None


def chat_turns(doc: dict) -> list[Turn]:
    """The conversation of a Chat Completions request (``messages``; ``system`` and
    ``developer`` messages are not part of it): user text, assistant text and tool calls, and
    ``tool`` messages as tool results."""
    turns: list[Turn] = []
    for i, msg in enumerate(doc.get("messages") or []):
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        if role in ("user", "assistant"):
            text = _text_of(msg.get("content"))
            if text or role == "user":
                turns.append(Turn(role, "text", text, i))
            for call in msg.get("tool_calls") or [] if role == "assistant" else []:
                turns.append(Turn("assistant", "tool_call",
                                  str((call.get("function") or {}).get("arguments", "")), i))
        elif role == "tool":
            turns.append(Turn("user", "tool_result", _text_of(msg.get("content")), i))
    return turns


#: mini-swe-agent ends a run when the model runs ``echo`` of this marker.
FINISH_MARKER = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"


def chat_tools(doc: dict) -> list[dict]:
    """The request's Chat Completions ``tools`` in the Responses API's flat shape
    (``{"type": "function", "name", "parameters"}``), for :func:`shell_call`."""
    tools = []
    for t in doc.get("tools") or []:
        fn = t.get("function") if isinstance(t, dict) else None
        if isinstance(fn, dict) and fn.get("name"):
            tools.append({"type": "function", "name": fn["name"],
                          "parameters": fn.get("parameters") or {}})
    return tools


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _data(data: dict) -> bytes:
    """One event with ``data:`` only (Chat Completions chunks carry no ``event:`` line)."""
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


# -- the server ----------------------------------------------------------------------------------

class ScriptedServer(BackgroundServer):
    """The scripted model server on a background loop (see the module docstring)."""

    thread_name = "scripted-model"

    def __init__(self, config: ScriptedConfig | None = None):
        config = config or ScriptedConfig()
        super().__init__(config.host, config.port)
        self.config = config
        """The configuration."""
        names = [config.marathon] if isinstance(config.marathon, str) else config.marathon
        self.libraries = [Library(load_marathon(m)) for m in names]
        """The solutions the policies write, one library per marathon."""
        self.library = self.libraries[0]
        """The first marathon's library."""
        self.requests = 0
        """Number of model requests answered."""
        self.seen_keys: set[str] = set()
        """Every API key presented to the server (``x-api-key`` or bearer token): tests check
        that only the proxy's upstream key arrives here."""
        self._lock = threading.Lock()

    async def make_app(self) -> web.Application:
        if self.config.capture_dir is not None:
            self.config.capture_dir.mkdir(parents=True, exist_ok=True)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("HEAD", "/", self._root)
        app.router.add_route("GET", "/", self._root)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="marathon scripted model (a simulation)\n")

    async def _read(self, request: web.Request, api: str) -> tuple[bytes, dict, str]:
        body = await request.read()
        key = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        with self._lock:
            n = self.requests
            self.requests += 1
            if key:
                self.seen_keys.add(key)
        if self.config.capture_dir is not None:
            (self.config.capture_dir / f"{n:04d}-{api}.json").write_bytes(body)
        try:
            doc = json.loads(body)
        except ValueError:
            raise web.HTTPBadRequest(text="request body is not JSON") from None
        if not isinstance(doc, dict):
            raise web.HTTPBadRequest(text="request body is not a JSON object")
        model = str(doc.get("model") or "")
        return body, doc, model

    def _library_for(self, turns: list[Turn]) -> Library:
        """The library of the marathon whose brief the conversation holds (the first one's when
        none does)."""
        return next((lib for lib in self.libraries if lib.episode_of(turns) is not None), self.library)

    def _policy(self, model: str) -> str | None:
        policy = model.removeprefix(PREFIX)
        return policy if model.startswith(PREFIX) and policy in POLICIES else None

    # Anthropic

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body, doc, model = await self._read(request, "anthropic")
        policy = self._policy(model)
        if policy is None:
            return web.json_response({"type": "error", "error": {
                "type": "not_found_error",
                "message": f"model {model!r} is not a scripted model ({PREFIX}{{{','.join(POLICIES)}}})"}},
                status=404)
        if policy == "overloaded":
            return web.json_response({"type": "error", "error": {
                "type": "overloaded_error", "message": "Overloaded (scripted)"}}, status=529)
        digest = hashlib.sha256(body).hexdigest()
        usage_in = input_tokens(body)
        start = {"type": "message_start", "message": {
            "id": f"msg_{digest[:24]}", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": usage_in, "output_tokens": 0,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}
        if policy == "drop-stream":
            return await self._drop(request, _sse("message_start", start))
        turns = anthropic_turns(doc)
        action = decide(policy, turns, self._library_for(turns))
        blocks: list[dict] = [{"type": "text", "text": action.text}]
        if action.kind == "command":
            tools = {t.get("name") for t in doc.get("tools") or []}
            if "Bash" in tools:
                blocks.append({"type": "tool_use", "id": f"toolu_{digest[:24]}", "name": "Bash",
                               "input": {"command": action.command,
                                         "description": "Write the files of the episode"}})
            else:
                blocks[0]["text"] += " (no Bash tool was offered, so nothing was written)"
        content = "".join(b["text"] if b["type"] == "text" else json.dumps(b["input"]) for b in blocks)
        usage_out = output_tokens(content)
        stop = "tool_use" if blocks[-1]["type"] == "tool_use" else "end_turn"
        if not doc.get("stream"):
            message = dict(start["message"], content=blocks, stop_reason=stop)
            message["usage"] = dict(message["usage"], output_tokens=usage_out)
            return web.json_response(message)
        events = [_sse("message_start", start)]
        for i, block in enumerate(blocks):
            if block["type"] == "text":
                events += [
                    _sse("content_block_start", {"type": "content_block_start", "index": i,
                                                 "content_block": {"type": "text", "text": ""}}),
                    _sse("content_block_delta", {"type": "content_block_delta", "index": i,
                                                 "delta": {"type": "text_delta", "text": block["text"]}}),
                ]
            else:
                events += [
                    _sse("content_block_start", {"type": "content_block_start", "index": i,
                                                 "content_block": dict(block, input={})}),
                    _sse("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {
                        "type": "input_json_delta", "partial_json": json.dumps(block["input"])}}),
                ]
            events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": i}))
        events += [
            _sse("message_delta", {"type": "message_delta",
                                   "delta": {"stop_reason": stop, "stop_sequence": None},
                                   "usage": {"output_tokens": usage_out}}),
            _sse("message_stop", {"type": "message_stop"}),
        ]
        return await self._stream(request, events, {"request-id": f"req_{digest[:24]}"})

    # OpenAI

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body, doc, model = await self._read(request, "openai")
        policy = self._policy(model)
        if policy is None:
            return web.json_response({"error": {
                "message": f"model {model!r} is not a scripted model", "type": "invalid_request_error",
                "code": "model_not_found"}}, status=404)
        if policy == "overloaded":
            return web.json_response({"error": {"message": "Overloaded (scripted)",
                                                 "type": "server_error", "code": None}}, status=529)
        digest = hashlib.sha256(body).hexdigest()
        rid = f"resp_{digest[:24]}"
        base = {"id": rid, "object": "response", "created_at": 0, "model": model,
                "status": "in_progress", "output": []}
        if policy == "drop-stream":
            return await self._drop(request, _sse("response.created", {
                "type": "response.created", "sequence_number": 0, "response": base}))
        turns = openai_turns(doc)
        action = decide(policy, turns, self._library_for(turns))
        items: list[dict] = []
        text = action.text
        call = shell_call(doc.get("tools") or [], action.command) if action.kind == "command" else None
        if action.kind == "command" and call is None:
            text += " (no shell tool was offered, so nothing was written)"
        items.append({"type": "message", "id": f"msg_{digest[:24]}", "role": "assistant",
                      "status": "completed",
                      "content": [{"type": "output_text", "text": text, "annotations": []}]})
        content = text
        if call is not None:
            kind, name, args = call
            if kind == "function_call":
                items.append({"type": "function_call", "id": f"fc_{digest[:24]}",
                              "call_id": f"call_{digest[:24]}", "name": name, "arguments": args,
                              "status": "completed"})
            else:
                items.append({"type": "local_shell_call", "id": f"lsh_{digest[:24]}",
                              "call_id": f"call_{digest[:24]}", "status": "completed",
                              "action": json.loads(args)})
            content += args
        usage_in, usage_out = input_tokens(body), output_tokens(content)
        done = dict(base, status="completed", output=items, usage={
            "input_tokens": usage_in, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": usage_out, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage_in + usage_out})
        if not doc.get("stream"):
            return web.json_response(done)
        events = [_sse("response.created", {"type": "response.created", "sequence_number": 0,
                                            "response": base})]
        for i, item in enumerate(items):
            events.append(_sse("response.output_item.done", {
                "type": "response.output_item.done", "sequence_number": i + 1,
                "output_index": i, "item": item}))
        events.append(_sse("response.completed", {"type": "response.completed",
                                                  "sequence_number": len(items) + 1,
                                                  "response": done}))
        return await self._stream(request, events, {"x-request-id": f"req_{digest[:24]}"})

    # OpenAI Chat Completions

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, doc, model = await self._read(request, "chat")
        policy = self._policy(model)
        if policy is None:
            return web.json_response({"error": {
                "message": f"model {model!r} is not a scripted model", "type": "invalid_request_error",
                "code": "model_not_found"}}, status=404)
        if policy == "overloaded":
            return web.json_response({"error": {"message": "Overloaded (scripted)",
                                                 "type": "server_error", "code": None}}, status=529)
        digest = hashlib.sha256(body).hexdigest()
        base = {"id": f"chatcmpl-{digest[:24]}", "object": "chat.completion.chunk", "created": 0,
                "model": model}
        if policy == "drop-stream":
            return await self._drop(request, _data(dict(base, choices=[{
                "index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])))
        turns = chat_turns(doc)
        action = decide(policy, turns, self._library_for(turns))
        command, text = action.command, action.text
        messages_text = json.dumps(doc.get("messages") or [])
        if action.kind == "text" and FINISH_MARKER in messages_text:
            command = f"echo {FINISH_MARKER}"
        call = shell_call(chat_tools(doc), command) if command else None
        if command and (call is None or call[0] != "function_call"):
            call = None
            text += " (no shell tool was offered, so nothing was run)"
        tool_calls = []
        if call is not None:
            tool_calls.append({"id": f"call_{digest[:24]}", "type": "function",
                               "function": {"name": call[1], "arguments": call[2]}})
        usage_in = input_tokens(body)
        usage_out = output_tokens(text + "".join(c["function"]["arguments"] for c in tool_calls))
        usage = {"prompt_tokens": usage_in, "completion_tokens": usage_out,
                 "total_tokens": usage_in + usage_out,
                 "prompt_tokens_details": {"cached_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 0}}
        finish = "tool_calls" if tool_calls else "stop"
        if not doc.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if tool_calls:
                message["tool_calls"] = tool_calls
            return web.json_response(dict(base, object="chat.completion", choices=[{
                "index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                usage=usage))
        options = doc.get("stream_options")
        with_usage = isinstance(options, dict) and options.get("include_usage") is True
        deltas: list[tuple[dict, str | None]] = [({"role": "assistant", "content": ""}, None),
                                                 ({"content": text}, None)]
        if tool_calls:
            deltas.append(({"tool_calls": [dict(tool_calls[0], index=0)]}, None))
        deltas.append(({}, finish))
        extra = {"usage": None} if with_usage else {}
        events = [_data(dict(base, choices=[{"index": 0, "delta": d, "finish_reason": f,
                                             "logprobs": None}], **extra)) for d, f in deltas]
        if with_usage:
            events.append(_data(dict(base, choices=[], usage=usage)))
        events.append(b"data: [DONE]\n\n")
        return await self._stream(request, events, {"x-request-id": f"req_{digest[:24]}"})

    # streaming

    async def _stream(self, request: web.Request, events: list[bytes],
                      headers: dict[str, str]) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
            **headers})
        await resp.prepare(request)
        for event in events:
            await resp.write(event)
        await resp.write_eof()
        return resp

    async def _drop(self, request: web.Request, first: bytes) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(first)
        await asyncio.sleep(0.05)
        if request.transport is not None:
            request.transport.abort()
        return resp


def serve_forever(config: ScriptedConfig) -> None:
    """Run the server in the foreground until interrupted (``python -m benchmark.scripted``).

    Raises:
        MarathonError: the server cannot listen.
    """
    server = ScriptedServer(config).start()
    print(f"scripted model (a simulation) listening on {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


__all__ = ["FINISH_MARKER", "MarathonError", "PREFIX", "ScriptedConfig", "ScriptedServer",
           "anthropic_turns", "chat_tools", "chat_turns", "input_tokens", "openai_turns",
           "output_tokens", "serve_forever", "shell_call", "Action"]
