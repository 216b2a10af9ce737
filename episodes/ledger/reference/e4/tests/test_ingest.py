"""Tests of ``ingest``: duplicates, persistence across runs and masking."""

import json
import re

from test_smoke import SAMPLE, run_ledger

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@")
CARD = re.compile(r"\d{16}")


def test_reingest_is_all_duplicates(tmp_path):
    state = tmp_path / "state"
    assert run_ledger("ingest", str(SAMPLE), "--state", str(state)).returncode == 0
    before = (state / "balances.json").read_bytes()
    second = run_ledger("ingest", str(SAMPLE), "--state", str(state))
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == {"applied": 0, "duplicate": 6, "late": 0, "rejected": 0}
    assert (state / "balances.json").read_bytes() == before


def test_balances_file_format(tmp_path):
    state = tmp_path / "state"
    run_ledger("ingest", str(SAMPLE), "--state", str(state))
    text = (state / "balances.json").read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"


def test_log_masks_personal_data(tmp_path):
    state = tmp_path / "state"
    result = run_ledger("ingest", str(SAMPLE), "--state", str(state))
    log = (state / "ledger.log").read_text().splitlines()
    assert len(log) == 6
    assert log[0] == (
        "applied id=e-1 account=acct-0001 type=credit amount=5000 "
        "email=j***@example.com card=****1111"
    )
    assert log[4].startswith("duplicate id=e-2 ")
    for path in state.iterdir():
        text = path.read_text()
        assert not CARD.search(text), path.name
        assert not re.search(r"[a-z]{2,}@example", text), path.name
    assert not CARD.search(result.stdout + result.stderr)
