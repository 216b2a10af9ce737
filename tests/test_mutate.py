"""``marathon mutate``: cosmic-ray mutants of a reference, scored by the real scorer.

The ``double`` fixture marathon (tests/fixtures/double) has 12 candidate mutants of known fate
against its one gate: ``n > 0 -> n >= 0`` and ``n > 0 -> n > -1`` are equivalent (0 doubles
to 0), ``n > 0 -> n > 1`` is caught only by the seed-dependent check on seed 1, every other
candidate is killed on any seed.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from benchmark.errors import MarathonError
from benchmark.marathon import MutationConfig, load_marathon
from benchmark.mutation.equivalents import change_lines, load_equivalents, match_equivalents
from benchmark.mutation.run import (MutantOutcome, SeedVerdict, check_baseline, classify, draw, plan,
                                    read_store, score_pending)
from benchmark.mutation.source import Mutant, mutant_source
from benchmark.mutation.summary import kill_rate, write_outputs
from benchmark.scorer import CheckResult, Outcome
from tests.answer_fixtures import DOUBLE, scorer_image  # noqa: F401
from tests.conftest import run_cli

#: The changed lines of the fixture's notable mutants.
GT_ONE = ("-print(n * 2 if n > 0 else 0)", "+print(n * 2 if n > 1 else 0)")
GT_E = ("-print(n * 2 if n > 0 else 0)", "+print(n * 2 if n >= 0 else 0)")
GT_MINUS_ONE = ("-print(n * 2 if n > 0 else 0)", "+print(n * 2 if n > -1 else 0)")

EQUIVALENTS = '''
[[equivalent]]
file = "double/__main__.py"
reason = "0 doubles to 0, so n >= 0 and n > 0 print the same"
diff = """
--- a/double/__main__.py
+++ b/double/__main__.py
@@ -20,3 +20,3 @@
 n = int(sys.argv[1])
