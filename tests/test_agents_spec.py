"""Agents as data (no Docker): ``agents/*.toml`` load and validate with one-line errors naming the
file and the field, the derived image tag follows the TOML and its shipped files, commands and
environments are filled from placeholders (token never on the command line), effort and session
arguments, and the named usage parsers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmark.agents import DeclaredAgent, agent_names, get_agent
from benchmark.agents.base import AttemptContext, AttemptOutcome
from benchmark.agents.reports import RunFacts, get_report
from benchmark.agents.spec import AGENTS_DIR, declared_names, lineage, load_agent_spec
from benchmark.arms import load_arm
from benchmark.errors import MarathonError
from benchmark.images import agent_recipe
from benchmark.marathon import load_marathon
from benchmark.proxy import ModelEndpoint

GOOD = '''name = "{name}"
version = "1.2.3"
protocol = "openai-chat"
usage = "none"
command = ["tool", "--task", "{{prompt}}", "{{session_args}}", "{{effort_args}}"]

[env]
OPENAI_BASE_URL = "{{base_url}}/v1"
OPENAI_API_KEY = "{{token}}"

[install]
npm = ["some-cli@1.2.3"]
pip = ["some-pkg==0.4.0"]
files = {{ "/opt/tool/wrap.sh" = "tool/wrap.sh" }}

[session]
new = ["--session-id", "{{session}}"]
resume = ["--resume", "{{session}}"]

[effort]
values = ["low", "high"]
args = ["--effort", "{{effort}}"]
'''


def write_agent(tmp_path: Path, name: str = "tool", text: str | None = None) -> Path:
    (tmp_path / "tool").mkdir(exist_ok=True)
    (tmp_path / "tool" / "wrap.sh").write_text("#!/bin/sh\nexec tool \"$@\"\n")
    (tmp_path / "tool" / "wrap.sh").chmod(0o755)
    path = tmp_path / f"{name}.toml"
    path.write_text(text if text is not None else GOOD.format(name=name))
    return path


def test_every_shipped_agent_loads_and_python_agents_stay_registered():
    assert {"claude-code", "codex", "mini-swe-agent", "qwen-code", "retry-runtime"} <= set(declared_names())
    assert {"oracle", "nop", "claude-code", "qwen-code"} <= set(agent_names())
    for name in declared_names():
        agent = get_agent(name)
        assert isinstance(agent, DeclaredAgent) and agent.uses_model and agent.protocol
    assert [s.name for s in lineage(load_agent_spec("retry-runtime"))] == ["claude-code", "retry-runtime"]
    assert get_agent("mini-swe-agent").protocol == get_agent("qwen-code").protocol == "openai-chat"


@pytest.mark.parametrize("edit, field", [
    (lambda t: t.replace('protocol = "openai-chat"', 'protocol = "grpc"'), "protocol"),
    (lambda t: t.replace('usage = "none"', 'usage = "tokens.txt"'), "usage"),
    (lambda t: t.replace('"some-cli@1.2.3"', '"some-cli@latest"'), "install.npm"),
    (lambda t: t.replace('"some-pkg==0.4.0"', '"some-pkg>=0.4"'), "install.pip"),
    (lambda t: t.replace('OPENAI_API_KEY = "{token}"', 'OPENAI_API_KEY = "sk-fixed"'), "env"),
    (lambda t: t.replace('"--task", "{prompt}"', '"--task", "{prompt}", "--key={token}"'), "command"),
    (lambda t: t.replace('"{prompt}"', '"{promt}"'), "command"),
    (lambda t: t.replace('resume = ["--resume", "{session}"]', 'resume = ["--resume"]'), "session"),
    (lambda t: t.replace('"/opt/tool/wrap.sh"', '"opt/tool/wrap.sh"'), "install.files"),
    (lambda t: t.replace('"tool/wrap.sh" }', '"tool/missing.sh" }'), "install.files"),
    (lambda t: t + 'colour = "red"\n', "colour"),
    (lambda t: t.replace('name = "tool"', 'name = "other"'), "name"),
    (lambda t: t.replace('version = "1.2.3"\n', ''), "version"),
    (lambda t: "extends = \"no-such-agent\"\n" + t, "extends: unknown agent"),
    (lambda t: t.replace("[env]", "[env"), "malformed TOML"),
])
def test_a_malformed_agent_file_is_one_line_naming_the_file_and_field(tmp_path, edit, field):
    path = write_agent(tmp_path, text=edit(GOOD.format(name="tool")))
    with pytest.raises(MarathonError) as e:
        load_agent_spec(path)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ") and field in message, message


def test_extends_must_not_make_a_cycle(tmp_path):
    write_agent(tmp_path, "a", 'extends = "b"\n' + GOOD.format(name="a"))
    write_agent(tmp_path, "b", 'extends = "a"\n' + GOOD.format(name="b"))
    with pytest.raises(MarathonError, match="extends: .*cycle"):
        load_agent_spec(tmp_path / "a.toml")


def test_the_derived_image_tag_changes_with_the_toml_and_its_shipped_files(tmp_path):
    path = write_agent(tmp_path)
    tag, text, files, modes = agent_recipe(load_agent_spec(path), "marathon-agent:parent")
    assert tag.startswith("marathon-agent-tool:")
    assert agent_recipe(load_agent_spec(path), "marathon-agent:parent")[0] == tag  # stable
    assert "npm install" in text and "some-cli@1.2.3" in text and "some-pkg==0.4.0" in text
    assert "python3-venv" in text and "/opt/tool/wrap.sh" in text
    assert modes[next(n for n in files if n.startswith("shipped/"))] & 0o111  # exec bit kept
    tags = {tag}
    path.write_text(GOOD.format(name="tool").replace("1.2.3\"]", "1.2.4\"]"))  # a pin
    tags.add(agent_recipe(load_agent_spec(path), "marathon-agent:parent")[0])
    path.write_text(GOOD.format(name="tool").replace('"--task"', '"--goal"'))  # the command
    tags.add(agent_recipe(load_agent_spec(path), "marathon-agent:parent")[0])
    path.write_text(GOOD.format(name="tool"))
    (tmp_path / "tool" / "wrap.sh").write_text("#!/bin/sh\nexec tool --v2 \"$@\"\n")  # a shipped file
    tags.add(agent_recipe(load_agent_spec(path), "marathon-agent:parent")[0])
    tags.add(agent_recipe(load_agent_spec(path), "marathon-agent:other-parent")[0])  # the parent
    assert len(tags) == 5


def _ctx(tmp_path: Path, arm: str = "prompt-only", effort: str = "default", attempt: int = 1,
         continuity: bool = False) -> AttemptContext:
    ledger = load_marathon("ledger")
    a = load_arm(arm).model_copy(update={"session_continuity": continuity})
    return AttemptContext(trial_id="t1", episode=ledger.episode("e1"), attempt=attempt, arm=a,
                          model="scripted/oracle", effort=effort, time_limit_s=1500,
                          transcript=tmp_path / "transcript")


def test_command_and_environment_are_filled_from_placeholders(tmp_path):
    agent = DeclaredAgent(load_agent_spec(write_agent(tmp_path)))
    agent.attach(ModelEndpoint(base_url="http://127.0.0.1:8790", token="mt-secret", trial_id="t1"))
    argv, env = agent.command("the brief", _ctx(tmp_path, effort="high"))
    assert argv[:4] == ["sh", "-c", 'exec "$@" </dev/null', "sh"]
    assert argv[4:8] == ["tool", "--task", "the brief", "--session-id"]
    assert argv[-2:] == ["--effort", "high"]
    assert "mt-secret" not in " ".join(argv)
    assert env == {"OPENAI_BASE_URL": "http://127.0.0.1:8790/v1", "OPENAI_API_KEY": "mt-secret"}
    argv, _ = agent.command("the brief", _ctx(tmp_path, effort="none"))
    assert "--effort" not in argv
    with pytest.raises(MarathonError, match="effort 'max'"):
        agent.command("the brief", _ctx(tmp_path, effort="max"))
    with pytest.raises(MarathonError, match="--effort: agent tool"):
        agent.check_effort("max")
    # claude-code's preset keeps what the adapter did
    claude = get_agent("claude-code")
    claude.attach(ModelEndpoint(base_url="http://127.0.0.1:8790", token="mt-x", trial_id="t1"))
    argv, env = claude.command("brief", _ctx(tmp_path, effort="max"))
    assert argv[4:7] == ["claude", "-p", "brief"] and "--dangerously-skip-permissions" in argv
    assert argv[argv.index("--effort") + 1] == "max" and "--session-id" in argv
    assert env["API_TIMEOUT_MS"] == "600000" and env["CLAUDE_CODE_SUBAGENT_MODEL"] == "scripted/oracle"


def test_sessions_start_with_a_chosen_id_and_continue_with_the_reported_one(tmp_path):
    agent = get_agent("qwen-code")
    agent.attach(ModelEndpoint(base_url="http://127.0.0.1:8790", token="mt-x", trial_id="t1"))
    ctx = _ctx(tmp_path, continuity=True)
    argv, _ = agent.command("brief", ctx)
    chosen = argv[argv.index("--session-id") + 1]
    assert chosen == agent.command("brief", ctx)[0][argv.index("--session-id") + 1]  # uuid5(trial)
    ctx.transcript.write_text(json.dumps({"type": "system", "subtype": "init", "session_id": chosen}) + "\n"
                              + json.dumps({"type": "result", "is_error": False, "session_id": chosen,
                                            "usage": {"input_tokens": 10, "output_tokens": 3}}) + "\n")
    run = agent.interpret(0, False, ctx)
    assert run.outcome == AttemptOutcome.ok and agent.session_id == chosen
    argv, _ = agent.command("repair", _ctx(tmp_path, attempt=2, continuity=True))
    assert argv[argv.index("--resume") + 1] == chosen and "--session-id" not in argv
    # without continuity every attempt starts a fresh session
    fresh = get_agent("qwen-code")
    fresh.attach(ModelEndpoint(base_url="http://x", token="mt-x", trial_id="t1"))
    a, b = (fresh.command("b", _ctx(tmp_path))[0] for _ in range(2))
    assert a[a.index("--session-id") + 1] != b[b.index("--session-id") + 1]


def test_qwen_usage_after_a_resume_is_the_difference_of_the_running_totals(tmp_path):
    report = get_report("qwen-code")
    transcript = tmp_path / "t"

    def run(total_in: int, total_out: int):
        transcript.write_text(
            json.dumps({"type": "system", "subtype": "init", "session_id": "s1"}) + "\n"
            + json.dumps({"type": "result", "is_error": False, "usage": {
                "input_tokens": total_in, "output_tokens": total_out, "cache_read_input_tokens": 0}}) + "\n")
        return report.read(RunFacts(agent="qwen-code", transcript=transcript, exit_code=0,
                                    timed_out=False, time_limit_s=60, model="m"))

    first = run(100, 10)
    second = run(250, 25)  # the session's running total after --resume
    assert (first.usage[0].input_tokens, first.usage[0].output_tokens) == (100, 10)
    assert (second.usage[0].input_tokens, second.usage[0].output_tokens) == (150, 15)


def test_mini_swe_agent_report_outcome_and_per_call_usage(tmp_path):
    report = get_report("mini-swe-agent")
    traj = tmp_path / "report"
    call = {"usage": {"prompt_tokens": 120, "completion_tokens": 7,
                      "prompt_tokens_details": {"cached_tokens": 20}}}
    traj.write_text(json.dumps({"info": {"exit_status": "Submitted"}, "messages": [
        {"role": "system", "content": "x"},
        {"role": "assistant", "content": "", "extra": {"response": call}},
        {"role": "assistant", "content": "", "extra": {"response": call}}]}))
    facts = dict(agent="mini-swe-agent", transcript=tmp_path / "t", report=traj, exit_code=0,
                 timed_out=False, time_limit_s=60, model="m")
    ok = report.read(RunFacts(**facts))
    assert ok.outcome == AttemptOutcome.ok
    assert [(u.input_tokens, u.cache_read_tokens, u.output_tokens) for u in ok.usage] == [(100, 20, 7)] * 2
    traj.write_text(json.dumps({"info": {"exit_status": "RuntimeError", "submission": "boom"}}))
    bad = report.read(RunFacts(**{**facts, "exit_code": 1}))
    assert bad.outcome == AttemptOutcome.agent_error and "RuntimeError" in bad.error
    missing = report.read(RunFacts(**{**facts, "report": None, "exit_code": 1}))
    assert missing.outcome == AttemptOutcome.agent_error and "\n" not in missing.error


def test_unknown_agents_are_one_line(tmp_path):
    with pytest.raises(MarathonError, match="unknown agent 'no-such'"):
        get_agent("no-such")
    copy = tmp_path / "agents"
    shutil.copytree(AGENTS_DIR, copy)
    assert load_agent_spec(copy / "codex.toml").name == "codex"
