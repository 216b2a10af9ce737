"""OpenAI Chat Completions through the metering proxy: to the scripted model server (streamed
with and without ``stream_options.include_usage``, and not streamed, as Qwen Code and
mini-swe-agent send them), usage recorded and reconciled; to a fake upstream for the cached and
reasoning split, a model without a price (cost null), and an upstream that never reports usage
(recorded as missing, reconciliation ``unmetered``)."""

from __future__ import annotations

import json
import math

import pytest

from benchmark.marathon import load_marathon
from benchmark.proxy import MeteringProxy, ProxyConfig, Upstream, load_usage, reconcile
from benchmark.proxy.include_usage import add_include_usage
from benchmark.records import UsageCall
from benchmark.scripted import ScriptedConfig, ScriptedServer
from benchmark.scripted.server import FINISH_MARKER, chat_turns
from tests.proxy_helpers import CHAT_MODEL, FakeUpstream, raw_request

LEDGER = load_marathon("ledger")
QWEN_TOOLS = [{"type": "function", "function": {
    "name": name, "description": "", "parameters": {"type": "object", "properties": props}}}
    for name, props in (("read_file", {"absolute_path": {"type": "string"}}),
                        ("run_shell_command", {"command": {"type": "string"},
                                               "description": {"type": "string"},
                                               "is_background": {"type": "boolean"}}))]
