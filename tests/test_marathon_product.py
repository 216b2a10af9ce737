"""``marathon_product`` (the scorer image's product runner) on the host: the starvation rule,
the kernel figures it reads, output bounds, a server run (``Service``: readiness, kill and
restart, bounded output, hung versus starved), the per-check clean-up of the product's files,
and (in a scorer container) a run with a shifted wall clock as the product uid.

The attacks through a real scorer container are in tests/test_scorer_attacks.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.images import RECIPES

sys.path.insert(0, str(RECIPES))
import marathon_product as mp  # noqa: E402
from tests.answer_fixtures import scorer_image  # noqa: E402,F401

PRODUCT = Path(__file__).parent / "fixtures" / "hostile" / "reference" / "e1"


@pytest.mark.parametrize("on_cpu, waiting, container, starved", [
    (0.4, 19.3, 0.9, True),     # the host gave it 2% of a CPU: no verdict
    (0.4, 19.3, None, True),    # container usage unknown: the run's own figures decide
    (0.1, 0.2, 0.3, False),     # hung: asleep, neither running nor waiting
    (19.0, 0.8, 19.5, False),   # spinning on a free CPU
    (0.3, 19.0, 38.0, False),   # waiting, but the container kept two CPUs busy: self-inflicted
    (6.0, 13.0, 7.0, False),    # ran for 30% of the time: slow, not starved
])
def test_starvation_rule(on_cpu, waiting, container, starved):
    use = mp.CpuUse(wall_s=20.0, on_cpu_s=on_cpu, waiting_s=waiting, container_cpu_s=container)
    assert use.starved is starved
    assert "of 20.0 s" in use.describe()


def test_measure_reads_the_kernel_figures_of_a_run():
    sleeper = subprocess.Popen(["sleep", "5"], start_new_session=True)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
    try:
        started = time.monotonic()
        time.sleep(0.5)
        asleep = mp.measure(sleeper.pid, started, None)
        busy = mp.measure(spinner.pid, started, None)
    finally:
        sleeper.kill(), spinner.kill(), sleeper.wait(), spinner.wait()
    assert asleep.on_cpu_s < 0.05 and asleep.waiting_s < 0.05 and not asleep.starved
    assert busy.on_cpu_s + busy.waiting_s > 0.3  # it was running or runnable all along


def test_output_is_kept_up_to_the_limit_and_the_run_fails_at_its_time_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(mp, "OUTPUT_LIMIT", 1 << 20)
    product = mp.Product(PRODUCT, tmp_path, [sys.executable, "-c", "import sys\nwhile True: sys.stdout.write('x' * 65536)"])
    try:
        pending = product.spawn(timeout=1)
        with pytest.raises(BaseException, match="did not finish within 1 s") as failed:
            pending.result()
        assert type(failed.value).__name__ == "Failed"  # a verdict: it spun, it was not starved
        assert len(pending._output[0]) == 1 << 20
    finally:
        product.close()


def test_remove_user_files_takes_what_the_uid_owns_and_follows_no_link(tmp_path):
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "sub" / "big").write_bytes(b"x" * 1000)
    (tmp_path / "to-etc").symlink_to("/etc")
    (tmp_path / "to-passwd").symlink_to("/etc/passwd")
    assert mp.remove_user_files(os.getuid(), (str(tmp_path),)) == 3
    assert list(tmp_path.iterdir()) == [] and Path("/etc/passwd").exists()


#: A tiny server product: ``serve`` answers on a free port after printing the listening line
#: (``flood``: after writing 1 MiB to stderr), ``hang`` sleeps silently, ``exit N`` exits N.
SERVER = """
import socket, sys, time
mode = sys.argv[1]
if mode == "exit":
    sys.exit(int(sys.argv[2]))
if mode == "hang":
    time.sleep(60)
if mode == "flood":
    sys.stderr.write("e" * (1 << 20)); sys.stderr.flush()
listener = socket.create_server(("127.0.0.1", 0))
print("starting", flush=True)
print(f"listening on http://127.0.0.1:{listener.getsockname()[1]}", flush=True)
while True:
    connection, _ = listener.accept()
    connection.sendall(b"pong")
    connection.close()
