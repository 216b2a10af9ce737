"""The scorer: sealed containers, outcomes from the report, nothing in the snapshot can game it."""

from __future__ import annotations

import re
import shutil
import textwrap
import uuid
from pathlib import Path

import pytest

from benchmark.docker_env import client
from benchmark.scorer import CheckSpec, Outcome, ScorerLimits, list_checks, parse_junit, score
from tests.answer_fixtures import ANSWER, answer, scorer_image  # noqa: F401




def _outcomes(results) -> dict[str, Outcome]:
    return {r.check: r.outcome for r in results}


def _snapshot(tmp_path: Path, main_py: str, extra: dict[str, str] | None = None) -> Path:
    snap = tmp_path / "snap"
    shutil.copytree(ANSWER / "starter", snap)
    (snap / "answer" / "__main__.py").write_text(main_py)
    for rel, text in (extra or {}).items():
        path = snap / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return snap


def test_list_checks_reads_tags_from_source(answer):
    checks = list_checks(answer, answer.gate)
    assert [(c.check, c.tag) for c in checks] == [
        ("test_prints_42", "genuine"), ("test_exit_zero", "contract"),
        ("test_seed_is_passed", "genuine"), ("test_untagged_check", None),
    ]


def test_parse_junit_missing_and_skipped_checks_are_errors():
    xml = b"""<testsuites><testsuite>
      <testcase classname="test_g" name="test_a" time="0.5"/>
      <testcase classname="test_g" name="test_b" time="0.1"><failure message="assert 1 == 2">tb</failure></testcase>
      <testcase classname="test_g" name="test_c" time="0"><skipped message="why"/></testcase>
      <testcase classname="test_g" name="test_t" time="2"><properties>
        <property name="tag" value="genuine"/>
        <property name="marathon_no_verdict" value="the check ran into its 2 s time limit"/>
      </properties><failure message="Failed: Timeout &gt;2.0s"/></testcase>
      <testcase classname="test_g" name="test_echo" time="0.1"><failure message="Failed: Timeout &gt;2.0s"/></testcase>
    </testsuite></testsuites>"""
    names = ("test_a", "test_b", "test_c", "test_t", "test_echo", "test_d")
    specs = [CheckSpec(gate="g", check=n, tag="genuine") for n in names]
    got = {r.check: r for r in parse_junit([xml], specs)}
    assert got["test_a"].outcome == Outcome.passed and got["test_a"].duration_s == 0.5
    assert got["test_b"].outcome == Outcome.failed and got["test_b"].message == "assert 1 == 2"
    assert got["test_c"].outcome == Outcome.error
    assert got["test_t"].outcome == Outcome.error and "2 s time limit" in got["test_t"].message
    # Only the runner's property means "no verdict": a message a product could echo does not.
    assert got["test_echo"].outcome == Outcome.failed
    assert got["test_d"].outcome == Outcome.error and "not reported" in got["test_d"].message


def _case(name: str, body: str = "") -> str:
    return f'<testcase classname="test_g" name="{name}" time="0.1">{body}</testcase>'


def _report(*cases: str) -> bytes:
    return f"<testsuites><testsuite>{''.join(cases)}</testsuite></testsuites>".encode()


def test_a_check_reported_twice_or_by_a_report_naming_an_unknown_check_is_error():
    specs = [CheckSpec(gate="g", check=n, tag="genuine") for n in ("test_a", "test_b", "test_c")]
    twice = parse_junit({"junit-0.xml": _report(_case("test_a"), _case("test_b")),
                         "junit-1.xml": _report(_case("test_a"), _case("test_c"))}, specs)
    assert [r.outcome for r in twice] == [Outcome.error, Outcome.passed, Outcome.passed]
    assert "reported 2 times" in twice[0].message
    unknown = parse_junit({"junit-0.xml": _report(_case("test_a"), _case("test_b")),
                           "junit-1.xml": _report(_case("test_c"), _case("test_forged"))}, specs)
    assert [r.outcome for r in unknown] == [Outcome.passed, Outcome.passed, Outcome.error]
    assert "junit-1.xml names an undeclared check g/test_forged" in unknown[2].message


