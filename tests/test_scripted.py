"""The scripted model (a simulation): its two streaming protocols, the usage rule, the policies,
and the trap variants (checked with the real scorer)."""

from __future__ import annotations

import base64
import http.client
import io
import json
import math
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from benchmark.marathon import load_marathon
from benchmark.scripted import ScriptedConfig, ScriptedServer, Turn, decide
from benchmark.scripted.server import shell_call

LEDGER = load_marathon("ledger")
BASH = [{"name": "Bash", "description": "run a command", "input_schema": {"type": "object"}}]
EXEC = [{"type": "function", "name": "exec_command",
         "parameters": {"type": "object", "properties": {"cmd": {"type": "string"},
                                                         "workdir": {"type": "string"}}}},
        {"type": "function", "name": "write_stdin", "parameters": {"properties": {"chars": {"type": "string"}}}}]


@pytest.fixture(scope="module")
def server():
    with ScriptedServer(ScriptedConfig()) as s:
        yield s


def call(server, path: str, doc: dict) -> tuple[int, bytes, bytes]:
    """POST ``doc``; return (status, body, the exact request bytes)."""
    body = json.dumps(doc).encode()
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    conn.request("POST", path, body=body, headers={"content-type": "application/json", "x-api-key": "k"})
    resp = conn.getresponse()
    return resp.status, resp.read(), body


def events(raw: bytes) -> list[dict]:
    return [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]


def user(text: str) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def unpack(command: str) -> dict[str, bytes]:
    """The files a policy's command writes (decoded from its embedded archive)."""
    b64 = re.search(r"echo '([A-Za-z0-9+/=]+)' \| base64 -d", command).group(1)
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(b64)), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def test_anthropic_stream_runs_bash_with_the_reference_and_follows_the_usage_rule(server):
    status, raw, body = call(server, "/v1/messages?beta=true", {
        "model": "scripted/oracle", "stream": True, "max_tokens": 1000, "tools": BASH,
        "messages": [user("<system-reminder>context</system-reminder>"), user(LEDGER.brief_text("e1"))]})
    assert status == 200
    evs = events(raw)
    assert [e["type"] for e in evs] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert evs[0]["message"]["usage"] == {"input_tokens": math.ceil(len(body) / 4), "output_tokens": 0,
                                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    assert evs[4]["content_block"]["type"] == "tool_use" and evs[4]["content_block"]["name"] == "Bash"
    assert evs[5]["delta"]["type"] == "input_json_delta"
    tool_input = json.loads(evs[5]["delta"]["partial_json"])
    text = evs[2]["delta"]["text"]
    assert evs[7]["delta"]["stop_reason"] == "tool_use"
    assert evs[7]["usage"]["output_tokens"] == math.ceil(len((text + json.dumps(tool_input)).encode()) / 4)
    assert unpack(tool_input["command"]) == tree(LEDGER.episode("e1").reference)
    # the same request gets the same bytes back
    assert call(server, "/v1/messages?beta=true", json.loads(body))[1] == raw


def test_anthropic_turn_ends_with_text_after_the_tool_result(server):
    messages = [user(LEDGER.brief_text("e3")),
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
                                             {"type": "text", "text": "<system-reminder>x</system-reminder>"}]}]
    status, raw, _ = call(server, "/v1/messages", {"model": "scripted/oracle", "stream": True,
                                                   "tools": BASH, "messages": messages})
    evs = events(raw)
    assert [e["content_block"]["type"] for e in evs if e["type"] == "content_block_start"] == ["text"]
    assert evs[-2]["delta"]["stop_reason"] == "end_turn" and "e3" in evs[2]["delta"]["text"]
    # non-streamed: one JSON message with the same content
    status, raw, _ = call(server, "/v1/messages", {"model": "scripted/oracle", "tools": BASH, "messages": messages})
    doc = json.loads(raw)
    assert status == 200 and doc["stop_reason"] == "end_turn" and doc["content"][0]["type"] == "text"


def test_openai_stream_calls_the_offered_shell_tool_and_completes_with_usage(server):
    doc = {"model": "scripted/oracle", "stream": True, "tools": EXEC, "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": LEDGER.brief_text("e2")}]}]}
    status, raw, body = call(server, "/v1/responses", doc)
    evs = events(raw)
    assert [e["type"] for e in evs] == ["response.created", "response.output_item.done",
                                        "response.output_item.done", "response.completed"]
    message, fcall = evs[1]["item"], evs[2]["item"]
    assert message["type"] == "message" and fcall["type"] == "function_call"
    assert fcall["name"] == "exec_command"
    args = json.loads(fcall["arguments"])
    assert args["workdir"] == "/workspace" and unpack(args["cmd"]) == tree(LEDGER.episode("e2").reference)
    usage = evs[3]["response"]["usage"]
    text = message["content"][0]["text"]
    assert usage["input_tokens"] == math.ceil(len(body) / 4)
    assert usage["output_tokens"] == math.ceil(len((text + fcall["arguments"]).encode()) / 4)
    assert usage["input_tokens_details"]["cached_tokens"] == usage["output_tokens_details"]["reasoning_tokens"] == 0
    # after the tool's output: a message only
    doc["input"] += [fcall, {"type": "function_call_output", "call_id": fcall["call_id"], "output": "ok"}]
    evs = events(call(server, "/v1/responses", doc)[1])
    assert [e["item"]["type"] for e in evs if e["type"] == "response.output_item.done"] == ["message"]


