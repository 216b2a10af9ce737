"""The proxy attacks performed from real trial containers, as an agent (uid 1000, no network) can:
through the in-container forwarder to the trial's own socket, with its own token on every
non-metered path and path variant, and with another trial's token. A fake upstream records
every request it gets: nothing but the one metered request reaches it."""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

from benchmark.proxy import MeteringProxy, ProxyConfig, Upstream
from benchmark.sandbox import FORWARD_PORT, PROXY_DIR, PROXY_SOCKET, Sandbox, remove_run_resources
from tests.proxy_helpers import FakeUpstream

pytestmark = pytest.mark.docker

MODEL = "claude-sonnet-4-5"

# Run in the container: sends each (method, target, token) to the forwarder byte for byte and
# prints the statuses, then what the socket directory holds.
ATTACK = r"""
import json, os, socket, sys
port, requests = int(sys.argv[1]), json.loads(sys.argv[2])
def send(method, target, token):
    body = json.dumps({"model": "%s", "stream": True, "max_tokens": 5,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall((f"{method} {target} HTTP/1.1\r\nHost: x\r\nx-api-key: {token}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
               "Connection: close\r\n\r\n").encode() + body)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return int(data.split(b" ", 2)[1])
print(json.dumps({"statuses": [send(*r) for r in requests], "socket_dir": sorted(os.listdir("%s"))}))
""" % (MODEL, PROXY_DIR)

ATTACKS = [("POST", "/v1/messages/batches"), ("POST", "/v1/complete"),
           ("POST", "/v1/chat/completions"), ("POST", "/v1/responses"), ("GET", "/v1/models"),
           ("POST", "/v1/messages/"), ("POST", "//v1/messages"), ("POST", "/v1/./messages"),
           ("POST", "/v1/x/../messages"), ("POST", "/v1/%6dessages"), ("POST", "/V1/MESSAGES"),
           ("POST", "/v1/messages;x=1"), ("POST", "/v1/messages?beta=yes"),
           ("GET", "/v1/messages"), ("PUT", "/v1/messages")]


@pytest.fixture(scope="module")
def stack(images):
    run_id = f"test-proxy-{secrets.token_hex(3)}"
    socket_dir = Path(tempfile.mkdtemp(prefix="marathon-test-", dir="/tmp"))
    socket_dir.chmod(0o755)
    try:
        with FakeUpstream() as upstream, tempfile.TemporaryDirectory() as tmp:
            config = ProxyConfig(container_url="http://127.0.0.1:8790", usage_log=Path(tmp) / "u.jsonl",
                                 upstreams={"anthropic": Upstream(base_url=upstream.url, api_key="sk-up")})
            with MeteringProxy(config) as proxy:
                trials = {}
                for name in ("a", "b"):
                    d = Path(tempfile.mkdtemp(prefix="t-", dir=socket_dir))
                    d.chmod(0o755)
                    endpoint = proxy.open_trial({"trial_id": f"trial-{name}"}, protocol="anthropic-messages",
                                                models=[MODEL], socket=d / PROXY_SOCKET)
                    proxy.set_attempt(endpoint.token.get_secret_value(), "e1", 1)
                    trials[name] = (endpoint, Sandbox.create(run_id=run_id, trial_id=f"trial-{name}",
                                                             image=images.agent, proxy_dir=endpoint.socket_dir))
                yield {"proxy": proxy, "upstream": upstream, "trials": trials}
    finally:
        remove_run_resources(run_id)
        shutil.rmtree(socket_dir, ignore_errors=True)


def attack(sandbox: Sandbox, requests: list[tuple[str, str, str]]) -> dict:
    out = sandbox.exec(["python3", "-c", ATTACK, str(FORWARD_PORT), json.dumps(requests)], timeout_s=120)
    return json.loads(out.output.strip().splitlines()[-1])


def test_from_a_trial_container_only_the_metered_request_with_its_own_token_is_forwarded(stack):
    proxy, upstream = stack["proxy"], stack["upstream"]
    (ep_a, box_a), (ep_b, _) = stack["trials"]["a"], stack["trials"]["b"]
    tok_a, tok_b = ep_a.token.get_secret_value(), ep_b.token.get_secret_value()
    before = len(proxy.records())
    seen = attack(box_a, [(m, t, tok_a) for m, t in ATTACKS]
                  + [("POST", "/v1/messages", tok_b),            # trial B's token from A's container
                     ("POST", "/v1/messages?beta=true", tok_a)])  # the one allowed request
    assert seen["socket_dir"] == [PROXY_SOCKET]  # A's container sees its own socket only
    assert seen["statuses"] == [403] * len(ATTACKS) + [403, 200]
    assert [s["raw"] for s in upstream.seen] == ["/v1/messages?beta=true"]
    assert upstream.seen[0]["headers"]["x-api-key"] == "sk-up"
    rows = proxy.records()[before:]
    assert all(r.trial_id == "trial-a" for r in rows)  # A's container made every request
    assert [(r.call.method, r.call.path) for r in rows[:len(ATTACKS)]] == ATTACKS
    assert all(r.call.refused and r.call.http_status == 403 for r in rows[:-1])
    assert rows[-2].token_trial_id == "trial-b" and "trial-b" in rows[-2].call.error
    assert not rows[-1].call.refused and rows[-1].call.http_status == 200
    assert rows[-1].call.input_tokens == 120
    # the driver's usage rows for A's attempt hold every attempt, refused ones included
    assert len(proxy.calls(tok_a, "e1", 1)) == len(ATTACKS) + 2