def test_read_reports_takes_only_the_expected_regular_files(tmp_path):
    from benchmark.scorer import read_reports

    (tmp_path / "junit-0.xml").write_bytes(b"<testsuites/>")
    secret = tmp_path.parent / f"{tmp_path.name}-host-file.xml"
    secret.write_bytes(_report(_case("test_a")))
    (tmp_path / "junit-1.xml").symlink_to(secret)  # what a product could leave in the report dir
    (tmp_path / "junit-7.xml").write_bytes(_report(_case("test_a")))
    (tmp_path / "notes.txt").write_text("x")
    got = read_reports(tmp_path, processes=2)
    assert got.found == {"junit-0.xml": b"<testsuites/>"}
    assert got.rejected == {"junit-1.xml": "not a regular file"}
    assert got.unexpected == ["junit-7.xml", "notes.txt"]


def test_parse_junit_merges_the_reports_of_parallel_processes():
    one = b'<testsuites><testsuite><testcase classname="test_g" name="test_a" time="0.5"/></testsuite></testsuites>'
    two = b'<testsuites><testsuite><testcase classname="test_g" name="test_b" time="0.2"/></testsuite></testsuites>'
    killed_mid_write = b'<testsuites><testsuite><testcase classname="test_g" name="test_c" ti'
    specs = [CheckSpec(gate="g", check=n, tag="genuine") for n in ("test_a", "test_b", "test_c")]
    got = {r.check: r.outcome for r in parse_junit([one, killed_mid_write, two], specs)}
    assert got == {"test_a": Outcome.passed, "test_b": Outcome.passed, "test_c": Outcome.error}



@pytest.mark.docker
def test_reference_passes_and_starter_fails(answer, scorer_image):
    ref = score(answer.episode("e1").reference, answer, "e1", seed=3, image=scorer_image)
    assert _outcomes(ref) == {"test_prints_42": Outcome.passed, "test_exit_zero": Outcome.passed,
                              "test_seed_is_passed": Outcome.passed, "test_untagged_check": Outcome.passed}
    assert all(r.gate == "answer" for r in ref)
    assert {r.check: r.tag for r in ref}["test_exit_zero"] == "contract"
    starter = score(answer.starter, answer, "e1", seed=3, image=scorer_image)
    assert _outcomes(starter)["test_prints_42"] == Outcome.failed
    assert _outcomes(starter)["test_exit_zero"] == Outcome.failed
    assert all(r.message for r in starter if r.outcome == Outcome.failed)


@pytest.mark.docker
def test_snapshot_files_cannot_influence_the_runner(tmp_path, answer, scorer_image):
    """A failing product ships every known way to tamper with pytest or Python start-up."""
    force_pass = """
        import pytest
        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_makereport(item, call):
            outcome = yield
            outcome.get_result().outcome = "passed"
        def pytest_collection_modifyitems(items):
            items[:] = []
    """
    snap = _snapshot(tmp_path, 'print(41)', {
        "conftest.py": force_pass,
        "answer/conftest.py": force_pass,
        "pytest.ini": "[pytest]\naddopts = -p no:junitxml --co\n",
        "tox.ini": "[pytest]\naddopts = --co\n",
        "setup.cfg": "[tool:pytest]\naddopts = --co\n",
        "pyproject.toml": "[tool.pytest.ini_options]\naddopts = '--co'\n",
        "sitecustomize.py": "import os; os._exit(0)\n",
        "usercustomize.py": "import os; os._exit(0)\n",
        "evil.pth": "import os; os._exit(0)\n",
    })
    results = score(snap, answer, "e1", seed=1, image=scorer_image)
    assert _outcomes(results)["test_prints_42"] == Outcome.failed


