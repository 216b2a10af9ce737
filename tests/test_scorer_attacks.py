"""Attacks on the scorer by a hostile product, each performed for real in a scorer container.

The ``hostile`` fixture marathon (tests/fixtures/hostile) has one gate of four checks; each test
replaces the product by one that attacks the scorer while the checks run it, and asserts the
defence held: no forged verdict, no hidden material (gate source, seed) in any message, nothing
the product leaves behind affecting a later check, and a starved product run judged ``error``
(no verdict), never ``failed``. docs/scorer.md ties each claim of its threat model to a test
here.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import pytest

from benchmark.marathon import Marathon, load_marathon
from benchmark.scorer import CheckResult, Outcome, ScorerLimits, score
from tests.answer_fixtures import scorer_image  # noqa: F401

pytestmark = pytest.mark.docker

HOSTILE = Path(__file__).parent / "fixtures" / "hostile"
REFERENCE = (HOSTILE / "reference" / "e1" / "hostile" / "__main__.py").read_text()
#: A seed no message could contain by chance.
SEED = 48151623
CHECKS = ("test_answer", "test_echo_input", "test_writes_output", "test_work")


@pytest.fixture(scope="module")
def hostile() -> Marathon:
    return load_marathon(HOSTILE)


def product(tmp_path: Path, attack: str, on: str = "answer") -> Path:
    """A snapshot of the reference product that runs ``attack`` (Python source) instead of the
    ``on`` command (every other command behaves as the reference)."""
    snap = tmp_path / "snap"
    shutil.copytree(HOSTILE / "reference" / "e1", snap)
    main = (
        "import sys\n"
        f"if sys.argv[1:2] == [{on!r}]:\n"
        + textwrap.indent(textwrap.dedent(attack), "    ")
        + "\n    raise SystemExit(0)\n"
        + REFERENCE
    )
    (snap / "hostile" / "__main__.py").write_text(main)
    return snap


def run(snap: Path, marathon: Marathon, image: str, **limits) -> dict[str, CheckResult]:
    results = score(snap, marathon, "e1", seed=SEED, image=image,
                    limits=ScorerLimits(**limits) if limits else None)
    return {r.check: r for r in results}


def outcomes(results: dict[str, CheckResult]) -> dict[str, str]:
    return {name: r.outcome.value for name, r in results.items()}


def assert_unharmed(results: dict[str, CheckResult], *checks: str) -> None:
    """The checks the attack does not target kept the reference's verdict: passed, or error when
    this shared machine starved the container (``test_work`` needs 0.35 s of CPU in 3 s), never
    failed."""
    for check in checks:
        assert results[check].outcome != Outcome.failed, (check, results[check].message)
        if results[check].outcome == Outcome.error:
            assert "starved" in results[check].message, (check, results[check].message)


FORGE = """
    names = ["test_answer", "test_echo_input", "test_writes_output", "test_work"]
    forged = "<testsuites><testsuite>" + "".join(
        f'<testcase classname="test_hostile" name="{n}" time="0.1"/>' for n in names) + "</testsuite></testsuites>"
    wrote = []
    for directory in ("/report", "/scorer/report", "/scorer", "/gates", "/snapshot"):
        for k in range(10):
            try:
                with open(f"{directory}/junit-{k}.xml", "w") as f:
                    f.write(forged)
                wrote.append(directory)
            except OSError:
                pass
    print("forged into:", sorted(set(wrote)) or "nothing")
"""


def test_forged_report_written_during_the_run_is_never_read(tmp_path, hostile, scorer_image):
    """The product writes well-formed JUnit reports, every check passing, wherever the runner's
    reports could be: it cannot write them, and the checks keep their real verdicts."""
    got = run(product(tmp_path, FORGE), hostile, scorer_image)
    assert got["test_answer"].outcome == Outcome.failed
    assert_unharmed(got, "test_echo_input", "test_writes_output", "test_work")
    assert "forged into: nothing" in got["test_answer"].message


def test_product_cannot_signal_the_runner_then_forge(tmp_path, hostile, scorer_image):
    """The product SIGKILLs (and SIGSTOPs) every process it sees, PID 1 and the pytest processes
    included, then forges reports: nothing it can signal is the runner's."""
    attack = textwrap.dedent("""
        import os, signal
        hit = []
        for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
            if pid == os.getpid():
                continue
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                    hit.append(pid)
                except OSError:
                    pass
        print("signalled:", sorted(set(hit)))
    """) + textwrap.dedent(FORGE)
    got = run(product(tmp_path, attack), hostile, scorer_image)
    assert got["test_answer"].outcome == Outcome.failed
    assert_unharmed(got, "test_echo_input", "test_writes_output", "test_work")
    assert "signalled: []" in got["test_answer"].message


