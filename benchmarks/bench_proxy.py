"""Latency the metering proxy adds to a streamed model request.

Runs the scripted model server and the proxy on loopback (both on their own background loops in
this process, as in the driver) and sends N streamed requests each way, interleaved: direct to
the scripted server and through the proxy. Each request is an Anthropic ``/v1/messages``
streaming call answered with the E1 reference (about 8 KB of events) or an OpenAI
``/v1/responses`` call (``--api openai``). Both clients keep one persistent connection.

Prints the median time to first byte and to the last byte, direct and proxied, and the added
medians. Target (issue: real agents): under 5 ms median added, for both.

Usage: python benchmarks/bench_proxy.py [--requests 200] [--api anthropic|openai]
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


def request_body(api: str) -> tuple[str, bytes]:
    brief = load_marathon("ledger").brief_text("e1")
    if api == "anthropic":
        doc = {"model": "scripted/oracle", "stream": True, "max_tokens": 32000,
               "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
               "messages": [{"role": "user", "content": [{"type": "text", "text": brief}]}]}
        return "/v1/messages", json.dumps(doc).encode()
    doc = {"model": "scripted/oracle", "stream": True,
           "tools": [{"type": "function", "name": "exec_command",
                      "parameters": {"properties": {"cmd": {"type": "string"}}}}],
           "input": [{"type": "message", "role": "user",
                      "content": [{"type": "input_text", "text": brief}]}]}
    return "/v1/responses", json.dumps(doc).encode()


def timed(conn: http.client.HTTPConnection, path: str, body: bytes, token: str) -> tuple[float, float]:
    """(seconds to the first body byte, seconds to the last) of one streamed request."""
    t0 = time.perf_counter()
    conn.request("POST", path, body=body, headers={"content-type": "application/json",
                                                   "x-api-key": token,
                                                   "authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    first = resp.read1(1)
    ttfb = time.perf_counter() - t0
    rest = resp.read()
    total = time.perf_counter() - t0
    if resp.status != 200 or not (first + rest):
        raise SystemExit(f"request failed: HTTP {resp.status}")
    return ttfb, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--api", choices=("anthropic", "openai"), default="anthropic")
    args = parser.parse_args()
    path, body = request_body(args.api)
    with tempfile.TemporaryDirectory() as tmp, ScriptedServer(ScriptedConfig()) as upstream:
        up = Upstream(base_url=upstream.url, api_key="sk-bench")
        config = ProxyConfig(upstreams={"anthropic": up, "openai": up}, usage_log=Path(tmp) / "usage.jsonl")
        with MeteringProxy(config) as proxy:
            proxy.register("bench", {"trial_id": "bench"})
            direct = http.client.HTTPConnection(upstream.host, upstream.port)
            proxied = http.client.HTTPConnection(proxy.host, proxy.port)
            for _ in range(10):  # warm-up: connections, code paths
                timed(direct, path, body, "sk-bench")
                timed(proxied, path, body, "bench")
            d, p = [], []
            for _ in range(args.requests):
                d.append(timed(direct, path, body, "sk-bench"))
                p.append(timed(proxied, path, body, "bench"))
            rows = len(proxy.calls("bench"))
    med = {name: (statistics.median(x[0] for x in xs) * 1000, statistics.median(x[1] for x in xs) * 1000)
           for name, xs in (("direct", d), ("proxied", p))}
    added_ttfb = med["proxied"][0] - med["direct"][0]
    added_total = med["proxied"][1] - med["direct"][1]
    print(f"{args.requests} streamed {args.api} requests each way ({len(body)} B request), "
          f"{rows} usage rows recorded")
    print(f"direct   median: first byte {med['direct'][0]:6.2f} ms, total {med['direct'][1]:6.2f} ms")
    print(f"proxied  median: first byte {med['proxied'][0]:6.2f} ms, total {med['proxied'][1]:6.2f} ms")
    print(f"added    median: first byte {added_ttfb:6.2f} ms, total {added_total:6.2f} ms "
          f"(target < {TARGET_MS:g} ms)")
    ok = added_ttfb < TARGET_MS and added_total < TARGET_MS
    print("OK" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
