"""Clearly synthetic run directories, for the report's benchmark and tests.

Nothing here comes from an agent: rows are drawn with numpy from made-up pass probabilities,
the models are named ``scripted/synthetic-*`` (so every chart is marked SIMULATED), the agent
is ``synthetic`` and the manifest says ``"synthetic": true``. The tables follow the current
results schema (:func:`benchmark.records.arrow_schema`); columns this generator does not know
get a type default, so the generator keeps working when the schema gains columns.
"""

from __future__ import annotations

import json
import typing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from benchmark.experiment import derive_seed
from benchmark.records import ROW_MODELS, SCHEMA_VERSION, TABLES, arrow_schema

#: Gates of the synthetic marathon: name -> episode index (1-based) it becomes active in.
GATES = {"idempotency": 1, "privacy": 1, "replay": 2, "checkpoint_resume": 2,
         "late_events": 3, "negative_paths": 4}
#: Checks per gate; the first half is tagged ``genuine``, the rest ``contract``.
CHECKS_PER_GATE = 4
EPISODES = ["e1", "e2", "e3", "e4"]
ARMS = ["prompt-only", "skill-only", "feedback-retry", "governed-runtime"]
MODELS = ["scripted/synthetic-a", "scripted/synthetic-b"]
#: Arms that retry a red episode (up to 3 attempts).
RETRY_ARMS = {"feedback-retry", "governed-runtime"}


def _default(table: str, name: str, typ: pa.DataType, n: int):
    """A column of n type defaults (the first allowed value of a Literal field)."""
    ann = ROW_MODELS[table].model_fields[name].annotation if name in ROW_MODELS[table].model_fields else None
    for a in [ann, *typing.get_args(ann)]:
        if typing.get_origin(a) is typing.Literal:
            return np.full(n, typing.get_args(a)[0], dtype=object)
    if pa.types.is_string(typ):
        return np.full(n, "", dtype=object)
    if pa.types.is_boolean(typ):
        return np.zeros(n, dtype=bool)
    if pa.types.is_integer(typ):
        return np.zeros(n, dtype=np.int64)
    if pa.types.is_floating(typ):
        return np.zeros(n)
    if pa.types.is_timestamp(typ):
        return pd.Series(pd.Timestamp("2026-01-01", tz="UTC"), index=range(n))
    return pd.Series([None] * n)


def _write(run_dir: Path, table: str, frame: pd.DataFrame) -> None:
    schema = arrow_schema(table)
    cols = {}
    for field in schema:
        if field.name in frame.columns:
            cols[field.name] = frame[field.name].to_numpy() if not pd.api.types.is_datetime64_any_dtype(
                frame[field.name]) else frame[field.name]
        elif field.nullable:
            cols[field.name] = pd.Series([None] * len(frame), dtype=object)
        else:
            cols[field.name] = _default(table, field.name, field.type, len(frame))
    data = pa.Table.from_pandas(pd.DataFrame(cols), schema=schema, preserve_index=False)
    pq.write_table(data, run_dir / f"{table}.parquet")


