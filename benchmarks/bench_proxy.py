"""Latency the metering proxy adds to a streamed model request, for every protocol.

Runs the scripted model server and the proxy on loopback (both on their own background loops in
this process, as in the driver) and sends N streamed requests each way, interleaved: direct to
the scripted server and through the proxy (a trial token registered as the driver registers
one: its protocol, provider and model only, so the allow-list and model checks are measured
too). Each request asks ``scripted/oracle`` for the ledger E1 reference, which comes back as a
shell tool call of about 8 KB:

- ``anthropic-messages``: ``POST /v1/messages?beta=true`` (Claude Code's request);
- ``openai-responses``: ``POST /v1/responses`` (Codex);
- ``openai-chat``: ``POST /v1/chat/completions`` with ``stream_options.include_usage`` (Qwen
  Code);
- ``openai-chat+added``: the same without ``include_usage``: the proxy adds it to the forwarded
  request and takes the usage chunk out of the answer (its direct baseline is the request with
  ``include_usage``, what the upstream actually serves).

Both clients keep one persistent connection. Prints, per protocol, the median time to first
byte and to the last byte, direct and proxied, and the added medians. Target: under 5 ms median
added, for both, on every protocol. The machine may be shared: figures are noisy; compare the
direct and proxied columns of one run, not runs.

Usage: python benchmarks/bench_proxy.py [--requests 200] [--protocol all|NAME]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmark.marathon import load_marathon
from benchmark.proxy import MeteringProxy, ProxyConfig, Upstream
from benchmark.scripted import ScriptedConfig, ScriptedServer

TARGET_MS = 5.0
MODEL = "scripted/oracle"
CASES = ("anthropic-messages", "openai-responses", "openai-chat", "openai-chat+added")


def request(case: str) -> tuple[str, dict]:
    """(target, body) of the streamed request of a case."""
    brief = load_marathon("ledger").brief_text("e1")
    if case == "anthropic-messages":
        return "/v1/messages?beta=true", {
            "model": MODEL, "stream": True, "max_tokens": 32000,
            "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": brief}]}]}
    if case == "openai-responses":
        return "/v1/responses", {
            "model": MODEL, "stream": True,
            "tools": [{"type": "function", "name": "exec_command",
                       "parameters": {"properties": {"cmd": {"type": "string"}}}}],
            "input": [{"type": "message", "role": "user",
                       "content": [{"type": "input_text", "text": brief}]}]}
    doc = {"model": MODEL, "stream": True, "max_tokens": 32000,
           "tools": [{"type": "function", "function": {
               "name": "run_shell_command",
               "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}}],
           "messages": [{"role": "user", "content": brief}]}
    if case == "openai-chat":
        doc["stream_options"] = {"include_usage": True}
    return "/v1/chat/completions", doc


def timed(conn: http.client.HTTPConnection, target: str, body: bytes, token: str) -> tuple[float, float]:
    """(seconds to the first body byte, seconds to the last) of one streamed request."""
    t0 = time.perf_counter()
    conn.request("POST", target, body=body, headers={"content-type": "application/json",
                                                     "x-api-key": token,
                                                     "authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    first = resp.read1(1)
    ttfb = time.perf_counter() - t0
    rest = resp.read()
    total = time.perf_counter() - t0
    if resp.status != 200 or not (first + rest):
        raise SystemExit(f"request failed: HTTP {resp.status}: {(first + rest)[:200]!r}")
    return ttfb, total


def measure(case: str, n: int, upstream: ScriptedServer, proxy: MeteringProxy) -> dict:
    """Medians (ms) of one case, direct and proxied, and the proxy rows recorded."""
    target, doc = request(case)
    protocol = case.split("+")[0]
    token = f"bench-{case}"
    proxy.register(token, {"trial_id": token}, protocol=protocol, upstream="scripted", models=[MODEL])
    proxied_body = json.dumps(doc).encode()
    if case.endswith("+added"):
        doc = dict(doc, stream_options={"include_usage": True})
    direct_body = json.dumps(doc).encode()
    direct = http.client.HTTPConnection(upstream.host, upstream.port)
    proxied = http.client.HTTPConnection(proxy.host, proxy.port)
    for _ in range(10):  # warm-up: connections, code paths
        timed(direct, target, direct_body, "sk-bench")
        timed(proxied, target, proxied_body, token)
    d, p = [], []
    for _ in range(n):
        d.append(timed(direct, target, direct_body, "sk-bench"))
        p.append(timed(proxied, target, proxied_body, token))
    calls = proxy.calls(token)
    if any(c.usage_missing or c.refused or c.output_tokens == 0 for c in calls):
        raise SystemExit(f"{case}: a proxied request was not metered")
    med = {name: (statistics.median(x[0] for x in xs) * 1000, statistics.median(x[1] for x in xs) * 1000)
           for name, xs in (("direct", d), ("proxied", p))}
    return {"case": case, "bytes": len(proxied_body), "rows": len(calls), **med,
            "added": (med["proxied"][0] - med["direct"][0], med["proxied"][1] - med["direct"][1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--protocol", choices=("all", *CASES), default="all")
    args = parser.parse_args()
    cases = CASES if args.protocol == "all" else (args.protocol,)
    results = []
    with tempfile.TemporaryDirectory() as tmp, ScriptedServer(ScriptedConfig()) as upstream:
        config = ProxyConfig(upstreams={"scripted": Upstream(base_url=upstream.url, api_key="sk-bench")},
                             usage_log=Path(tmp) / "usage.jsonl")
        with MeteringProxy(config) as proxy:
            for case in cases:
                results.append(measure(case, args.requests, upstream, proxy))
    print(f"{args.requests} streamed requests each way per protocol (medians, ms; target: "
          f"added < {TARGET_MS:g} ms)")
    print(f"{'protocol':20} {'request':>8} {'rows':>5} {'direct ttfb/total':>18} "
          f"{'proxied ttfb/total':>19} {'added ttfb/total':>17}")
    ok = True
    for r in results:
        ok &= max(r["added"]) < TARGET_MS
        print(f"{r['case']:20} {r['bytes']:7d}B {r['rows']:5d} {r['direct'][0]:8.2f} /{r['direct'][1]:7.2f} "
              f"{r['proxied'][0]:9.2f} /{r['proxied'][1]:7.2f} {r['added'][0]:7.2f} /{r['added'][1]:7.2f}")
    print("OK" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
