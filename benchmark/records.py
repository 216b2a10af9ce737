"""Result records: pydantic row models and their Parquet tables, written crash-safely.

A run directory holds five tables in long (tidy) form, one Parquet file each, documented in
``docs/results-schema.md``:

- ``trials.parquet``: one row per planned trial;
- ``episodes.parquet``: one row per finished episode of a trial;
- ``attempts.parquet``: one row per attempt (the first and every recovery attempt);
- ``checks.parquet``: one row per trial x episode x attempt x gate x check;
- ``usage.parquet``: one row per model call or agent-reported usage figure (may be empty);
- ``self_checks.parquet``: one row per self-check an agent asked for with ``marathon-check``
  (arms with ``self_checks``; may be empty);
- ``steering.parquet``: one row per episode of a human-operator trial: the operator's
  steering time, prompts, shell commands and edited files (may be empty).

Every row carries the trial keys (:class:`TrialKeys`). Rows are written once per finished episode
as parts (``parts/<table>/<trial>.<episode>.parquet``, temp file + ``os.replace``; the
``episodes`` part last, so an episode counts as finished only once all its parts are on disk),
then the consolidated tables are rebuilt atomically from the parts of finished episodes. A part
is named by its trial and episode, so re-running an unfinished episode after a crash replaces
rather than duplicates; no finished episode's rows are ever lost.
"""

from __future__ import annotations

import threading
import types
import typing
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from benchmark.errors import MarathonError
from benchmark.storage import atomic_file

#: Version of the table layout; bumped on any incompatible change (see docs/results-schema.md).
SCHEMA_VERSION = 2

#: Names of the tables, in the order they are documented.
TABLES = ("trials", "episodes", "attempts", "checks", "usage", "self_checks", "steering")


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class TrialKeys(_Row):
    """The keys that identify a trial; every row of every table carries them."""

    run_id: str
    """Id of the run, e.g. ``20261121T105000Z-3f2a``."""
    trial_id: str
    """Id of the trial, unique in the run:
    ``[<marathon>.]<arm>.<agent>.<model>.<effort>.r<replicate>[.isolated]`` (the marathon named
    in runs of several marathons, the mode when isolated)."""
    marathon: str
    """Marathon name, e.g. ``ledger``."""
    arm: str
    """Arm name, e.g. ``feedback-retry``."""
    agent: str
    """Agent name, e.g. ``oracle``."""
    model: str
    """Model name as given to the agent; ``none`` for agents that use no model. Names starting
    with ``scripted/`` are simulated models."""
    effort: str
    """Reasoning effort given to the agent; ``none`` for agents that use no model."""
    mode: Literal["cumulative", "isolated"] = "cumulative"
    """``cumulative``: each episode starts from the workspace the agent left after the previous
    one; ``isolated``: each episode starts from the reference solution of the previous episode
    (the starter for the first), a counterfactual without accumulated debt. Trials of one seed
    in the two modes pair up (``cumulative`` in runs of older harness versions)."""
    replicate: int
    """Replicate number, 1-based."""
    seed: int
    """The trial's seed, derived from the run's seed base and the replicate (shared by every
    arm, agent and model of a replicate, for paired comparisons)."""


class TrialRow(TrialKeys):
    """One planned trial and how far it got."""

    status: Literal["complete", "incomplete"]
    """``complete`` when every episode finished, else ``incomplete`` (not started, interrupted
    or failed; a resume finishes it)."""
    episodes_planned: int
    """Number of episodes the run plays: the marathon's, or its first N when the run's
    ``episodes`` limit is set."""
    episodes_done: int
    """Number of finished episodes."""
    attempts: int
    """Attempts over the finished episodes."""
    recovery_attempts: int
    """Recovery attempts over the finished episodes: attempts beyond the first of their
    episode plus rollbacks (the same count for every arm)."""
    rollbacks: int
    """Rollbacks of the workspace to the last all-green commit, over the finished episodes
    (``governed`` arms only; 0 otherwise)."""
    self_checks: int | None = 0
    """Self-checks used over the finished episodes (see ``episodes.self_checks``)."""
    self_check_recoveries: int | None = 0
    """Red self-checks over the finished episodes (see ``episodes.self_check_recoveries``)."""
    final_score: float | None
    """Share of the gates active after the last episode that pass, after its final attempt;
    null until the trial is complete."""
    last_score: float | None
    """Score of the last finished episode; null before the first one finishes."""
    started_at: datetime | None
    """Start of the first finished episode (UTC)."""
    ended_at: datetime | None
    """End of the last finished episode (UTC)."""