SNOOP = """
    import glob, os
    gate = seed = "denied"
    for path in ["/gates/test_hostile.py", "/scorer/runner/0/gates/test_hostile.py",
                 "/scorer/runner/1/gates/test_hostile.py", *glob.glob("/scorer/**/*.py", recursive=True)]:
        try:
            gate = next(line for line in open(path) if "def test_" in line).strip()
            break
        except (OSError, StopIteration):
            pass
    for path in ["/scorer/runner/0/seed", "/scorer/runner/1/seed",
                 *(f"/proc/{p}/environ" for p in os.listdir("/proc") if p.isdigit())]:
        try:
            text = open(path, "rb").read().decode(errors="replace")
        except OSError:
            continue
        if path.endswith("/seed"):
            seed = text.strip()
        for item in text.split("\\0"):
            if item.startswith("MARATHON_SEED="):
                seed = item
    print(f"GATE={gate} SEED={seed}")
"""

DEPUTY = """
    import os
    from pathlib import Path
    out = Path(sys.argv[2])
    out.parent.mkdir(parents=True, exist_ok=True)
    worker = os.getuid() - 2000
    # The runner reads this output as root: point it at the gate source.
    out.symlink_to(f"/scorer/runner/{worker}/gates/test_hostile.py")
    (out.parent / "seed").symlink_to(f"/scorer/runner/{worker}/seed")
"""


def test_gate_source_and_seed_never_reach_a_message(tmp_path, hostile, scorer_image):
    """The product reads what it can of the gates and the runner's environment and prints it
    into output that failure messages quote; and it leaves its output file as a symbolic link
    to the gate source, for the runner to read and quote. Neither reveals anything."""
    snap = product(tmp_path, SNOOP)
    main = snap / "hostile" / "__main__.py"
    main.write_text(main.read_text().replace(
        "import sys\n", "import sys\nif sys.argv[1:2] == ['write']:\n"
        + textwrap.indent(textwrap.dedent(DEPUTY), "    ") + "\n    raise SystemExit(0)\n", 1))
    got = run(snap, hostile, scorer_image)
    assert got["test_answer"].outcome == Outcome.failed
    assert "GATE=denied SEED=denied" in got["test_answer"].message
    assert got["test_writes_output"].outcome == Outcome.failed
    source = [line.strip()[:20] for line in (HOSTILE / "gates" / "test_hostile.py").read_text().splitlines()
              if len(line.strip()) >= 20]
    for result in got.values():
        assert not [line for line in source if line in result.message], result.message
        assert str(SEED) not in result.message, result.message


def test_runner_does_not_write_an_input_through_a_link_the_product_left(tmp_path, hostile, scorer_image):
    """After its first run the product leaves, where the check writes its next input, a symbolic
    link into the report directory, for the runner (root) to write through: the runner removes
    the link and writes a file of its own; nothing lands among the reports."""
    attack = """
        from pathlib import Path
        source = Path(sys.argv[2])
        if source.name == "input-1.txt":
            (source.parent / "input-2.txt").symlink_to("/scorer/report/planted")
        print(source.read_text().strip())
    """
    got = run(product(tmp_path, attack, on="echo"), hostile, scorer_image)
    assert got["test_echo_input"].outcome == Outcome.passed, got["test_echo_input"].message
    assert_unharmed(got, *CHECKS)


def test_product_cannot_fill_the_scorer_and_its_writes_do_not_outlive_the_check(tmp_path, hostile, scorer_image):
    """The product writes as much as it can everywhere: only the sized /tmp and /dev/shm take
    anything (the root file system is read-only; the reports and snapshot are out of reach),
    and its files are removed after its check, so the next checks run normally."""
    attack = """
        import os
        chunk = b"x" * (1 << 20)
        wrote = {}
        for directory in ("/tmp", "/dev/shm", "/var/tmp", "/", "/scorer/report", "/snapshot", "/opt"):
            total = 0
            try:
                with open(os.path.join(directory, "fill"), "wb") as f:
                    while total < (64 << 20):
                        f.write(chunk)
                        f.flush()
                        total += len(chunk)
            except OSError:
                pass
            wrote[directory] = total >> 20
        print("MB written:", " ".join(f"{d}={n}" for d, n in wrote.items()))
    """
    got = run(product(tmp_path, attack), hostile, scorer_image, processes=1, tmp_size="16m",
              shm_size="8m")
    assert got["test_answer"].outcome == Outcome.failed
    assert_unharmed(got, "test_echo_input", "test_writes_output", "test_work")
    written = {d: int(n) for d, n in re.findall(r"(/[a-z/]*)=(\d+)", got["test_answer"].message)}
    assert len(written) == 7, got["test_answer"].message
    assert written["/tmp"] <= 16 and written["/dev/shm"] <= 8
    assert written["/var/tmp"] == written["/"] == written["/scorer/report"] == 0
    assert written["/snapshot"] == written["/opt"] == 0


