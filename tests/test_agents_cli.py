"""The real Claude Code and Codex CLIs in the agent container, through the metering proxy, against
the scripted model (a simulation): files written, scored by the real scorer, usage reconciled,
sessions continued, the forgetful policy's trap and repair, and the container's confinement."""

from __future__ import annotations

import json
import secrets
import tempfile
from pathlib import Path

import pytest

from benchmark.agents.base import AttemptContext, AttemptOutcome, AttemptResult
from benchmark.agents.claude_code import ClaudeCodeAgent
from benchmark.agents.codex import CodexAgent
from benchmark.agents.proxied import COMMAND_FILE, RECONCILIATION_FILE, ProxiedCLIAgent
from benchmark.arms import load_arm
from benchmark.controllers.feedback_retry import feedback_prompt
from benchmark.docker_env import client
from benchmark.marathon import load_marathon
from benchmark.proxy import (MeteringProxy, ProxyConfig, Reconciliation, Upstream, load_usage,
                             network_gateway)
from benchmark.sandbox import Sandbox, ensure_run_network, extract_snapshot, remove_run_resources
from benchmark.scorer import CheckResult, score
from benchmark.scripted import ScriptedConfig, ScriptedServer

pytestmark = pytest.mark.docker

UPSTREAM_KEY = "sk-upstream-" + secrets.token_hex(12)
LEDGER = load_marathon("ledger")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A run network, the scripted model on loopback, the proxy on the network's gateway."""
    run_id = f"test-agents-{secrets.token_hex(3)}"
    network = ensure_run_network(run_id)
    usage_log = tmp_path_factory.mktemp("proxy") / "usage.jsonl"
    with ScriptedServer(ScriptedConfig()) as upstream:
        up = Upstream(base_url=upstream.url, api_key=UPSTREAM_KEY)
        config = ProxyConfig(host=network_gateway(network), anthropic=up, openai=up,
                             usage_log=usage_log)
        with MeteringProxy(config) as proxy:
            yield {"run_id": run_id, "network": network, "proxy": proxy, "upstream": upstream,
                   "usage_log": usage_log}
    remove_run_resources(run_id)


class Trial:
    """One trial's container and agent, driven by hand the way the driver does it."""

    def __init__(self, stack, images, agent: ProxiedCLIAgent, arm_name: str, model: str,
                 tmp: Path, continuity: bool = False):
        self.trial_id = f"{agent.name}.{model.replace('/', '-')}.{secrets.token_hex(2)}"
        self.sandbox = Sandbox.create(run_id=stack["run_id"], trial_id=self.trial_id,
                                      image=images.agent, network=stack["network"])
        self.arm = load_arm(arm_name).model_copy(update={"session_continuity": continuity})
        self.agent, self.model, self.tmp, self.images = agent, model, tmp, images
        self.endpoint = stack["proxy"].open_trial({"trial_id": self.trial_id, "agent": agent.name})
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
            snap = extract_snapshot(self.sandbox.archive(), Path(tmp) / "snap")
            return score(snap, LEDGER, episode, 7, image=self.images.scorer)

    def remove(self) -> None:
        self.sandbox.remove()


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
    trial = Trial(stack, images, ClaudeCodeAgent(), "prompt-only", "scripted/oracle", tmp_path)
    try:
        result, ctx = trial.attempt("e1", 1, LEDGER.brief_text("e1"))
        assert result.outcome == AttemptOutcome.ok, result.error
        assert result.exit_code == 0 and result.error == ""
        events = [json.loads(line) for line in ctx.transcript.read_text().splitlines() if line.startswith("{")]
        assert events[-1]["type"] == "result" and events[-1]["num_turns"] == 2
        assert any(e.get("type") == "user" for e in events)  # the Bash tool ran
        command = json.loads((ctx.transcript.parent / COMMAND_FILE).read_text())
        assert command["env"]["ANTHROPIC_API_KEY"] == "<per-trial token>"
        assert command["env"]["ANTHROPIC_BASE_URL"] == stack["proxy"].url
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
            ["sh", "-c", f"grep -rIlF '{UPSTREAM_KEY}' /home /workspace /tmp /etc 2>/dev/null; "
                         f"cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -cF '{UPSTREAM_KEY}'"],
            timeout_s=60)
        assert probe.output.strip() == "0", probe.output
        assert stack["upstream"].seen_keys == {UPSTREAM_KEY}  # the token was replaced upstream
    finally:
        trial.remove()