class EpisodeRow(TrialKeys):
    """One finished episode of a trial."""

    episode: str
    """Episode id, e.g. ``e2``."""
    episode_index: int
    """Position of the episode in the marathon, 1-based."""
    attempts: int
    """Attempts made in the episode (at least 1)."""
    recovery_attempts: int
    """Recovery attempts: attempts beyond the first plus rollbacks (the same count for every
    arm)."""
    rollbacks: int
    """Rollbacks of the workspace to the trial's last all-green commit in this episode
    (``governed`` arms only; 0 otherwise)."""
    decision: Literal["accept", "stop_attempts", "stop_budget"]
    """How the episode ended: ``accept`` (all active gates green), ``stop_attempts`` (red, no
    attempt left) or ``stop_budget`` (red, a usage budget reached; ``governed`` only)."""
    score: float
    """Share of the gates active after this episode that pass after its final attempt (a gate
    passes when all its checks pass); 0..1."""
    gates_active: int
    """Number of gates active after this episode."""
    gates_passed: int
    """Number of those passing after the final attempt."""
    checks_total: int
    """Number of checks of the active gates."""
    checks_passed: int
    """Number of checks passing after the final attempt."""
    started_at: datetime
    """When the episode's first attempt began (UTC)."""
    ended_at: datetime
    """When the episode's records were complete (UTC)."""
    wall_s: float
    """Wall time of the episode in seconds, agent time included."""
    agent_s: float
    """Seconds spent in the agent's attempts."""
    scoring_s: float
    """Seconds spent committing, exporting and scoring snapshots."""
    overhead_s: float
    """Harness overhead in seconds: ``wall_s - agent_s`` (container work, scoring, records)."""
    commit: str | None
    """Workspace commit after the final attempt; null if the agent broke the repository."""
    self_checks: int | None = 0
    """Self-checks the agent used in the episode (``marathon-check`` scorings counted against
    the arm's ``self_checks`` limit; 0 for arms without self-checks)."""
    self_check_recoveries: int | None = 0
    """Red self-checks in the episode: each one the agent was shown failing gates inside an
    attempt and could go on working (in-episode recovery attempts)."""


class AttemptRow(TrialKeys):
    """One attempt of an episode: the agent run and the scoring of the workspace after it."""

    episode: str
    """Episode id."""
    attempt: int
    """Attempt number in the episode, 1-based."""
    recovery: bool
    """Whether this is a recovery attempt (number > 1)."""
    rolled_back: bool
    """Whether the workspace was rolled back to the trial's last all-green commit right before
    this attempt (``governed`` arms only)."""
    decision: Literal["accept", "repair", "rollback", "stop_attempts", "stop_budget"]
    """What the arm's controller decided after scoring this attempt: ``accept`` (all green),
    ``repair`` (re-prompt on the same workspace), ``rollback`` (reset to the last all-green
    commit, then retry), ``stop_attempts`` (red, no attempt left), ``stop_budget`` (red, a
    budget reached). Rules in docs/arms.md."""
    outcome: Literal["ok", "agent_error", "timeout"]
    """How the agent run ended: ``ok``, ``agent_error`` (non-zero exit or reported error) or
    ``timeout`` (killed at the time limit)."""
    exit_code: int | None
    """Exit status of the agent process; null when killed or not a process."""
    error: str
    """One-line reason for ``agent_error`` or ``timeout``; empty when ``ok``."""
    duration_s: float
    """Wall time of the agent run in seconds."""
    time_limit_s: float
    """The attempt's time limit in seconds."""
    score: float
    """Share of the active gates passing after this attempt; 0..1."""
    gates_active: int
    """Number of gates active after the episode."""
    gates_passed: int
    """Number of those passing after this attempt."""
    checks_total: int
    """Number of checks scored."""
    checks_passed: int
    """Number of checks passing."""
    scoring_s: float
    """Seconds spent committing, exporting and scoring this attempt's snapshot."""
    scorings: int = 1
    """Scorings of the snapshot it took to get a verdict on every check: 1 normally; more when
    a scoring had a check without a verdict (``error``: the scorer crashed, the host starved a
    product run) and was repeated. At most 3 (2 re-scores); past that the trial stops."""
    rescore_reasons: str = ""
    """Why each repeated scoring was not used (which checks lacked a verdict, and the first
    reason), separated by `` | ``; empty when ``scorings`` is 1."""
    commit: str | None
    """Workspace commit made after the attempt; null if the agent broke the repository."""
    artifacts: str
    """Directory of the attempt's artifacts, relative to the run directory
    (``artifacts/<trial>/<episode>/<attempt>``: prompt.md, transcript, workspace.diff,
    score.json)."""
    proxy_calls: int | None = None
    """Requests the metering proxy recorded for the attempt (any HTTP status, refused ones
    included); null for agents that use no model."""
    cost_usd: float | None = None
    """Cost in USD of the attempt's model calls, the sum of the proxy rows' costs (prices from
    ``pricing.toml``); null for agents that use no model or when a model has no price."""
    reconciliation: Literal["match", "mismatch", "no_agent_usage", "unmetered"] | None = None
    """Proxy vs agent usage, token kind by kind, summed over the attempt: ``match``,
    ``mismatch`` (see ``reconciliation_diff``), ``no_agent_usage`` (the agent reported none,
    e.g. killed at the time limit) or ``unmetered`` (a 2xx proxy call carried no usage figures,
    so nothing is compared); null for agents that use no model."""
    reconciliation_diff: str | None = None
    """On ``mismatch``, agent minus proxy for each differing token kind, e.g.
    ``output_tokens +12, input_tokens -3``; empty otherwise; null for agents that use no
    model."""