-print(n * 2 if n > 0 else 0)
+print(n * 2 if n >= 0 else 0)
"""

[[equivalent]]
file = "double/__main__.py"
reason = "n is an integer: n > -1 is n >= 0, and 0 doubles to 0"
diff = """
-    print(n * 2 if n > 0 else 0)
+    print(n * 2 if n > -1 else 0)
"""

[[equivalent]]
file = "double/__main__.py"
reason = "a change the code no longer has"
diff = """
-print(n + n)
+print(n - n)
"""
'''


def copy_double(tmp_path: Path, equivalents: str | None = None) -> Path:
    """A copy of the double marathon (its directory name is its name), with an equivalents file."""
    root = tmp_path / "double"
    shutil.copytree(DOUBLE, root)
    if equivalents is not None:
        (root / "equivalent-mutants.toml").write_text(equivalents, encoding="utf-8")
    return root


def test_enumerates_filters_and_excludes(tmp_path: Path):
    """cosmic-ray enumerates the selected files only; noise operators and `pragma: no mutate`
    lines are skipped with their reason; every candidate applies to a copy as its diff says."""
    ref = tmp_path / "ref"
    (ref / "pkg").mkdir(parents=True)
    (ref / "tests").mkdir()
    (ref / "pkg" / "__init__.py").write_text("")
    (ref / "pkg" / "core.py").write_text(
        "def f(a, b):\n"
        "    flags = a | b\n"
        "    limit = 10  # pragma: no mutate\n"
        "    return a < b and flags\n")
    (ref / "pkg" / "conftest.py").write_text("X = 1 + 2\n")
    (ref / "tests" / "test_core.py").write_text("def test_f():\n    assert 1 < 2\n")
    source = mutant_source(MutationConfig())
    mutants = source.mutants(ref, MutationConfig(), tmp_path / "work")
    assert {m.file for m in mutants} == {"pkg/core.py"}
    by_op = {}
    for m in mutants:
        by_op.setdefault(m.operator, []).append(m)
    assert {m.skip_reason for op, ms in by_op.items() if "BitOr" in op for m in ms} == {"operator filter"}
    assert [m.skip_reason for m in by_op["core/NumberReplacer"]] == ["pragma: no mutate"] * 2
    # The sufficient relational replacements of `<` are kept, the others filtered.
    kept = {op for op, ms in by_op.items() if ms[0].skip_reason is None}
    assert {"core/ReplaceComparisonOperator_Lt_LtE", "core/ReplaceComparisonOperator_Lt_NotEq",
            "core/ReplaceAndWithOr"} <= kept
    assert by_op["core/ReplaceComparisonOperator_Lt_Gt"][0].skip_reason == "operator filter"
    assert all(m.diff == "" for m in mutants if m.skip_reason)
    lt = by_op["core/ReplaceComparisonOperator_Lt_LtE"][0]
    assert lt.line == 4 and lt.function == "f"
    assert change_lines(lt.diff) == ("-return a < b and flags", "+return a <= b and flags")
    copy = tmp_path / "copy"
    shutil.copytree(ref, copy)
    source.apply(lt, copy)
    assert "return a <= b and flags" in (copy / "pkg" / "core.py").read_text()
    assert (ref / "pkg" / "core.py").read_text().count("a < b") == 1  # the reference is untouched
    # A [mutation] table narrows the files: paths and exclude are cosmic-ray's.
    only = MutationConfig(paths=["pkg"], exclude=["pkg/core.py"])
    assert {m.file for m in source.mutants(ref, only, tmp_path / "work2")} == {"pkg/conftest.py"}


def test_the_double_fixture_enumerates_as_documented(tmp_path: Path):
    m = load_marathon(DOUBLE)
    mutants = mutant_source(m.mutation).mutants(m.episodes[-1].reference, m.mutation, tmp_path)
    candidates = [x for x in mutants if x.skip_reason is None]
    assert len(candidates) == 12
    assert {x.file for x in mutants} == {"double/__main__.py"}  # tests/test_own.py is excluded
    assert {GT_ONE, GT_E, GT_MINUS_ONE} <= {change_lines(x.diff) for x in candidates}


def verdict(seed: int, *outcomes: tuple[Outcome, str]) -> SeedVerdict:
    return SeedVerdict.of(seed, [CheckResult(gate="g", check=f"test_{i}", tag="genuine", outcome=o,
                                             message=msg, duration_s=0.1)
                                 for i, (o, msg) in enumerate(outcomes)])


def test_classify_over_seeds():
    ok = (Outcome.passed, "")
    failed = (Outcome.failed, "AssertionError: assert 1 == 2")
    check_timeout = (Outcome.error, "Failed: Timeout >60.0s")
    scoring_timeout = (Outcome.error, "scoring timed out after 300 s")
    error = (Outcome.error, "fixture 'x' not found")
    assert classify([verdict(0, ok, ok), verdict(1, ok, ok)]) == MutantOutcome.survived
    assert classify([verdict(0, ok, ok), verdict(1, failed, ok)]) == MutantOutcome.killed
    assert classify([verdict(0, check_timeout, ok), verdict(1, failed, ok)]) == MutantOutcome.killed
    assert classify([verdict(0, check_timeout, error)]) == MutantOutcome.timeout
    assert classify([verdict(0, ok), verdict(1, scoring_timeout)]) == MutantOutcome.timeout
    assert classify([verdict(0, error, ok)]) == MutantOutcome.error
    v = verdict(3, ok, failed, error)
    assert (v.failed, v.errors, v.timeouts) == (["g/test_1"], ["g/test_2"], [])
    assert v.message.startswith("g/test_1: AssertionError")


def test_kill_rate_wilson_interval_known_value():
    """Newcombe (1998), Statistics in Medicine 17, table I: 81/263 -> Wilson 0.2553 to 0.3662.
    Equivalent and skipped mutants are not in the denominator; timeouts and errors are."""
    outcomes = (["killed"] * 81 + ["survived"] * 170 + ["timeout"] * 7 + ["error"] * 5
                + ["equivalent"] * 9 + ["skipped"] * 40)
    killed, scored, rate, low, high = kill_rate(pd.DataFrame({"outcome": outcomes}))
    assert (killed, scored) == (81, 263)
    assert rate == pytest.approx(81 / 263)
    assert (low, high) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert all(math.isnan(x) for x in kill_rate(pd.DataFrame({"outcome": ["skipped"]}))[2:])


def test_equivalents_match_by_change_and_report_stale(tmp_path: Path):
    path = tmp_path / "equivalent-mutants.toml"
    path.write_text(EQUIVALENTS)
    entries = load_equivalents(path)
    diff = ("--- a/double/__main__.py\n+++ b/double/__main__.py\n@@ -2,3 +2,3 @@\n \n"
            "-print(n * 2 if n > 0 else 0)\n+print(n * 2 if n {} else 0)\n")
    mutants = [Mutant(id=str(i), file="double/__main__.py", line=4, operator="op", occurrence=i,
                      diff=diff.format(cmp)) for i, cmp in enumerate([">= 0", "> -1", "> 1"])]
    mutants.append(Mutant(id="other-file", file="double/other.py", line=4, operator="op", occurrence=0,
                          diff=diff.format(">= 0").replace("__main__", "other")))
    matched, stale = match_equivalents(mutants, entries)
    assert matched == {"0": 0, "1": 1}
    assert stale == [2]
    assert load_equivalents(tmp_path / "missing.toml") == []


@pytest.mark.parametrize("text, error", [
    ("[[equivalent]]\nfile = 'a.py'\ndiff = '-x\\n+y'\n", "equivalent[0].reason: Field required"),
    ("[[equivalent]]\nfile = 'a.py'\ndiff = '-x\\n+y'\nreason = \"two\\nlines\"\n",
     "equivalent[0].reason: must be one non-empty line"),
    ("[[equivalent]]\nfile = 'a.py'\ndiff = 'x = 1'\nreason = 'r'\n",
     "equivalent[0].diff: no '-' or '+' line"),
    ("[[equivalent]]\nfile = 'a.py'\ndiff = '-x'\nreason = 'r'\nwhy = 1\n",
     "equivalent[0].why: Extra inputs are not permitted"),
    ("[[equivalent]\n", "malformed TOML"),
])
def test_malformed_equivalents_is_a_one_line_error(tmp_path: Path, text: str, error: str):
    path = tmp_path / "equivalent-mutants.toml"
    path.write_text(text)
    with pytest.raises(MarathonError) as e:
        load_equivalents(path)
    assert str(e.value).startswith(f"{path}: ") and error in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("table, error", [
    ('language = "rust"', "mutation.language: Input should be 'python' or 'typescript'"),
    ('paths = ["../elsewhere"]', "mutation.paths: Value error, '../elsewhere' is not a path inside"),
    ('paths = []', "mutation.paths: List should have at least 1 item"),
    ('paths = ["double/nope.py"]', "mutation.paths[0]: double/nope.py not found in the final reference"),
    ('exclude = "tests"', "mutation.exclude: Input should be a valid list"),
    ("bogus = 1", "mutation.bogus: Extra inputs are not permitted"),
])
def test_malformed_mutation_table_is_a_one_line_error(tmp_path: Path, table: str, error: str):
    root = copy_double(tmp_path)
    toml = root / "marathon.toml"
    toml.write_text(toml.read_text() + f"\n[mutation]\n{table}\n")
    with pytest.raises(MarathonError) as e:
        load_marathon(root)
    assert str(e.value).startswith(f"{toml}: ")
    assert error.replace("Value error, ", "") in str(e.value)


def test_mutate_cli_rejects_bad_input_before_scoring(tmp_path: Path):
    root = copy_double(tmp_path, "[[equivalent]]\nfile = 'a.py'\ndiff = '-x'\n")
    proc = run_cli("mutate", str(root), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"marathon: error: {root / 'equivalent-mutants.toml'}: "
                                   "equivalent[0].reason: Field required")
    assert not (tmp_path / "out").exists()
    for flags, message in [(["--seeds", "0,x"], "--seeds: '0,x' is not a comma-separated list"),
                           (["--sample", "0"], "--sample")]:
        proc = run_cli("mutate", str(DOUBLE), "--out", str(tmp_path / "out"), *flags)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1


def test_draw_is_seeded_and_a_larger_sample_extends_a_smaller_one():
    mutants = [Mutant(id=f"{i:04d}", file="f.py", line=i, operator="op", occurrence=i) for i in range(50)]
    eligible = {m.id for m in mutants if int(m.id) % 5}  # 40 eligible
    small, large = draw(mutants, eligible, 5, 7), draw(mutants, eligible, 12, 7)
    assert large[:5] == small and len(set(large)) == 12 and set(large) <= eligible
    assert draw(mutants, eligible, 5, 8) != small
    assert draw(mutants, eligible, None, 7) == sorted(eligible)
    assert len(draw(mutants, eligible, 100, 7)) == 40


@pytest.mark.docker
def test_mutate_kills_survives_and_excludes_equivalents(tmp_path: Path, scorer_image):
    """All 12 candidates on seed 0: 2 reviewed equivalents are not scored, the seed-dependent
    mutant survives seed 0, the other 9 are killed by the gate; the stale entry is reported."""
    m = load_marathon(copy_double(tmp_path, EQUIVALENTS))
    out = tmp_path / "out"
    p = plan(m, out, image=scorer_image, seeds=[0])
    assert (p.candidates, len(p.selected), p.stale) == (10, 10, [2])
    check_baseline(p, jobs=2)
    score_pending(p, jobs=2)
    files = write_outputs(p, out, "marathon mutate double --seeds 0")
    table = pd.read_parquet(files.parquet)
    csv = pd.read_csv(files.csv, keep_default_na=False, dtype=str)
    assert list(csv["id"]) == list(table["id"]) and list(csv["outcome"]) == list(table["outcome"])
    fate = {change_lines(d): o for d, o in zip(table["diff"], table["outcome"]) if d}
    assert fate.pop(GT_ONE) == "survived"
    assert fate.pop(GT_E) == fate.pop(GT_MINUS_ONE) == "equivalent"
    assert set(fate.values()) == {"killed"} and len(fate) == 9
    killed = table[table["outcome"] == "killed"]
    assert set(killed["killing_gates"]) == {"double"} and set(killed["seeds_killed"]) == {"0"}
    assert all(k.startswith("seed 0: double/test_") for k in killed["killed_by"])
    assert (table["outcome"] == "skipped").sum() == 13
    assert set(table.loc[table["outcome"] == "skipped", "reason"]) == {"operator filter"}
    assert (files.killed, files.scored) == (9, 10)
    summary = files.summary.read_text()
    # 9/10: Wilson 95% interval 0.5958 to 0.9821.
    assert "**9 of 10 scored mutants killed: 90.0% (Wilson 95% interval 59.6% to 98.2%).**" in summary
    survivor = summary.split("## Surviving mutants")[1].split("## Equivalent")[0]
    assert "+print(n * 2 if n > 1 else 0)" in survivor and survivor.count("```diff") == 1
    assert "0 doubles to 0, so n >= 0 and n > 0 print the same" in summary
    assert "a change the code no longer has" in summary.split("## Stale equivalents entries")[1]
    # Nothing is scored twice: the same plan again has nothing pending.
    again = plan(m, out, image=scorer_image, seeds=[0])
    assert again.pending == [] and len(read_store(again.store)) == 10


@pytest.mark.docker
def test_mutate_cli_sample_resumes_and_reports_a_seed_dependent_kill(tmp_path: Path, scorer_image):
    """A seeded sample on seeds 0 and 1 holding the seed-dependent mutant: killed on seed 1
    only, listed as such; a larger sample with the same seed scores only the new mutants, a
    smaller one scores nothing and reports only its own."""
    root = copy_double(tmp_path)
    m = load_marathon(root)
    mutants = mutant_source(m.mutation).mutants(m.episodes[-1].reference, m.mutation, tmp_path / "enum")
    gt_one = next(x.id for x in mutants if change_lines(x.diff) == GT_ONE)
    eligible = {x.id for x in mutants if x.skip_reason is None}
    seed = next(s for s in range(200) if gt_one in draw(mutants, eligible, 2, s))
    out = tmp_path / "out"
    proc = run_cli("mutate", str(root), "--out", str(out), "--seeds", "0,1", "--sample", "2",
                   "--seed", str(seed), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out / "summary.md")
    table = pd.read_csv(out / "mutants.csv", keep_default_na=False, dtype={"id": str})
    # A mutant killed on seed 0 is not scored on seed 1; the seed-dependent one needs both.
    assert sorted(table.loc[table["seeds"] != "", "seeds"]) == ["0", "0,1"]
    assert (table["reason"] == "not sampled").sum() == 10
    row = table[table["id"] == gt_one].iloc[0]
    assert (row["outcome"], row["seeds_killed"]) == ("killed", "1")
    assert row["killed_by"] == "seed 1: double/test_seeded_input"
    summary = (out / "summary.md").read_text()
    assert gt_one in summary.split("## Seed-dependent kills")[1].split("## Surviving")[0]
    assert f"--sample 2 --seed {seed}" in summary
    store = next((out / "sessions").iterdir()) / "scored.jsonl"
    first = store.read_text().splitlines()
    proc = run_cli("mutate", str(root), "--out", str(out), "--seeds", "0,1", "--sample", "3",
                   "--seed", str(seed), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "2 already scored" in proc.stderr
    lines = store.read_text().splitlines()
    assert lines[:2] == first and len(lines) == 3
    assert [json.loads(line)["id"] for line in lines][:2] == [json.loads(x)["id"] for x in first]
    assert (pd.read_parquet(out / "mutants.parquet")["seeds"] != "").sum() == 3
    # A smaller sample reports only its own mutants; the other results stay in the store.
    proc = run_cli("mutate", str(root), "--out", str(out), "--seeds", "0,1", "--sample", "1",
                   "--seed", str(seed), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    table = pd.read_parquet(out / "mutants.parquet")
    assert (table["seeds"] != "").sum() == 1 and (table["reason"] == "not sampled").sum() == 11
    assert len(store.read_text().splitlines()) == 3
