"""Agents registered only by the tests. Importing this module registers them."""

from __future__ import annotations

from benchmark.agents import register
from benchmark.agents.base import Agent, AttemptContext, AttemptOutcome, AttemptResult
from benchmark.agents.proxied import CLIRun, ProxiedCLIAgent
from benchmark.agents.reports import last_text_line, read_events
from benchmark.records import UsageCall
from benchmark.sandbox import Sandbox


@register
class SleepAgent(Agent):
    """Runs ``sleep 30`` in the container: past any short time limit, it must be killed.

    Before sleeping it writes ``slept.txt``, so the workspace shows the attempt happened.
    """

    name = "test-sleep"

    def run(self, sandbox: Sandbox, prompt: str, ctx: AttemptContext) -> AttemptResult:
        with open(ctx.transcript, "wb") as out:
            res = sandbox.exec(["sh", "-c", "echo started; echo x > slept.txt; sleep 30 & sleep 30"],
                               timeout_s=ctx.time_limit_s, output_file=out)
        if res.timed_out:
            return AttemptResult(outcome=AttemptOutcome.timeout, duration_s=res.duration_s,
                                 transcript=ctx.transcript,
                                 error=f"killed after the {ctx.time_limit_s:g} s time limit")
        return AttemptResult(outcome=AttemptOutcome.ok, duration_s=res.duration_s,
                             transcript=ctx.transcript, exit_code=res.exit_code)


@register
class CrashAgent(Agent):
    """Raises instead of returning a result: a harness-level failure of its trial."""

    name = "test-crash"

    def run(self, sandbox: Sandbox, prompt: str, ctx: AttemptContext) -> AttemptResult:
        raise RuntimeError("agent crashed on purpose")


# -- deterministic agents for the governed controller, on the tiny marathon ---------------------

GREET_ONLY = (
    'import sys\n'
    'if len(sys.argv) == 3 and sys.argv[1] == "greet":\n'
    '    print(f"hello {sys.argv[2]}")\n'
    '    sys.exit(0)\n'
    'sys.exit(2)\n'
)
GREET_AND_COUNT = (
    'import sys\n'
    'if len(sys.argv) == 3 and sys.argv[1] == "greet":\n'
    '    print(f"hello {sys.argv[2]}")\n'
    '    sys.exit(0)\n'
    'if len(sys.argv) >= 2 and sys.argv[1] == "count":\n'
    '    print(len(sys.argv) - 2)\n'
    '    sys.exit(0)\n'
    'sys.exit(2)\n'
)
# E2's count works, but greet (green at the end of e1) is broken: a regression of gate greet.
COUNT_BREAKS_GREET = GREET_AND_COUNT.replace('print(f"hello {sys.argv[2]}")', 'print(f"hi {sys.argv[2]}")')


class _TinyScriptedAgent(Agent):
    """Writes ``tiny/__main__.py`` per episode and prompt; first logs the workspace's HEAD and
    the files in it to the transcript (``head=<commit>`` and ``files=<names>`` lines)."""

    def choose(self, prompt: str, ctx: AttemptContext) -> tuple[str, dict[str, bytes]]:
        raise NotImplementedError

    def run(self, sandbox: Sandbox, prompt: str, ctx: AttemptContext) -> AttemptResult:
        state = sandbox.exec(["sh", "-c", "echo head=$(git rev-parse HEAD); echo files=$(ls | sort | tr '\\n' ' ')"],
                             timeout_s=60).output
        source, extra = self.choose(prompt, ctx)
        sandbox.put_files({"tiny/__main__.py": source.encode(), **extra})
        ctx.transcript.write_text(state + f"wrote: {self.name} {ctx.episode.id} attempt {ctx.attempt}\n")
        return AttemptResult(outcome=AttemptOutcome.ok, duration_s=0.1, transcript=ctx.transcript)