class CheckRow(TrialKeys):
    """The verdict on one check of one gate after one attempt."""

    episode: str
    """Episode id."""
    attempt: int
    """Attempt number in the episode, 1-based."""
    gate: str
    """Gate name."""
    gate_active_from: str
    """Episode id from which the gate is active."""
    check: str
    """Check name (the test function's name)."""
    tag: str | None
    """``genuine`` or ``contract``; null if the check carries neither marker."""
    outcome: Literal["passed", "failed", "error"]
    """Verdict of the check."""
    message: str
    """First line(s) of the failure or error (at most 500 characters); empty when passed."""
    duration_s: float
    """Wall time of the check in seconds, as pytest measured it."""


class SelfCheckRow(TrialKeys):
    """One self-check: the agent ran ``marathon-check`` inside an attempt and the harness scored
    the workspace as it stood (or refused, past the arm's limit)."""

    episode: str
    """Episode id."""
    attempt: int
    """Attempt number in the episode during which the self-check was asked for, 1-based."""
    index: int
    """Number of the request in the episode, 1-based (every request, refused ones included)."""
    at: datetime
    """When the request arrived (UTC)."""
    status: Literal["green", "red", "limit_reached", "no_verdict"]
    """``green`` (every active gate passes), ``red`` (some gate fails), ``limit_reached`` (the
    episode's ``self_checks`` were used up: nothing was scored) or ``no_verdict`` (the scoring
    left a check without a verdict: nothing red is shown and it is not counted)."""
    counted: bool
    """Whether it counts against the arm's limit (``green`` and ``red`` do)."""
    commit: str | None
    """Commit object of the workspace snapshot that was scored (made with a private index, so
    the agent's branch, index and files are untouched); null when nothing was scored or the
    repository was broken."""
    score: float | None
    """Share of the active gates passing in the snapshot, 0..1; null when not scored."""
    gates_active: int | None
    """Number of gates active after the episode; null when not scored."""
    gates_passed: int | None
    """Number of those passing; null when not scored."""
    checks_total: int | None
    """Number of checks scored; null when not scored."""
    checks_passed: int | None
    """Number of checks passing; null when not scored."""
    scoring_s: float
    """Seconds spent snapshotting and scoring (0 when not scored)."""
    shown: str
    """Exactly what ``marathon-check`` printed to the agent."""


