"""``marathon mutate`` for TypeScript: StrykerJS mutants (tools/stryker, installed by make setup).

The ``double-ts`` fixture marathon (tests/fixtures/double-ts) has 6 candidate StrykerJS mutants
of known fate against its one gate: ``n > 0 -> n >= 0`` is equivalent (0 doubles to 0), the
other 5 are killed; one more mutant sits on a line marked ``// Stryker disable`` and is skipped.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from benchmark.errors import MarathonError
from benchmark.marathon import MutationConfig, load_marathon
from benchmark.mutation.equivalents import change_lines
from benchmark.mutation.run import check_baseline, plan, score_pending
from benchmark.mutation.source import mutant_source
from benchmark.mutation.stryker import StrykerSource, stryker_config
from benchmark.mutation.summary import write_outputs

DOUBLE_TS = Path(__file__).parent / "fixtures" / "double-ts"
TS = MutationConfig(language="typescript")
GE = ("-console.log(n > 0 ? twice(n) : 0);", "+console.log(n >= 0 ? twice(n) : 0);")
EQUIVALENTS = '''
[[equivalent]]
file = "src/main.ts"
reason = "0 doubles to 0, so n >= 0 and n > 0 print the same"
diff = """
-console.log(n > 0 ? twice(n) : 0);
+console.log(n >= 0 ? twice(n) : 0);
"""
'''


def copy_fixture(tmp_path: Path, equivalents: str | None = None) -> Path:
    root = tmp_path / "double-ts"
    shutil.copytree(DOUBLE_TS, root)
    if equivalents is not None:
        (root / "equivalent-mutants.toml").write_text(equivalents, encoding="utf-8")
    return root


def test_typescript_defaults_exclude_the_products_tests():
    assert "**/tests/**" in TS.exclude and "**/*.test.*" in TS.exclude
    assert MutationConfig(language="typescript", exclude=[]).exclude == []
    config = stryker_config(MutationConfig(language="typescript", paths=["src", "lib/a.ts"], exclude=["x/**"]))
    assert config["mutate"] == ["src/**/*.{ts,mts,cts,tsx,js,mjs,cjs,jsx}", "lib/a.ts",
                                "lib/a.ts/**/*.{ts,mts,cts,tsx,js,mjs,cjs,jsx}", "!x/**"]


def test_enumerates_applies_and_skips_disabled_code(tmp_path: Path):
    """StrykerJS enumerates the product's files, not its tests; a mutant on a line marked
    `// Stryker disable` is skipped with StrykerJS's reason; every candidate applies to a copy
    exactly as its diff says, and the reference is untouched."""
    m = load_marathon(DOUBLE_TS)
    ref = m.episodes[-1].reference
    source = mutant_source(m.mutation)
    assert source.name.startswith("StrykerJS ") and "Node.js" in source.name
    mutants = source.mutants(ref, m.mutation, tmp_path / "work")
    assert {x.file for x in mutants} == {"src/main.ts", "src/twice.ts"}
    skipped = [x for x in mutants if x.skip_reason]
    assert [(x.file, x.line, x.operator) for x in skipped] == [("src/twice.ts", 3, "ArithmeticOperator")]
    assert skipped[0].skip_reason == "stryker: kept out of the fixture's mutants on purpose"
    candidates = [x for x in mutants if x.skip_reason is None]
    assert len(candidates) == 6 and len({x.id for x in mutants}) == len(mutants)
    assert GE in {change_lines(x.diff) for x in candidates}
    before = {p: p.read_text() for p in ref.rglob("*.ts")}
    for mutant in candidates:
        copy = tmp_path / f"copy-{mutant.id}"
        shutil.copytree(ref, copy)
        source.apply(mutant, copy)
        removed = [line[1:] for line in mutant.diff.splitlines()[3:] if line.startswith("-")]
        added = [line[1:] for line in mutant.diff.splitlines()[3:] if line.startswith("+")]
        text = (copy / mutant.file).read_text()
        assert all(line in text for line in added)
        assert not any(line in text.splitlines() for line in removed if line not in added)
    assert {p: p.read_text() for p in ref.rglob("*.ts")} == before
    # A narrower [mutation] table: one file.
    only = MutationConfig(language="typescript", paths=["src/main.ts"])
    assert {x.file for x in StrykerSource().mutants(ref, only, tmp_path / "work2")} == {"src/main.ts"}


def test_offsets_count_utf16_units_and_keep_line_endings(tmp_path: Path):
    """Columns are JavaScript string indices (UTF-16): a mutant after an astral character on
    the same line, in a file with CRLF line ends, still replaces exactly its span."""
    ref = tmp_path / "ref"
    (ref / "src").mkdir(parents=True)
    (ref / "src" / "a.ts").write_bytes('const mood = "\U0001F642"; const ok = (n: number) => n > 0;\r\n'
                                       'export { mood, ok };\r\n'.encode())
    source = StrykerSource()
    mutants = source.mutants(ref, TS, tmp_path / "work")
    ge = next(x for x in mutants if x.operator == "EqualityOperator" and ">= 0" in x.diff)
    copy = tmp_path / "copy"
    shutil.copytree(ref, copy)
    source.apply(ge, copy)
    assert (copy / "src" / "a.ts").read_bytes() == ('const mood = "\U0001F642"; const ok = (n: number) => n >= 0;\r\n'
                                                    'export { mood, ok };\r\n'.encode())
    (copy / "src" / "a.ts").write_text("changed\n")
    with pytest.raises(MarathonError, match="does not apply: the file changed"):
        source.apply(ge, copy)


def test_missing_tool_is_a_one_line_error(tmp_path: Path):
    with pytest.raises(MarathonError) as e:
        StrykerSource(tool_dir=tmp_path / "nowhere")
    assert "\n" not in str(e.value) and "StrykerJS" in str(e.value) and "make setup" in str(e.value)


def test_equivalents_leave_the_draw(tmp_path: Path):
    m = load_marathon(copy_fixture(tmp_path, EQUIVALENTS))
    p = plan(m, tmp_path / "out", image="not-used", seeds=[0])
    assert (p.candidates, len(p.selected), p.stale) == (5, 5, [])
    (ge,) = [x for x in p.mutants if x.id in p.equivalent_of]
    assert change_lines(ge.diff) == GE
    assert (p.session / "stryker-discover.json").is_file()  # cached: a resumed session does not enumerate


@pytest.mark.docker
def test_mutate_scores_typescript_mutants(tmp_path: Path):
    """Every candidate on seed 0 with the real scorer (Node runtime image): the 5 non-equivalent
    mutants are killed, the equivalent is not scored, the disabled one is skipped."""
    from benchmark.images import build_images

    m = load_marathon(copy_fixture(tmp_path, EQUIVALENTS))
    image = build_images(agent=False, log=lambda line: None, runtime=m.runtime).scorer
    out = tmp_path / "out"
    p = plan(m, out, image=image, seeds=[0])
    check_baseline(p, jobs=2)
    score_pending(p, jobs=2)
    files = write_outputs(p, out, "marathon mutate double-ts --seeds 0")
    table = pd.read_parquet(files.parquet)
    assert sorted(table["outcome"]) == ["equivalent"] + ["killed"] * 5 + ["skipped"]
    assert (files.killed, files.scored) == (5, 5)
    assert "StrykerJS" in files.summary.read_text()