def write_synthetic_run(out_dir: Path, trials: int = 10_000, seed: int = 0,
                        run_id: str = "synthetic", incomplete_share: float = 0.005,
                        marathon_hash: str = "synthetic-" + "0" * 54, marathon: str = "ledger",
                        modes: tuple[str, ...] = ("cumulative",),
                        seed_base: int | None = None) -> Path:
    """Write one synthetic run directory ``out_dir/run_id`` and return it.

    Args:
        trials: number of trials (spread over 2 models x 4 arms; replicates fill the rest).
        seed: seed of the generator.
        run_id: the run id (and directory name).
        incomplete_share: share of trials left incomplete (they stop after 0-3 episodes).
        marathon_hash: the manifest's marathon hash (tests change it to test refusal).
        marathon: the marathon's name (runs of different names combine into a suite).
        modes: the trials' modes, spread like the arms (the same seeds in each); ``isolated``
            trials have no decay of earlier gates with age (no accumulated debt).
        seed_base: when given, replicate r has the seed a run with this seed base gives it
            (:func:`benchmark.experiment.derive_seed`); else ``1000 + r``.

    Returns:
        The run directory (manifest.json and the five tables).
    """
    rng = np.random.default_rng(seed)
    run_dir = Path(out_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    T, E, M, A, D = trials, len(EPISODES), len(MODELS), len(ARMS), len(modes)
    t = np.arange(T)
    model_i, arm_i, mode_i, rep = t % M, (t // M) % A, (t // (M * A)) % D, t // (M * A * D) + 1
    base_p = 0.80 + 0.08 * model_i + 0.03 * arm_i  # per-gate pass probability of a trial
    keys = pd.DataFrame({
        "run_id": run_id, "marathon": marathon, "arm": np.array(ARMS)[arm_i],
        "agent": "synthetic", "model": np.array(MODELS)[model_i], "effort": "none",
        "mode": np.array(modes)[mode_i],
        "replicate": rep.astype(np.int64),
        "seed": ((1000 + rep) if seed_base is None else
                 np.array([derive_seed(seed_base, int(r)) for r in rep])).astype(np.int64)})
    keys.insert(1, "trial_id", keys["arm"] + ".synthetic." + keys["model"].str.replace("/", "-")
                + ".none.r" + keys["replicate"].astype(str)
                + np.where(keys["mode"] == "isolated", ".isolated", ""))
    done = np.full(T, E)
    bad = rng.random(T) < incomplete_share
    done[bad] = rng.integers(0, E, bad.sum())

    # episodes: (trial, episode) pairs of finished episodes
    te_t = np.repeat(t, E)
    te_e = np.tile(np.arange(1, E + 1), T)
    keep = te_e <= done[te_t]
    te_t, te_e = te_t[keep], te_e[keep]
    retry = np.isin(keys["arm"].to_numpy()[te_t], list(RETRY_ARMS))
    n_att = np.where(retry, 1 + rng.binomial(2, 0.3, te_t.size), 1)
    # attempts
    at_te = np.repeat(np.arange(te_t.size), n_att)
    at_no = np.arange(at_te.size) - np.repeat(np.cumsum(n_att) - n_att, n_att) + 1
    # checks: attempt x active gate x check
    gate_names = np.array(list(GATES))
    gate_from = np.array(list(GATES.values()))
    active = [np.flatnonzero(gate_from <= e) for e in range(1, E + 1)]
    n_gates = np.array([a.size for a in active])[te_e[at_te] - 1]
    g_att = np.repeat(np.arange(at_te.size), n_gates)
    g_pos = np.arange(g_att.size) - np.repeat(np.cumsum(n_gates) - n_gates, n_gates)
    g_idx = np.concatenate([np.asarray(active[e - 1]) for e in range(1, E + 1)])  # lookup table
    offsets = np.concatenate([[0], np.cumsum([a.size for a in active])[:-1]])
    g_gate = g_idx[offsets[te_e[at_te[g_att]] - 1] + g_pos]
    age = te_e[at_te[g_att]] - gate_from[g_gate]
    age = np.where(np.asarray(modes)[mode_i][te_t[at_te[g_att]]] == "isolated", 0, age)
    p = np.clip(base_p[te_t[at_te[g_att]]] * 0.97 ** age + 0.05 * (at_no[g_att] - 1), 0, 0.995)
    green = rng.random(g_att.size) < p
    c_gate = np.repeat(np.arange(g_att.size), CHECKS_PER_GATE)
    c_no = np.tile(np.arange(CHECKS_PER_GATE), g_att.size)
    c_pass = green[c_gate] | ((c_no > 0) & (rng.random(c_gate.size) < 0.5))

    gates_passed = np.bincount(g_att, weights=green, minlength=at_te.size).astype(np.int64)
    gates_active = n_gates.astype(np.int64)
    checks_passed = np.bincount(g_att[c_gate], weights=c_pass, minlength=at_te.size).astype(np.int64)
    score = gates_passed / gates_active
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def with_keys(idx: np.ndarray, extra: dict) -> pd.DataFrame:
        frame = keys.iloc[idx].reset_index(drop=True)
        for k, v in extra.items():
            frame[k] = v
        return frame

    ep_names = np.array(EPISODES)
    at_t = te_t[at_te]
    duration = rng.gamma(4.0, 60.0, at_te.size)
    attempts = with_keys(at_t, {
        "episode": ep_names[te_e[at_te] - 1], "attempt": at_no.astype(np.int64),
        "recovery": at_no > 1, "outcome": "ok", "exit_code": 0, "error": "",
        "duration_s": duration, "time_limit_s": 1800.0, "score": score,
        "gates_active": gates_active, "gates_passed": gates_passed,
        "checks_total": gates_active * CHECKS_PER_GATE, "checks_passed": checks_passed,
        "scoring_s": 2.0, "commit": "0" * 40, "artifacts": "",
        "reconciliation": np.where(rng.random(at_te.size) < 0.98, "match", "mismatch")})
    last = np.cumsum(n_att) - 1  # final attempt of each (trial, episode)
    ep_score, ep_passed = score[last], gates_passed[last]
    episodes = with_keys(te_t, {
        "episode": ep_names[te_e - 1], "episode_index": te_e.astype(np.int64),
        "attempts": n_att.astype(np.int64), "recovery_attempts": (n_att - 1).astype(np.int64),
        "rollbacks": 0, "decision": np.where(ep_score >= 1, "accept", "stop_attempts"),
        "score": ep_score, "gates_active": gates_active[last], "gates_passed": ep_passed,
        "checks_total": gates_active[last] * CHECKS_PER_GATE, "checks_passed": checks_passed[last],
        "started_at": pd.Series(t0 + pd.to_timedelta(te_t, unit="s")),
        "ended_at": pd.Series(t0 + pd.to_timedelta(te_t + 1, unit="s")),
        "wall_s": 300.0, "agent_s": 280.0, "scoring_s": 10.0, "overhead_s": 20.0,
        "commit": "0" * 40})
    checks = with_keys(at_t[g_att[c_gate]], {
        "episode": ep_names[te_e[at_te[g_att[c_gate]]] - 1],
        "attempt": at_no[g_att[c_gate]].astype(np.int64),
        "gate": gate_names[g_gate[c_gate]], "gate_active_from": ep_names[gate_from[g_gate[c_gate]] - 1],
        "check": np.char.add("test_", c_no.astype(str)),
        "tag": np.where(c_no < CHECKS_PER_GATE // 2, "genuine", "contract"),
        "outcome": np.where(c_pass, "passed", "failed"),
        "message": np.where(c_pass, "", "synthetic failure"), "duration_s": 0.05})
    # usage: one proxy row and one agent row per attempt, equal tokens
    inp = rng.integers(1_000, 20_000, at_te.size)
    out = rng.integers(200, 5_000, at_te.size)
    cw = rng.integers(0, 10_000, at_te.size)
    cr = rng.integers(0, 100_000, at_te.size)
    cost = (inp * 3 + out * 15 + cw * 3.75 + cr * 0.3) / 1e6
    u_at = np.repeat(np.arange(at_te.size), 2)
    usage = with_keys(at_t[u_at], {
        "source": np.tile(["proxy", "agent"], at_te.size), "api_model": keys["model"].to_numpy()[at_t[u_at]],
        "input_tokens": inp[u_at], "output_tokens": out[u_at], "cache_write_tokens": cw[u_at],
        "cache_read_tokens": cr[u_at], "reasoning_tokens": 0, "cost_usd": cost[u_at],
        "latency_s": 1.0, "http_status": 200, "episode": ep_names[te_e[at_te[u_at]] - 1],
        "attempt": at_no[u_at].astype(np.int64), "call": np.tile([0, 0], at_te.size)})
    # trials
    ep = episodes.assign(_t=te_t)
    agg = ep.groupby("_t").agg(episodes_done=("episode", "size"), attempts=("attempts", "sum"),
                               recovery_attempts=("recovery_attempts", "sum"),
                               last_score=("score", "last"), started_at=("started_at", "first"),
                               ended_at=("ended_at", "last")).reindex(t)
    trials_df = keys.copy()
    trials_df["status"] = np.where(done == E, "complete", "incomplete")
    trials_df["episodes_planned"] = E
    trials_df["episodes_done"] = done.astype(np.int64)
    for c in ("attempts", "recovery_attempts"):
        trials_df[c] = agg[c].fillna(0).astype(np.int64).to_numpy()
    trials_df["rollbacks"] = 0
    trials_df["last_score"] = agg["last_score"].to_numpy()
    trials_df["final_score"] = np.where(done == E, agg["last_score"].to_numpy(), np.nan)
    trials_df["started_at"] = agg["started_at"].to_numpy()
    trials_df["ended_at"] = agg["ended_at"].to_numpy()
    for name, frame in zip(TABLES, (trials_df, episodes, attempts, checks, usage)):
        _write(run_dir, name, frame)
    manifest = {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "harness_version": "synthetic",
        "git_commit": None, "git_dirty": None, "synthetic": True, "marathon": marathon,
        "marathon_hash": marathon_hash, "episodes": EPISODES, "arm_hashes": {},
        "images": {}, "agent_cli_versions": {}, "simulated": True, "simulated_models": MODELS,
        "config": {"marathons": [marathon], "mode": "both" if len(modes) > 1 else modes[0],
                   "arms": ARMS, "agents": ["synthetic"], "models": MODELS, "replicates": int(rep.max()),
                   "seed_base": seed_base or 0},
        "status": "complete" if not bad.any() else "failed",
        "started_at": t0.isoformat(), "ended_at": (t0 + timedelta(hours=1)).isoformat()}
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return run_dir
