"""Smoke test: the service starts, prints its address and answers HTTP."""

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_service_starts_and_answers(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "inventory", "--state", str(tmp_path / "state"), "--port", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        try:
            with urllib.request.urlopen(url + "/items/X", timeout=10) as answer:
                status = answer.status
        except urllib.error.HTTPError as error:
            status = error.code
        assert status in (200, 404, 501)
    finally:
        proc.terminate()
        proc.wait(10)