def test_shell_tool_shapes():
    assert shell_call(EXEC, "ls")[1:] == ("exec_command", json.dumps({"cmd": "ls", "workdir": "/workspace"}))
    array = [{"type": "function", "name": "shell", "parameters": {"properties": {"command": {"type": "array"}}}}]
    assert json.loads(shell_call(array, "ls")[2]) == {"command": ["bash", "-lc", "ls"]}
    assert shell_call([{"type": "local_shell"}], "ls")[0] == "local_shell_call"
    assert shell_call([{"type": "web_search"}], "ls") is None


def test_nop_answers_with_text_only_and_unknown_models_are_refused(server):
    status, raw, _ = call(server, "/v1/messages", {"model": "scripted/nop", "stream": True, "tools": BASH,
                                                   "messages": [user(LEDGER.brief_text("e1"))]})
    evs = events(raw)
    assert [e["content_block"]["type"] for e in evs if e["type"] == "content_block_start"] == ["text"]
    status, raw, _ = call(server, "/v1/messages", {"model": "claude-sonnet-4-5", "messages": []})
    assert status == 404 and b"not a scripted model" in raw
    status, raw, _ = call(server, "/v1/responses", {"model": "scripted/overloaded", "input": []})
    assert status == 529
    status, raw, _ = call(server, "/v1/messages", {"model": "scripted/overloaded", "messages": []})
    assert status == 529 and json.loads(raw)["error"]["type"] == "overloaded_error"


def test_episode_is_the_latest_brief_in_the_conversation(server):
    lib = server.library
    turns = [Turn("user", "text", "ctx\n" + LEDGER.brief_text("e1"), 0),
             Turn("assistant", "text", "done", 1),
             Turn("user", "text", LEDGER.brief_text("e2"), 2)]
    assert lib.episode_of(turns) == "e2"
    assert lib.episode_of(turns + [Turn("user", "text", "please go on", 3)]) == "e2"
    assert decide("oracle", [Turn("user", "text", "hello", 0)], lib).kind == "text"


def test_a_system_message_after_the_prompt_is_not_the_latest_prompt():
    """Claude Code 2.1 starts a new session with [user: reminders + prompt, system: environment]:
    the prompt must still be the latest user text (so a re-prompt naming a gate is seen)."""
    from benchmark.scripted.policy import latest_prompt
    from benchmark.scripted.server import anthropic_turns

    doc = {"messages": [user("<system-reminder>ctx</system-reminder>"), user("- gate `privacy`:")]}
    doc["messages"][1]["content"].insert(0, {"type": "text", "text": "<system-reminder>x</system-reminder>"})
    doc["messages"].append({"role": "system", "content": "# Environment\nPrimary working directory"})
    assert latest_prompt(anthropic_turns(doc)).endswith("- gate `privacy`:")


def test_forgetful_falls_into_the_trap_until_the_prompt_names_the_gate(server):
    lib = server.library
    e1 = decide("forgetful", [Turn("user", "text", LEDGER.brief_text("e1"), 0)], lib)
    assert unpack(e1.command) == tree(LEDGER.episode("e1").reference)  # no earlier gate in E1
    brief = [Turn("user", "text", LEDGER.brief_text("e2"), 0)]
    trapped = unpack(decide("forgetful", brief, lib).command)
    reference = tree(LEDGER.episode("e2").reference)
    changed = sorted(k for k in reference if trapped[k] != reference[k])
    assert changed == ["ledger/ingest.py"] and b"raw.decode" in trapped["ledger/ingest.py"]
    # a re-prompt that names the failing gate (the brief is earlier in the continued session)
    history = brief + [Turn("assistant", "tool_call", "{}", 1), Turn("user", "tool_result", "ok", 2),
                       Turn("assistant", "text", "done", 3)]
    prompt = "Failing gates and checks:\n- gate `privacy`:\n  - `test_state_and_output_hold_no_personal_data` (failed)\n"
    repair = decide("forgetful", history + [Turn("user", "text", prompt, 4)], lib)
    assert unpack(repair.command) == reference
    # a re-prompt naming another gate does not trigger the repair
    other = decide("forgetful", history + [Turn("user", "text", "- gate `replay`:\n", 4)], lib)
    assert unpack(other.command) == trapped


@pytest.mark.docker
@pytest.mark.parametrize("episode", ["e2", "e3", "e4"])
def test_trap_variant_fails_exactly_the_earlier_gates_it_declares(episode, images, tmp_path):
    from benchmark.scorer import score

    snap = tmp_path / "snap"
    shutil.copytree(LEDGER.episode(episode).reference, snap)
    subprocess.run(["patch", "-s", "-p1", "-d", str(snap), "-i",
                    str(LEDGER.root / "traps" / f"{episode}.patch")], check=True)
    checks = score(snap, LEDGER, episode, 3, image=images.scorer)
    failing = {c.gate for c in checks if c.outcome.value != "passed"}
    declared = set(ServerLibrary.traps()[episode].breaks)
    assert failing == declared
    active_from = {g.name: g.active_from for g in LEDGER.gate}
    assert all(LEDGER.episode_ids.index(active_from[g]) < LEDGER.episode_ids.index(episode) for g in failing)


class ServerLibrary:
    """The trap specs, without starting a server."""

    @staticmethod
    def traps():
        from benchmark.scripted.policy import Library

        return Library(LEDGER).traps
