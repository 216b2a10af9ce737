"""The trial sandbox, against a real Docker engine."""

from __future__ import annotations

import io
import secrets
import tarfile
from pathlib import Path

import docker
import pytest

from benchmark.docker_env import LABEL, client
from benchmark.sandbox import TRIAL_LABEL, Sandbox, extract_snapshot, remove_run_resources

pytestmark = pytest.mark.docker


@pytest.fixture
def sandbox(images, tiny):
    run_id = f"test-{secrets.token_hex(3)}"
    sb = Sandbox.create(run_id=run_id, trial_id="t1", image=images.agent)
    sb.put_directory(tiny / "starter")
    sb.init_repo()
    yield sb
    remove_run_resources(run_id)


def test_container_is_confined_and_labelled(sandbox):
    attrs = client().api.inspect_container(sandbox.container.id)
    host = attrs["HostConfig"]
    assert attrs["Config"]["User"] == "1000:1000"
    assert host["Memory"] > 0 and host["NanoCpus"] > 0 and host["PidsLimit"] > 0
    assert host["CapDrop"] == ["ALL"]
    assert attrs["Config"]["Labels"][LABEL] == sandbox.run_id
    assert attrs["Config"]["Labels"][TRIAL_LABEL] == "t1"
    assert host["NetworkMode"] == "none"
    assert sandbox.run("id -u").strip() == "1000"


def test_a_no_model_sandbox_has_no_network_at_all(images):
    """Agents that call no model get only loopback: no interface to send anything through."""
    run_id = f"test-{secrets.token_hex(3)}"
    sb = Sandbox.create(run_id=run_id, trial_id="t1", image=images.agent)
    try:
        attrs = client().api.inspect_container(sb.container.id)
        assert attrs["HostConfig"]["NetworkMode"] == "none"
        probe = sb.exec(["python3", "-c", "import socket; print(sorted(n for _, n in socket.if_nameindex()))"],
                        timeout_s=20)
        assert probe.output.strip() == "['lo']"
    finally:
        remove_run_resources(run_id)


def test_starter_is_committed_in_a_git_workspace(sandbox, tiny):
    log = sandbox.run("git log --format=%s")
    assert log.strip() == "marathon: starter"
    assert sandbox.run("git status --porcelain") == ""
    assert sandbox.run("cat tiny/__main__.py") == (tiny / "starter" / "tiny" / "__main__.py").read_text()


def test_exec_timeout_kills_the_command_and_its_children(sandbox):
    res = sandbox.exec(["sh", "-c", "sleep 300 & sleep 300"], timeout_s=1.5)
    assert res.timed_out and res.exit_code is None and 1.5 <= res.duration_s < 15
    assert "sleep 300" not in sandbox.run("ps -eo args")
    assert sandbox.container.reload() is None and sandbox.container.status == "running"
    ok = sandbox.exec(["true"], timeout_s=30)  # the container goes on
    assert ok.exit_code == 0 and not ok.timed_out


def test_commit_archive_restore_round_trip(sandbox, tmp_path: Path):
    base = sandbox.head()
    sandbox.put_files({"notes/a.txt": b"alpha\n"})
    sandbox.run("echo ignored > build.log && echo 'build.log' > .gitignore")
    commit = sandbox.commit("marathon: e1 attempt 1")
    assert commit and commit != base
    assert sandbox.diff(base, commit, tmp_path / "workspace.diff") > 0
    assert "+alpha" in (tmp_path / "workspace.diff").read_text()
    archive = sandbox.archive(tmp_path / "workspace.tar").path
    snap = extract_snapshot(archive, tmp_path / "snap")
    assert (snap / "notes" / "a.txt").read_text() == "alpha\n"
    assert (snap / "build.log").is_file()          # ignored files are scored too
    assert not (snap / ".git").exists()            # the snapshot never carries .git

    sandbox.run("rm -rf notes && git commit -qam gone")
    sandbox.restore(archive)
    assert sandbox.head() == commit
    assert sandbox.run("cat notes/a.txt") == "alpha\n"
    assert sandbox.run("stat -c %u notes/a.txt").strip() == "1000"


