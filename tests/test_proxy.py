"""The metering proxy on loopback, against controllable fake upstreams: unbuffered SSE pass-through,
usage extraction for both APIs, auth, upstream errors and drops, the JSONL usage file, pricing."""

from __future__ import annotations

import http.client
import json
import logging
import time

import pytest

from benchmark.errors import MarathonError
from benchmark.proxy import (MeteringProxy, PriceTable, ProxyConfig, SSEParser,
                             Upstream, load_usage, load_usage_calls, reconcile)
from benchmark.records import UsageCall
from tests.proxy_helpers import ANTHROPIC_EVENTS, FakeUpstream

UPSTREAM_KEY = "sk-upstream-secret"


@pytest.fixture
def upstream():
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def proxy(upstream, tmp_path):
    ups = Upstream(base_url=upstream.url, api_key=UPSTREAM_KEY)
    config = ProxyConfig(upstreams={"anthropic": ups, "openai": ups}, usage_log=tmp_path / "usage" / "proxy.jsonl")
    with MeteringProxy(config) as px:
        px.register("tok-a", {"trial_id": "trial-a", "arm": "x"})
        px.set_attempt("tok-a", "e1", 1)
        yield px


def post(proxy: MeteringProxy, path: str, token: str | None, body: dict | None = None,
         auth: str = "x-api-key") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=10)
    headers = {"content-type": "application/json"}
    if token is not None:
        headers.update({"x-api-key": token} if auth == "x-api-key" else {"Authorization": f"Bearer {token}"})
    conn.request("POST", path, body=json.dumps(body or {"model": "m", "stream": True}), headers=headers)
    return conn.getresponse()


def test_anthropic_stream_passes_through_unbuffered_and_usage_is_recorded(proxy, upstream):
    upstream.release.clear()
    resp = post(proxy, "/v1/messages?beta=true", "tok-a", {"model": "claude-sonnet-4-5", "stream": True})
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    # the first event arrives while the upstream still holds back the rest
    first = resp.readline() + resp.readline()
    assert b"message_start" in first and not upstream.release.is_set()
    upstream.release.set()
    rest = resp.read()
    assert rest.count(b"\n\n") == len(ANTHROPIC_EVENTS) - 1 and b"message_stop" in rest
    (call,) = proxy.calls("tok-a", "e1", 1)
    assert call.source == "proxy" and call.api_model == "claude-sonnet-4-5-20250929"
    assert (call.input_tokens, call.output_tokens, call.cache_write_tokens, call.cache_read_tokens) == (120, 57, 30, 400)
    # 120 * 3 + 57 * 15 + 30 * 3.75 + 400 * 0.30 USD per million tokens
    assert call.cost_usd == pytest.approx((120 * 3 + 57 * 15 + 30 * 3.75 + 400 * 0.30) / 1e6)
    assert call.http_status == 200 and call.latency_s > 0
    # the upstream got the upstream key in place of the token, and the query string
    seen = upstream.seen[-1]
    assert seen["headers"]["x-api-key"] == UPSTREAM_KEY and seen["path"] == "/v1/messages?beta=true"
    assert "tok-a" not in json.dumps(seen["headers"])