@pytest.mark.docker
def test_each_runner_process_keeps_its_checks_below_its_own_temporary_directory(tmp_path, answer,
                                                                                 scorer_image):
    """No directory above a product's working directory is shared with (and so changed by) the
    other pytest process: under pytest's shared ``/tmp/pytest-of-root`` a process starting up
    made that directory 0700 again while the other process's product ran below it, and the
    product's imports failed at random (a reference scored red about once in 30 scorings)."""
    snap = _snapshot(tmp_path, "import os; print(os.getcwd())")
    results = score(snap, answer, "e1", seed=1, image=scorer_image, limits=ScorerLimits(processes=2))
    message = {r.check: r for r in results}["test_prints_42"].message
    cwds = re.findall(r"/tmp/[\w/-]+/workspace", message)  # the product's output, in full
    assert cwds and all(re.fullmatch(r"/tmp/marathon-checks-[01]/\w+/workspace", c) for c in cwds), message


@pytest.mark.docker
def test_check_over_its_time_limit_is_error_not_failed(tmp_path, answer, scorer_image):
    snap = _snapshot(tmp_path, "import time; time.sleep(60)")
    results = score(snap, answer, "e1", seed=1, image=scorer_image,
                    limits=ScorerLimits(check_timeout_s=2, total_timeout_s=60))
    got = {r.check: r for r in results}
    assert got["test_prints_42"].outcome == Outcome.error
    assert "2 s time limit" in got["test_prints_42"].message
    assert got["test_seed_is_passed"].outcome == Outcome.passed


@pytest.mark.docker
def test_scoring_over_its_total_limit_errors_every_check_without_a_verdict(tmp_path, answer, scorer_image):
    snap = _snapshot(tmp_path, "import time; time.sleep(60)")
    results = score(snap, answer, "e1", seed=1, image=scorer_image,
                    limits=ScorerLimits(check_timeout_s=30, total_timeout_s=3))
    got = {r.check: r for r in results}
    for hung in ("test_prints_42", "test_exit_zero"):  # both run the product, which sleeps 60 s
        assert got[hung].outcome == Outcome.error and "timed out after 3 s" in got[hung].message
    # A check that finished in a process the limit did not stop keeps its verdict; none fails.
    assert got["test_seed_is_passed"].outcome in (Outcome.passed, Outcome.error)
    assert Outcome.failed not in {r.outcome for r in results}


@pytest.mark.docker
def test_scoring_leaves_no_container_and_has_no_network(tmp_path, answer, scorer_image):
    """The product cannot reach the network from inside the scorer (no interface but lo)."""
    snap = _snapshot(tmp_path, textwrap.dedent("""
        import socket
        names = sorted(n for _, n in socket.if_nameindex())
        print(42 if names == ["lo"] else names)
    """))
    mark = f"test-{uuid.uuid4().hex}"
    results = score(snap, answer, "e1", seed=1, image=scorer_image, labels={"org.marathon.test": mark})
    assert _outcomes(results)["test_prints_42"] == Outcome.passed
    leftovers = client().containers.list(all=True, filters={"label": f"org.marathon.test={mark}"})
    assert leftovers == []


def test_list_checks_is_safe_from_concurrent_trials():
    """Trials score in threads; CPython 3.11's ast.parse raised "AST constructor recursion depth
    mismatch" when two threads parsed at once. Parse uncached from many threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    from benchmark.marathon import load_marathon
    from benchmark.scorer import _module_checks

    ledger = load_marathon("ledger")
    paths = [(ledger.gates / g.filename, g.name) for g in ledger.gate]

    def parse_all(_):
        return [len(_module_checks.__wrapped__(p, name, 0)) for p, name in paths]

    with ThreadPoolExecutor(max_workers=8) as pool:
        counts = list(pool.map(parse_all, range(64)))
    assert all(c == counts[0] for c in counts) and min(counts[0]) >= 3


def test_scorer_processes_share_the_cores_between_concurrent_scorings():
    from benchmark.scorer import scorer_processes

    two_cpus, eight_cpus = ScorerLimits(), ScorerLimits(nano_cpus=8_000_000_000)
    assert scorer_processes(1, two_cpus, cores=2) == 2
    assert scorer_processes(2, two_cpus, cores=2) == 1  # two trials on two cores: one process each
    assert scorer_processes(3, two_cpus, cores=4) == 1
    assert scorer_processes(2, eight_cpus, cores=8) == 4
    assert scorer_processes(1, two_cpus, cores=16) == 2  # capped at the container's CPUs