@register
class RegressAgent(_TinyScriptedAgent):
    """Tiny: e1 right; e2 breaks greet while adding count, and repairs it once a prompt names
    gate ``greet``."""

    name = "test-regress"

    def choose(self, prompt, ctx):
        if ctx.episode.id == "e1":
            return GREET_ONLY, {}
        return (GREET_AND_COUNT if "gate `greet`" in prompt else COUNT_BREAKS_GREET), {}


@register
class StubbornAgent(_TinyScriptedAgent):
    """Tiny: e1 right; e2 breaks greet (and leaves ``junk-<attempt>.txt``) whatever a repair
    prompt says; only after a rollback (the prompt says the workspace was rolled back) does it
    write the right e2."""

    name = "test-stubborn"

    def choose(self, prompt, ctx):
        if ctx.episode.id == "e1":
            return GREET_ONLY, {}
        if "was rolled back" in prompt:
            return GREET_AND_COUNT, {}
        return COUNT_BREAKS_GREET, {f"junk-{ctx.attempt}.txt": b"junk\n"}


@register
class MeteredAgent(Agent):
    """Changes nothing and reports 1000 tokens (600 in, 400 out) and 0.01 USD per attempt."""

    name = "test-metered"

    def run(self, sandbox: Sandbox, prompt: str, ctx: AttemptContext) -> AttemptResult:
        ctx.transcript.write_text("metered: no change\n")
        usage = [UsageCall(source="agent", api_model="test/metered", input_tokens=600,
                           output_tokens=400, cost_usd=0.01)]
        return AttemptResult(outcome=AttemptOutcome.ok, duration_s=0.01, transcript=ctx.transcript,
                             usage=usage)


@register
class SparseAgent(Agent):
    """Leaves a sparse file of 2 GiB apparent size (no disk used in the container) in
    ``/workspace``: a workspace over the archive limits. The file is git-ignored, so the
    harness's commit does not spend minutes hashing 2 GiB of zeros (the archive holds ignored
    files too)."""

    name = "test-sparse"

    def run(self, sandbox: Sandbox, prompt: str, ctx: AttemptContext) -> AttemptResult:
        res = sandbox.exec(["sh", "-c", "echo big.bin >> .gitignore && truncate -s 2G big.bin"],
                           timeout_s=60)
        ctx.transcript.write_text(f"truncate exit {res.exit_code}\n")
        return AttemptResult(outcome=AttemptOutcome.ok, duration_s=res.duration_s,
                             transcript=ctx.transcript, exit_code=res.exit_code)


# -- a minimal Chat Completions agent (a real one, in the container) ------------------------------

# The agent's loop, run in the container: streamed Chat Completions requests with
# include_usage (as Qwen Code sends them) and one `bash` tool (as mini-swe-agent offers it); each
# tool call is run with bash and its output sent back; one JSON line per event on stdout.
CHAT_LOOP = r'''
import json, os, subprocess, sys, urllib.request
base, model, key = os.environ["CHAT_BASE_URL"], os.environ["CHAT_MODEL"], os.environ["CHAT_API_KEY"]
tools = [{"type": "function", "function": {"name": "bash", "parameters": {
    "type": "object", "properties": {"command": {"type": "string"}}}}}]
messages = [{"role": "user", "content": sys.argv[1]}]
for turn in range(8):
    body = {"model": model, "messages": messages, "tools": tools, "stream": True,
            "stream_options": {"include_usage": True}}
    req = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + key,
                                          "Content-Type": "application/json"})
    text, calls, usage = "", {}, None
    with urllib.request.urlopen(req, timeout=60) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                text += delta.get("content") or ""
                for c in delta.get("tool_calls") or []:
                    slot = calls.setdefault(c["index"], {"id": c.get("id"), "name": "", "arguments": ""})
                    slot["name"] += (c.get("function") or {}).get("name") or ""
                    slot["arguments"] += (c.get("function") or {}).get("arguments") or ""
    print(json.dumps({"type": "usage", "usage": usage}), flush=True)
    message = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [{"id": c["id"], "type": "function", "function": {
            "name": c["name"], "arguments": c["arguments"]}} for c in calls.values()]
    messages.append(message)
    if not calls:
        print(json.dumps({"type": "done", "text": text}), flush=True)
        break
    for c in calls.values():
        out = subprocess.run(["bash", "-lc", json.loads(c["arguments"])["command"]],
                             capture_output=True, text=True)
        messages.append({"role": "tool", "tool_call_id": c["id"], "content": out.stdout + out.stderr})
'''


