"""The agents' own reports: named parsers that read how a run ended, the session it used and
the usage it reports, from its transcript (stdout and stderr) or its report file.

A declared agent (``agents/NAME.toml``) names one with ``usage``:

- ``claude-code``: Claude Code's ``--output-format stream-json``. Outcome from the final
  ``result`` event (``ok`` when the process exited 0 and ``is_error`` is false; the ``subtype``
  can say ``success`` on an API error, so it is not used). Usage: one row per model of the run's
  per-model usage (every call, side calls included): ``model_usage_since_last_result`` when
  present, else ``modelUsage`` minus the session's previous running total (after ``--resume``
  ``modelUsage`` is the whole session's, observed with 2.1.330); ``costUSD`` unless the CLI's
  cost basis is ``unknown``. Every ``result`` event of the transcript counts (a wrapper may run
  the CLI several times). Session: the ``session_id`` of the ``result`` / ``system init``
  events.
- ``codex``: ``codex exec --json``. ``ok`` when exited 0 with a ``turn.completed`` event;
  ``turn.failed`` / ``error`` events give the error. Usage: the last ``turn.completed.usage``,
  minus the thread's previous total after a resume (it is the thread's running total); input =
  ``input_tokens - cached_input_tokens``, cache read = ``cached_input_tokens``, cache write =
  ``cache_write_input_tokens``, output = ``output_tokens``, reasoning =
  ``reasoning_output_tokens``; no cost. Session: the ``thread.started`` id.
- ``qwen-code``: Qwen Code's ``-o stream-json``. ``ok`` when exited 0 and the final ``result``
  event has ``is_error`` false. Usage: ``result.usage`` (``input_tokens`` taken to include the
  cache reads, as OpenAI's ``prompt_tokens`` does: input = ``input_tokens -
  cache_read_input_tokens``), minus the session's previous total after ``--resume`` (it is the
  session's running total); no cost. Session: the ``system init`` ``session_id``.
- ``mini-swe-agent``: the trajectory JSON it writes with ``-o {report_file}``. ``ok`` when
  ``info.exit_status`` is ``Submitted`` and it exited 0. Usage: one row per model call, from each
  assistant message's ``extra.response.usage`` (OpenAI figures: input = ``prompt_tokens -
  cached_tokens``, cache read = ``cached_tokens``, output = ``completion_tokens``, reasoning =
  ``reasoning_tokens``); no cost (litellm's is not the proxy's price table).
- ``none``: ``ok`` when exited 0; no agent figures (the proxy's rows are the only usage, and the
  attempt's reconciliation is ``no_agent_usage``).

A run killed at its time limit is a ``timeout`` whatever the report says; the usage seen so far
is kept.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from benchmark.agents.base import AttemptOutcome
from benchmark.errors import MarathonError
from benchmark.proxy import TOKEN_KINDS
from benchmark.records import UsageCall


class RunFacts(BaseModel):
    """What the harness knows about one finished run of an agent, for its parser."""

    agent: str
    """Agent name (for error lines)."""
    transcript: Path
    """Host path of the run's combined stdout and stderr."""
    report: Path | None = None
    """Host path of the agent's report file (``{report_file}``), if it used one and wrote it."""
    exit_code: int | None
    """Exit status; ``None`` when killed."""
    timed_out: bool
    """Whether the run was killed at the time limit."""
    time_limit_s: float
    """The attempt's limit in seconds."""
    model: str
    """The trial's model (the ``api_model`` of rows that name none)."""


class ReportResult(BaseModel):
    """What a parser made of one run."""

    outcome: AttemptOutcome
    """``ok``, ``agent_error`` or ``timeout``."""
    error: str = ""
    """One-line reason when not ``ok``."""
    usage: list[UsageCall] = []
    """The agent's own usage rows (``source="agent"``)."""
    session_id: str | None = None
    """The session the run used, as the agent reported it; ``None`` when it reported none."""
    started: bool = False
    """Whether the run got far enough to have a session to continue."""


