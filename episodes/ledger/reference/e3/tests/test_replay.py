"""Tests of the event log, ``replay``, stdin input and checkpoints."""

import json

from test_smoke import SAMPLE, run_ledger


def test_event_log_is_masked_and_in_apply_order(tmp_path):
    state = tmp_path / "state"
    run_ledger("ingest", str(SAMPLE), "--state", str(state))
    records = [json.loads(line) for line in (state / "events.jsonl").read_text().splitlines()]
    assert [record["id"] for record in records] == ["e-1", "e-2", "e-3", "e-4", "e-5"]
    assert records[0]["email"] == "j***@example.com"
    assert records[0]["card"] == "****1111"


def test_replay_rebuilds_derived_files_byte_for_byte(tmp_path):
    state = tmp_path / "state"
    run_ledger("ingest", str(SAMPLE), "--state", str(state))
    derived = ("balances.json", "windows.json")
    written = {name: (state / name).read_bytes() for name in derived}
    for name in derived:
        (state / name).unlink()
    result = run_ledger("replay", "--state", str(state))
    assert result.returncode == 0, result.stderr
    for name in derived:
        assert (state / name).read_bytes() == written[name], name


def test_stdin_input_and_checkpoint(tmp_path):
    from_file, from_stdin = tmp_path / "file", tmp_path / "stdin"
    run_ledger("ingest", str(SAMPLE), "--state", str(from_file))
    result = run_ledger(
        "ingest", "-", "--state", str(from_stdin), "--checkpoint-every", "2",
        input=SAMPLE.read_text(),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"applied": 5, "duplicate": 1, "late": 0}
    assert (from_stdin / "checkpoint.json").is_file()
    for name in ("balances.json", "events.jsonl", "ledger.log"):
        assert (from_stdin / name).read_bytes() == (from_file / name).read_bytes()