def test_openai_stream_usage_splits_cached_and_reasoning_tokens(proxy, upstream):
    upstream.release.clear()
    resp = post(proxy, "/v1/responses", "tok-a", {"model": "gpt-5-codex", "stream": True}, auth="bearer")
    assert b"response.created" in resp.readline() + resp.readline()
    upstream.release.set()
    assert b"response.completed" in resp.read()
    (call,) = proxy.calls("tok-a")
    assert (call.input_tokens, call.cache_read_tokens, call.output_tokens, call.reasoning_tokens) == (400, 600, 300, 200)
    assert call.cost_usd == pytest.approx((400 * 1.25 + 600 * 0.125 + 300 * 10) / 1e6)
    assert upstream.seen[-1]["headers"]["Authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_non_streamed_json_responses_are_metered_too(proxy, upstream):
    upstream.mode = "json"
    assert post(proxy, "/v1/messages", "tok-a", {"model": "claude-sonnet-4-5"}).status == 200
    assert post(proxy, "/v1/responses", "tok-a", {"model": "gpt-5-codex"}, auth="bearer").status == 200
    a, o = proxy.calls("tok-a")
    assert (a.input_tokens, a.output_tokens, a.cache_read_tokens) == (120, 57, 400)
    assert (o.input_tokens, o.output_tokens, o.reasoning_tokens) == (400, 300, 200)


def test_unknown_or_missing_token_is_refused_with_401_and_not_recorded(proxy, upstream):
    for token in ("nope", None):
        resp = post(proxy, "/v1/messages", token)
        assert resp.status == 401
        assert json.loads(resp.read())["error"]["type"] == "authentication_error"
    assert post(proxy, "/v1/responses", "nope", auth="bearer").status == 401
    assert proxy.rejected == 3 and proxy.records() == [] and upstream.seen == []
    proxy.unregister("tok-a")
    assert post(proxy, "/v1/messages", "tok-a").status == 401


def test_upstream_529_is_passed_through_recorded_and_the_proxy_goes_on(proxy, upstream):
    upstream.mode = "status"
    resp = post(proxy, "/v1/messages", "tok-a", {"model": "claude-sonnet-4-5", "stream": True})
    assert resp.status == 529 and resp.getheader("x-upstream") == "yes"
    assert json.loads(resp.read())["error"]["type"] == "overloaded_error"
    upstream.status_code = 429
    assert post(proxy, "/v1/responses", "tok-a", {"model": "gpt-5-codex"}, auth="bearer").status == 429
    upstream.mode = "stream"
    resp = post(proxy, "/v1/messages", "tok-a", {"model": "claude-sonnet-4-5", "stream": True})
    assert resp.status == 200
    resp.read()  # the call's usage is complete only once its stream has ended
    calls = proxy.calls("tok-a")
    assert [c.http_status for c in calls] == [529, 429, 200]
    assert calls[0].input_tokens == calls[0].output_tokens == 0 and calls[0].cost_usd == 0.0
    # refused calls are left out of the reconciliation
    assert reconcile(calls, [UsageCall(source="agent", api_model="m", input_tokens=120,
                                       output_tokens=57, cache_write_tokens=30,
                                       cache_read_tokens=400)]).verdict == "match"


def test_upstream_dropping_mid_stream_breaks_the_client_stream_not_the_proxy(proxy, upstream):
    assert post(proxy, "/v1/messages", "tok-a", {"model": "claude-sonnet-4-5", "stream": True}).read()
    upstream.mode = "drop"
    resp = post(proxy, "/v1/messages", "tok-a", {"model": "claude-sonnet-4-5", "stream": True})
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead):
        resp.read()  # the client sees a broken stream, not a clean end
    upstream.mode = "stream"
    assert post(proxy, "/v1/messages", "tok-a", {"model": "claude-sonnet-4-5", "stream": True}).status == 200
    calls = proxy.calls("tok-a")
    assert len(calls) == 3
    records = load_usage(proxy.config.usage_log)
    assert [r.seq for r in records] == [0, 1, 2]
    assert records[0].call.error == "" and records[0].call.output_tokens == 57
    assert records[1].call.error.startswith("upstream dropped mid-response")
    assert records[1].call.input_tokens == 120 and records[1].call.output_tokens == 1  # what came


def test_unreachable_upstream_answers_502_and_is_recorded(tmp_path):
    ups = Upstream(base_url="http://127.0.0.1:9", api_key=UPSTREAM_KEY)
    with MeteringProxy(ProxyConfig(upstreams={"anthropic": ups}, usage_log=tmp_path / "u.jsonl")) as px:
        px.register("t", {"trial_id": "x"})
        resp = post(px, "/v1/messages", "t", {"model": "claude-sonnet-4-5", "stream": True})
        assert resp.status == 502
        (rec,) = px.records()
        assert rec.call.http_status == 502 and rec.call.error.startswith("upstream unreachable")
        assert post(px, "/v1/responses", "t", auth="bearer").status == 502  # no openai upstream


def test_usage_file_rows_load_as_usage_calls_and_a_torn_last_line_is_skipped(proxy, upstream):
    post(proxy, "/v1/messages", "tok-a", {"model": "claude-sonnet-4-5", "stream": True}).read()
    proxy.set_attempt("tok-a", "e1", 2)
    post(proxy, "/v1/responses", "tok-a", {"model": "gpt-5-codex", "stream": True}, auth="bearer").read()
    proxy.calls("tok-a")  # settle
    path = proxy.config.usage_log
    with open(path, "a") as f:
        f.write('{"seq": 9, "time": "2026')  # a crash mid-write
    calls = load_usage_calls(path, trial_id="trial-a", episode="e1", attempt=2)
    assert len(calls) == 1 and calls[0].api_model == "gpt-5-codex"
    assert load_usage_calls(path) == proxy.calls("tok-a")
    assert load_usage(path)[0].keys == {"trial_id": "trial-a", "arm": "x"}


