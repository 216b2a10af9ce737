"""The authoring kit: ``marathon new NAME`` writes a skeleton marathon into the project root
(``MARATHON_HOME``, a temporary directory here: nothing is written into the repository), and
``marathon validate NAME`` names exactly what is left to write, before any scoring."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.authoring import NODE_VERSION, new_marathon
from benchmark.images import RECIPES
from benchmark.marathon import load_marathon, tree_hash
from benchmark.structure import PLACEHOLDER, structure
from tests.conftest import run_cli

PYTHON_FILES = [
    "episodes/demo/DESIGN.md",
    "episodes/demo/e1/brief.md",
    "episodes/demo/equivalent-mutants.toml",
    "episodes/demo/marathon.toml",
    "episodes/demo/reference/e1/README.md",
    "episodes/demo/reference/e1/demo/__init__.py",
    "episodes/demo/reference/e1/demo/__main__.py",
    "episodes/demo/starter/README.md",
    "episodes/demo/starter/demo/__init__.py",
    "episodes/demo/starter/demo/__main__.py",
    "gates/demo/_model.py",
    "gates/demo/conftest.py",
    "gates/demo/mutants/README.md",
    "gates/demo/test_example.py",
]

#: The failed findings of a fresh skeleton, in report order: exactly what is left to write.
SKELETON_FAILS = [
    "marathon.toml is written",
    "DESIGN.md is written",
    "starter is written",
    "brief e1 is written",
    "reference e1 is written",
    "gate example is written",
    "gates/demo/_model.py is written",
    "gates/demo/mutants/README.md is written",
    "gate example has at least 3 checks, each tagged genuine or contract",
    "gate example has at least 2 hand-written mutants",
    "every episode after the first has a trap in DESIGN.md (## Traps)",
    "DESIGN.md traceability table lists a genuine check for every rule (## Traceability)",
]


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, env={"MARATHON_HOME": str(root)}, timeout=120)


def _listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_new_writes_a_skeleton_that_loads(tmp_path):
    proc = _cli(tmp_path, "new", "demo")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == PYTHON_FILES
    assert [p for p in _listing(tmp_path) if Path(p).suffix] == PYTHON_FILES  # no temp dir left
    m = load_marathon(tmp_path / "episodes" / "demo")
    assert (m.name, m.episode_ids, [g.name for g in m.gate]) == ("demo", ["e1"], ["example"])
    assert m.gates == (tmp_path / "gates" / "demo").resolve()
    assert m.runtime is None and m.mutation.language == "python"
    conftest = (tmp_path / "gates/demo/conftest.py").read_text()
    assert 'COMMAND = ["python3", "-m", "demo"]' in conftest
    for helper in ("def seed(", "def rng(", "def product(", "from marathon_product import"):
        assert helper in conftest


def test_validate_names_exactly_what_is_left_to_write(tmp_path):
    assert _cli(tmp_path, "new", "demo").returncode == 0
    proc = _cli(tmp_path, "validate", "demo", "--no-progress")
    assert proc.returncode == 1, proc.stderr
    fails = [line.removeprefix("FAIL ").split("  ")[0] for line in proc.stderr.splitlines()
             if line.startswith("FAIL ")]
    assert fails == SKELETON_FAILS
    lines = proc.stderr.splitlines()
    assert any(line.startswith("FAIL gate example has at least 3 checks")
               and line.endswith("1 check (test_total_of_seeded_numbers); 2 more to write") for line in lines)
    assert any(line.endswith("none in gates/demo/mutants/example/; 2 more to write") for line in lines)
    assert any("no check for rule 'E1 TODO(marathon new): the second rule of brief e1'" in line
               for line in lines)
    assert lines[-1].startswith("demo: 4/16 findings ok; not scored: marathon.toml, DESIGN.md, starter, ")
    assert "scorings" not in proc.stderr and "building" not in proc.stderr.lower()  # no image, no scoring


def test_typescript_skeleton_declares_node(tmp_path):
    new_marathon("web", "typescript", root=tmp_path)
    m = load_marathon(tmp_path / "episodes" / "web")
    assert m.runtime is not None and m.runtime.node == NODE_VERSION
    assert (m.mutation.language, m.mutation.paths) == ("typescript", ["src"])
    assert 'COMMAND = ["node", "src/main.ts"]' in (tmp_path / "gates/web/conftest.py").read_text()
    shape = structure(m)
    assert {f.item: f.ok for f in shape.findings}["a TypeScript product declares [runtime] node"]
    assert "reference e1" in shape.placeholders and not shape.scorable


@pytest.mark.parametrize("name", ["Demo", "1demo", "de mo", "../demo", "demo/x", "_demo", "démo"])
def test_a_bad_name_is_one_line_and_writes_nothing(tmp_path, name):
    proc = _cli(tmp_path, "new", name)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"marathon: error: NAME: {name!r} is not a valid marathon name (a lowercase letter, then "
        "lowercase letters, digits, '-' or '_')"]
    assert _listing(tmp_path) == []


def test_a_taken_name_or_language_is_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "gates" / "demo").mkdir(parents=True)
    before = _listing(tmp_path)
    proc = _cli(tmp_path, "new", "demo")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"marathon: error: NAME: marathon 'demo' exists already ({tmp_path / 'gates' / 'demo'})"]
    assert _listing(tmp_path) == before
    assert _cli(tmp_path, "new", "other").returncode == 0
    before = tree_hash(tmp_path)
    proc = _cli(tmp_path, "new", "other", "--language", "typescript")
    assert proc.returncode == 2 and "'other' exists already" in proc.stderr
    proc = _cli(tmp_path, "new", "json")
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "marathon: error: NAME: 'json' would name the product's package 'json', a Python standard "
        "library module"]
    proc = _cli(tmp_path, "new", "third", "--language", "rust")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1 and "--language" in proc.stderr
    assert tree_hash(tmp_path) == before and not (tmp_path / "episodes" / "third").exists()


def _gate_run(gates: Path, snapshot: Path, seed: int) -> subprocess.CompletedProcess:
    """The skeleton's gates run on the host as the scorer runs them (marathon_product from the
    scorer image's recipe directory), on ``snapshot``."""
    env = {**os.environ, "MARATHON_SNAPSHOT": str(snapshot), "MARATHON_SEED": str(seed),
           "PYTHONPATH": str(RECIPES)}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           f"--rootdir={gates}", str(gates)], env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_skeletons_example_check_is_seeded_and_black_box(tmp_path):
    """The example check drives the product as a black box: the placeholder reference passes
    it and the starter fails it."""
    new_marathon("demo", root=tmp_path)
    episodes, gates = tmp_path / "episodes" / "demo", tmp_path / "gates" / "demo"
    passed = _gate_run(gates, episodes / "reference" / "e1", 5)
    assert passed.returncode == 0, passed.stdout[-2000:]
    failed = _gate_run(gates, episodes / "starter", 5)
    assert failed.returncode == 1 and "1 failed" in failed.stdout, failed.stdout[-2000:]


