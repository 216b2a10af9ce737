"""Records: Parquet tables in long form, crash-safe parts, readable by pandas, polars, DuckDB."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow.parquet as pq

from benchmark.records import (SCHEMA_VERSION, TABLES, AttemptRow, CheckRow, EpisodeRecords,
                               EpisodeRow, RecordStore, TrialKeys, UsageRow, arrow_schema,
                               read_table)

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=timezone.utc)


def keys(trial: str = "a.oracle.none.none.r1") -> TrialKeys:
    return TrialKeys(run_id="r", trial_id=trial, marathon="tiny", arm="a", agent="oracle",
                     model="none", effort="none", replicate=1, seed=42)


def episode(k: TrialKeys, ep: str, index: int, attempts: int = 1, usage: bool = False) -> EpisodeRecords:
    kd = k.model_dump()
    return EpisodeRecords(
        episode=EpisodeRow(**kd, episode=ep, episode_index=index, attempts=attempts,
                           recovery_attempts=attempts - 1, rollbacks=0,
                           decision="stop_attempts", score=0.5, gates_active=2, gates_passed=1,
                           checks_total=2, checks_passed=1, started_at=NOW, ended_at=NOW, wall_s=2.0,
                           agent_s=1.0, scoring_s=0.9, overhead_s=1.0, commit=None),
        attempts=[AttemptRow(**kd, episode=ep, attempt=n, recovery=n > 1,
                             rolled_back=False, decision="repair" if n < attempts else "stop_attempts",
                             outcome="ok", exit_code=None,
                             error="", duration_s=1.0, time_limit_s=60, score=0.5, gates_active=2,
                             gates_passed=1, checks_total=2, checks_passed=1, scoring_s=0.9,
                             commit="abc", artifacts=f"artifacts/x/{ep}/{n}")
                  for n in range(1, attempts + 1)],
        checks=[CheckRow(**kd, episode=ep, attempt=n, gate=g, gate_active_from="e1", check="test_x",
                         tag="genuine", outcome="passed" if g == "g1" else "failed", message="",
                         duration_s=0.1)
                for n in range(1, attempts + 1) for g in ("g1", "g2")],
        usage=[UsageRow(**kd, episode=ep, attempt=1, call=0, source="proxy", api_model="scripted/x",
                        input_tokens=10, output_tokens=5, cost_usd=None, latency_s=0.2,
                        http_status=200)] if usage else [],
    )


def test_tables_are_written_after_each_episode_and_read_everywhere(tmp_path: Path):
    k1, k2 = keys(), keys("a.nop.none.none.r1")
    planned = [(k1, 2), (k2, 2)]
    store = RecordStore(tmp_path)
    store.consolidate(planned)
    for table in TABLES:  # empty tables exist from the start, with their schema
        assert pd.read_parquet(tmp_path / f"{table}.parquet").shape[0] == (2 if table == "trials" else 0)
    store.write_episode(episode(k1, "e1", 1, attempts=2, usage=True), planned)
    store.write_episode(episode(k2, "e1", 1), planned)
    store.write_episode(episode(k1, "e2", 2), planned)

    for table in TABLES:
        path = tmp_path / f"{table}.parquet"
        p, q = pd.read_parquet(path), pl.read_parquet(path)
        d = duckdb.sql(f"select * from read_parquet('{path}')").df()
        assert len(p) == len(q) == len(d)
        assert list(p.columns) == q.columns == list(d.columns)
        assert pq.read_schema(path).metadata[b"marathon.schema_version"] == str(SCHEMA_VERSION).encode()
        for col in TrialKeys.model_fields:
            assert col in p.columns
    assert len(pd.read_parquet(tmp_path / "checks.parquet")) == (2 * 2) + 2 + 2
    usage = pl.read_parquet(tmp_path / "usage.parquet")
    assert usage["cost_usd"].null_count() == 1 and usage["http_status"][0] == 200
    trials = read_table(tmp_path, "trials").to_pandas().set_index("trial_id")
    assert trials.loc[k1.trial_id, "status"] == "complete"
    assert trials.loc[k1.trial_id, "final_score"] == 0.5 and trials.loc[k1.trial_id, "attempts"] == 3
    assert trials.loc[k2.trial_id, "status"] == "incomplete"
    assert pd.isna(trials.loc[k2.trial_id, "final_score"])


def test_rewriting_an_episode_replaces_never_duplicates(tmp_path: Path):
    k = keys()
    store = RecordStore(tmp_path)
    store.write_episode(episode(k, "e1", 1, attempts=3), [(k, 1)])
    store.write_episode(episode(k, "e1", 1, attempts=1), [(k, 1)])  # re-run after a crash
    reopened = RecordStore(tmp_path)
    assert reopened.finished() == {(k.trial_id, "e1")}
    assert len(read_table(tmp_path, "attempts")) == 1


def test_parts_without_their_episodes_part_are_not_counted(tmp_path: Path):
    k = keys()
    store = RecordStore(tmp_path)
    store.write_episode(episode(k, "e1", 1), [(k, 2)])
    # A crash after the attempts part of e2 was written but before its episodes part:
    rec = episode(k, "e2", 2)
    from benchmark.records import to_table, write_atomic
    write_atomic(to_table("attempts", rec.attempts), tmp_path / "parts" / "attempts" / f"{k.trial_id}.e2.parquet")
    reopened = RecordStore(tmp_path)
    assert reopened.finished() == {(k.trial_id, "e1")}
    reopened.consolidate([(k, 2)])
    assert set(read_table(tmp_path, "attempts").column("episode").to_pylist()) == {"e1"}


def test_duckdb_reads_the_long_checks_table_with_sql(tmp_path: Path):
    k = keys()
    store = RecordStore(tmp_path)
    store.write_episode(episode(k, "e1", 1, attempts=2), [(k, 1)])
    rows = duckdb.sql(
        f"select attempt, count(*) filter (where outcome = 'passed') as ok "
        f"from read_parquet('{tmp_path / 'checks.parquet'}') group by attempt order by attempt").fetchall()
    assert rows == [(1, 1), (2, 1)]


def test_every_column_is_documented_with_the_schema_version():
    from benchmark.records import ROW_MODELS

    doc = (Path(__file__).parents[1] / "docs" / "results-schema.md").read_text()
    assert f"Schema version: **{SCHEMA_VERSION}**" in doc
    keys_section = doc[doc.index("## Keys"):doc.index("## Tables")]
    for table, model in ROW_MODELS.items():
        assert f"`{table}.parquet`" in doc
        start = doc.index(f"### `{table}.parquet`")
        section = doc[start:doc.find("\n### ", start + 1)]
        for field in arrow_schema(table):
            assert f"| `{field.name}` |" in doc, f"{table}.{field.name} is not documented"
            if field.name in TrialKeys.model_fields:
                row = next(r for r in keys_section.splitlines() if r.startswith(f"| `{field.name}` |"))
                assert row.split("|")[2].strip() == str(field.type), f"{table}.{field.name}: type"
                continue
            row = next((r for r in section.splitlines() if r.startswith(f"| `{field.name}` |")), None)
            assert row is not None, f"{table}.{field.name} is not in the {table} section"
            cells = [c.strip() for c in row.split("|")[1:-1]]
            assert cells[1] == str(field.type), f"{table}.{field.name}: documented type {cells[1]}"
            assert cells[2] == ("yes" if field.nullable else "no"), f"{table}.{field.name}: nullable"


DOC = Path(__file__).parents[1] / "docs" / "results-schema.md"


def _doc_rows(section: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("|")[1:-1]] for line in section.splitlines()
            if line.startswith("| `")]


def documented_schema(table: str) -> list[tuple[str, str, bool]]:
    """``(column, Arrow type, nullable)`` of ``table`` as docs/results-schema.md documents it, in
    order: the trial keys (section "Keys"), then the table's own section."""
    doc = DOC.read_text()
    keys = doc[doc.index("## Keys"):doc.index("## Tables")]
    start = doc.index(f"### `{table}.parquet`")
    section = doc[start:doc.find("\n#", start + 1)]
    cols = [(r[0].strip("`"), r[1], False) for r in _doc_rows(keys)]
    cols += [(r[0].strip("`"), r[1], r[2] == "yes") for r in _doc_rows(section)]
    return cols


