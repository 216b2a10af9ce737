"""Per-marathon runtimes: the ``[runtime]`` table of marathon.toml and the images derived from it.

A marathon declaring ``[runtime]`` (Debian packages, an exact Node.js) gets scorer and agent
images derived by a content hash of the declaration; one without gets the plain images.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from benchmark.errors import MarathonError
from benchmark.images import build_images, runtime_tag
from benchmark.marathon import RuntimeSpec, load_marathon
from tests.answer_fixtures import ANSWER

NODE = "22.23.5"


def _with_runtime(tmp_path: Path, table: str) -> Path:
    root = tmp_path / "answer"
    shutil.copytree(ANSWER, root)
    toml = root / "marathon.toml"
    toml.write_text(toml.read_text() + "\n" + table + "\n")
    return root


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('[runtime]\nnode = "22"', "runtime.node: String should match pattern"),
        ('[runtime]\nnode = 22', "runtime.node: Input should be a valid string"),
        ('[runtime]\napt = ["Sqlite3"]', "runtime: apt[0]: 'Sqlite3' is not a Debian package name"),
        ('[runtime]\napt = ["jq; rm -rf /"]', "runtime: apt[0]: 'jq; rm -rf /' is not a Debian package name"),
        ('[runtime]\napt = ["jq", "curl", "jq=1.6-2.1"]', "runtime: apt[2]: package 'jq' listed twice"),
        ('[runtime]\napt = "jq"', "runtime.apt: Input should be a valid tuple"),
        ('[runtime]\npython = "3.12"', "runtime.python: Extra inputs are not permitted"),
    ],
)
def test_a_bad_runtime_table_names_the_file_and_the_field(tmp_path, table, expected):
    root = _with_runtime(tmp_path, table)
    with pytest.raises(MarathonError) as err:
        load_marathon(root)
    message = str(err.value)
    assert message.startswith(f"{root / 'marathon.toml'}: ")
    assert expected in message
    assert "\n" not in message


def test_a_bad_runtime_table_is_a_one_line_cli_error(tmp_path):
    from tests.conftest import run_cli

    root = _with_runtime(tmp_path, '[runtime]\nnode = "latest"')
    proc = run_cli("validate", str(root), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"marathon: error: {root / 'marathon.toml'}: runtime.node: String should match pattern "
        "'^[0-9]+\\.[0-9]+\\.[0-9]+$'"]


def test_a_runtime_loads_and_an_empty_one_is_none(tmp_path):
    assert load_marathon("ledger").runtime is None
    assert load_marathon(_with_runtime(tmp_path / "a", "[runtime]")).runtime is None
    runtime = load_marathon(_with_runtime(tmp_path / "b", f'[runtime]\nnode = "{NODE}"\napt = ["jq"]')).runtime
    assert runtime == RuntimeSpec(node=NODE, apt=("jq",))


def test_derived_tags_follow_the_declaration_and_the_parent():
    parent = "marathon-scorer:0123456789ab"
    node = runtime_tag(parent, RuntimeSpec(node=NODE))
    assert node.startswith("marathon-scorer-runtime:")
    assert runtime_tag(parent, RuntimeSpec(node=NODE)) == node  # a content hash: stable
    assert runtime_tag(parent, RuntimeSpec(node="22.18.0")) != node
    assert runtime_tag(parent, RuntimeSpec(node=NODE, apt=("jq",))) != node
    assert runtime_tag("marathon-scorer:ba9876543210", RuntimeSpec(node=NODE)) != node
    # The order of the packages is not part of the declaration.
    assert (runtime_tag(parent, RuntimeSpec(apt=("jq", "curl")))
            == runtime_tag(parent, RuntimeSpec(apt=("curl", "jq"))))


@pytest.mark.docker
def test_a_marathon_without_runtime_uses_the_plain_images():
    plain = build_images(agent=False, log=lambda line: None)
    assert plain.scorer.startswith("marathon-scorer:") and plain.runtime is None
    assert build_images(agent=False, log=lambda line: None, runtime=RuntimeSpec()) == plain
    assert plain.derived_from == {}


@pytest.mark.docker
def test_the_runtime_scorer_image_runs_typescript_with_the_declared_node():
    plain = build_images(agent=False, log=lambda line: None)
    images = build_images(agent=False, log=lambda line: None, runtime=RuntimeSpec(node=NODE))
    assert images.scorer != plain.scorer and images.scorer.startswith("marathon-scorer-runtime:")
    assert images.derived_from == {images.scorer: plain.scorer}
    assert images.runtime == RuntimeSpec(node=NODE) and images.scorer in images.ids
    script = ("id -u; pwd; node --version; "
              "printf 'const n: number = 6;\\nconsole.log(n * 7);\\n' > /tmp/a.ts; node /tmp/a.ts")
    proc = subprocess.run(["docker", "run", "--rm", "--network", "none", images.scorer, "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1000", "/report", f"v{NODE}", "42"]


@pytest.mark.docker
def test_images_build_adds_the_runtime_images_of_the_named_marathons():
    from tests.conftest import run_cli

    relay = run_cli("images", "build", "--no-agent", "--marathon", "relay")
    assert relay.returncode == 0, relay.stderr
    tags = relay.stdout.split()
    assert [t.split(":")[0] for t in tags] == ["marathon-base", "marathon-scorer", "marathon-scorer-runtime"]
    ledger = run_cli("images", "build", "--no-agent", "--marathon", "ledger")
    assert ledger.returncode == 0 and ledger.stdout.split() == tags[:2]
