"""Read one or more run directories into one set of data frames (:class:`Results`).

Only the consolidated Parquet tables and ``manifest.json`` are read (no artifacts). Several runs
combine (e.g. one run per model, or runs of different marathons: a suite) when every marathon
they share is the same version (content hash) and plays the same episodes, else
:class:`MarathonError` names the runs. Tables written before the ``mode`` key get
``mode = cumulative``.

Every frame gets a ``uid`` column (``<run_id>/<trial_id>``), unique over the combined runs.
Trials that did not finish every episode are *excluded* (``trials.included`` is False): they
are left out of every headline table and chart and listed in the claim boundary with why.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, model_validator

from benchmark.errors import MarathonError
from benchmark.records import SCHEMA_VERSION, TABLES, arrow_schema
from benchmark.rundir import live_status, resume_hint

#: Columns that identify a compared group: one row of the summary table.
GROUP_KEYS = ["marathon", "model", "effort", "agent", "mode", "arm"]

#: Columns of a *configuration* (everything but the arm): arms are compared within one.
CONFIG_KEYS = ["marathon", "model", "effort", "agent", "mode"]

#: Mode of trials in tables written before the ``mode`` key.
DEFAULT_MODE = "cumulative"

#: Agents that call no model; their results are simulations of an agent, not of a model.
NO_MODEL_AGENTS = ("oracle", "nop")

#: Prefix of simulated (scripted) model names.
SIMULATED_PREFIX = "scripted/"

#: Columns the report needs in each table (present in every schema version it reads); other
#: columns, such as ``rollbacks`` or ``reconciliation`` (schema 2), are optional.
REQUIRED_COLUMNS = {
    "trials": ["run_id", "trial_id", "marathon", "arm", "agent", "model", "effort", "replicate",
               "seed", "status", "episodes_planned", "episodes_done", "attempts",
               "recovery_attempts", "final_score"],
    "episodes": ["episode", "episode_index", "attempts", "recovery_attempts", "score"],
    "attempts": ["episode", "attempt"],
    "checks": ["episode", "attempt", "gate", "gate_active_from", "check", "tag", "outcome"],
    "usage": ["source", "api_model", "input_tokens", "output_tokens", "cache_write_tokens",
              "cache_read_tokens", "reasoning_tokens", "cost_usd", "http_status", "episode",
              "attempt"],
}

#: Columns read from checks.parquet (``message`` is not needed and is the bulk of the file).
_CHECK_COLUMNS = ["run_id", "trial_id", "marathon", "arm", "agent", "model", "effort",
                  "replicate", "seed", "episode", "attempt", "gate", "gate_active_from", "check",
                  "tag", "outcome"]


class MarathonRef(BaseModel):
    """One marathon of a run: its content hash and the episodes the run played."""

    model_config = ConfigDict(extra="ignore")

    hash: str
    """SHA-256 over the marathon's files and gates."""
    episodes: list[str]
    """Episode ids played, in order."""


class RunInfo(BaseModel):
    """What the report needs from one run's ``manifest.json`` (other fields are ignored, so
    manifests that gain fields still load)."""

    model_config = ConfigDict(extra="ignore", use_attribute_docstrings=True)

    run_dir: str = ""
    """The run directory as given on the command line."""
    schema_version: int
    """Version of the results layout."""
    run_id: str
    """Id of the run."""
    harness_version: str = "unknown"
    """Version of the ``marathon-bench`` package that made the run."""
    git_commit: str | None = None
    """Commit of the harness checkout; null outside a git checkout."""
    git_dirty: bool | None = None
    """Whether that checkout had uncommitted changes."""
    marathon: str
    """Marathon name."""
    marathon_hash: str
    """SHA-256 over the marathon's files and gates."""
    episodes: list[str]
    """Episode ids, in order (of the first marathon)."""
    marathons: dict[str, MarathonRef] = {}
    """Marathon name -> hash and episodes; filled from ``marathon``, ``marathon_hash`` and
    ``episodes`` for manifests of harness versions before suites."""
    protocol: dict | None = None
    """The protocol the run was started from (name, path, sha256), if any."""
    arm_hashes: dict[str, str] = {}
    """Arm name -> SHA-256 of its configuration."""
    images: dict = {}
    """Image tags and ids (``ImageSet``)."""
    agent_cli_versions: dict[str, str] = {}
    """Agent CLI -> version installed in the agent image."""
    simulated_models: list[str] = []
    """Models of the run whose name starts with ``scripted/``."""
    config: dict = {}
    """The run configuration (``RunConfig``) as recorded."""
    status: str = "unknown"
    """Run status as it stands when read (:func:`benchmark.rundir.live_status`): ``running``
    (a driver holds the run's lock), ``dead`` (the manifest says running but no driver holds
    the lock: killed, resumable), ``complete``, ``interrupted`` or ``failed``."""
    started_at: str | None = None
    """Start of the run (UTC, ISO 8601)."""
    ended_at: str | None = None
    """End of the run (UTC, ISO 8601), when it ended."""

    @model_validator(mode="after")
    def _one_marathon(self) -> "RunInfo":
        if not self.marathons:
            self.marathons = {self.marathon: MarathonRef(hash=self.marathon_hash,
                                                         episodes=self.episodes)}
        return self


