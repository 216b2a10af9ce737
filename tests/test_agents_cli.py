"""The real Claude Code and Codex CLIs in the agent container, through the metering proxy, against
the scripted model (a simulation): files written, scored by the real scorer, usage reconciled,
sessions continued, the forgetful policy's trap and repair, and the container's confinement (no
network: only loopback and the proxy's Unix socket, served by the in-container forwarder)."""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest

from benchmark.agents.base import AttemptContext, AttemptOutcome, AttemptResult
from benchmark.agents import get_agent
from benchmark.agents.proxied import COMMAND_FILE, RECONCILIATION_FILE, ProxiedCLIAgent
from benchmark.arms import load_arm
from benchmark.controllers.feedback_retry import feedback_prompt
from benchmark.docker_env import client
from benchmark.marathon import load_marathon
from benchmark.proxy import MeteringProxy, ProxyConfig, Reconciliation, Upstream, load_usage
from benchmark.sandbox import (FORWARD_PORT, PROXY_DIR, PROXY_SOCKET, PROXY_URL, Sandbox,
                               extract_snapshot, remove_run_resources)
from benchmark.scorer import CheckResult, score
from benchmark.scripted import ScriptedConfig, ScriptedServer

pytestmark = pytest.mark.docker

UPSTREAM_KEY = "sk-upstream-" + secrets.token_hex(12)
LEDGER = load_marathon("ledger")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The scripted model on loopback and the proxy on loopback plus a Unix socket in a socket
    directory that trial containers mount (as the driver sets them up)."""
    run_id = f"test-agents-{secrets.token_hex(3)}"
    socket_dir = Path(tempfile.mkdtemp(prefix="marathon-test-", dir="/tmp"))
    socket_dir.chmod(0o755)
    usage_log = tmp_path_factory.mktemp("proxy") / "usage.jsonl"
    try:
        with ScriptedServer(ScriptedConfig()) as upstream:
            up = Upstream(base_url=upstream.url, api_key=UPSTREAM_KEY)
            config = ProxyConfig(container_url=PROXY_URL, upstreams={"scripted": up},
                                 usage_log=usage_log)
            with MeteringProxy(config) as proxy:
                yield {"run_id": run_id, "socket_dir": socket_dir, "proxy": proxy,
                       "upstream": upstream, "usage_log": usage_log}
    finally:
        remove_run_resources(run_id)
        shutil.rmtree(socket_dir, ignore_errors=True)


def open_trial(stack, keys: dict, protocol: str | None, model: str | None):
    """A trial's endpoint as the driver opens it: its own socket in its own directory, its
    protocol and model only."""
    trial_dir = Path(tempfile.mkdtemp(prefix="t-", dir=stack["socket_dir"]))
    trial_dir.chmod(0o755)
    return stack["proxy"].open_trial(keys, protocol=protocol, models=[model] if model else None,
                                     socket=trial_dir / PROXY_SOCKET)


class Trial:
    """One trial's container and agent, driven by hand the way the driver does it."""

    def __init__(self, stack, images, agent: ProxiedCLIAgent, arm_name: str, model: str,
                 tmp: Path, continuity: bool = False):
        self.trial_id = f"{agent.name}.{model.replace('/', '-')}.{secrets.token_hex(2)}"
        self.endpoint = open_trial(stack, {"trial_id": self.trial_id, "agent": agent.name},
                                   agent.protocol, model)
        self.sandbox = Sandbox.create(run_id=stack["run_id"], trial_id=self.trial_id,
                                      image=images.for_agent(agent.name), proxy_dir=self.endpoint.socket_dir)
        self.arm = load_arm(arm_name).model_copy(update={"session_continuity": continuity})
        self.agent, self.model, self.tmp, self.images = agent, model, tmp, images
        self.proxy = stack["proxy"]
        agent.attach(self.endpoint)
        self.sandbox.put_directory(LEDGER.starter)
        agent.prepare(self.sandbox, self.arm)
        self.sandbox.init_repo()

    def attempt(self, episode: str, number: int, prompt: str,
                time_limit_s: float = 180) -> tuple[AttemptResult, AttemptContext]:
        art = self.tmp / episode / str(number)
        art.mkdir(parents=True)
        ctx = AttemptContext(trial_id=self.trial_id, episode=LEDGER.episode(episode),
                             attempt=number, arm=self.arm, model=self.model, effort="none",
                             time_limit_s=time_limit_s, transcript=art / "transcript.jsonl")
        return self.agent.run(self.sandbox, prompt, ctx), ctx

    def score(self, episode: str) -> list[CheckResult]:
        self.sandbox.commit(f"marathon: {episode}")
        with tempfile.TemporaryDirectory() as tmp:
            archive = self.sandbox.archive(Path(tmp) / "workspace.tar")
            snap = extract_snapshot(archive.path, Path(tmp) / "snap")
            return score(snap, LEDGER, episode, 7, image=self.images.scorer)

    def remove(self) -> None:
        self.sandbox.remove()
        self.proxy.unregister(self.endpoint.token.get_secret_value())