"""


def _ask(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        return connection.recv(16)


@pytest.fixture
def server(tmp_path):
    product = mp.Product(PRODUCT, tmp_path, [sys.executable, "-c", SERVER], name="tiny")
    yield product
    product.close()


def test_a_service_listens_is_killed_and_restarts_on_a_new_port(server):
    first = mp.Service(server, ["serve"]).wait_listening()
    assert first.port and _ask(first.port) == b"pong"
    assert first.stdout == f"starting\nlistening on http://127.0.0.1:{first.port}\n"
    first.kill()
    assert first.proc.returncode == -9
    with pytest.raises(OSError):
        _ask(first.port)
    second = mp.Service(server, ["serve"]).wait_listening()
    assert _ask(second.port) == b"pong"
    assert second.terminate() == -15 and "exited -15" in second.describe()
    assert mp.Service(server, ["exit", 2]).wait() == 2


def test_a_service_keeps_its_output_up_to_the_limit(server, monkeypatch):
    monkeypatch.setattr(mp, "OUTPUT_LIMIT", 1 << 16)
    service = mp.Service(server, ["flood"]).wait_listening()  # stderr is read while it runs
    assert _ask(service.port) == b"pong"
    service.kill()
    assert service.stderr == "e" * (1 << 16)


def test_a_hung_or_exited_service_fails_the_check_and_a_starved_one_has_no_verdict(server, monkeypatch):
    started = time.monotonic()
    hung = mp.Service(server, ["hang"], timeout=1)
    with pytest.raises(BaseException, match="the tiny did not print `listening on http://127.0.0.1:PORT` .exited -9") as failed:
        hung.wait_listening()
    assert type(failed.value).__name__ == "Failed"  # asleep: hung, not starved
    assert hung.proc.returncode == -9 and time.monotonic() - started < 10
    with pytest.raises(BaseException, match="did not exit within 1 s") as failed:
        mp.Service(server, ["hang"], timeout=1).wait()
    assert type(failed.value).__name__ == "Failed"
    with pytest.raises(BaseException, match="the tiny did not print .*exited 3") as failed:
        mp.Service(server, ["exit", 3]).wait_listening()
    assert type(failed.value).__name__ == "Failed"
    # Under a rule that calls any wait starved, the same hung service gets no verdict.
    monkeypatch.setattr(mp, "STARVED_WAIT_SHARE", 0.0)
    monkeypatch.setattr(mp, "STARVED_CONTAINER_CPUS", 1e9)
    starved = mp.Service(server, ["hang"], timeout=1)
    with pytest.raises(mp.NoVerdict, match="the tiny did not start listening within 1 s .*starved"):
        starved.wait_listening()
    assert starved.proc.returncode == -9


SHIFTED_RUN = r"""
import glob, json, os, pathlib, tempfile, time
import marathon_product as mp
scratch = pathlib.Path(tempfile.mkdtemp())
scratch.chmod(0o755)
product = mp.Product(pathlib.Path("/opt/marathon"), scratch, ["python3"], name="python3")
code = "import datetime, os, time; print(time.time(), datetime.date.today().year, os.getuid())"
shifted = product.run("-c", code, env=mp.shifted_clock(days=400))
plain = product.run("-c", code)
product.close()
print(json.dumps({"now": time.time(), "shifted": [shifted.returncode, shifted.stdout, shifted.stderr],
                  "plain": plain.stdout, "shm": [(p, os.stat(p).st_uid) for p in glob.glob("/dev/shm/*")]}))
"""


@pytest.mark.docker
def test_a_shifted_clock_run_sees_the_date_400_days_ahead_as_the_product_uid(scorer_image):
    """``shifted_clock`` in the scorer image: the product, run as its own uid, reads a wall clock
    400 days ahead (the year too), without an error, and leaves nothing of the runner's in
    ``/dev/shm``. ``libfaketime`` preloaded into the uid switch itself (run as the runner) leaves
    a root-owned semaphore that the product cannot open, and the run fails: the loader
    variables must reach the product only after the switch."""
    import json

    from benchmark.docker_env import client
    from benchmark.scorer import RUNNER_CAPABILITIES

    logs = client().containers.run(
        scorer_image, ["python3", "-I", "-c", SHIFTED_RUN], entrypoint=[], user="0:0", remove=True,
        network_disabled=True, cap_drop=["ALL"], cap_add=list(RUNNER_CAPABILITIES),
        security_opt=["no-new-privileges"], environment={mp.PRODUCT_UID_ENV: "2000"},
        tmpfs={"/tmp": "rw,exec,mode=1777"}, stdout=True, stderr=True)
    got = json.loads(logs.decode().strip().splitlines()[-1])
    code, stdout, stderr = got["shifted"]
    assert code == 0 and stderr == "", got
    shifted_time, shifted_year, uid = stdout.split()
    plain_time, plain_year, _ = got["plain"].split()
    assert uid == "2000"
    assert abs(float(shifted_time) - got["now"] - 400 * 86400) < 60
    assert abs(float(plain_time) - got["now"]) < 60
    assert int(shifted_year) > int(plain_year)
    assert all(owner == 2000 for _, owner in got["shm"]), got["shm"]


def test_shifted_clock_is_none_without_libfaketime(monkeypatch, tmp_path):
    """Where the library is not installed, the check learns it (and can fall back to waiting)."""
    monkeypatch.setattr(mp, "FAKETIME_LIBRARIES", str(tmp_path / "*" / "libfaketime.so.1"))
    assert mp.shifted_clock(days=400) is None