class SteeringRow(TrialKeys):
    """One episode of a human-operator trial: how the operator steered the agent (rules in
    docs/arms.md, *The human-operator arm*). Scores, usage and self-checks of the episode are
    in the other tables, under the same keys."""

    episode: str
    """Episode id."""
    operator: str
    """Pseudonymous id of the operator (``op-`` + 10 hex digits of a hash of the id given with
    ``--operator`` or ``MARATHON_OPERATOR``, else of the login name); never the id itself."""
    ended_by: Literal["marathon-done", "time_limit"]
    """How the episode ended: the operator ran ``marathon-done``, or the time limit was
    reached."""
    sessions: int
    """Times the operator's shell was opened in the episode (it is reopened when it exits
    without ``marathon-done``)."""
    wall_s: float
    """Seconds from the brief being shown to the end of the last shell session."""
    shell_s: float
    """Seconds the operator's terminal was attached to the shell."""
    steering_s: float
    """Active steering seconds: the gaps between consecutive operator input events that are at
    most ``idle_gap_s``, summed (longer gaps are idle and left out)."""
    idle_gap_s: float
    """The idle threshold of ``steering_s``, in seconds."""
    input_events: int
    """The operator's input events (keystroke chunks) in the recording; the terminal's own
    answers to a program's queries and focus in/out are not counted."""
    prompts: int
    """Prompts the operator sent to the agent, read from the agent's transcript."""
    shell_commands: int
    """Commands the operator ran in the shell (agent runs, ``marathon-check`` and
    ``marathon-done`` included), from the shell's command log."""
    agent_runs: int
    """Of those, commands that started the agent's CLI."""
    files_changed: int
    """Files the episode's workspace diff touches."""
    files_agent: int
    """Of those, files the agent edited (changed during an agent run, or named by an agent's
    file-writing tool call)."""
    files_operator: int
    """Of those, files the operator edited directly (changed during another command)."""
    files_both: int
    """Files counted in both ``files_agent`` and ``files_operator``."""
    files_unattributed: int
    """Files changed outside any logged command."""
    cast: str
    """The episode's terminal recording (asciinema v2 cast), relative to the run directory."""


class UsageCall(_Row):
    """One usage figure of an attempt: a model call seen by the proxy, or a total the agent
    reported. Agents that use no model report none."""

    source: Literal["proxy", "agent"]
    """``proxy``: one model call observed by the harness's proxy; ``agent``: a figure from the
    agent's own output (e.g. a CLI's final usage event)."""
    api_model: str
    """Model name as the API call named it (may differ from the trial's ``model``, e.g. a
    smaller model the agent uses for side tasks)."""
    input_tokens: int = Field(ge=0)
    """Input tokens (without cache reads and writes)."""
    output_tokens: int = Field(ge=0)
    """Output tokens (reasoning included where the provider counts it so)."""
    cache_write_tokens: int = Field(default=0, ge=0)
    """Input tokens written to the prompt cache."""
    cache_read_tokens: int = Field(default=0, ge=0)
    """Input tokens read from the prompt cache."""
    reasoning_tokens: int = Field(default=0, ge=0)
    """Reasoning tokens, where the provider reports them separately."""
    cost_usd: float | None = None
    """Cost in USD when known (reported or computed from a price table); null otherwise."""
    latency_s: float | None = None
    """Seconds from request to last byte (proxy only)."""
    http_status: int | None = None
    """HTTP status of the call (proxy only)."""
    method: str | None = None
    """HTTP method of the request (proxy only)."""
    path: str | None = None
    """Request target as received, query included, at most 300 characters (proxy only)."""
    refused: bool | None = None
    """Whether the proxy refused the request instead of forwarding it: a path, method or
    model outside the trial's allow-list, or a token that is unknown, missing or not the
    trial's own (then ``http_status`` is 400, 401 or 403, tokens are 0 and ``cost_usd`` 0);
    proxy only."""
    error: str | None = None
    """Why the call was refused or did not complete normally (upstream unreachable, dropped
    mid-stream, client gone); empty otherwise; proxy only."""
    usage_missing: bool | None = None
    """Whether a forwarded call answered 2xx without any usage figures: its tokens are then
    unknown (recorded as 0) and ``cost_usd`` is null; proxy only."""


class _UsageAt(TrialKeys):
    """The trial keys and the attempt a usage figure belongs to (the first columns of
    ``usage.parquet``)."""

    episode: str
    """Episode id."""
    attempt: int
    """Attempt number in the episode, 1-based."""
    call: int
    """Index of the figure within the attempt, 0-based."""


class UsageRow(UsageCall, _UsageAt):
    """One usage figure, with the trial keys and the attempt it belongs to.

    Columns: the trial keys, ``episode``, ``attempt``, ``call``, then the figure (pydantic
    orders inherited fields from the last base to the first)."""


ROW_MODELS: dict[str, type[_Row]] = {
    "trials": TrialRow, "episodes": EpisodeRow, "attempts": AttemptRow,
    "checks": CheckRow, "usage": UsageRow, "self_checks": SelfCheckRow,
    "steering": SteeringRow,
}