class Results(BaseModel):
    """The records of one or more runs of one marathon version, as pandas frames.

    Frames keep every column of their Parquet table (optional columns added to the schema
    later come along) plus ``uid``; ``trials`` also has ``included`` (bool) and
    ``excluded_reason`` (str, empty when included)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    runs: list[RunInfo]
    """One entry per run directory, in the order given."""
    marathon: str
    """Marathon name; several joined by ``+`` (a suite: see :attr:`marathons`)."""
    episodes: list[str]
    """Episode ids of the (first) marathon, in order."""
    marathons: dict[str, list[str]] = {}
    """Marathon name -> its episode ids in order, for every marathon of the records, in the
    order the runs name them."""
    arms: list[str]
    """Arm names in the order of the runs' configurations (then any others, sorted)."""
    trials: pd.DataFrame
    """trials.parquet rows (one per planned trial)."""
    episode_rows: pd.DataFrame
    """episodes.parquet rows (one per finished episode)."""
    attempts: pd.DataFrame
    """attempts.parquet rows (one per attempt)."""
    checks: pd.DataFrame
    """checks.parquet rows without ``message`` (one per trial x episode x attempt x check)."""
    usage: pd.DataFrame
    """usage.parquet rows (one per usage figure; empty for agents that use no model)."""
    steering: pd.DataFrame = pd.DataFrame()
    """steering.parquet rows (one per episode of a human-operator trial; empty otherwise, and
    for runs written before the table existed)."""

    def for_marathon(self, name: str) -> "Results":
        """The records of one marathon alone (its runs, trials and rows; arms it has)."""
        def only(frame: pd.DataFrame) -> pd.DataFrame:
            return frame[frame["marathon"] == name].reset_index(drop=True)
        trials = only(self.trials)
        present = set(trials["arm"].astype(str))
        return Results(runs=[r for r in self.runs if name in r.marathons], marathon=name,
                       episodes=list(self.marathons[name]), marathons={name: self.marathons[name]},
                       arms=[a for a in self.arms if a in present], trials=trials,
                       episode_rows=only(self.episode_rows), attempts=only(self.attempts),
                       checks=only(self.checks), usage=only(self.usage))

    def modes(self) -> list[str]:
        """Modes of the records (``cumulative`` first)."""
        found = set(self.trials["mode"].astype(str))
        return [m for m in ("cumulative", "isolated") if m in found] + sorted(
            found - {"cumulative", "isolated"})

    def included_uids(self) -> pd.Index:
        """``uid`` of every included (complete) trial."""
        return pd.Index(self.trials.loc[self.trials["included"], "uid"])

    def only_included(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``frame`` (which has ``uid``) that belong to included trials."""
        return frame[frame["uid"].isin(self.included_uids())]

    def simulated_models(self) -> list[str]:
        """Models of the records whose name starts with ``scripted/``, sorted."""
        models = self.trials["model"].astype(str).unique()
        return sorted(m for m in models if m.startswith(SIMULATED_PREFIX))

    def no_model_agents(self) -> list[str]:
        """Agents of the records that use no model (oracle, nop, or model ``none``), sorted."""
        t = self.trials
        mask = t["agent"].isin(NO_MODEL_AGENTS) | (t["model"] == "none")
        return sorted(t.loc[mask, "agent"].astype(str).unique())


def _read_manifest(run_dir: Path) -> RunInfo:
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise MarathonError(f"{run_dir}: not a run directory (manifest.json not found)")
    try:
        info = RunInfo.model_validate({**json.loads(path.read_text(encoding="utf-8")),
                                       "run_dir": str(run_dir)})
    except ValueError as e:
        raise MarathonError(f"{path}: unreadable manifest: {str(e).splitlines()[0]}") from None
    info.status = live_status(run_dir, info.status)
    if not 1 <= info.schema_version <= SCHEMA_VERSION:
        raise MarathonError(f"{path}: results schema version {info.schema_version}, this report "
                            f"reads versions 1 to {SCHEMA_VERSION}")
    return info


def _read_table(run_dir: Path, table: str) -> pd.DataFrame:
    path = run_dir / f"{table}.parquet"
    if not path.is_file():
        if table in ("trials", "episodes"):
            raise MarathonError(f"{run_dir}: {table}.parquet not found (not a run directory, or a "
                                "run that finished no episode)")
        return arrow_schema(table).empty_table().to_pandas()
    try:
        if table == "checks":
            names = set(pq.read_schema(path).names)
            extra = [c for c in names if c not in _CHECK_COLUMNS and c != "message"]
            return pq.read_table(path, columns=_CHECK_COLUMNS + sorted(extra)).to_pandas()
        return pq.read_table(path).to_pandas()
    except (OSError, ValueError, KeyError) as e:
        raise MarathonError(f"{path}: unreadable Parquet table: {str(e).splitlines()[0]}") from None


def _failure_reasons(run_dir: Path) -> dict[str, str]:
    """trial_id -> last line of its traceback in ``errors.log`` (absent when none failed)."""
    path = run_dir / "errors.log"
    if not path.is_file():
        return {}
    reasons: dict[str, str] = {}
    trial, last = None, ""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.match(r"^\S+ trial (\S+)$", line)
        if m:
            if trial:
                reasons[trial] = last
            trial, last = m.group(1), ""
        elif line.strip():
            last = line.strip()
    if trial:
        reasons[trial] = last
    return reasons


def _exclusion_reasons(trials: pd.DataFrame, run: RunInfo, failures: dict[str, str]) -> pd.Series:
    """Why each trial is excluded ('' when complete)."""
    def why(row) -> str:
        if row.status == "complete":
            return ""
        done = f"{row.episodes_done}/{row.episodes_planned} episodes finished"
        if row.trial_id in failures:
            return f"failed: {failures[row.trial_id][:200]} ({done})"
        hint = resume_hint(Path(run.run_dir), run.status)
        state = f"run {run.status}" + (f"; {hint}" if hint else "")
        if row.episodes_done == 0:
            return f"not started: {done} ({state})"
        return f"incomplete: {done} ({state})"
    if trials.empty:
        return pd.Series([], dtype=str)
    # One row per trial (a handful to thousands): a row-wise apply is fine here.
    return trials.apply(why, axis=1).astype(str)


def check_compatible(runs: list[RunInfo]) -> None:
    """Refuse runs that cannot be combined. Runs of different marathons combine (a suite);
    runs that share a marathon must share its version and episodes.

    Raises:
        MarathonError: two runs share a run id, two runs played different versions of one
            marathon (content hash), or different episodes of it (a run's ``episodes``
            limit); the message names every such run and version.
    """
    ids = [r.run_id for r in runs]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise MarathonError(f"the same run is given twice: {', '.join(dupes)}")
    names = list(dict.fromkeys(m for r in runs for m in r.marathons))
    for name in names:
        having = [r for r in runs if name in r.marathons]
        if len({r.marathons[name].hash for r in having}) > 1:
            listed = ", ".join(f"{r.run_id} ({name} {r.marathons[name].hash[:12]})" for r in having)
            raise MarathonError(f"runs of different marathon versions cannot be combined: {listed}")
        if len({tuple(r.marathons[name].episodes) for r in having}) > 1:
            listed = ", ".join(f"{r.run_id} ({name}: {', '.join(r.marathons[name].episodes)})"
                               for r in having)
            raise MarathonError(f"runs that play different episodes cannot be combined: {listed}")


def load_runs(run_dirs: list[Path] | list[str] | Path | str) -> Results:
    """Read and combine run directories.

    Args:
        run_dirs: one run directory or several (``results/<run id>``).

    Returns:
        The combined records (:class:`Results`).

    Raises:
        MarathonError: no directory given; a directory is not a run directory; a table is
            unreadable; the results schema version differs; runs of different marathon
            versions (see :func:`check_compatible`).
    """
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise MarathonError("report: give at least one run directory")
    runs = [_read_manifest(d) for d in dirs]
    check_compatible(runs)

    frames: dict[str, list[pd.DataFrame]] = {t: [] for t in TABLES}
    for d, run in zip(dirs, runs):
        for table in TABLES:
            df = _read_table(d, table)
            df["uid"] = df["run_id"].astype(str) + "/" + df["trial_id"].astype(str)
            if "mode" not in df.columns:  # written before the mode key
                df.insert(df.columns.get_loc("effort") + 1 if "effort" in df.columns else len(df.columns),
                          "mode", DEFAULT_MODE)
            if table == "trials":
                df["excluded_reason"] = _exclusion_reasons(df, run, _failure_reasons(d)).to_numpy()
            frames[table].append(df)
    tables = {t: pd.concat(fs, ignore_index=True) if len(fs) > 1 else fs[0] for t, fs in frames.items()}
    for table, columns in REQUIRED_COLUMNS.items():
        missing = [c for c in columns if c not in tables[table].columns]
        if missing:
            raise MarathonError(f"{table}.parquet: missing column(s) {', '.join(missing)} "
                                "(not a marathon results table?)")
    trials = tables["trials"]
    trials["included"] = trials["status"].eq("complete") & trials["final_score"].notna()

    arms: list[str] = []
    for run in runs:
        for arm in run.config.get("arms", []):
            name = Path(str(arm)).stem if str(arm).endswith(".toml") else str(arm)
            if name not in arms:
                arms.append(name)
    arms += sorted(set(trials["arm"].astype(str)) - set(arms))
    arms = [a for a in arms if a in set(trials["arm"].astype(str))]
    marathons: dict[str, list[str]] = {}
    for run in runs:
        for name, ref in run.marathons.items():
            marathons.setdefault(name, list(ref.episodes))
    first = next(iter(marathons))
    return Results(runs=runs, marathon="+".join(marathons), episodes=list(marathons[first]),
                   marathons=marathons, arms=arms, trials=trials, episode_rows=tables["episodes"],
                   attempts=tables["attempts"], checks=tables["checks"], usage=tables["usage"],
                   steering=tables["steering"])