def failing_gates(checks: list[CheckResult]) -> set[str]:
    return {c.gate for c in checks if c.outcome.value != "passed"}


def reconciliation(ctx: AttemptContext) -> Reconciliation:
    return Reconciliation.model_validate_json((ctx.transcript.parent / RECONCILIATION_FILE).read_text())


def assert_reconciled(result: AttemptResult, ctx: AttemptContext, min_calls: int = 2) -> None:
    rec = reconciliation(ctx)
    assert rec.verdict == "match", rec.summary()
    proxy_rows = [u for u in result.usage if u.source == "proxy"]
    agent_rows = [u for u in result.usage if u.source == "agent"]
    assert len(proxy_rows) >= min_calls and agent_rows
    assert all(u.http_status == 200 and u.cost_usd == 0.0 and u.api_model == ctx.model for u in proxy_rows)
    assert rec.proxy["input_tokens"] > 0 and rec.proxy["output_tokens"] > 0


def test_claude_code_oracle_writes_e1_and_the_scorer_passes_it(stack, images, tmp_path):
    trial = Trial(stack, images, get_agent("claude-code"), "prompt-only", "scripted/oracle", tmp_path)
    try:
        result, ctx = trial.attempt("e1", 1, LEDGER.brief_text("e1"))
        assert result.outcome == AttemptOutcome.ok, result.error
        assert result.exit_code == 0 and result.error == ""
        events = [json.loads(line) for line in ctx.transcript.read_text().splitlines() if line.startswith("{")]
        assert events[-1]["type"] == "result" and events[-1]["num_turns"] == 2
        assert any(e.get("type") == "user" for e in events)  # the Bash tool ran
        command = json.loads((ctx.transcript.parent / COMMAND_FILE).read_text())
        assert command["env"]["ANTHROPIC_API_KEY"] == "<per-trial token>"
        assert command["env"]["ANTHROPIC_BASE_URL"] == PROXY_URL
        assert "--session-id" in command["argv"] and "<prompt.md>" in command["argv"]
        assert_reconciled(result, ctx)
        checks = trial.score("e1")
        assert checks and failing_gates(checks) == set(), [c for c in checks if c.outcome.value != "passed"]
        # the rows are also in the proxy's JSONL file, attributed to the trial and attempt
        logged = [r for r in load_usage(stack["usage_log"]) if r.trial_id == trial.trial_id]
        assert [r.call for r in logged] == [u for u in result.usage if u.source == "proxy"]
        assert {(r.episode, r.attempt) for r in logged} == {("e1", 1)}
        # the upstream key never entered the container: not in its config, files or processes
        env = client().api.inspect_container(trial.sandbox.container.id)["Config"]["Env"]
        assert not any(UPSTREAM_KEY in e for e in env)
        probe = trial.sandbox.exec(
            ["sh", "-c", f"grep -rIlF '{UPSTREAM_KEY}' /home /workspace /tmp /etc /run 2>/dev/null; "
                         f"cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -cF '{UPSTREAM_KEY}'"],
            timeout_s=60)
        assert probe.output.strip() == "0", probe.output
        assert stack["upstream"].seen_keys == {UPSTREAM_KEY}  # the token was replaced upstream
    finally:
        trial.remove()


