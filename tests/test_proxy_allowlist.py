"""Attacks on the metering proxy with a trial's own token, performed through the real proxy with
real HTTP (raw request targets, so nothing is normalised on the client side), against a fake
upstream that records every request it gets:

- every request that is not exactly the trial protocol's metered one (other paths under
  ``/v1``, other methods, every variant of the metered path) is refused with 403, recorded as a
  refused ``usage`` row, and never reaches the upstream;
- a model other than the trial's is refused the same way;
- a trial's token is accepted on its own socket only: from another trial's socket or over TCP
  it is refused (and recorded under the trial whose socket it came in on).

Each test fails without the defence (the proxy used to forward all of these with the real key).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from benchmark.proxy import MeteringProxy, ProxyConfig, Upstream, normalise_path, refusal
from benchmark.proxy.protocols import PROTOCOLS
from tests.proxy_helpers import FakeUpstream, raw_request

UPSTREAM_KEY = "sk-upstream-secret"
MODEL = "claude-sonnet-4-5"

#: Requests a Claude Code trial (anthropic-messages) must never get forwarded.
MESSAGES_ATTACKS = [
    ("POST", "/v1/messages/batches"),                    # batches: unmetered (and half price)
    ("POST", "/v1/messages/count_tokens"),
    ("POST", "/v1/complete"),                            # legacy completions
    ("POST", "/v1/completions"),
    ("POST", "/v1/chat/completions"),                    # another protocol's path
    ("POST", "/v1/responses"),
    ("GET", "/v1/models"),                               # the models listing
    ("GET", "/v1/messages/batches/msgbatch_1/results"),
    ("POST", "/v1/messages/"),                           # trailing slash
    ("POST", "//v1/messages"),
    ("POST", "/v1//messages"),
    ("POST", "/v1/./messages"),
    ("POST", "/v1/x/../messages"),
    ("POST", "/v1/%6Dessages"),                          # percent-encoding
    ("POST", "/v1%2Fmessages"),
    ("POST", "/v1/messages%2F"),
    ("POST", "/v1/%256Dessages"),                        # double encoding
    ("POST", "/V1/Messages"),                            # case
    ("POST", "/v1/messages;type=batch"),                 # ;params
    ("POST", "/v1/messages?beta=false"),                 # other queries
    ("POST", "/v1/messages?beta=true&stream=x"),
    ("POST", "/v1/messages?"),
    ("POST", "/v1/messages#x"),
    ("POST", "http://upstream.example/v1/messages"),     # absolute form
    ("GET", "/v1/messages"),                             # other methods on the metered path
    ("PUT", "/v1/messages"),
    ("DELETE", "/v1/messages"),
    ("PATCH", "/v1/messages"),
    ("OPTIONS", "/v1/messages"),
    ("HEAD", "/v1/messages"),
    ("POST", "/"),
    ("GET", "/?x=1"),
    ("POST", "/v2/messages"),
]


@pytest.fixture
def upstream():
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def proxy(upstream, tmp_path):
    ups = Upstream(base_url=upstream.url, api_key=UPSTREAM_KEY)
    config = ProxyConfig(upstreams={"anthropic": ups, "openai": ups},
                         usage_log=tmp_path / "proxy.jsonl")
    with MeteringProxy(config) as px:
        yield px


def body(model: str = MODEL) -> dict:
    return {"model": model, "stream": True, "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("method, target", MESSAGES_ATTACKS)
def test_anything_but_the_metered_request_is_refused_recorded_and_never_forwarded(
        proxy, upstream, method, target):
    proxy.register("tok", {"trial_id": "t1"}, protocol="anthropic-messages", models=[MODEL])
    proxy.set_attempt("tok", "e1", 1)
    status, headers, answer = raw_request(("127.0.0.1", proxy.port), method, target, token="tok",
                                          body=body())
    assert status == 403, (status, answer)
    assert upstream.seen == []  # nothing reached the upstream, with or without its key
    if method != "HEAD":
        assert json.loads(answer)["error"]["type"] == "permission_error"
    (rec,) = proxy.records()
    call = rec.call
    assert (rec.trial_id, rec.episode, rec.attempt) == ("t1", "e1", 1)
    assert call.refused and call.http_status == 403 and call.error
    assert (call.method, call.path) == (method, target)
    assert call.input_tokens == call.output_tokens == 0 and call.cost_usd == 0.0
    # the row is what the driver puts into usage.parquet for the attempt
    assert proxy.calls("tok", "e1", 1) == [call]
    # the same token still gets the metered request through
    status, _, _ = raw_request(("127.0.0.1", proxy.port), "POST", "/v1/messages?beta=true",
                               token="tok", body=body())
    assert status == 200 and len(upstream.seen) == 1
    assert upstream.seen[0]["raw"] == "/v1/messages?beta=true"


@pytest.mark.parametrize("protocol, allowed, refused", [
    ("openai-responses", "/v1/responses",
     ["/v1/chat/completions", "/v1/responses/", "/v1/responses/resp_1/cancel", "/v1/messages",
      "/v1/responses?stream=true", "/v1/Responses", "/v1/embeddings", "/v1/files"]),
    ("openai-chat", "/v1/chat/completions",
     ["/v1/responses", "/v1/chat/completions/", "/v1/chat//completions", "/v1/completions",
      "/v1/chat/completions?x=1", "/v1/batches", "/v1/chat/%63ompletions", "/v1/messages"]),
])
def test_each_protocol_forwards_exactly_its_own_path(proxy, upstream, protocol, allowed, refused):
    proxy.register("tok", {"trial_id": "t1"}, protocol=protocol)
    where = ("127.0.0.1", proxy.port)
    for target in refused:
        status, _, answer = raw_request(where, "POST", target, token="tok", auth="bearer",
                                        body=body("gpt-5"))
        assert status == 403 and "error" in json.loads(answer), target
        assert "type" not in json.loads(answer)  # OpenAI's error shape
    assert upstream.seen == []
    assert [r.call.path for r in proxy.records()] == refused
    assert all(r.call.refused and r.protocol == protocol for r in proxy.records())
    status, _, _ = raw_request(where, "POST", allowed, token="tok", auth="bearer", body=body("gpt-5"))
    assert status == 200 and [s["raw"] for s in upstream.seen] == [allowed]


def test_method_override_headers_are_not_forwarded(proxy, upstream):
    proxy.register("tok", {"trial_id": "t1"}, protocol="anthropic-messages")
    status, _, _ = raw_request(("127.0.0.1", proxy.port), "POST", "/v1/messages", token="tok",
                               body=body(), headers={"X-HTTP-Method-Override": "GET",
                                                     "X-Method-Override": "DELETE"})
    assert status == 200
    sent = {k.lower() for k in upstream.seen[0]["headers"]}
    assert "x-http-method-override" not in sent and "x-method-override" not in sent
    assert upstream.seen[0]["headers"]["x-api-key"] == UPSTREAM_KEY


def test_a_model_other_than_the_trials_is_refused_and_recorded(proxy, upstream):
    proxy.register("tok", {"trial_id": "t1"}, protocol="anthropic-messages", models=[MODEL])
    where = ("127.0.0.1", proxy.port)
    status, _, answer = raw_request(where, "POST", "/v1/messages", token="tok",
                                    body=body("claude-opus-4-1"))
    assert status == 403 and "claude-opus-4-1" in json.loads(answer)["error"]["message"]
    for bad in (b"not json", b"[]", json.dumps({"stream": True}).encode(),
                json.dumps({"model": 7}).encode()):
        status, _, _ = raw_request(where, "POST", "/v1/messages", token="tok", body=bad)
        assert status == 400
    # a huge model name is refused without bloating the record
    status, _, answer = raw_request(where, "POST", "/v1/messages", token="tok", body=body("x" * 1_000_000))
    assert status == 403 and len(answer) < 2000
    assert upstream.seen == []
    rows = proxy.records()
    assert [r.call.http_status for r in rows] == [403, 400, 400, 400, 400, 403]
    assert all(r.call.refused for r in rows) and rows[0].request_model == "claude-opus-4-1"
    assert len(rows[-1].model_dump_json()) < 2000


def test_head_root_is_answered_by_the_proxy_itself_and_not_recorded(proxy, upstream):
    """Claude Code's pre-warm: answered locally (with or without a token), never forwarded, not
    a model call, so not a usage row."""
    proxy.register("tok", {"trial_id": "t1"}, protocol="anthropic-messages")
    for token in ("tok", None):
        status, _, _ = raw_request(("127.0.0.1", proxy.port), "HEAD", "/", token=token)
        assert status == 200
    assert upstream.seen == [] and proxy.records() == []


def socket_pair(proxy, tmp: Path):
    """Two trials as the driver opens them: each with its own socket in its own directory."""
    ends = []
    for name in ("a", "b"):
        d = Path(tempfile.mkdtemp(prefix=f"t-{name}-", dir=tmp))
        ends.append(proxy.open_trial({"trial_id": f"trial-{name}"}, protocol="anthropic-messages",
                                     models=[MODEL], socket=d / "proxy.sock"))
        proxy.set_attempt(ends[-1].token.get_secret_value(), "e1", 1)
    return ends


def test_a_token_works_only_on_its_own_trials_socket(proxy, upstream):
    with tempfile.TemporaryDirectory(prefix="mt-", dir="/tmp") as tmp:
        a, b = socket_pair(proxy, Path(tmp))
        tok_a, tok_b = (e.token.get_secret_value() for e in (a, b))
        sock_a, sock_b = (str(e.socket_dir / "proxy.sock") for e in (a, b))
        assert a.socket_dir != b.socket_dir and os.listdir(a.socket_dir) == ["proxy.sock"]
        # trial A's token, sent from trial B's container (B's socket): refused
        status, _, answer = raw_request(sock_b, "POST", "/v1/messages", token=tok_a, body=body())
        assert status == 403 and "trial-a" in json.loads(answer)["error"]["message"]
        # A's token over TCP (only its socket is valid): refused
        status, _, _ = raw_request(("127.0.0.1", proxy.port), "POST", "/v1/messages", token=tok_a,
                                   body=body())
        assert status == 403
        # no token, or a made-up one, on B's socket: refused and recorded under B
        for token in (None, "mt-" + "0" * 32):
            status, _, _ = raw_request(sock_b, "POST", "/v1/messages", token=token, body=body())
            assert status == 401
        assert upstream.seen == []
        rows = proxy.records()
        assert [(r.trial_id, r.token_trial_id, r.call.http_status, r.call.refused) for r in rows] == [
            ("trial-b", "trial-a", 403, True), ("trial-a", "trial-a", 403, True),
            ("trial-b", None, 401, True), ("trial-b", None, 401, True)]
        assert proxy.rejected == 4
        # each token on its own socket: forwarded and metered for its own trial
        for sock, tok in ((sock_a, tok_a), (sock_b, tok_b)):
            assert raw_request(sock, "POST", "/v1/messages", token=tok, body=body())[0] == 200
        assert len(upstream.seen) == 2
        assert [c.refused for c in proxy.calls(tok_a)] == [True, False]
        # a closed trial's socket is gone
        proxy.unregister(tok_a)
        assert not os.path.exists(sock_a)
        with pytest.raises(OSError):
            raw_request(sock_a, "POST", "/v1/messages", token=tok_a, body=body())


def test_normalise_path_and_refusal_reasons():
    assert normalise_path("//V1/./x/../%6Dessages/;p=1?beta=true") == "/v1/messages"
    assert normalise_path("http://h:1/v1/%252Fmessages") == "/v1/messages"
    assert normalise_path("/") == "/"
    spec = PROTOCOLS["anthropic-messages"]
    assert refusal(spec, "POST", "/v1/messages") is None
    assert refusal(spec, "POST", "/v1/messages?beta=true") is None
    assert "variant of /v1/messages" in refusal(spec, "POST", "/v1/messages/")
    assert "query" in refusal(spec, "POST", "/v1/messages?beta=1")
    assert "only POST" in refusal(spec, "GET", "/v1/messages")
    assert "not a metered model request" in refusal(spec, "POST", "/v1/messages/batches")
    assert refusal(None, "POST", "/v1/chat/completions") is None  # a trial without a protocol


def test_the_self_check_endpoint_is_the_trials_own_answered_locally_and_never_forwarded(proxy, upstream):
    """``POST /marathon/self-check`` reaches the trial's handler only with the trial's own token
    on its own socket; it is never forwarded and is no usage row. A trial without a handler (an
    arm without self-checks), another trial's token, variants and other methods are refused
    like any other path."""
    calls = []
    with tempfile.TemporaryDirectory(prefix="mt-", dir="/tmp") as tmp:
        a, b = socket_pair(proxy, Path(tmp))
        tok_a, tok_b = (e.token.get_secret_value() for e in (a, b))
        sock_a, sock_b = (str(e.socket_dir / "proxy.sock") for e in (a, b))
        proxy.set_self_check(tok_a, lambda: calls.append("a") or {"status": "green", "text": "ok"})
        status, _, answer = raw_request(sock_a, "POST", "/marathon/self-check", token=tok_a, body={})
        assert (status, json.loads(answer)) == (200, {"status": "green", "text": "ok"})
        assert calls == ["a"] and proxy.records() == []
        refused = [
            (sock_b, "POST", "/marathon/self-check", tok_a),    # A's token from B's container
            (sock_b, "POST", "/marathon/self-check", tok_b),    # B has no self-checks
            (sock_a, "POST", "/marathon/self-check", None),     # no token
            (sock_a, "GET", "/marathon/self-check", tok_a),     # another method
            (sock_a, "POST", "/marathon/self-check/", tok_a),   # a variant
            (sock_a, "POST", "/marathon//self-check", tok_a),
        ]
        for sock, method, target, token in refused:
            status, _, _ = raw_request(sock, method, target, token=token, body={})
            assert status in (401, 403), (method, target, status)
        assert calls == ["a"] and upstream.seen == []
        assert len(proxy.records()) == len(refused) and all(r.call.refused for r in proxy.records())
        proxy.unregister(tok_a)  # a closed trial's handler is gone with its token
        assert proxy._self_checks == {}