MORE_CHECKS = '''

@pytest.mark.genuine
def test_total_of_no_numbers_is_zero(product):
    """No input at all sums to 0."""
    result = product.run("total", stdin="")
    assert (result.returncode, result.stdout) == (0, "0\\n"), result.describe()


@pytest.mark.contract
def test_unknown_command_exits_2(product, rng):
    """An unknown command is a usage error: exit 2."""
    result = product.run(f"nope{rng.randint(0, 9)}")
    assert result.returncode == 2, result.describe()
'''

#: Two hand-written mutants of the example rule, by language: (file in the reference, {name:
#: (line, mutated line)}).
MUTANTS = {
    "python": ("demo/__main__.py", {
        "off-by-one": ("    print(sum(int(line) for line in sys.stdin if line.strip()))",
                       "    print(sum(int(line) for line in sys.stdin if line.strip()) + 1)"),
        "usage-exit-1": ("        return 2", "        return 1"),
    }),
    "typescript": ("src/main.ts", {
        "off-by-one": ("    process.stdout.write(`${sum}\\n`);", "    process.stdout.write(`${sum + 1n}\\n`);"),
        "usage-exit-1": ("  process.exitCode = 2;", "  process.exitCode = 1;"),
    }),
}


def complete(root: Path, language: str = "python") -> None:
    """Do exactly what validate asked for on the fresh skeleton of ``demo``: write every
    placeholder, two more checks, two mutants, a second episode with its trap, and a genuine
    check for every traceability rule."""
    episodes, gates = root / "episodes" / "demo", root / "gates" / "demo"
    for path in [*episodes.rglob("*"), *gates.rglob("*")]:
        if path.is_file():
            path.write_text(path.read_text().replace(PLACEHOLDER + " ", "").replace(PLACEHOLDER, "written"))
    with (gates / "test_example.py").open("a") as f:
        f.write(MORE_CHECKS)
    design = episodes / "DESIGN.md"
    design.write_text(design.read_text()
                      .replace("the second rule of brief e1 | |",
                               "no input sums to 0 | example `test_total_of_no_numbers_is_zero` |")
                      .replace("the third rule of brief e1 | |", "sums are exact | `test_total_of_seeded_numbers` |"))
    (episodes / "e2").mkdir()
    (episodes / "e2" / "brief.md").write_text("# Episode 2\n\nThe same again.\n")
    shutil.copytree(episodes / "reference" / "e1", episodes / "reference" / "e2")
    with (episodes / "marathon.toml").open("a") as f:
        f.write('\n[[episodes]]\nid = "e2"\ntitle = "Again"\nbrief = "e2/brief.md"\nreference = "reference/e2"\n')
    rel, mutants = MUTANTS[language]
    main = (episodes / "reference" / "e2" / rel).read_text()
    (gates / "mutants" / "example").mkdir()
    for name, (old, new) in mutants.items():
        assert main.count(old) == 1
        work = root / "mutant"
        for side, text in (("a", main), ("b", main.replace(old, new))):
            (work / side / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / side / rel).write_text(text)
        diff = subprocess.run(["diff", "-ru", "a", "b"], cwd=work, capture_output=True, text=True)
        assert diff.returncode == 1, diff.stderr
        (gates / "mutants" / "example" / f"{name}.patch").write_text(diff.stdout)
        shutil.rmtree(work)
        with (gates / "mutants" / "README.md").open("a") as f:
            f.write(f"| example | `{name}` | {new.strip()} | `test_total_of_seeded_numbers` |\n")