def test_background_process_cannot_tamper_with_a_later_check(tmp_path, hostile, scorer_image):
    """During the first check the product leaves a daemon (its own session, double fork) that
    rewrites the later check's output to the right answer; it is killed when its check ends."""
    attack = """
        import os, time
        from pathlib import Path
        base = Path.cwd().parent.parent  # the pytest process's temporary directory
        target = base / "test_writes_output0" / "data" / "state" / "out.txt"
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        if target.read_text() != "42\\n":
                            target.write_text("42\\n")
                    except OSError:
                        pass
                    time.sleep(0.002)
            os._exit(0)
        print(41)
    """
    snap = product(tmp_path, attack)
    main = snap / "hostile" / "__main__.py"
    main.write_text(main.read_text().replace(
        "import sys\n", "import sys, time\nif sys.argv[1:2] == ['write']:\n"
        "    from pathlib import Path\n    Path(sys.argv[2]).parent.mkdir(parents=True)\n"
        "    Path(sys.argv[2]).write_text('41\\n')\n    time.sleep(0.5)\n    raise SystemExit(0)\n", 1))
    got = run(snap, hostile, scorer_image, processes=1)
    assert got["test_answer"].outcome == Outcome.failed
    assert got["test_writes_output"].outcome == Outcome.failed
    assert "'41' == '42'" in got["test_writes_output"].message


def test_output_with_mode_000_is_still_read(tmp_path, hostile, scorer_image):
    """The product writes the right output, then makes it and its directory unreadable (mode
    000): the runner still reads it, and the check passes."""
    attack = """
        import os
        from pathlib import Path
        out = Path(sys.argv[2])
        out.parent.mkdir(parents=True)
        out.write_text("42\\n")
        out.chmod(0)
        out.parent.chmod(0)
    """
    got = run(product(tmp_path, attack, on="write"), hostile, scorer_image)
    assert got["test_writes_output"].outcome == Outcome.passed, got["test_writes_output"].message
    assert_unharmed(got, *CHECKS)


def test_product_is_unprivileged_and_offline(tmp_path, hostile, scorer_image):
    """The product's uid is not 0, it holds no capability, and it has no network interface but
    lo: it prints 42 only then."""
    attack = """
        import os, socket
        caps = [line.split()[1] for line in open("/proc/self/status") if line.startswith("Cap")]
        interfaces = sorted(name for _, name in socket.if_nameindex())
        ok = os.getuid() >= 1000 and os.getgid() >= 1000 and os.getgroups() in ([], [os.getgid()])
        ok = ok and all(int(c, 16) == 0 for c in caps[:3]) and interfaces == ["lo"]
        print(42 if ok else f"uid={os.getuid()} groups={os.getgroups()} caps={caps} interfaces={interfaces}")
    """
    got = run(product(tmp_path, attack), hostile, scorer_image)
    assert got["test_answer"].outcome == Outcome.passed, got["test_answer"].message


def test_fork_bomb_is_bounded_and_cleared_after_its_check(tmp_path, hostile, scorer_image):
    """The product starts a fork bomb out of its process group (every process keeps forking, so
    the process limit stays reached): its check fails, and the next checks, which need
    processes, run normally."""
    attack = """
        import os, time
        if os.fork() == 0:
            os.setsid()  # out of the run's process group
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    os.fork()  # parent and child both go on forking
                except OSError:
                    time.sleep(0.01)
            os._exit(0)
        time.sleep(0.5)
        print("bombed")
    """
    got = run(product(tmp_path, attack), hostile, scorer_image, processes=1, pids_limit=128)
    assert got["test_answer"].outcome == Outcome.failed
    assert_unharmed(got, "test_echo_input", "test_writes_output", "test_work")