def assert_files_match_doc(run_dir: Path) -> None:
    """Every consolidated table of ``run_dir`` has exactly the documented columns, in the
    documented order (trial keys first), with the documented types and nullability."""
    for table in TABLES:
        schema = pq.read_schema(run_dir / f"{table}.parquet")
        got = [(f.name, str(f.type), f.nullable) for f in schema]
        assert got == documented_schema(table), f"{table}.parquet differs from docs/results-schema.md"


def test_written_tables_match_the_schema_doc(tmp_path: Path):
    k = keys()
    store = RecordStore(tmp_path)
    store.write_episode(episode(k, "e1", 1, attempts=2, usage=True), [(k, 1)])
    assert_files_match_doc(tmp_path)
    usage = pq.read_schema(tmp_path / "usage.parquet").names
    assert usage[:len(TrialKeys.model_fields)] == list(TrialKeys.model_fields)  # keys first


def test_parts_of_an_older_column_order_still_consolidate(tmp_path: Path):
    """A usage part written with the figure columns before the keys and without a column added
    since (an older harness) is read in today's schema."""
    k = keys()
    store = RecordStore(tmp_path)
    store.write_episode(episode(k, "e1", 1, usage=True), [(k, 1)])
    part = tmp_path / "parts" / "usage" / f"{k.trial_id}.e1.parquet"
    old = pq.read_table(part)
    names = old.column_names
    front = len(TrialKeys.model_fields) + 3
    older = old.select(names[front:] + names[:front]).drop_columns(["usage_missing"])  # added later
    pq.write_table(older, part)
    RecordStore(tmp_path).consolidate([(k, 1)])
    assert_files_match_doc(tmp_path)
    usage = pq.read_table(tmp_path / "usage.parquet")
    assert usage.column("usage_missing").null_count == 1 and usage.column("input_tokens")[0].as_py() == 10