def _arrow_type(annotation) -> tuple[pa.DataType, bool]:
    """Arrow type of a field annotation and whether it is nullable."""
    nullable = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        annotation = args[0]
        origin = typing.get_origin(annotation)
    if origin is Literal:
        annotation = type(typing.get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        annotation = str
    mapping = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(),
               datetime: pa.timestamp("us", tz="UTC")}
    return mapping[annotation], nullable


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of a table, from its row model: field order, types, nullability, and
    ``marathon.schema_version`` / ``marathon.table`` metadata."""
    return model_schema(ROW_MODELS[table], {"marathon.schema_version": str(SCHEMA_VERSION),
                                             "marathon.table": table})


def model_schema(model: type[BaseModel], metadata: dict[str, str] | None = None) -> pa.Schema:
    """The Arrow schema of a row model: one field per model field, in order, with its type
    (str, int, float, bool, UTC timestamp; enums and literals as their values) and
    nullability (``X | None``)."""
    fields = []
    for name, info in model.model_fields.items():
        typ, nullable = _arrow_type(info.annotation)
        fields.append(pa.field(name, typ, nullable=nullable))
    return pa.schema(fields, metadata=metadata)


def to_table(table: str, rows: list[_Row]) -> pa.Table:
    """Rows of one table as an Arrow table with the table's schema (possibly zero rows)."""
    return pa.Table.from_pylist([r.model_dump() for r in rows], schema=arrow_schema(table))


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write a Parquet file so that readers see the old file or the new one, never a torn one
    (:func:`benchmark.storage.atomic_file`: temp file in the same directory, fsync,
    ``os.replace``).

    Raises:
        OSError: naming ``path`` (e.g. the disk is full; the old file is kept).
    """
    with atomic_file(path) as f:
        pq.write_table(table, f)


class EpisodeRecords(BaseModel):
    """Everything recorded about one finished episode of one trial."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    episode: EpisodeRow
    """The episode's row."""
    attempts: list[AttemptRow]
    """One row per attempt."""
    checks: list[CheckRow]
    """One row per attempt x check."""
    usage: list[UsageRow]
    """Usage figures of the attempts (may be empty)."""
    self_checks: list[SelfCheckRow] = []
    """Self-checks asked for during the episode (may be empty)."""
    steering: list[SteeringRow] = []
    """The operator's steering of the episode (human-operator trials only)."""