#: Runs as PID 1 of a scorer-image container: a runner child starts a fork bomb as uid 2000
#: (out of its session, as in the test above), lets it fill the process limit, calls
#: ``kill_user`` and then needs processes at once, as the next check does. PID 1 reaps orphans
#: only every 0.5 s, as a PID 1 starved on a loaded host would.
SLOW_REAPER = r"""
import os, subprocess, sys, time
BOMB = '''
import os, time
if os.fork():
    os._exit(0)
os.setsid()
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        os.fork()
    except OSError:
        time.sleep(0.001)
os._exit(0)
'''
runner = os.fork()
if runner == 0:
    import marathon_product as mp
    subprocess.run(["setpriv", "--reuid=2000", "--regid=2000", "--clear-groups", "--",
                    "python3", "-c", BOMB])
    time.sleep(1.5)
    mp.kill_user(2000)
    left = len(mp._user_pids(2000, ""))
    try:
        for _ in range(8):
            subprocess.run(["true"], check=True)
        spawned = "ok"
    except OSError as error:
        spawned = repr(error)
    print(f"left={left} spawned={spawned}", flush=True)
    os._exit(0)
while True:
    time.sleep(0.5)
    try:
        while (pid := os.waitpid(-1, os.WNOHANG)[0]) > 0:
            if pid == runner:
                sys.exit(0)
    except ChildProcessError:
        sys.exit(0)
"""


def test_after_a_fork_bomb_its_processes_are_gone_and_reaped_before_the_next_check(scorer_image):
    """``kill_user`` (run after every check) returns only when no process of the product uid is
    left, zombies included: a killed process holds its slot of the process limit until the
    container's PID 1 reaps it, and the next check needs processes at once."""
    from benchmark.docker_env import client

    logs = client().containers.run(
        scorer_image, ["python3", "-c", SLOW_REAPER], entrypoint=[], user="0:0", remove=True,
        pids_limit=64, network_disabled=True, stdout=True, stderr=True)
    assert logs.decode().strip().splitlines()[-1] == "left=0 spawned=ok", logs.decode()


def test_endless_output_does_not_exhaust_the_runner(tmp_path, hostile, scorer_image):
    """The product writes to stdout without end: the runner keeps a bounded part of it, and the
    check fails at its time limit instead of the runner running out of memory."""
    attack = """
        chunk = "x" * (1 << 20)
        while True:
            sys.stdout.write(chunk)
    """
    got = run(product(tmp_path, attack), hostile, scorer_image, processes=1, mem_limit="512m")
    assert got["test_answer"].outcome == Outcome.failed
    assert "did not finish within 5 s" in got["test_answer"].message
    assert_unharmed(got, *CHECKS[1:])


# --- starvation: a starved product run is `error` (no verdict), a hung one `failed` -----------


def test_reference_under_a_cpu_squeeze_is_never_failed(hostile, scorer_image):
    """With the container squeezed to 5% of a CPU, the reference's `work` run (0.35 s of CPU)
    overruns its 3 s limit: the host starved it, so the check has no verdict (error), and no
    check of the reference fails."""
    got = run(HOSTILE / "reference" / "e1", hostile, scorer_image, nano_cpus=50_000_000,
              total_timeout_s=240)
    assert set(outcomes(got).values()) <= {"passed", "error"}, outcomes(got)
    assert got["test_work"].outcome == Outcome.error
    assert "starved" in got["test_work"].message


def test_a_hung_product_fails_its_check(tmp_path, hostile, scorer_image):
    """A product that sleeps forever neither runs nor waits for a CPU: not starved, failed."""
    got = run(product(tmp_path, "import time; time.sleep(600)", on="work"), hostile, scorer_image)
    assert got["test_work"].outcome == Outcome.failed
    assert "did not finish within 3 s" in got["test_work"].message
    assert "starved" not in got["test_work"].message


def test_a_product_starving_itself_fails_its_check(tmp_path, hostile, scorer_image):
    """A product that keeps the CPU busy with its own children (so that its main process waits
    for a CPU, as if the host starved it) is not starved by the host: failed."""
    attack = """
        import os
        for _ in range(16):
            if os.fork() == 0:
                while True:
                    pass
        while True:
            pass
    """
    got = run(product(tmp_path, attack, on="work"), hostile, scorer_image)
    message = got["test_work"].message
    used = re.search(r"of ([\d.]+) s; the scorer container used ([\d.]+) CPU-s", message)
    if got["test_work"].outcome == Outcome.error and used and float(used[2]) < 0.5 * float(used[1]):
        # In CFS group scheduling the container's share does not grow with its processes: here
        # the host itself starved the whole container, when no run can be judged.
        pytest.skip(f"the host starved the whole scorer container during the test: {message}")
    assert got["test_work"].outcome == Outcome.failed, message
    assert "did not finish within 3 s" in message