def test_claude_code_forgetful_falls_into_the_e2_trap_and_repairs_when_the_gate_is_named(
        stack, images, tmp_path):
    trial = Trial(stack, images, get_agent("claude-code"), "feedback-retry", "scripted/forgetful",
                  tmp_path, continuity=True)
    try:
        result, _ = trial.attempt("e1", 1, LEDGER.brief_text("e1"))
        assert result.outcome == AttemptOutcome.ok, result.error
        assert failing_gates(trial.score("e1")) == set()  # E1 has no earlier gate: correct E1
        session = trial.agent.session_id
        assert session is not None

        result, ctx = trial.attempt("e2", 1, LEDGER.brief_text("e2"))
        assert result.outcome == AttemptOutcome.ok, result.error
        checks = trial.score("e2")
        assert failing_gates(checks) == {"privacy"}  # the E2 trap: raw event log leaks
        assert_reconciled(result, ctx)

        # the feedback-retry re-prompt (session continued, so without the brief) names the gate
        prompt = feedback_prompt(checks, "names", None)
        assert "gate `privacy`" in prompt
        result, ctx = trial.attempt("e2", 2, prompt)
        assert result.outcome == AttemptOutcome.ok, result.error
        command = json.loads((ctx.transcript.parent / COMMAND_FILE).read_text())
        assert command["argv"][command["argv"].index("--resume") + 1] == session
        assert failing_gates(trial.score("e2")) == set()
        assert_reconciled(result, ctx)
    finally:
        trial.remove()


def test_codex_oracle_writes_e1_then_e2_in_a_resumed_thread_and_usage_reconciles(
        stack, images, tmp_path):
    trial = Trial(stack, images, get_agent("codex"), "prompt-only", "scripted/oracle", tmp_path,
                  continuity=True)
    try:
        result, ctx = trial.attempt("e1", 1, LEDGER.brief_text("e1"))
        assert result.outcome == AttemptOutcome.ok, result.error
        assert_reconciled(result, ctx)
        assert failing_gates(trial.score("e1")) == set()
        thread = trial.agent.session_id
        assert thread

        # resumed: the CLI's usage is the thread's running total, the adapter records the difference
        result, ctx = trial.attempt("e2", 1, LEDGER.brief_text("e2"))
        assert result.outcome == AttemptOutcome.ok, result.error
        command = json.loads((ctx.transcript.parent / COMMAND_FILE).read_text())
        assert command["argv"][command["argv"].index("resume") + 1] == thread
        assert_reconciled(result, ctx)
        assert failing_gates(trial.score("e2")) == set()
    finally:
        trial.remove()


def test_claude_code_reports_an_overloaded_model_as_an_agent_error(stack, images, tmp_path):
    trial = Trial(stack, images, get_agent("claude-code"), "prompt-only", "scripted/overloaded", tmp_path)
    try:
        result, ctx = trial.attempt("e1", 1, LEDGER.brief_text("e1"), time_limit_s=120)
        assert result.outcome == AttemptOutcome.agent_error
        assert "529" in result.error
        statuses = [u.http_status for u in result.usage if u.source == "proxy"]
        assert statuses and set(statuses) == {529}  # every try was metered, with its status
        assert reconciliation(ctx).verdict in ("match", "no_agent_usage")
    finally:
        trial.remove()


