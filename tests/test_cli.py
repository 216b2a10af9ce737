"""The command line on bad input: one line on stderr, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import run_cli

OK = ("--marathon", "tests/fixtures/tiny", "--arm", "prompt-only", "--agent", "oracle")


def _flags(**changes: str) -> list[str]:
    args = dict(zip(OK[::2], OK[1::2]))
    args.update({f"--{k.replace('_', '-')}": v for k, v in changes.items()})
    return [x for kv in args.items() for x in kv if kv[1] is not None]


CASES = [
    (_flags(arm="nope"), "unknown arm 'nope'"),
    (_flags(arm="tests/fixtures/arms/governed-bad.toml"),
     "governed-bad.toml: max_attempts: Input should be greater than or equal to 1"),
    (_flags(agent="nope"), "unknown agent 'nope'"),
    (_flags(agent="claude-code"), "--model: agent 'claude-code' needs a model"),
    (_flags(agent="codex", model="scripted/genius"), "--model scripted/genius: unknown scripted model"),
    (_flags(episodes="0"), "--episodes: Input should be greater than or equal to 1"),
    (_flags(episodes="3"), "--episodes: marathon tiny has 2 episodes, got 3"),
    (_flags(marathon="nope"), "unknown marathon 'nope'"),
    (_flags(replicates="0"), "--replicates: Input should be greater than or equal to 1"),
    (_flags(replicates="two"), "'two' is not a valid integer"),
    (_flags(jobs="0"), "--jobs:"),
    (_flags(time_limit="0"), "--time-limit:"),
    (_flags(model="scripted/echo"), "--model: agents oracle use no model"),
    (["--marathon", "ledger", "--agent", "oracle"], "--arm or set arms"),
    (_flags() + ["--bogus"], "No such option '--bogus'"),
]


@pytest.mark.parametrize("args, message", CASES)
def test_bad_flags_fail_with_one_line(tmp_path: Path, args: list[str], message: str):
    out = tmp_path / "out"
    proc = run_cli("run", *args, "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("marathon: error: ") and message in lines[0], proc.stderr
    assert not out.exists()


def test_malformed_experiment_file(tmp_path: Path):
    exp = tmp_path / "exp.toml"
    exp.write_text('marathon = "ledger"\narms = ["prompt-only"\n')
    proc = run_cli("run", "-c", str(exp), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and f"{exp}: malformed TOML" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.toml"]


def test_unwritable_output(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("run", *OK, "--out", str(blocker / "runs"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert f"--out: {blocker} is not a directory" in proc.stderr
    assert blocker.read_text() == "x"


def test_docker_not_reachable(tmp_path: Path):
    out = tmp_path / "out"
    proc = run_cli("run", *OK, "--out", str(out), env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "Docker engine not reachable" in proc.stderr
    assert not out.exists()


def test_resume_of_a_non_run_directory(tmp_path: Path):
    proc = run_cli("run", "--resume", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "not a run directory" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_resume_takes_no_run_flags(tmp_path: Path):
    proc = run_cli("run", "--resume", str(tmp_path), "--replicates", "3")
    assert proc.returncode == 2 and "--resume: takes no other run options but --jobs" in proc.stderr


def test_status_of_a_non_run_directory(tmp_path: Path):
    proc = run_cli("status", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not a run directory" in proc.stderr
