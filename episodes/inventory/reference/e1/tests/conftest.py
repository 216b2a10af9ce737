"""Fixtures of the public tests: a service on a free port, driven over HTTP."""

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


class Service:
    """A running ``python3 -m inventory`` and a tiny JSON client for it."""

    def __init__(self, state: Path, *flags):
        self.state = state
        self.proc = subprocess.Popen([sys.executable, "-m", "inventory", "--state", str(state), "--port", "0", *flags],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line
        self.url = line.split()[-1]

    def call(self, method, path, body=None, key=None):
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if key is not None:
            request.add_header("Idempotency-Key", key)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def stop(self, kill=False):
        self.proc.kill() if kill else self.proc.terminate()
        self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def service(tmp_path):
    started = []

    def start(state=None, *flags):
        started.append(Service(state or tmp_path / "state", *flags))
        return started[-1]

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.stop(kill=True)