def test_an_agent_past_its_time_limit_is_a_timeout(stack, images, tmp_path):
    trial = Trial(stack, images, get_agent("codex"), "prompt-only", "scripted/oracle", tmp_path)
    try:
        result, ctx = trial.attempt("e1", 1, LEDGER.brief_text("e1"), time_limit_s=0.3)
        assert result.outcome == AttemptOutcome.timeout and result.exit_code is None
        assert "time limit" in result.error
        assert reconciliation(ctx).verdict == "no_agent_usage"
        assert "codex exec" not in trial.sandbox.run("ps -eo args")  # killed, children included
    finally:
        trial.remove()


CONFINEMENT = r"""
import errno, json, socket, sys
forward, others = int(sys.argv[1]), [int(p) for p in sys.argv[2:]]
def connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=3).close()
        return "open"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def http(method, path):
    s = socket.create_connection(("127.0.0.1", forward), timeout=10)
    body = "{}" if method == "POST" else ""
    s.sendall((f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
               f"Connection: close\r\n\r\n{body}").encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data.split(b"\r\n", 1)[0].decode()
print(json.dumps({
    "interfaces": sorted(name for _, name in socket.if_nameindex()),
    "ipv4_routes": open("/proc/net/route").read().splitlines()[1:],
    "ipv6_route_devices": sorted({l.split()[-1] for l in open("/proc/net/ipv6_route").read().splitlines()}),
    "proxy_root": http("GET", "/"),
    "proxy_no_token": http("POST", "/v1/messages"),
    "ports": {str(p): connect(p) for p in others},
}))
"""


def test_a_model_agent_container_reaches_the_proxy_and_nothing_else(stack, images):
    """No network: only ``lo``, no route to any address (so no host or gateway port can be
    reached and nothing is sent), the proxy socket alone in a read-only mount, and the proxy
    answering through the forwarder. Nothing here sends a packet to a non-loopback address."""
    trial_id = f"confined-{secrets.token_hex(2)}"
    endpoint = open_trial(stack, {"trial_id": trial_id}, "anthropic-messages", "scripted/nop")
    sandbox = Sandbox.create(run_id=stack["run_id"], trial_id=trial_id,
                             image=images.for_agent("claude-code"), proxy_dir=endpoint.socket_dir)
    try:
        attrs = client().api.inspect_container(sandbox.container.id)
        assert attrs["HostConfig"]["NetworkMode"] == "none"
        assert attrs["NetworkSettings"]["Networks"].keys() <= {"none"}
        (mount,) = attrs["Mounts"]
        assert (mount["Destination"], mount["RW"]) == (PROXY_DIR, False)
        assert sandbox.run(f"ls -A {PROXY_DIR}").split() == [PROXY_SOCKET]
        rejected = stack["proxy"].rejected
        upstream, proxy_tcp = stack["upstream"].port, stack["proxy"].port
        out = sandbox.exec(["python3", "-c", CONFINEMENT, str(FORWARD_PORT), str(upstream), str(proxy_tcp)],
                           timeout_s=60)
        seen = json.loads(out.output.strip().splitlines()[-1])
        assert seen["interfaces"] == ["lo"]
        assert seen["ipv4_routes"] == []  # no route at all: every non-loopback address is unreachable
        assert seen["ipv6_route_devices"] in ([], ["lo"])
        assert seen["proxy_root"] == "HTTP/1.1 200 OK"
        assert seen["proxy_no_token"] == "HTTP/1.1 401 Unauthorized"
        assert stack["proxy"].rejected == rejected + 1  # the proxy itself answered
        # the host's loopback services (scripted model, proxy's TCP port) are not the container's
        assert seen["ports"] == {str(upstream): "ECONNREFUSED", str(proxy_tcp): "ECONNREFUSED"}
        # the forwarder comes back after every uid-1000 process is killed (as after each attempt)
        sandbox.kill_agent_processes()
        sandbox.wait_for_forwarder()
    finally:
        sandbox.remove()
        stack["proxy"].unregister(endpoint.token.get_secret_value())