def test_snapshot_extraction_refuses_to_escape(tmp_path: Path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, target in [("workspace/ok.txt", "file", ""), ("workspace/evil", "sym", "/etc/passwd"),
                                   ("workspace/../../escape.txt", "file", ""), ("workspace/.git/HEAD", "file", "")]:
            info = tarfile.TarInfo(name)
            if kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            else:
                info.size = 2
                tar.addfile(info, io.BytesIO(b"hi"))
    snap = extract_snapshot(buf.getvalue(), tmp_path / "snap")
    assert sorted(p.name for p in snap.iterdir()) == ["ok.txt"]
    assert not (tmp_path / "escape.txt").exists()


def test_leftovers_are_found_by_label_and_removed(images):
    run_id = f"test-{secrets.token_hex(3)}"
    # a network labelled by an older harness version is removed too
    net = client().networks.create(f"marathon-{run_id}", driver="bridge", internal=True,
                                   labels={LABEL: run_id})
    Sandbox.create(run_id=run_id, trial_id="a", image=images.agent)
    Sandbox.create(run_id=run_id, trial_id="b", image=images.agent)
    assert remove_run_resources(run_id) == (2, 1)
    assert client().containers.list(all=True, filters={"label": f"{LABEL}={run_id}"}) == []
    with pytest.raises(docker.errors.NotFound):
        client().networks.get(net.id)


def test_agents_that_read_instructions_get_the_arm_material(sandbox):
    from benchmark.agents.base import Agent
    from benchmark.arms import load_arm

    class Reader(Agent):
        name = "reader"
        reads_instructions = True

        def run(self, sandbox, prompt, ctx):
            raise NotImplementedError

    arm = load_arm("skill-only")
    Reader().prepare(sandbox, arm)
    listing = sandbox.run("find CLAUDE.md AGENTS.md .claude .agents -type f | sort")
    assert listing.split() == [".agents/skills/recovery/SKILL.md", ".claude/skills/recovery/SKILL.md",
                               "AGENTS.md", "CLAUDE.md"]
    assert sandbox.run("cat CLAUDE.md") == arm.instructions.read_text()
    assert sandbox.run("stat -c %u .claude/skills/recovery/SKILL.md").strip() == "1000"


def test_oracle_and_nop_leave_no_arm_material(sandbox):
    from benchmark.agents import get_agent
    from benchmark.arms import load_arm

    for name in ("oracle", "nop"):
        get_agent(name).prepare(sandbox, load_arm("skill-only"))
    assert sandbox.run("ls -A").split() == [".git", "README.md", "tiny"]


def test_oracle_replaces_every_file_but_keeps_the_history(sandbox, tiny, tmp_path):
    from benchmark.agents import get_agent
    from benchmark.agents.base import AttemptContext
    from benchmark.arms import load_arm
    from benchmark.marathon import load_marathon

    marathon = load_marathon(tiny)
    sandbox.put_files({"stray.txt": b"not in the reference\n"})
    before = sandbox.head()
    ctx = AttemptContext(trial_id="t1", episode=marathon.episode("e2"), attempt=1,
                         arm=load_arm("prompt-only"), model="none", effort="none", time_limit_s=60,
                         transcript=tmp_path / "transcript")
    result = get_agent("oracle").run(sandbox, "brief", ctx)
    assert result.outcome.value == "ok" and "reference e2" in (tmp_path / "transcript").read_text()
    assert sandbox.run("ls -A").split() == [".git", "README.md", "tiny"]
    assert sandbox.run("cat tiny/__main__.py") == (tiny / "reference" / "e2" / "tiny" / "__main__.py").read_text()
    assert sandbox.head() == before  # history untouched; the harness commits after the attempt


_STREAMED = """
import json, secrets, sys
from pathlib import Path
from benchmark.images import build_images
from benchmark.sandbox import ArchiveOverLimit, Sandbox, SandboxLimits, remove_run_resources

def hwm_kib():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))

image = build_images(agent=True).agent
run_id = f"test-{secrets.token_hex(3)}"
limits = SandboxLimits(archive_max_bytes=512 * 2**20)
sb = Sandbox.create(run_id=run_id, trial_id="t", image=image, limits=limits)
try:
    sb.exec(["truncate", "-s", "300M", "big.bin"], timeout_s=60)
    before = hwm_kib()
    info = sb.archive(Path(sys.argv[1]))
    grew = (hwm_kib() - before) / 1024
    sb.limits = SandboxLimits(archive_max_bytes=64 * 2**20)
    try:
        sb.archive(Path(sys.argv[1] + ".small"))
        over = ""
    except ArchiveOverLimit as e:
        over = str(e)
    print(json.dumps({"bytes": info.bytes, "apparent": info.apparent_bytes, "grew_mib": grew, "over": over}))
finally:
    remove_run_resources(run_id)
"""


def test_a_large_workspace_archive_streams_to_disk_in_bounded_memory(images, tmp_path: Path):
    """300 MiB (sparse in the container, real bytes in the archive) under a 512 MiB limit go
    to the host file without passing through memory; under a 64 MiB limit the transfer stops
    at the file's header."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    dest = tmp_path / "workspace.tar"
    proc = subprocess.run([sys.executable, "-c", _STREAMED, str(dest)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["apparent"] >= 300 * 2**20 and result["bytes"] == dest.stat().st_size
    assert result["grew_mib"] < 50, result
    assert "over the archive limit of 64.0 MiB" in result["over"] and "big.bin 300.0 MiB" in result["over"]
    assert not (tmp_path / "workspace.tar.small").exists()


def test_archive_entry_limit(sandbox, tmp_path: Path):
    from benchmark.sandbox import ArchiveOverLimit, SandboxLimits

    sandbox.run("mkdir many && cd many && touch a b c d e f g h i j")
    sandbox.limits = SandboxLimits(archive_max_files=8)
    with pytest.raises(ArchiveOverLimit, match="archive limit of 8 entries"):
        sandbox.archive(tmp_path / "w.tar")


def test_a_history_only_archive_restores_the_committed_workspace(sandbox, images, tmp_path: Path):
    """What a resume gets when an episode's workspace was over the archive limits: the
    history, checked out at its HEAD (untracked and ignored files are not kept)."""
    sandbox.put_files({"kept.txt": b"committed\n"})
    sandbox.run("echo lost > ignored.log && echo ignored.log > .gitignore")
    commit = sandbox.commit("marathon: e1 attempt 1")
    history = sandbox.archive(tmp_path / "e1.git.tar", "/workspace/.git").path
    other = Sandbox.create(run_id=sandbox.run_id, trial_id="t2", image=images.agent)
    other.restore(history)
    assert other.head() == commit
    assert other.run("cat kept.txt") == "committed\n"
    assert other.run("git status --porcelain") == ""
    assert other.run("ls").split() == ["README.md", "kept.txt", "tiny"]


def test_clean_ups_racing_on_one_run_both_succeed(images):
    """Two clean-ups of one run at once (a signal's and the session's end): containers vanish
    under each other's listing; neither fails."""
    import threading

    run_id = f"test-{secrets.token_hex(3)}"
    for t in "abcd":
        Sandbox.create(run_id=run_id, nonce="n1", trial_id=t, image=images.agent)
    errors: list[BaseException] = []

    def clean() -> None:
        try:
            remove_run_resources(run_id, "n1")
        except BaseException as e:  # noqa: BLE001 - the test reports any failure
            errors.append(e)

    threads = [threading.Thread(target=clean) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert client().containers.list(all=True, filters={"label": f"{LABEL}={run_id}"}) == []


def test_clean_up_spares_another_run_with_the_same_run_id(images):
    run_id = f"test-{secrets.token_hex(3)}"
    mine = Sandbox.create(run_id=run_id, nonce="mine", trial_id="t", image=images.agent)
    theirs = Sandbox.create(run_id=run_id, nonce="theirs", trial_id="t", image=images.agent)
    try:
        assert mine.container.name != theirs.container.name
        assert remove_run_resources(run_id, "mine") == (1, 0)
        theirs.container.reload()
        assert theirs.container.status == "running"
    finally:
        remove_run_resources(run_id)


def test_command_output_is_bounded_in_memory_and_on_disk(sandbox, tmp_path: Path):
    from benchmark.sandbox import SandboxLimits

    sandbox.limits = SandboxLimits(output_max_bytes=2**20)
    loud = ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo last"]
    with open(tmp_path / "transcript", "wb") as f:
        res = sandbox.exec(loud, timeout_s=60, output_file=f)
    kept = (tmp_path / "transcript").read_bytes()
    assert res.output_bytes > 3_000_000 and 2**20 < len(kept) < 2**20 + 200
    assert kept.endswith(b"bytes; the rest was dropped]\n")
    res = sandbox.exec(loud, timeout_s=60)
    assert len(res.output) == 65536 and res.output.endswith("x\nlast\n")
