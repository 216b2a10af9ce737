"""`marathon report`: tables and chart data against the Parquet rows, files, CLI (no Docker).

The real-run fixture (tests/fixtures/results/fixture, see its README) covers oracle and nop;
small synthetic runs (benchmark.report.synthetic) cover usage, regressions and exclusions.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from benchmark.cli import main
from benchmark.errors import MarathonError
from benchmark.report import ReportOptions, build_report, load_runs
from benchmark.report import chartdata
from benchmark.report.build import compute
from benchmark.report.charts import CHART_NAMES
from benchmark.report.claims import check_tags, excluded_trials
from benchmark.report.synthetic import write_synthetic_run
from benchmark.report.tables import comparisons_table, summary_table

FIXTURE = Path(__file__).parent / "fixtures" / "results" / "fixture"
OPTS = ReportOptions(resamples=1000)


@pytest.fixture(scope="module")
def fixture_results():
    return load_runs(FIXTURE)


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    return write_synthetic_run(tmp_path_factory.mktemp("syn"), trials=400, seed=3,
                               run_id="syn-a", incomplete_share=0.05)


@pytest.fixture(scope="module")
def synthetic(synthetic_dir):
    return load_runs(synthetic_dir)


def _parquet(name: str, run_dir: Path = FIXTURE) -> pd.DataFrame:
    return pd.read_parquet(run_dir / f"{name}.parquet")


# -- the real fixture ------------------------------------------------------------------------

def test_fixture_loads(fixture_results):
    r = fixture_results
    assert r.marathon == "ledger" and r.episodes == ["e1", "e2", "e3", "e4"]
    assert r.arms == ["prompt-only", "feedback-retry"]
    assert len(r.trials) == 8 and r.trials["included"].all()
    assert r.no_model_agents() == ["nop", "oracle"] and r.simulated_models() == []


def test_summary_matches_rows(fixture_results):
    s = summary_table(fixture_results, OPTS).set_index(["agent", "arm"])
    trials = _parquet("trials")
    for (agent, arm), row in s.iterrows():
        t = trials[(trials.agent == agent) & (trials.arm == arm)]
        assert row.replicates == len(t) == 2 and row.excluded == 0
        assert row.full_passes == int((t.final_score == 1).sum())
        assert row.mean_final_score == pytest.approx(t.final_score.mean())
        assert row.recovery_attempts == t.recovery_attempts.sum()
        assert row.k == 2
        assert row.usage_reconciled == "n/a"  # schema 1, no model: no verdict column
        assert row.input_tokens == 0
    assert s.loc[("oracle", "prompt-only"), "full_passes"] == 2
    assert s.loc[("oracle", "prompt-only"), "pass_hat_k"] == 1.0
    assert s.loc[("nop", "feedback-retry"), "full_passes"] == 0
    assert s.loc[("nop", "feedback-retry"), "recovery_attempts"] == 16  # 2 per episode x 4 x 2
    low, high = s.loc[("nop", "prompt-only"), ["full_pass_ci_low", "full_pass_ci_high"]]
    assert (low, round(high, 3)) == (0.0, 0.658)  # Wilson 0/2


def test_comparisons_pair_by_seed(fixture_results):
    c = comparisons_table(fixture_results)
    assert len(c) == 2  # one pair of arms per agent
    assert (c["pairs"] == 2).all()
    assert (c["note"] == "all pairs tied").all() and (c["wilcoxon_p"] == 1.0).all()
    assert (c["fisher_p"] == 1.0).all()


def test_marathon_curve_matches_episode_rows(fixture_results):
    curve = chartdata.marathon_curve(fixture_results, OPTS)
    eps = _parquet("episodes")
    expect = eps.groupby(["agent", "arm", "episode"])["score"].agg(["mean", "size"])
    got = curve.set_index(["agent", "arm", "episode"])
    assert len(got) == len(expect) == 16
    for key, row in expect.iterrows():
        assert got.loc[key, "mean_score"] == pytest.approx(row["mean"])
        assert got.loc[key, "n"] == row["size"]
        assert got.loc[key, "ci_low"] <= got.loc[key, "mean_score"] <= got.loc[key, "ci_high"]


def _gate_green_by_hand(run_dir: Path) -> dict:
    """(trial, episode, gate) -> green after the final attempt, with plain Python."""
    eps = _parquet("episodes", run_dir)
    final = {(r.trial_id, r.episode): r.attempts for r in eps.itertuples()}
    green: dict = {}
    for r in _parquet("checks", run_dir).itertuples():
        if final.get((r.trial_id, r.episode)) != r.attempt:
            continue
        key = (r.trial_id, r.episode, r.gate)
        green[key] = green.get(key, True) and r.outcome == "passed"
    return green


def test_gate_survival_matches_checks(fixture_results):
    surv = chartdata.gate_survival(fixture_results)
    green = _gate_green_by_hand(FIXTURE)
    trials = _parquet("trials").set_index("trial_id")
    expect: dict = {}
    for (trial, episode, gate), g in green.items():
        key = (trials.loc[trial, "agent"], trials.loc[trial, "arm"], gate, episode)
        n, k = expect.get(key, (0, 0))
        expect[key] = (n + 1, k + g)
    got = surv.set_index(["agent", "arm", "gate", "episode"])
    assert len(got) == len(expect) == 2 * 2 * (2 + 4 + 5 + 6)  # active gates per episode
    for key, (n, k) in expect.items():
        assert (got.loc[key, "n"], got.loc[key, "green"]) == (n, k)
    assert (got.xs("oracle", level="agent")["share"] == 1).all()
    assert (got.xs("nop", level="agent")["share"] == 0).all()


def test_recovery_matches_episode_rows(fixture_results):
    rec = chartdata.recovery(fixture_results).set_index(["agent", "arm", "episode"])
    eps = _parquet("episodes")
    expect = eps.groupby(["agent", "arm", "episode"])["recovery_attempts"].sum()
    assert (rec["recovery_attempts"].sort_index() == expect.sort_index()).all()


def test_build_report_files(fixture_results, tmp_path):
    files = build_report([FIXTURE], tmp_path / "rep", OPTS)
    assert files.report.is_file()
    text = files.report.read_text()
    for heading in ("## Summary", "## Comparisons", "## Charts", "## Claim boundary",
                    "### Genuine and contract checks", "No model"):
        assert heading in text
    assert len(files.charts) == 2 * len(CHART_NAMES)
    for name in CHART_NAMES:
        png = tmp_path / "rep" / "charts" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        svg = tmp_path / "rep" / "charts" / f"{name}.svg"
        root = ET.parse(svg).getroot()
        assert root.tag.endswith("svg")
        body = svg.read_text()
        assert "SIMULATED: no model (oracle/nop)" in body
        assert "ledger" in body and "n = 2 complete replicates per arm" in body
    summary = pd.read_csv(tmp_path / "rep" / "summary.csv")
    assert len(summary) == 4 and {"pass_at_k", "pass_hat_k", "usage_reconciled"} <= set(summary)
    assert (tmp_path / "rep" / "data" / "gate_survival.csv").is_file()


def test_tags_reported_apart(fixture_results):
    tags = check_tags(fixture_results)
    assert set(tags["tag"]) == {"genuine", "contract"}
    checks = _parquet("checks")
    last = checks[(checks.episode == "e4")]
    final = last.merge(_parquet("episodes")[["trial_id", "episode", "attempts"]],
                       on=["trial_id", "episode"])
    final = final[final.attempt == final.attempts]
    for (agent, arm, tag), g in final.groupby(["agent", "arm", "tag"]):
        row = tags[(tags.agent == agent) & (tags.arm == arm) & (tags.tag == tag)].iloc[0]
        assert (row.checks, row.passed) == (len(g), (g.outcome == "passed").sum())


def test_cli_report(tmp_path):
    res = CliRunner().invoke(main, ["report", str(FIXTURE), "--out", str(tmp_path / "r"),
                                    "--resamples", "200"])
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1] == str(tmp_path / "r" / "report.md")


# -- synthetic runs ----------------------------------------------------------------------------

def test_excluded_trials_listed_with_why(synthetic, synthetic_dir):
    trials = _parquet("trials", synthetic_dir)
    incomplete = trials[trials.status != "complete"]
    assert len(incomplete) > 0
    ex = excluded_trials(synthetic)
    assert set(ex["trial_id"]) == set(incomplete["trial_id"])
    assert ex["why"].str.contains("episodes finished").all()
    s = summary_table(synthetic, OPTS)
    assert s["excluded"].sum() == len(incomplete)
    assert s["replicates"].sum() == (trials.status == "complete").sum()


def test_token_audit_matches_usage_rows(synthetic, synthetic_dir):
    tok = chartdata.token_audit(synthetic).set_index(["model", "arm"])
    usage = _parquet("usage", synthetic_dir)
    complete = _parquet("trials", synthetic_dir).query("status == 'complete'")["trial_id"]
    proxy = usage[(usage.source == "proxy") & usage.trial_id.isin(complete)]  # proxy wins
    expect = proxy.groupby(["model", "arm"])[["input_tokens", "output_tokens",
                                             "cache_write_tokens", "cache_read_tokens",
                                             "cost_usd"]].sum()
    for key, row in expect.iterrows():
        for col in expect.columns:
            assert tok.loc[key, col] == pytest.approx(row[col])
    s = summary_table(synthetic, OPTS)
    assert s["usage_reconciled"].str.match(r"^(yes|no) \(").all()


def test_regressions_match_rows(synthetic, synthetic_dir):
    regs = chartdata.regressions(synthetic).set_index(["model", "arm", "gate", "episode"])
    green = _gate_green_by_hand(synthetic_dir)
    trials = _parquet("trials", synthetic_dir).set_index("trial_id")
    complete = set(trials.index[trials.status == "complete"])
    order = {"e1": "", "e2": "e1", "e3": "e2", "e4": "e3"}
    expect: dict = {}
    for (trial, episode, gate), g in green.items():
        before = green.get((trial, order[episode], gate))
        if trial not in complete or before is None:
            continue
        key = (trials.loc[trial, "model"], trials.loc[trial, "arm"], gate, episode)
        n, b = expect.get(key, (0, 0))
        expect[key] = (n + before, b + (before and not g))
    assert len(regs) == len(expect)
    for key, (n, b) in expect.items():
        assert (regs.loc[key, "n"], regs.loc[key, "broken"]) == (n, b)
    assert regs["broken"].sum() > 0


def test_runs_combine(tmp_path, synthetic_dir):
    other = write_synthetic_run(tmp_path, trials=80, seed=5, run_id="syn-b")
    r = load_runs([synthetic_dir, other])
    assert len(r.trials) == 480 and r.trials["uid"].is_unique
    data = compute(r, OPTS)
    assert data.summary["trials"].sum() == 480


def test_mismatched_marathon_versions_refused(tmp_path, synthetic_dir):
    other = write_synthetic_run(tmp_path, trials=16, run_id="syn-old", marathon_hash="f" * 64)
    with pytest.raises(MarathonError, match=r"different marathon versions.*syn-a.*syn-old"):
        load_runs([synthetic_dir, other])
    res = CliRunner().invoke(main, ["report", str(synthetic_dir), str(other),
                                    "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("marathon: error: runs of different marathon")


def test_not_a_run_dir(tmp_path):
    res = CliRunner().invoke(main, ["report", str(tmp_path), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "manifest.json not found" in res.output


def test_simulated_marking_for_scripted_models(synthetic, tmp_path, synthetic_dir):
    files = build_report([synthetic_dir], tmp_path / "rep", OPTS)
    svg = (tmp_path / "rep" / "charts" / "marathon.svg").read_text()
    assert "SIMULATED: scripted model scripted/synthetic-a, scripted/synthetic-b" in svg
    assert "**Simulated models**" in files.report.read_text()


def test_tolerates_missing_optional_columns(tmp_path):
    """A schema-1 run (the fixture) with no usage file still reports."""
    run = tmp_path / "fixture"
    shutil.copytree(FIXTURE, run)
    (run / "usage.parquet").unlink()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    s = summary_table(load_runs(run), OPTS)
    assert (s["cost_usd"].isna()).all() and (s["usage_reconciled"] == "n/a").all()


# -- the real schema-2 fixture with model usage -----------------------------------------------

V2 = Path(__file__).parent / "fixtures" / "results" / "v2-claude-scripted"


def test_schema2_run_with_usage():
    r = load_runs(V2)
    s = summary_table(r, OPTS).iloc[0]
    usage = _parquet("usage", V2)
    proxy = usage[usage.source == "proxy"]  # the proxy metered every attempt: its rows count
    for kind in ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens"):
        assert s[kind] == proxy[kind].sum()
    attempts = _parquet("attempts", V2)
    n = int(attempts.reconciliation.notna().sum())
    assert s["usage_reconciled"] == f"yes ({n}/{n} attempts match)"
    assert s["rollbacks"] == 0 and s["recovery_attempts"] == _parquet("trials", V2).recovery_attempts.sum()
    assert r.simulated_models() == ["scripted/forgetful"] and r.episodes == ["e1", "e2"]


def test_runs_of_different_episodes_refused():
    with pytest.raises(MarathonError, match="different"):
        load_runs([FIXTURE, V2])
