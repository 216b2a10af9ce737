"""Tests of hourly windows, the watermark and the dead letter file."""

import json

from test_smoke import SAMPLE, run_ledger


def event(event_id, ts, amount=100, kind="credit", account="acct-0001"):
    return json.dumps({
        "id": event_id, "account": account, "type": kind, "amount": amount, "ts": ts,
        "email": "jane@example.com", "card": "4111111111111111",
    }) + "\n"


def test_windows_of_sample(tmp_path):
    state = tmp_path / "state"
    run_ledger("ingest", str(SAMPLE), "--state", str(state))
    windows = json.loads((state / "windows.json").read_text())["windows"]
    assert windows["acct-0001"] == {
        "2024-05-01T09:00:00Z": {"count": 2, "credits": 5000, "debits": 1250, "net": 3750}
    }
    assert sorted(windows["acct-0002"]) == ["2024-05-01T09:00:00Z", "2024-05-01T10:00:00Z"]


def test_out_of_order_within_lateness_is_applied(tmp_path):
    state = tmp_path / "state"
    lines = event("a", "2024-05-01T10:00:00Z") + event("b", "2024-05-01T09:30:00Z")
    result = run_ledger("ingest", "-", "--state", str(state), input=lines)
    assert json.loads(result.stdout) == {"applied": 2, "duplicate": 0, "late": 0}


def test_late_event_goes_to_dead_letter_across_runs(tmp_path):
    state = tmp_path / "state"
    run_ledger("ingest", "-", "--state", str(state), input=event("a", "2024-05-01T12:00:00Z"))
    lines = event("b", "2024-05-01T10:59:59Z") + event("b", "2024-05-01T11:30:00Z")
    result = run_ledger("ingest", "-", "--state", str(state), input=lines)
    assert json.loads(result.stdout) == {"applied": 0, "duplicate": 1, "late": 1}
    dead = (state / "dead_letter.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in dead] == ["b"]
    assert "jane@" not in dead[0] and "4111111111111111" not in dead[0]
    balances = json.loads((state / "balances.json").read_text())
    assert balances == {"accounts": {"acct-0001": 100}}


def test_allowed_lateness_option(tmp_path):
    state = tmp_path / "state"
    lines = event("a", "2024-05-01T10:00:00Z") + event("b", "2024-05-01T09:59:00Z")
    result = run_ledger(
        "ingest", "-", "--state", str(state), "--allowed-lateness", "30", input=lines
    )
    assert json.loads(result.stdout) == {"applied": 1, "duplicate": 0, "late": 1}
