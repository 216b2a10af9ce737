"""Pre-registered protocols: the file model, the plan a protocol runs, and the report's check
of runs against it (one deviation of each kind), on synthetic runs; one real run from a
protocol (Docker) records the protocol's hash and checks clean."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from benchmark.cli import main
from benchmark.errors import MarathonError
from benchmark.manifest import ProtocolRef, read_manifest
from benchmark.protocol import (DEVIATION_KINDS, check_protocol, load_protocol, protocol_hash,
                                run_config)
from benchmark.report import load_runs
from benchmark.report.synthetic import ARMS, MODELS, write_synthetic_run
from conftest import ROOT, TINY, unique_run_id

SHIPPED = ROOT / "protocols" / "recovery-marathon-replication.toml"
FIXTURE = Path(__file__).parent / "fixtures" / "results" / "fixture"

BASE = f"""name = "syn"
question = "Does governed-runtime beat feedback-retry?"
marathons = ["ledger"]
arms = {json.dumps(ARMS[1:])}
agents = ["synthetic"]
models = {json.dumps(MODELS)}
efforts = ["none"]
replicates = 4
seed_base = 7

[[hypotheses]]
id = "H1"
statement = "governed-runtime has more full passes"
metric = "full_pass_rate"
test = "mcnemar_exact"
arm_a = "governed-runtime"
arm_b = "feedback-retry"
direction = "a_greater"

[[hypotheses]]
id = "H2"
statement = "governed-runtime scores higher"
metric = "mean_final_score"
test = "wilcoxon_signed_rank"
arm_a = "governed-runtime"
arm_b = "feedback-retry"

