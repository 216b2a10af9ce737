"""Public smoke tests for the ledger command line.

Run them from the workspace root with ``python3 -m pytest tests``.
``test_help`` passes on the starter; ``test_ingest_sample`` fails until
``ingest`` is implemented.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "events.jsonl"


def run_ledger(*args, input=None):
    """Run ``python3 -m ledger ARGS`` from the workspace root."""
    return subprocess.run(
        [sys.executable, "-m", "ledger", *args],
        cwd=ROOT,
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help():
    result = run_ledger("--help")
    assert result.returncode == 0
    assert "usage" in result.stdout.lower()


def test_ingest_sample(tmp_path):
    state = tmp_path / "state"
    result = run_ledger("ingest", str(SAMPLE), "--state", str(state))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"applied": 5, "duplicate": 1}
    balances = json.loads((state / "balances.json").read_text())
    assert balances == {
        "accounts": {"acct-0001": 3750, "acct-0002": 10000, "acct-0003": 800}
    }