def test_claude_code_forgetful_falls_into_the_e2_trap_and_repairs_when_the_gate_is_named(
        stack, images, tmp_path):
    trial = Trial(stack, images, ClaudeCodeAgent(), "feedback-retry", "scripted/forgetful",
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
    trial = Trial(stack, images, CodexAgent(), "prompt-only", "scripted/oracle", tmp_path,
                  continuity=True)
    try:
        result, ctx = trial.attempt("e1", 1, LEDGER.brief_text("e1"))
        assert result.outcome == AttemptOutcome.ok, result.error
        assert_reconciled(result, ctx)
        assert failing_gates(trial.score("e1")) == set()
        thread = trial.agent.thread_id
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
    trial = Trial(stack, images, ClaudeCodeAgent(), "prompt-only", "scripted/overloaded", tmp_path)
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
    trial = Trial(stack, images, CodexAgent(), "prompt-only", "scripted/oracle", tmp_path)
    try:
        result, ctx = trial.attempt("e1", 1, LEDGER.brief_text("e1"), time_limit_s=0.3)
        assert result.outcome == AttemptOutcome.timeout and result.exit_code is None
        assert "time limit" in result.error
        assert reconciliation(ctx).verdict == "no_agent_usage"
        assert "codex exec" not in trial.sandbox.run("ps -eo args")  # killed, children included
    finally:
        trial.remove()


PROBE = """
import errno, socket, sys, time
def probe(host, port):
    t = time.monotonic()
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "open"
    except OSError as e:
        name = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__
        return f"{name} {time.monotonic() - t:.2f}"
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    print(target, probe(host, int(port)))
"""


def probe(sandbox: Sandbox, *targets: str) -> dict[str, str]:
    """Connect from the container to each ``host:port``; ``open`` or ``<errno> <seconds>``."""
    out = sandbox.exec(["python3", "-c", PROBE, *targets], timeout_s=60).output
    return dict(line.split(" ", 1) for line in out.strip().splitlines())


def default_route(sandbox: Sandbox) -> bool:
    """Whether the container has a default route (read from /proc/net/route; nothing is sent)."""
    table = sandbox.run("cat /proc/net/route").splitlines()[1:]
    return any(line.split()[1] == "00000000" for line in table)


@pytest.fixture
def probe_sandbox(stack, images):
    sandbox = Sandbox.create(run_id=stack["run_id"], trial_id=f"netprobe-{secrets.token_hex(2)}",
                             image=images.agent, network=stack["network"])
    yield sandbox
    sandbox.remove()


def test_a_container_reaches_the_proxy_but_not_the_model_server(stack, probe_sandbox):
    gateway, proxy, upstream = stack["proxy"].host, stack["proxy"].port, stack["upstream"].port
    seen = probe(probe_sandbox, f"{gateway}:{proxy}", f"{gateway}:{upstream}", f"127.0.0.1:{upstream}")
    assert seen[f"{gateway}:{proxy}"] == "open"
    # the scripted model listens on the host's loopback only
    assert seen[f"{gateway}:{upstream}"].startswith("ECONNREFUSED")
    assert seen[f"127.0.0.1:{upstream}"].startswith("ECONNREFUSED")


@pytest.mark.xfail(strict=True, reason=(
    "dockerd runs with --iptables=false: an --internal network gets a default route via its "
    "gateway and no filtering, so a container reaches every host port on the gateway address "
    "and the host forwards its packets (ip_forward=1); needs host firewall rules"))
def test_a_container_reaches_no_other_host_port_and_has_no_route_out(stack, probe_sandbox):
    import socket

    gateway = stack["proxy"].host
    other = socket.socket()
    other.bind((gateway, 0))
    other.listen()
    try:
        seen = probe(probe_sandbox, f"{gateway}:{other.getsockname()[1]}")
        assert seen[f"{gateway}:{other.getsockname()[1]}"] != "open", "another host port is reachable"
    finally:
        other.close()
    # Only probe an external address when no route exists: then the attempt fails at once in the
    # container and no packet leaves it.
    assert not default_route(probe_sandbox), "the container has a default route via the gateway"
    kind, seconds = probe(probe_sandbox, "203.0.113.1:443")["203.0.113.1:443"].split()
    assert kind == "ENETUNREACH" and float(seconds) < 1.0