[[exclusions]]
id = "provider-error"
when = "agent_error"
pattern = "overloaded"
"""


def _protocol(tmp_path: Path, text: str = BASE):
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path, load_protocol(path)


def _run(tmp_path: Path, path: Path, **kw) -> Path:
    """A synthetic run of 4 replicates of every arm, recorded as started from ``path``."""
    run = write_synthetic_run(tmp_path, trials=32, seed=4, run_id=kw.pop("run_id", "syn"),
                              incomplete_share=0.0, seed_base=kw.pop("seed_base", 7), **kw)
    m = json.loads((run / "manifest.json").read_text())
    m["protocol"] = {"name": "syn", "path": str(path), "sha256": protocol_hash(path)}
    (run / "manifest.json").write_text(json.dumps(m))
    return run


def _check(protocol, path, runs):
    return check_protocol(protocol, load_runs(runs), path, protocol_hash(path),
                          uses_model={"synthetic": True})


def _kinds(check) -> set[str]:
    return {d.kind for d in check.deviations}


def test_a_run_that_follows_the_protocol_has_no_deviation(tmp_path):
    path, protocol = _protocol(tmp_path)
    run = _run(tmp_path, path)
    # the plan covers 3 of the run's 4 arms: drop the other's trials from the tables
    for table in ("trials", "episodes", "attempts", "checks", "usage"):
        f = run / f"{table}.parquet"
        df = pd.read_parquet(f)
        df[df.arm != ARMS[0]].to_parquet(f, index=False)
    check = _check(protocol, path, run)
    assert check.deviations == []
    assert set(check.cells["status"]) == {"complete"} and len(check.cells) == 3 * 2
    assert [o.hypothesis.id for o in check.hypotheses] == ["H1", "H2"]
    for o in check.hypotheses:
        assert o.n == o.planned_n == 2 * 4 and o.outcome in ("supported", "not supported")


def test_each_kind_of_deviation_is_found(tmp_path):
    text = BASE.replace("replicates = 4", "replicates = 5") + (
        "\n[budgets]\nmax_cost_usd_per_trial = 0.01\n")
    path, protocol = _protocol(tmp_path, text)
    run = _run(tmp_path, path)
    # one attempt failed at the provider: the rule excludes its trial
    att = pd.read_parquet(run / "attempts.parquet")
    victim = att.trial_id[att.arm == "feedback-retry"].iloc[0]
    att.loc[att.index[att.trial_id == victim][0], ["outcome", "error"]] = ["agent_error", "HTTP 529 overloaded"]
    att.to_parquet(run / "attempts.parquet", index=False)
    m = json.loads((run / "manifest.json").read_text())
    m["config"]["time_limit_s"] = 60.0  # a changed setting
    (run / "manifest.json").write_text(json.dumps(m))
    check = _check(protocol, path, run)
    assert _kinds(check) == set(DEVIATION_KINDS)
    texts = {k: [d.text for d in check.deviations if d.kind == k] for k in DEVIATION_KINDS}
    assert all(t.endswith("r5 (4 of 5 done)") for t in texts["missing replicates"]
               if "feedback-retry" not in t or "synthetic-a" not in t)
    rep = victim.rsplit(".r", 1)[1]  # the excluded trial's replicate is missing (no re-run yet)
    assert [t for t in texts["missing replicates"]
            if "synthetic-a" in t and "feedback-retry" in t] == [
        f"cell ledger/scripted/synthetic-a/none/synthetic/cumulative/feedback-retry: missing "
        f"replicate(s) r{rep}, r5 (3 of 5 done)"]
    assert [t for t in texts["extra runs"] if ARMS[0] in t and "not in the protocol" in t]
    assert any("time_limit_s 60.0 (protocol: 1800.0)" in t for t in texts["changed settings"])
    assert texts["exclusions applied"] == [f"syn/{victim} excluded by provider-error: agent_error in "
                                           f"e1 attempt 1: HTTP 529 overloaded"]
    assert texts["budget exceeded"]
    cell = check.cells.set_index("arm").loc["feedback-retry"]
    assert (cell["excluded"].sum(), cell["done"].sum()) == (1, 2 * 4 - 1)


def test_changed_protocol_seeds_and_duplicate_runs(tmp_path):
    path, protocol = _protocol(tmp_path)
    run = _run(tmp_path, path, seed_base=3)  # seeds of another seed base
    again = _run(tmp_path, path, run_id="syn2")  # the same cells run twice
    path.write_text(BASE.replace("governed-runtime scores higher", "governed-runtime scores more"))
    check = _check(load_protocol(path), path, [run, again])
    changed = [d.text for d in check.deviations if d.kind == "changed settings"]
    assert any("not this file" in t for t in changed)  # the file changed after the runs
    assert any("seed_base 3 (protocol: 7)" in t for t in changed)
    assert any("seeds not derived from seed base 7" in t for t in changed)
    extra = [d.text for d in check.deviations if d.kind == "extra runs"]
    assert any("a second counting trial" in t for t in extra)


@pytest.mark.parametrize("edit, expected", [
    (('test = "mcnemar_exact"', 'test = "wilcoxon_signed_rank"'),
     "hypotheses[0]: test wilcoxon_signed_rank decides metric mean_final_score, not full_pass_rate"),
    (('arm_b = "feedback-retry"', 'arm_b = "nope"'), "hypothesis H1: arm 'nope' is not among arms"),
    (("replicates = 4", "replicates = 0"), "replicates: Input should be greater than or equal to 1"),
    (('arm_b = "feedback-retry"', 'arm_b = "governed-runtime"'),
     "hypotheses[0]: arm_a and arm_b are both 'governed-runtime'"),
    (('pattern = "overloaded"', 'pattern = "(("'), "exclusions[0].pattern: not a regular expression"),
])
def test_bad_protocol_names_file_and_field(tmp_path, edit, expected):
    path = tmp_path / "p.toml"
    path.write_text(BASE.replace(*edit))
    with pytest.raises(MarathonError) as err:
        load_protocol(path)
    assert str(err.value).startswith(f"{path}: ") and expected in str(err.value)
    assert "\n" not in str(err.value)


def test_shipped_protocol_plans_the_replication():
    protocol = load_protocol(SHIPPED)
    config = run_config(protocol, SHIPPED, {"jobs": 2, "out": None, "run_id": None})
    assert config.arms == ["prompt-only", "skill-only", "feedback-retry", "governed-runtime"]
    assert len(config.models) == 3 and config.effort == ["low"] and config.replicates == 5
    assert config.jobs == 2 and config.mode == "cumulative"
    h1 = protocol.hypotheses[0]
    assert (h1.arm_a, h1.arm_b) == ("governed-runtime", "feedback-retry")


def test_report_lists_uncovered_cells_of_the_shipped_protocol(tmp_path):
    res = CliRunner().invoke(main, ["report", str(FIXTURE), "--out", str(tmp_path / "r"),
                                    "--resamples", "200", "--protocol", str(SHIPPED)])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "r" / "report.md").read_text()
    section = text[text.index("## Protocol `recovery-marathon-replication`"):text.index("## Claim boundary")]
    assert section.count("not covered replicate(s) r1, r2, r3, r4, r5") == 12
    assert "**extra runs**" in section and "| H1 |" in section and "undetermined" in section
    assert (tmp_path / "r" / "protocol.md").read_text().startswith("## Protocol")


def test_protocol_flags_are_usage_errors(tmp_path):
    res = CliRunner().invoke(main, ["run", "--protocol", str(SHIPPED), "--replicates", "2"])
    assert res.exit_code == 2 and "--protocol: the protocol fixes the plan" in res.output
    res = CliRunner().invoke(main, ["report", str(FIXTURE), "--protocol", str(tmp_path / "none.toml")])
    assert res.exit_code == 2 and "--protocol: protocol file" in res.output


@pytest.mark.docker
def test_run_from_a_protocol_records_its_hash_and_follows_it(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(f"""name = "tiny-check"
question = "Does the oracle pass?"
marathons = ["{TINY}"]
arms = ["prompt-only", "skill-only"]
agents = ["oracle", "nop"]
replicates = 1
episodes = 1
[[hypotheses]]
id = "H1"
statement = "the arms differ"
metric = "mean_final_score"
test = "wilcoxon_signed_rank"
arm_a = "prompt-only"
arm_b = "skill-only"
[budgets]
time_limit_s = 120
""")
    run_id = unique_run_id("proto")
    res = CliRunner().invoke(main, ["run", "--protocol", str(path), "--out", str(tmp_path),
                                    "--run-id", run_id, "--no-progress"])
    assert res.exit_code == 0, res.output
    m = read_manifest(tmp_path / run_id)
    assert m.protocol == ProtocolRef(name="tiny-check", path=str(path), sha256=protocol_hash(path))
    assert m.config.time_limit_s == 120 and m.config.agents == ["oracle", "nop"]
    check = check_protocol(load_protocol(path), load_runs(tmp_path / run_id), path, protocol_hash(path))
    assert check.deviations == [] and set(check.cells["status"]) == {"complete"}