BASH_TOOL = [{"type": "function", "function": {
    "name": "bash", "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}}]


@pytest.fixture(scope="module")
def scripted():
    with ScriptedServer(ScriptedConfig()) as s:
        yield s


@pytest.fixture
def proxy(scripted, tmp_path):
    config = ProxyConfig(upstreams={"scripted": Upstream(base_url=scripted.url, api_key="sk-sim")},
                         usage_log=tmp_path / "usage.jsonl")
    with MeteringProxy(config) as px:
        px.register("tok", {"trial_id": "t"}, protocol="openai-chat", upstream="scripted")
        px.set_attempt("tok", "e1", 1)
        yield px


def chunks(raw: bytes) -> list:
    """The ``data`` of every event of a stream (``[DONE]`` kept as a string)."""
    out = []
    for block in raw.decode().split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def request(model: str, brief: str, *, stream: bool, include_usage: bool | None = None,
            tools=QWEN_TOOLS) -> dict:
    doc = {"model": model, "messages": [{"role": "system", "content": "You are a coding agent."},
                                        {"role": "user", "content": brief}],
           "tools": tools}
    if stream:
        doc.update(stream=True, max_tokens=32000)
        if include_usage is not None:
            doc["stream_options"] = {"include_usage": include_usage}
    return doc


def agent_row(usage: dict) -> UsageCall:
    """What an agent reading the Chat Completions usage would report."""
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    return UsageCall(source="agent", api_model="m", input_tokens=usage["prompt_tokens"] - cached,
                     cache_read_tokens=cached, output_tokens=usage["completion_tokens"],
                     reasoning_tokens=usage["completion_tokens_details"]["reasoning_tokens"])


def test_streamed_with_include_usage_like_qwen_code(proxy, scripted):
    doc = request("scripted/oracle", LEDGER.brief_text("e1"), stream=True, include_usage=True)
    status, headers, raw = raw_request(("127.0.0.1", proxy.port), "POST", "/v1/chat/completions",
                                       token="tok", auth="bearer", body=doc)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = chunks(raw)
    assert events[-1] == "[DONE]" and events[-2]["choices"] == []
    usage = events[-2]["usage"]
    (call,) = [e["choices"][0]["delta"]["tool_calls"][0] for e in events[:-2]
               if e["choices"][0]["delta"].get("tool_calls")]
    assert call["function"]["name"] == "run_shell_command"
    assert "base64 -d" in json.loads(call["function"]["arguments"])["command"]
    assert usage["prompt_tokens"] == math.ceil(len(json.dumps(doc)) / 4)
    (row,) = proxy.calls("tok", "e1", 1)
    assert (row.input_tokens, row.output_tokens, row.http_status, row.cost_usd) == \
        (usage["prompt_tokens"], usage["completion_tokens"], 200, 0.0)
    assert not row.usage_missing and row.api_model == "scripted/oracle"
    assert reconcile([row], [agent_row(usage)]).verdict == "match"
    assert not proxy.records()[0].include_usage_added


def test_streamed_without_include_usage_is_still_metered_and_the_client_sees_its_own_stream(
        proxy, scripted):
    doc = request("scripted/oracle", LEDGER.brief_text("e2"), stream=True)
    status, _, raw = raw_request(("127.0.0.1", proxy.port), "POST", "/v1/chat/completions",
                                 token="tok", auth="bearer", body=doc)
    assert status == 200
    seen = chunks(raw)
    # the proxy asked for usage upstream: the answer it got is the scripted answer to that request
    forwarded = add_include_usage(doc)
    _, _, direct = raw_request(("127.0.0.1", scripted.port), "POST", "/v1/chat/completions",
                               token="sk-sim", auth="bearer", body=forwarded)
    upstream_events = chunks(direct)
    usage_chunk = upstream_events[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]
    # the client got every chunk but the usage chunk, byte for byte
    assert seen == upstream_events[:-2] + ["[DONE]"]
    assert raw == b"".join(block + b"\n\n" for block in direct.split(b"\n\n")[:-1]
                           if b'"choices":[]' not in block)
    assert all(e["usage"] is None for e in seen[:-1])
    (row,) = proxy.calls("tok")
    assert row.input_tokens == math.ceil(len(forwarded) / 4) == usage_chunk["usage"]["prompt_tokens"]
    assert row.output_tokens == usage_chunk["usage"]["completion_tokens"] > 0
    assert not row.usage_missing
    assert proxy.records()[0].include_usage_added


def test_not_streamed_like_mini_swe_agent(proxy):
    doc = request("scripted/forgetful", LEDGER.brief_text("e2"), stream=False, tools=BASH_TOOL)
    status, _, raw = raw_request(("127.0.0.1", proxy.port), "POST", "/v1/chat/completions",
                                 token="tok", auth="bearer", body=doc)
    answer = json.loads(raw)
    assert status == 200 and answer["object"] == "chat.completion"
    message = answer["choices"][0]["message"]
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"][0]["function"]["name"] == "bash"
    (row,) = proxy.calls("tok")
    assert row.input_tokens == answer["usage"]["prompt_tokens"] == math.ceil(len(json.dumps(doc)) / 4)
    assert row.output_tokens == answer["usage"]["completion_tokens"]
    assert reconcile([row], [agent_row(answer["usage"])]).verdict == "match"


def test_a_provider_model_without_a_price_costs_null_and_is_still_audited(tmp_path):
    """A declared provider's model (here a fake server) that pricing.toml does not know: its
    tokens are recorded (cached and reasoning split out) and reconcile; its cost is null."""
    with FakeUpstream() as up:
        config = ProxyConfig(upstreams={"local": Upstream(base_url=up.url)},
                             usage_log=tmp_path / "u.jsonl")
        with MeteringProxy(config) as px:
            px.register("tok", {"trial_id": "t"}, protocol="openai-chat", upstream="local",
                        models=[CHAT_MODEL])
            where = ("127.0.0.1", px.port)
            for stream in (True, False):
                doc = request(CHAT_MODEL, "hi", stream=stream, include_usage=True if stream else None)
                assert raw_request(where, "POST", "/v1/chat/completions", token="tok",
                                   auth="bearer", body=doc)[0] == 200
            rows = px.calls("tok")
        # no key configured: none is sent upstream
        assert all("authorization" not in {k.lower() for k in s["headers"]} for s in up.seen)
    for row in rows:
        assert (row.input_tokens, row.cache_read_tokens, row.output_tokens, row.reasoning_tokens) == \
            (400, 600, 300, 200)
        assert row.cost_usd is None and row.api_model == CHAT_MODEL and not row.usage_missing
    assert reconcile(rows, [agent_row(json.loads(json.dumps({
        "prompt_tokens": 2000, "completion_tokens": 600, "prompt_tokens_details": {"cached_tokens": 1200},
        "completion_tokens_details": {"reasoning_tokens": 400}})))]).verdict == "match"
    assert [r.call for r in load_usage(tmp_path / "u.jsonl")] == rows


def test_an_upstream_that_never_reports_usage_is_recorded_as_missing_not_zero(tmp_path):
    with FakeUpstream() as up:
        up.mode = "no_usage"
        config = ProxyConfig(upstreams={"openai": Upstream(base_url=up.url, api_key="k")},
                             usage_log=tmp_path / "u.jsonl")
        with MeteringProxy(config) as px:
            px.register("tok", {"trial_id": "t"}, protocol="openai-chat")
            status, _, raw = raw_request(("127.0.0.1", px.port), "POST", "/v1/chat/completions",
                                         token="tok", auth="bearer",
                                         body=request("gpt-4.1", "hi", stream=True))
            assert status == 200 and chunks(raw)[-1] == "[DONE]"
            (row,) = px.calls("tok")
        # the proxy asked for usage (the upstream ignored it)
        assert json.loads(up.seen[0]["body"])["stream_options"] == {"include_usage": True}
    assert row.usage_missing and row.cost_usd is None and row.http_status == 200
    verdict = reconcile([row], [UsageCall(source="agent", api_model="m", input_tokens=5, output_tokens=1)])
    assert verdict.verdict == "unmetered"


def test_a_chat_request_with_a_non_boolean_stream_is_refused(proxy, scripted):
    before = scripted.requests
    for bad in ({"stream": "true"}, {"stream": 1}, {"stream": True, "stream_options": "x"}):
        doc = dict(request("scripted/nop", "hi", stream=False), **bad)
        status, _, _ = raw_request(("127.0.0.1", proxy.port), "POST", "/v1/chat/completions",
                                   token="tok", auth="bearer", body=doc)
        assert status == 400
    assert scripted.requests == before
    assert all(r.call.refused for r in proxy.records())


def test_scripted_chat_policies_and_the_mini_swe_agent_finish(scripted):
    where = ("127.0.0.1", scripted.port)

    def ask(messages, tools=BASH_TOOL, model="scripted/forgetful"):
        doc = {"model": model, "messages": messages, "tools": tools}
        status, _, raw = raw_request(where, "POST", "/v1/chat/completions", token="k",
                                     auth="bearer", body=doc)
        assert status == 200
        return json.loads(raw)["choices"][0]

    brief = [{"role": "user", "content": [{"type": "text", "text": LEDGER.brief_text("e2")}]}]
    first = ask(brief)
    call = first["message"]["tool_calls"][0]
    trapped = json.loads(call["function"]["arguments"])["command"]
    history = brief + [{"role": "assistant", "content": None, "tool_calls": [call]},
                       {"role": "tool", "tool_call_id": call["id"], "content": "ok"}]
    # after the tool result: text only, the turn ends
    done = ask(history)
    assert done["finish_reason"] == "stop" and "tool_calls" not in done["message"]
    # the feedback-retry re-prompt naming the gate: the repair (a different archive)
    repair = ask(history + [{"role": "user", "content": "Failing gates:\n- gate `privacy`:\n"}])
    assert json.loads(repair["message"]["tool_calls"][0]["function"]["arguments"])["command"] != trapped
    # nop: text only
    assert "tool_calls" not in ask(brief, model="scripted/nop")["message"]
    # mini-swe-agent finishes by running the marker command, so a turn ends with it
    marked = [{"role": "system", "content": f"When done, run `echo {FINISH_MARKER}`."}] + history
    end = ask(marked)
    assert json.loads(end["message"]["tool_calls"][0]["function"]["arguments"]) == \
        {"command": f"echo {FINISH_MARKER}"}
    assert [t.kind for t in chat_turns({"messages": history})] == ["text", "tool_call", "tool_result"]