@pytest.mark.parametrize("language", ["python", "typescript"])
def test_doing_what_validate_asks_leaves_no_structural_finding(tmp_path, language):
    new_marathon("demo", language, root=tmp_path)
    complete(tmp_path, language)
    shape = structure(load_marathon(tmp_path / "episodes" / "demo"))
    assert [(f.item, f.detail) for f in shape.findings if not f.ok] == []
    assert shape.scorable


@pytest.mark.docker
def test_a_completed_skeleton_is_scored_and_valid(tmp_path):
    """Once nothing is left to write, validate scores the skeleton for real: references pass,
    the starter fails, both mutants fail their gate, scoring is deterministic. The TypeScript
    skeleton (scored in the image derived for its [runtime]) is the one tried here: the Python
    one's gate runs black-box above, and its scoring path is the same."""
    new_marathon("demo", "typescript", root=tmp_path)
    complete(tmp_path, "typescript")
    proc = _cli(tmp_path, "validate", "demo", "--seeds", "0", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FAIL" not in proc.stderr
    for item in ("reference e1 passes its active gates", "reference e2 passes its active gates",
                 "starter fails every gate", "mutant example/off-by-one fails its gate",
                 "mutant example/usage-exit-1 fails its gate"):
        assert f"ok   {item}" in proc.stderr


@pytest.mark.parametrize("name", ["ledger", "relay", "inventory"])
def test_the_shipped_marathons_have_no_structural_finding(name):
    shape = structure(load_marathon(name))
    assert [(f.item, f.detail) for f in shape.findings if not f.ok] == []
    assert shape.scorable


def test_traceability_and_traps_gaps_are_named(tmp_path):
    """A rule traced to a contract check or to no check, an untraced genuine check, a later
    episode without a trap, a trap naming no gate, a gate missing from the gate list, a
    mutant missing from the README and one filed under no gate are each named."""
    new_marathon("demo", root=tmp_path)
    complete(tmp_path)
    design = tmp_path / "episodes" / "demo" / "DESIGN.md"
    text = design.read_text()
    text = text.replace("example `test_total_of_no_numbers_is_zero` |", "`test_unknown_command_exits_2` |")
    trap_row = next(line for line in text.splitlines() if line.startswith("| E2 |"))
    text = text.replace(trap_row, "| E2 | a trap | nothing |")
    design.write_text(text)
    findings = {f.item: f for f in structure(load_marathon(tmp_path / "episodes" / "demo")).findings}
    trace = findings["DESIGN.md traceability table lists a genuine check for every rule (## Traceability)"]
    assert not trace.ok
    assert trace.detail == ("rule 'E1 written: no input sums to 0' names test_unknown_command_exits_2: "
                            "no genuine check of demo")
    untraced = findings["every genuine check is traced to a rule in DESIGN.md"]
    assert (untraced.ok, untraced.detail) == (False, "untraced: example/test_total_of_no_numbers_is_zero")
    traps = findings["every episode after the first has a trap in DESIGN.md (## Traps)"]
    assert (traps.ok, traps.detail) == (False, "trap 'a trap' names no gate of demo")
    design.write_text(text.replace("| E2 | a trap | nothing |\n", "").replace("## Traceability", "## Tracing")
                      .replace("| example | e1 |", "| sample | e1 |"))
    readme = tmp_path / "gates" / "demo" / "mutants" / "README.md"
    readme.write_text(readme.read_text().replace("`off-by-one`", "off by one"))
    findings = {f.item: f for f in structure(load_marathon(tmp_path / "episodes" / "demo")).findings}
    listed = findings["the mutants README lists every hand-written mutant"]
    assert (listed.ok, listed.detail) == (False, "not in gates/demo/mutants/README.md: example/off-by-one")
    gate_list = findings["DESIGN.md gate list has a row for every gate (## Gates)"]
    assert (gate_list.ok, gate_list.detail) == (False, "no row for gate example")
    assert "every hand-written mutant is filed under a gate" not in findings
    mutants = tmp_path / "gates" / "demo" / "mutants"
    (mutants / "example" / "off-by-one.patch").rename(mutants / "off-by-one.patch")
    findings = {f.item: f for f in structure(load_marathon(tmp_path / "episodes" / "demo")).findings}
    stray = findings["every hand-written mutant is filed under a gate"]
    assert (stray.ok, stray.detail) == (
        False, "not in a <gate>/ folder of a gate of demo: gates/demo/mutants/off-by-one.patch")
    assert findings["gate example has at least 2 hand-written mutants"].detail == (
        "1 in gates/demo/mutants/example/; 1 more to write")
    traps = findings["every episode after the first has a trap in DESIGN.md (## Traps)"]
    assert (traps.ok, traps.detail) == (False, "no trap for e2")
    trace = findings["DESIGN.md traceability table lists a genuine check for every rule (## Traceability)"]
    assert (trace.ok, trace.detail) == (False, "DESIGN.md has no ## Traceability section")