class RecordStore:
    """The tables of one run directory: parts per finished episode, consolidated tables.

    Thread-safe: trials running concurrently call :meth:`write_episode`.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        """The run directory."""
        self._lock = threading.Lock()
        self._parts: dict[str, dict[tuple[str, str], pa.Table]] = {t: {} for t in TABLES if t != "trials"}
        self._load_parts()

    def _part_path(self, table: str, trial_id: str, episode: str) -> Path:
        return self.run_dir / "parts" / table / f"{trial_id}.{episode}.parquet"

    def _load_parts(self) -> None:
        finished = set()
        for path in sorted((self.run_dir / "parts" / "episodes").glob("*.parquet")):
            t = read_part(path, "episodes")
            key = (t.column("trial_id")[0].as_py(), t.column("episode")[0].as_py())
            finished.add(key)
            self._parts["episodes"][key] = t
        for table in ("attempts", "checks", "usage", "self_checks", "steering"):
            for trial_id, episode in finished:
                path = self._part_path(table, trial_id, episode)
                # A finished episode has all its parts: they are written before its episodes part
                # (runs of harness versions before self-checks or steering lack those parts).
                self._parts[table][(trial_id, episode)] = (
                    read_part(path, table) if path.is_file() or table in ("attempts", "checks", "usage")
                    else to_table(table, []))

    def finished(self) -> set[tuple[str, str]]:
        """``(trial_id, episode)`` of every finished episode."""
        with self._lock:
            return set(self._parts["episodes"])

    def episode_rows(self) -> list[EpisodeRow]:
        """Rows of every finished episode, in no particular order."""
        with self._lock:
            tables = list(self._parts["episodes"].values())
        return [EpisodeRow(**r) for t in tables for r in t.to_pylist()]

    def write_episode(self, records: EpisodeRecords, planned: list[tuple[TrialKeys, int]]) -> None:
        """Persist one finished episode, then rebuild the consolidated tables.

        Args:
            records: the episode's rows.
            planned: every planned trial with its number of episodes (for ``trials.parquet``).
        """
        key = (records.episode.trial_id, records.episode.episode)
        parts = {
            "attempts": to_table("attempts", records.attempts),
            "checks": to_table("checks", records.checks),
            "usage": to_table("usage", records.usage),
            "self_checks": to_table("self_checks", records.self_checks),
            "steering": to_table("steering", records.steering),
            "episodes": to_table("episodes", [records.episode]),
        }
        for table, data in parts.items():  # episodes last: it marks the episode finished
            write_atomic(data, self._part_path(table, *key))
        with self._lock:
            for table, data in parts.items():
                self._parts[table][key] = data
            self._consolidate(planned)

    def consolidate(self, planned: list[tuple[TrialKeys, int]]) -> None:
        """Rebuild every consolidated table from the parts of finished episodes."""
        with self._lock:
            self._consolidate(planned)

    def _consolidate(self, planned: list[tuple[TrialKeys, int]]) -> None:
        for table, parts in self._parts.items():
            if parts:
                data = pa.concat_tables([parts[k] for k in sorted(parts)])
            else:
                data = to_table(table, [])
            write_atomic(data, self.run_dir / f"{table}.parquet")
        write_atomic(to_table("trials", self._trial_rows(planned)), self.run_dir / "trials.parquet")

    def _trial_rows(self, planned: list[tuple[TrialKeys, int]]) -> list[TrialRow]:
        by_trial: dict[str, list[dict]] = {}
        for t in self._parts["episodes"].values():
            for r in t.to_pylist():
                by_trial.setdefault(r["trial_id"], []).append(r)
        rows = []
        for keys, n_episodes in planned:
            eps = sorted(by_trial.get(keys.trial_id, []), key=lambda r: r["episode_index"])
            done = len(eps)
            rows.append(TrialRow(
                **keys.model_dump(),
                status="complete" if done == n_episodes else "incomplete",
                episodes_planned=n_episodes, episodes_done=done,
                attempts=sum(r["attempts"] for r in eps),
                recovery_attempts=sum(r["recovery_attempts"] for r in eps),
                rollbacks=sum(r["rollbacks"] for r in eps),
                self_checks=sum(r.get("self_checks") or 0 for r in eps),
                self_check_recoveries=sum(r.get("self_check_recoveries") or 0 for r in eps),
                final_score=eps[-1]["score"] if done == n_episodes and eps else None,
                last_score=eps[-1]["score"] if eps else None,
                started_at=eps[0]["started_at"] if eps else None,
                ended_at=eps[-1]["ended_at"] if eps else None,
            ))
        return rows


def read_part(path: Path, table: str) -> pa.Table:
    """Read the part of one finished episode in the current schema: columns in its order, and
    nullable columns added since as nulls (parts written by an older harness).

    Raises:
        MarathonError: the part is missing or not a readable Parquet file (e.g. truncated);
            the message names it and says how to re-run its episode.
    """
    try:
        data = pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise MarathonError(
            f"{path}: unreadable part of a finished episode ({_first_line(e)}); delete it "
            "(and the same episode's parts in the other parts/ directories) to re-run that "
            "episode on resume") from None
    schema = arrow_schema(table)
    if data.column_names != schema.names and set(data.column_names) <= set(schema.names):
        missing = [f for f in schema if f.name not in data.column_names]
        defaults = {n: i.default for n, i in ROW_MODELS[table].model_fields.items()
                    if not i.is_required() and i.default is not None}
        if all(f.nullable or f.name in defaults for f in missing):
            for f in missing:  # columns added since: null (or their default) in older parts
                data = data.append_column(f, pa.nulls(len(data), f.type) if f.name not in defaults
                                          else pa.array([defaults[f.name]] * len(data), f.type))
            data = data.select(schema.names).cast(schema)
    return data


def read_table(run_dir: Path, table: str) -> pa.Table:
    """Read one consolidated table of a run directory (an empty table if none was written).

    Raises:
        MarathonError: the file is not a readable Parquet file (e.g. truncated); the message
            names it (``marathon run --resume`` rebuilds it from the parts).
    """
    path = run_dir / f"{table}.parquet"
    if not path.is_file():
        return to_table(table, [])
    try:
        return pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise MarathonError(f"{path}: unreadable Parquet table ({_first_line(e)}); "
                            f"`marathon run --resume {run_dir}` rebuilds it from the parts") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else error.__class__.__name__