def read_events(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a transcript, one per line; other lines (stderr text) are skipped."""
    events = []
    if not path.is_file():
        return events
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            events.append(doc)
    return events


def last_text_line(path: Path) -> str:
    """The last non-JSON, non-empty line of a transcript (usually the CLI's error), or ``""``."""
    if not path.is_file():
        return ""
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    text = [ln for ln in lines if ln and not ln.startswith("{")]
    return text[-1][:300] if text else ""


def _int(doc: Any, *keys: str) -> int:
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    try:
        return max(0, int(doc or 0))
    except (TypeError, ValueError):
        return 0


def _first_line(text: Any, default: str = "error") -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0][:300] if lines and lines[0].strip() else default


class UsageReport(ABC):
    """A parser of one agent's reports. One instance serves one trial and keeps the running
    totals of its sessions (for agents whose resumed runs report the session's total)."""

    name: ClassVar[str]
    """The ``usage`` name in agent TOML files."""
    kinds: ClassVar[tuple[str, ...]] = TOKEN_KINDS
    """Token kinds the agent reports, compared with the proxy's by the reconciliation."""

    def __init__(self) -> None:
        self.totals: dict[str, dict[str, Any]] = {}
        """Session id -> its running usage total as last reported."""

    @abstractmethod
    def read(self, run: RunFacts) -> ReportResult:
        """Outcome, usage and session of a finished run (called once per run)."""

    @staticmethod
    def timeout(run: RunFacts, usage: list[UsageCall], session: str | None = None,
                started: bool = False) -> ReportResult:
        """The result of a run killed at its limit."""
        return ReportResult(outcome=AttemptOutcome.timeout, usage=usage, session_id=session,
                            started=started,
                            error=f"killed at the time limit of {run.time_limit_s:g} s")


class ClaudeCodeReport(UsageReport):
    """``claude -p --output-format stream-json`` (see the module docstring)."""

    name = "claude-code"
    kinds = ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens")

    def read(self, run: RunFacts) -> ReportResult:
        events = read_events(run.transcript)
        results = [e for e in events if e.get("type") == "result"]
        init = next((e for e in events if e.get("type") == "system" and e.get("subtype") == "init"), None)
        usage: list[UsageCall] = []
        for result in results:
            usage += self._usage(result, run.model)
        last = results[-1] if results else None
        session = (last or init or {}).get("session_id")
        started = last is not None or init is not None
        if run.timed_out:
            return self.timeout(run, usage, session, started)
        if last is None:
            why = last_text_line(run.transcript) or "no result event"
            return ReportResult(outcome=AttemptOutcome.agent_error, session_id=session, started=started,
                                error=f"{run.agent} exited {run.exit_code}: {why}")
        if last.get("is_error") or run.exit_code != 0:
            status = last.get("api_error_status")
            line = _first_line(last.get("result") or last.get("subtype"))
            return ReportResult(
                outcome=AttemptOutcome.agent_error, usage=usage, session_id=session, started=True,
                error=f"claude reported an error{f' (API status {status})' if status else ''}: {line}")
        return ReportResult(outcome=AttemptOutcome.ok, usage=usage, session_id=session, started=True)

    def _usage(self, result: dict, model: str) -> list[UsageCall]:
        """Rows of one ``result`` event; updates the session's running total."""
        session = str(result.get("session_id") or "")
        before = self.totals.get(session, {})
        running = result.get("modelUsage")
        if isinstance(running, dict) and session:
            self.totals[session] = running
        per_model = result.get("model_usage_since_last_result")
        if isinstance(per_model, dict) and per_model:
            before = {}
        else:
            per_model = running
        rows = []
        if isinstance(per_model, dict) and per_model:
            for name, u in sorted(per_model.items()):
                if not isinstance(u, dict):
                    continue
                prev = before.get(name) or {}

                def fig(key: str) -> int:
                    return max(0, _int(u, key) - _int(prev, key))

                cost = u.get("costUSD")
                if cost is not None and prev.get("costUSD") is not None:
                    cost = max(0.0, float(cost) - float(prev["costUSD"]))
                rows.append(UsageCall(
                    source="agent", api_model=name, input_tokens=fig("inputTokens"),
                    output_tokens=fig("outputTokens"),
                    cache_write_tokens=fig("cacheCreationInputTokens"),
                    cache_read_tokens=fig("cacheReadInputTokens"),
                    cost_usd=None if u.get("costBasis") == "unknown" or cost is None else float(cost)))
            return rows
        u = result.get("usage")
        if isinstance(u, dict):
            rows.append(UsageCall(
                source="agent", api_model=model, input_tokens=_int(u, "input_tokens"),
                output_tokens=_int(u, "output_tokens"),
                cache_write_tokens=_int(u, "cache_creation_input_tokens"),
                cache_read_tokens=_int(u, "cache_read_input_tokens")))
        return rows


_CODEX_KEYS = ("input_tokens", "cached_input_tokens", "cache_write_input_tokens", "output_tokens",
               "reasoning_output_tokens")


class CodexReport(UsageReport):
    """``codex exec --json`` (see the module docstring)."""

    name = "codex"

    def read(self, run: RunFacts) -> ReportResult:
        events = read_events(run.transcript)
        thread = next((e.get("thread_id") for e in events if e.get("type") == "thread.started"), None)
        turn = next((e for e in reversed(events) if e.get("type") == "turn.completed"), None)
        failure = next((e for e in reversed(events) if e.get("type") in ("turn.failed", "error")), None)
        usage: list[UsageCall] = []
        if turn is not None and isinstance(turn.get("usage"), dict):
            now = {k: _int(turn["usage"], k) for k in _CODEX_KEYS}
            before = self.totals.get(thread or "", {})
            d = {k: max(0, now[k] - int(before.get(k, 0))) for k in _CODEX_KEYS}
            usage.append(UsageCall(
                source="agent", api_model=run.model,
                input_tokens=max(0, d["input_tokens"] - d["cached_input_tokens"]),
                output_tokens=d["output_tokens"], cache_write_tokens=d["cache_write_input_tokens"],
                cache_read_tokens=d["cached_input_tokens"], reasoning_tokens=d["reasoning_output_tokens"]))
            if thread:
                self.totals[thread] = now
        started = thread is not None
        if run.timed_out:
            return self.timeout(run, usage, thread, started)
        if failure is not None or run.exit_code != 0 or turn is None:
            if failure is not None:
                detail = failure.get("message") or (failure.get("error") or {}).get("message") \
                    or json.dumps(failure)[:200]
            else:
                detail = last_text_line(run.transcript) or "no turn.completed event"
            return ReportResult(outcome=AttemptOutcome.agent_error, usage=usage, session_id=thread,
                                started=started,
                                error=f"codex exited {run.exit_code}: {_first_line(detail)}")
        return ReportResult(outcome=AttemptOutcome.ok, usage=usage, session_id=thread, started=started)


class QwenCodeReport(UsageReport):
    """``qwen -o stream-json`` (see the module docstring)."""

    name = "qwen-code"
    kinds = ("input_tokens", "output_tokens", "cache_read_tokens")

    def read(self, run: RunFacts) -> ReportResult:
        events = read_events(run.transcript)
        init = next((e for e in events if e.get("type") == "system" and e.get("subtype") == "init"), None)
        result = next((e for e in reversed(events) if e.get("type") == "result"), None)
        session = (init or result or {}).get("session_id")
        usage: list[UsageCall] = []
        if result is not None and isinstance(result.get("usage"), dict):
            u = result["usage"]
            now = {"input": _int(u, "input_tokens"), "output": _int(u, "output_tokens"),
                   "cached": _int(u, "cache_read_input_tokens")}
            before = self.totals.get(session or "", {})
            d = {k: max(0, v - int(before.get(k, 0))) for k, v in now.items()}
            usage.append(UsageCall(source="agent", api_model=run.model,
                                   input_tokens=max(0, d["input"] - d["cached"]),
                                   output_tokens=d["output"], cache_read_tokens=d["cached"]))
            if session:
                self.totals[session] = now
        started = init is not None
        if run.timed_out:
            return self.timeout(run, usage, session, started)
        if result is None:
            why = last_text_line(run.transcript) or "no result event"
            return ReportResult(outcome=AttemptOutcome.agent_error, usage=usage, session_id=session,
                                started=started, error=f"{run.agent} exited {run.exit_code}: {why}")
        if result.get("is_error") or run.exit_code != 0:
            err = result.get("error")
            detail = (err.get("message") if isinstance(err, dict) else err) or result.get("result") \
                or result.get("subtype")
            return ReportResult(outcome=AttemptOutcome.agent_error, usage=usage, session_id=session,
                                started=started,
                                error=f"qwen exited {run.exit_code}: {_first_line(detail)}")
        return ReportResult(outcome=AttemptOutcome.ok, usage=usage, session_id=session, started=started)


class MiniSweAgentReport(UsageReport):
    """mini-swe-agent's trajectory file (see the module docstring)."""

    name = "mini-swe-agent"
    kinds = ("input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens")

    def read(self, run: RunFacts) -> ReportResult:
        doc: dict = {}
        if run.report is not None and run.report.is_file():
            try:
                loaded = json.loads(run.report.read_text(encoding="utf-8", errors="replace"))
                doc = loaded if isinstance(loaded, dict) else {}
            except ValueError:
                doc = {}
        usage = []
        for msg in doc.get("messages") or []:
            if not isinstance(msg, dict) or msg.get("role") != "assistant":
                continue
            response = (msg.get("extra") or {}).get("response") or {}
            u = response.get("usage") if isinstance(response, dict) else None
            if not isinstance(u, dict):
                continue
            cached = _int(u, "prompt_tokens_details", "cached_tokens")
            usage.append(UsageCall(
                source="agent", api_model=str(response.get("model") or run.model),
                input_tokens=max(0, _int(u, "prompt_tokens") - cached),
                output_tokens=_int(u, "completion_tokens"), cache_read_tokens=cached,
                reasoning_tokens=_int(u, "completion_tokens_details", "reasoning_tokens")))
        if run.timed_out:
            return self.timeout(run, usage)
        info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
        status = info.get("exit_status")
        if status == "Submitted" and run.exit_code == 0:
            return ReportResult(outcome=AttemptOutcome.ok, usage=usage)
        if not doc:
            why = last_text_line(run.transcript) or "no trajectory written"
            return ReportResult(outcome=AttemptOutcome.agent_error, usage=usage,
                                error=f"{run.agent} exited {run.exit_code}: {why}")
        return ReportResult(outcome=AttemptOutcome.agent_error, usage=usage,
                            error=f"{run.agent} exited {run.exit_code}: exit status {status}: "
                                  f"{_first_line(info.get('submission') or last_text_line(run.transcript), '')}")


class NoReport(UsageReport):
    """No report is read: the exit status decides, the proxy's rows are the only usage."""

    name = "none"

    def read(self, run: RunFacts) -> ReportResult:
        if run.timed_out:
            return self.timeout(run, [])
        if run.exit_code != 0:
            why = last_text_line(run.transcript) or "no output"
            return ReportResult(outcome=AttemptOutcome.agent_error,
                                error=f"{run.agent} exited {run.exit_code}: {why}")
        return ReportResult(outcome=AttemptOutcome.ok)


#: Parsers by name.
REPORTS: dict[str, type[UsageReport]] = {c.name: c for c in (
    ClaudeCodeReport, CodexReport, QwenCodeReport, MiniSweAgentReport, NoReport)}


def get_report(name: str) -> UsageReport:
    """A new parser named ``name``.

    Raises:
        MarathonError: no such parser.
    """
    if name not in REPORTS:
        raise MarathonError(f"unknown usage report format {name!r} (known: {', '.join(sorted(REPORTS))})")
    return REPORTS[name]()
