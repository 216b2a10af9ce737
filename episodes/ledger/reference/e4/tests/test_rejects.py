"""Tests of bad input lines, rejects and usage errors."""

import json

from test_smoke import run_ledger

GOOD = {
    "id": "g-1", "account": "acct-0001", "type": "credit", "amount": 500,
    "ts": "2024-05-01T09:00:00Z", "email": "jane@example.com", "card": "4111111111111111",
}


def line(**changes):
    event = {**GOOD, **changes}
    return json.dumps({key: value for key, value in event.items() if value is not ...}) + "\n"


def test_each_reason_code(tmp_path):
    state = tmp_path / "state"
    lines = [
        line(),                                      # 1 applied
        '{"id": "x-1", "email": "jane@example.com"\n',  # 2 malformed_json
        "[1, 2, 3]\n",                               # 3 malformed_json
        line(id="x-4", ts=...),                      # 4 missing_field
        line(id="x-5", amount="500"),                # 5 wrong_type
        line(id="x-6", amount=True),                 # 6 wrong_type
        line(id="x-7", ts="2024-05-01 09:00:00"),    # 7 wrong_type
        line(id="x-8", type="refund"),               # 8 unknown_type
        line(id="x-9", amount=0),                    # 9 non_positive_amount
        "\n",                                        # 10 blank: ignored
        line(id="x-11", type="debit", amount=501),   # 11 overdraft
        line(id="x-11", type="debit", amount=200),   # 12 applied: a rejected id is not seen
        line(id="x-13", email=..., card=...),        # 13 applied: personal data is optional
    ]
    result = run_ledger("ingest", "-", "--state", str(state), input="".join(lines))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"applied": 3, "duplicate": 0, "late": 0, "rejected": 9}
    rejects = [json.loads(text) for text in (state / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"], r["id"]) for r in rejects] == [
        (2, "malformed_json", None),
        (3, "malformed_json", None),
        (4, "missing_field", "x-4"),
        (5, "wrong_type", "x-5"),
        (6, "wrong_type", "x-6"),
        (7, "wrong_type", "x-7"),
        (8, "unknown_type", "x-8"),
        (9, "non_positive_amount", "x-9"),
        (11, "overdraft", "x-11"),
    ]
    balances = json.loads((state / "balances.json").read_text())
    assert balances == {"accounts": {"acct-0001": 800}}
    for path in state.iterdir():
        assert "jane@" not in path.read_text()
        assert "4111111111111111" not in path.read_text()


def test_missing_input_file_is_a_usage_error(tmp_path):
    result = run_ledger("ingest", str(tmp_path / "nope.jsonl"), "--state", str(tmp_path / "s"))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "nope.jsonl" in result.stderr


def test_unknown_command_is_a_usage_error():
    result = run_ledger("frobnicate")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