@register
class ChatAgent(ProxiedCLIAgent):
    """A minimal coding agent speaking OpenAI Chat Completions through the metering proxy: the
    loop above, run in the container as uid 1000. Reports the usage of every response."""

    name = "test-chat"
    protocol = "openai-chat"
    reads_instructions = False

    def command(self, prompt: str, ctx: AttemptContext) -> tuple[list[str], dict[str, str]]:
        assert self.endpoint is not None
        return ["python3", "-c", CHAT_LOOP, prompt], {
            "CHAT_BASE_URL": self.endpoint.base_url, "CHAT_API_KEY": self.endpoint.token.get_secret_value(),
            "CHAT_MODEL": self.endpoint.model or ctx.model}

    def interpret(self, exit_code: int | None, timed_out: bool, ctx: AttemptContext) -> CLIRun:
        events = read_events(ctx.transcript)
        usage = [e["usage"] for e in events if e.get("type") == "usage" and e.get("usage")]
        rows = [UsageCall(source="agent", api_model=ctx.model,
                          input_tokens=sum(u["prompt_tokens"] for u in usage),
                          output_tokens=sum(u["completion_tokens"] for u in usage))] if usage else []
        if timed_out:
            return CLIRun(outcome=AttemptOutcome.timeout, usage=rows, error="time limit")
        if exit_code != 0 or not any(e.get("type") == "done" for e in events):
            return CLIRun(outcome=AttemptOutcome.agent_error, usage=rows,
                          error=f"exit {exit_code}: {last_text_line(ctx.transcript)}")
        return CLIRun(outcome=AttemptOutcome.ok, usage=rows)


# -- an agent that uses marathon-check (no model: the channel is opened for the self-checks) -----

@register
class SelfCheckAgent(Agent):
    """Tiny, an arm with ``self_checks = 2``: in e1 it self-checks the starter (red), tries a
    forged token and no token, writes the greeting, self-checks (green), then once more (past
    the limit); in e2 it self-checks before writing anything (count red, greet green), then
    writes the counter. Every ``marathon-check`` output and exit status goes to the transcript
    (``exit=N`` lines)."""

    name = "test-self-check"

    def _check(self, sandbox: Sandbox, ctx: AttemptContext, env: dict[str, str] | None = None,
               out=None) -> None:
        res = sandbox.exec(["sh", "-c", "marathon-check; echo exit=$?"], timeout_s=600,
                           environment=ctx.check_env if env is None else env)
        out.write(res.output)

    def run(self, sandbox: Sandbox, prompt: str, ctx: AttemptContext) -> AttemptResult:
        with open(ctx.transcript, "w") as out:
            if ctx.episode.id == "e1":
                self._check(sandbox, ctx, out=out)
                self._check(sandbox, ctx, {"MARATHON_TOKEN": "mt-" + "0" * 32}, out=out)
                self._check(sandbox, ctx, {}, out=out)
                sandbox.put_files({"tiny/__main__.py": GREET_ONLY.encode()})
                self._check(sandbox, ctx, out=out)
                self._check(sandbox, ctx, out=out)
            else:
                self._check(sandbox, ctx, out=out)
                sandbox.put_files({"tiny/__main__.py": GREET_AND_COUNT.encode()})
        return AttemptResult(outcome=AttemptOutcome.ok, duration_s=0.1, transcript=ctx.transcript)