def test_usage_lines_of_the_previous_record_format_still_load(tmp_path):
    old = {"seq": 0, "time": "2026-11-21T10:00:00Z", "trial_id": "t", "keys": {"trial_id": "t"},
           "episode": "e1", "attempt": 1, "api": "openai", "path": "/v1/responses",
           "request_model": "gpt-5-codex", "stream": True, "ttfb_s": 0.1, "error": "boom",
           "call": {"source": "proxy", "api_model": "gpt-5-codex", "input_tokens": 3,
                    "output_tokens": 4, "http_status": 200}}
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps(old) + "\n")
    (rec,) = load_usage(path)
    assert rec.protocol == "openai-responses" and rec.call.path == "/v1/responses"
    assert rec.call.error == "boom" and rec.call.input_tokens == 3 and rec.call.refused is None


def test_head_root_answers_and_the_proxy_needs_a_free_address(proxy, tmp_path):
    conn = http.client.HTTPConnection(proxy.host, proxy.port, timeout=5)
    conn.request("HEAD", "/")
    assert conn.getresponse().status == 200
    with pytest.raises(MarathonError, match="cannot listen"):
        MeteringProxy(ProxyConfig(port=proxy.port, usage_log=tmp_path / "x.jsonl")).start()


def test_registration_errors(proxy):
    with pytest.raises(MarathonError, match="trial_id"):
        proxy.register("t2", {"arm": "x"})
    with pytest.raises(MarathonError, match="already registered"):
        proxy.register("tok-a", {"trial_id": "other"})
    with pytest.raises(MarathonError, match="not registered"):
        proxy.set_attempt("missing", "e1", 1)
    endpoint = proxy.open_trial({"trial_id": "trial-b"})
    assert endpoint.base_url == proxy.url and endpoint.token.get_secret_value().startswith("mt-")
    assert "mt-" not in repr(endpoint) and "mt-" not in endpoint.model_dump_json()


def test_price_table_lookup_unknown_models_and_simulation(caplog, tmp_path):
    table = PriceTable.load()
    call = UsageCall(source="proxy", api_model="x", input_tokens=1_000_000, output_tokens=1_000_000)
    assert table.cost("claude-sonnet-4-5-20250929", call) == pytest.approx(18.0)
    assert table.cost("scripted/oracle", call) == 0.0
    assert table.lookup("scripted/oracle").input.source == "simulation"
    with caplog.at_level(logging.WARNING, logger="benchmark.proxy"):
        assert table.cost("mystery-model", call) is None
        assert table.cost("mystery-model", call) is None
    assert sum("mystery-model" in r.message for r in caplog.records) == 1  # warned once
    for model in table.models.values():
        for price in (model.input, model.output, model.cache_write, model.cache_read):
            assert price.source and price.date
    bad = tmp_path / "p.toml"
    bad.write_text('[models."m"]\ninput = { usd_per_mtok = 1.0, date = "2026-01-01" }\n')
    with pytest.raises(MarathonError, match="p.toml: models.m"):
        PriceTable.load(bad)


def test_sse_parser_handles_split_chunks_and_line_endings():
    parser = SSEParser()
    data = b'event: a\r\ndata: {"x":\r\ndata: 1}\r\n\r\n: comment\n\ndata: \xc3'
    out = []
    for i in range(len(data)):
        out += parser.feed(data[i:i + 1])
    out += parser.feed(b"\xa9\r\r\n")
    assert out == ['{"x":\n1}', "\u00e9"]


def test_proxy_overhead_is_small(proxy, upstream):
    """A coarse guard; benchmarks/bench_proxy.py measures it properly."""
    times = []
    for _ in range(20):
        t = time.perf_counter()
        post(proxy, "/v1/messages", "tok-a", {"model": "claude-sonnet-4-5", "stream": True}).read()
        times.append(time.perf_counter() - t)
    assert sorted(times)[10] < 0.05


def test_scripted_models_go_to_the_simulated_upstream(upstream, tmp_path):
    from benchmark.scripted import ScriptedConfig, ScriptedServer

    real = Upstream(base_url=upstream.url, api_key=UPSTREAM_KEY)
    with ScriptedServer(ScriptedConfig()) as scripted:
        sim = Upstream(base_url=scripted.url, api_key="sk-sim")
        config = ProxyConfig(upstreams={"anthropic": real, "openai": real, "scripted": sim}, usage_log=tmp_path / "u.jsonl")
        with MeteringProxy(config) as px:
            px.register("t", {"trial_id": "x"})
            body = {"model": "scripted/nop", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
            assert post(px, "/v1/messages", "t", body).status == 200
            assert post(px, "/v1/responses", "t", {"model": "scripted/nop", "input": "hi"}, auth="bearer").status == 200
            assert post(px, "/v1/messages", "t", {"model": "claude-sonnet-4-5", "stream": True}).status == 200
            assert scripted.requests == 2 and len(upstream.seen) == 1 and scripted.seen_keys == {"sk-sim"}
            assert [c.api_model for c in px.calls("t")] == ["scripted/nop", "scripted/nop",
                                                           "claude-sonnet-4-5-20250929"]
