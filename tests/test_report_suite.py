"""`marathon report` over a suite (several marathons) and over both modes: the pooled summary
with marathon as a stratum, paired comparisons by marathon and seed, per-marathon sections, the
debt table, against hand computations from the Parquet rows (synthetic runs, no Docker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.errors import MarathonError
from benchmark.report import ReportOptions, build_report, load_runs
from benchmark.report.debt import debt_gates, debt_table
from benchmark.report.pooled import pooled_comparisons, pooled_summary
from benchmark.report.synthetic import write_synthetic_run

OPTS = ReportOptions(resamples=500)
FIXTURE = Path(__file__).parent / "fixtures" / "results" / "fixture"


@pytest.fixture(scope="module")
def suite_dirs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("suite")
    return [write_synthetic_run(root, trials=96, seed=1, run_id="led", incomplete_share=0.05,
                                marathon="ledger", marathon_hash="a" * 64,
                                modes=("cumulative", "isolated")),
            write_synthetic_run(root, trials=48, seed=2, run_id="rel", incomplete_share=0.0,
                                marathon="relay", marathon_hash="b" * 64)]


@pytest.fixture(scope="module")
def suite(suite_dirs):
    return load_runs(suite_dirs)


def test_runs_of_different_marathons_combine(suite):
    assert suite.marathons == {"ledger": ["e1", "e2", "e3", "e4"], "relay": ["e1", "e2", "e3", "e4"]}
    assert suite.marathon == "ledger+relay" and set(suite.trials["marathon"]) == {"ledger", "relay"}
    assert suite.for_marathon("relay").trials["marathon"].eq("relay").all()
    assert set(suite.modes()) == {"cumulative", "isolated"}


def test_older_tables_read_as_cumulative():
    r = load_runs(FIXTURE)
    assert r.trials["mode"].eq("cumulative").all() and r.checks["mode"].eq("cumulative").all()


def test_one_marathon_in_two_versions_is_refused(tmp_path, suite_dirs):
    other = write_synthetic_run(tmp_path, trials=16, run_id="rel2", marathon="relay",
                                marathon_hash="c" * 64)
    with pytest.raises(MarathonError, match=r"different marathon versions.*rel \(relay.*rel2 \(relay"):
        load_runs([*suite_dirs, other])


def test_pooled_summary_weighs_each_marathon_equally(suite):
    pooled = pooled_summary(suite, OPTS).set_index(["model", "arm", "mode"])
    t = suite.trials[suite.trials["included"]]
    key = ("scripted/synthetic-a", "prompt-only", "cumulative")
    per = t[(t.model == key[0]) & (t.arm == key[1]) & (t["mode"] == key[2])].groupby("marathon")
    row = pooled.loc[key]
    assert row["marathons"] == 2 and row["replicates"] == len(per.obj)
    assert row["mean_final_score"] == pytest.approx(per["final_score"].mean().mean())
    assert row["full_pass_rate"] == pytest.approx(per["final_score"].apply(lambda s: (s >= 1).mean()).mean())
    assert row["score_ci_low"] <= row["mean_final_score"] <= row["score_ci_high"]
    # isolated trials exist in ledger only: one stratum
    iso = pooled.loc[("scripted/synthetic-a", "prompt-only", "isolated")]
    assert iso["marathons"] == 1 and iso["marathon_names"] == "ledger"


def test_pooled_comparisons_pair_by_marathon_and_seed(suite):
    cmp = pooled_comparisons(suite, OPTS)
    row = cmp[(cmp.model == "scripted/synthetic-b") & (cmp["mode"] == "cumulative")
              & (cmp.arm_a == "prompt-only") & (cmp.arm_b == "governed-runtime")].iloc[0]
    t = suite.trials[suite.trials["included"] & (suite.trials.model == "scripted/synthetic-b")
                     & (suite.trials["mode"] == "cumulative")]
    a = t[t.arm == "prompt-only"].set_index(["marathon", "seed"])["final_score"]
    b = t[t.arm == "governed-runtime"].set_index(["marathon", "seed"])["final_score"]
    both = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner")
    assert row["pairs"] == len(both) and row["marathons"] == 2
    assert row["a_only"] == int(((both.a >= 1) & (both.b < 1)).sum())
    assert row["b_only"] == int(((both.a < 1) & (both.b >= 1)).sum())
    d = (both.a - both.b).groupby(level="marathon").mean().mean()
    assert row["mean_difference"] == pytest.approx(d)


def test_debt_is_isolated_minus_cumulative_on_the_same_seeds(suite):
    led = suite.for_marathon("ledger")
    debt = debt_table(led, OPTS).set_index(["model", "arm", "episode"])
    eps = led.only_included(led.episode_rows)
    key = ("scripted/synthetic-a", "feedback-retry")
    sub = eps[(eps.model == key[0]) & (eps.arm == key[1])]
    iso = sub[sub["mode"] == "isolated"].set_index(["seed", "episode"])["score"]
    cum = sub[sub["mode"] == "cumulative"].set_index(["seed", "episode"])["score"]
    diff = (iso - cum).dropna()
    for episode in ("e1", "e4"):
        d = diff.xs(episode, level="episode")
        row = debt.loc[(*key, episode)]
        assert row["pairs"] == len(d) and row["debt"] == pytest.approx(d.mean())
        assert row["ci_low"] <= row["debt"] <= row["ci_high"]
    # isolated trials carry no decay of earlier gates: the debt grows over the episodes
    assert debt.xs("e4", level="episode")["debt"].mean() > debt.xs("e1", level="episode")["debt"].mean()
    gates = debt_gates(led).set_index(["model", "arm", "episode", "gate"])
    g = gates.loc[(*key, "e4", "idempotency")]
    assert g["difference"] == pytest.approx(g["isolated_green"] - g["cumulative_green"])
    named = debt.loc[(*key, "e4"), "gates"]
    positive = gates.xs((*key, "e4"), level=["model", "arm", "episode"]).query("difference > 0")
    assert set(x.split()[0] for x in named.split(", ") if x) == set(positive.index)


def test_suite_report_has_pooled_and_per_marathon_sections(suite_dirs, tmp_path):
    files = build_report(suite_dirs, tmp_path / "rep", OPTS)
    text = files.report.read_text()
    for heading in ("## Pooled over marathons (marathon as a stratum)", "## Marathon `ledger`",
                    "## Marathon `relay`", "### Debt: isolated minus cumulative score",
                    "## Claim boundary"):
        assert heading in text
    assert text.count("### Debt:") == 1  # relay ran one mode only
    assert f"content hash `{'a' * 16}`" in text and f"content hash `{'b' * 16}`" in text
    for rel in ("pooled_summary.csv", "pooled_comparisons.csv", "debt.csv",
                "charts/ledger/debt.png", "charts/relay/marathon.svg", "data/ledger/debt_gates.csv"):
        assert (tmp_path / "rep" / rel).is_file(), rel
    assert (tmp_path / "rep" / "summary.md").read_text().startswith("| marathon | model |")
    summary = pd.read_csv(tmp_path / "rep" / "summary.csv")
    assert set(summary["marathon"]) == {"ledger", "relay"} and "mode" in summary.columns
    assert np.isfinite(pd.read_csv(tmp_path / "rep" / "pooled_summary.csv")["score_ci_low"]).all()
