"""Gate ``negative_paths`` (active from E4): bad input lines are rejected, never fatal.

Each bad line is recorded in ``rejects.jsonl`` with its 1-based line number,
reason code and id, processing continues, every non-blank line is accounted
for exactly once, and a rejected id stays unseen. Usage errors exit with 2.
Expectations come from the model in ``_events``.
"""

import json
import os

import pytest

from _events import (
    RAW_KINDS, REASON_KINDS, EventGen, Model, accounts_of, assert_counts, bad_line, nonblank_lines, raw_bad_line,
    raw_input, to_lines, write_lines,
)


def mixed_input(gen, n, kinds, blank_lines=False):
    """``n`` valid events with one bad line of each kind placed among them (in order).

    With ``blank_lines``, empty and whitespace-only lines are sprinkled in too.
    """
    lines = [json.dumps(gen.event(account=acct)) for acct in gen.accounts]
    slots = sorted(gen.rng.sample(range(len(lines), n), len(kinds)))
    pending = dict(zip(slots, kinds))
    for index in range(len(lines), n):
        lines.append(json.dumps(gen.event()))
        if index in pending:
            lines.append(bad_line(gen, pending[index]))
        if blank_lines and gen.rng.random() < 0.08:
            lines.append(gen.rng.choice(("", " ", "\t ")))
    return lines


@pytest.mark.contract
def test_each_reason_code_is_recorded(ledger, seed):
    """rejects.jsonl holds {"line", "reason", "id"} for each bad line, first matching code first.

    Line numbers count blank lines, which are sprinkled in.
    """
    gen = EventGen(seed, "neg-codes", n_accounts=5)
    lines = mixed_input(gen, 45, REASON_KINDS, blank_lines=True)
    # A bad line re-using an applied id is rejected, not a duplicate.
    applied = json.loads(lines[3])
    lines.append(json.dumps(dict(applied, amount=0)))
    model = Model()
    expected = model.ingest(lines, allow=("applied", "rejected"))
    state = ledger.path("state")
    result = ledger.ingest(write_lines(ledger.path("events.jsonl"), lines), state)
    assert_counts(result.stdout, expected["counts"])
    records = [json.loads(line) for line in nonblank_lines(state / "rejects.jsonl")]
    assert records == expected["rejects"]
    # ledger.log: `rejected line=N reason=R id=ID`, without `id=` when the line has none (E4).
    # Only these leading tokens are checked: what else a line holds is the privacy gate's business.
    logged = [line.split() for line in nonblank_lines(state / "ledger.log") if line.startswith("rejected")]
    assert len(logged) == len(expected["rejects"]), \
        f"ledger.log has {len(logged)} rejected lines for {len(expected['rejects'])} rejected input lines"
    for number, (tokens, record) in enumerate(zip(logged, expected["rejects"]), start=1):
        wanted = ["rejected", f"line={record['line']}", f"reason={record['reason']}"]
        if record["id"] is not None:
            wanted.append(f"id={record['id']}")
        ok = tokens[:len(wanted)] == wanted and (
            record["id"] is not None or not any(token.startswith("id=") for token in tokens))
        assert ok, f"ledger.log rejected line {number}: {' '.join(tokens)[:200]!r}, expected {' '.join(wanted)!r}"


@pytest.mark.genuine
def test_processing_continues_after_bad_lines(ledger, seed):
    """Bad lines among valid ones (and blank lines) do not stop processing; every line is accounted for."""
    gen = EventGen(seed, "neg-continue", n_accounts=6)
    kinds = gen.rng.sample(REASON_KINDS, 9)
    lines = mixed_input(gen, 60, kinds, blank_lines=True)
    lines.insert(0, bad_line(gen, "non_positive_amount"))  # a bad first line
    model = Model()
    outcomes = Model().ingest(lines, allow=("applied", "rejected"))["outcomes"]
    valid = [index for index, outcome in enumerate(outcomes) if outcome == "applied"]
    for index in gen.rng.sample(valid, 6):  # email and card are optional
        event = json.loads(lines[index])
        for field in gen.rng.choice((("email",), ("card",), ("email", "card"))):
            del event[field]
        lines[index] = json.dumps(event)
    lines.append(bad_line(gen, "unknown_type"))  # a bad last line
    expected = model.ingest(lines, allow=("applied", "rejected"))
    state = ledger.path("state")
    result = ledger.ingest(write_lines(ledger.path("events.jsonl"), lines), state)
    assert_counts(result.stdout, expected["counts"])
    assert sum(expected["counts"].values()) == sum(1 for line in lines if line.strip())
    assert accounts_of(state) == model.balances
    rejects = nonblank_lines(state / "rejects.jsonl")
    assert len(rejects) == expected["counts"]["rejected"], \
        f"rejects.jsonl has {len(rejects)} lines for {expected['counts']['rejected']} rejected lines"


@pytest.mark.genuine
def test_rejected_ids_are_not_seen(ledger, seed):
    """A later valid event re-using a rejected line's id is applied, in the same and in a later invocation."""
    gen = EventGen(seed, "neg-unseen", n_accounts=4)
    first = [json.dumps(gen.event(account=acct)) for acct in gen.accounts]
    retry = []
    for kind in ("non_positive_amount", "overdraft", "wrong_type/string", "unknown_type"):
        bad = json.loads(bad_line(gen, kind))
        first.append(json.dumps(bad))
        # The retry is a credit the generator does not count, so placing it
        # later never makes a generated debit overdraw.
        fixed = gen.make(bad["account"], "credit", gen.rng.randint(100, 900), gen.tick(), bad["id"])
        retry.append(json.dumps(fixed))
    first += [json.dumps(gen.event()) for _ in range(5)] + retry[:2]
    second = retry[2:] + [json.dumps(gen.event()) for _ in range(5)]
    model = Model()
    state = ledger.path("state")
    # The second file is named relative to the product's working directory, with a name that
    # sorts before `-` (stdin): an input path is a file, whatever its first character.
    second_path = write_lines(ledger.workdir / "+b.jsonl", second)
    for name, lines, path in (("a", first, write_lines(ledger.path("a.jsonl"), first)),
                              ("b", second, second_path.name)):
        expected = model.ingest(lines, allow=("applied", "rejected"))
        result = ledger.ingest(path, state)
        assert_counts(result.stdout, expected["counts"])
        assert accounts_of(state) == model.balances, f"balances wrong after file {name}"


@pytest.mark.genuine
def test_overdraft_checks_the_current_balance(ledger, seed):
    """A debit may take a balance to exactly 0, not below; the balance is the one at that line;
    an amount of a single cent is valid."""
    gen = EventGen(seed, "neg-overdraft", n_accounts=3)
    first = gen.stream(9)
    for account in gen.accounts:
        balance = gen.balances[account]
        refill = gen.rng.randint(100, 900)
        first += [
            gen.make(account, "debit", balance, gen.tick()),  # to exactly 0: applied
            gen.make(account, "debit", 1, gen.tick()),  # overdraft
            gen.make(account, "credit", refill, gen.tick()),
            gen.make(account, "debit", refill + 1, gen.tick()),  # overdraft
            gen.make(account, "debit", refill, gen.tick()),  # applied: 0 again
            gen.make(account, "credit", 1, gen.tick()),  # a single cent is a positive amount
            gen.make(account, "debit", 1, gen.tick()),  # applied: 0 again
        ]
    # an account with no event yet has balance 0: a debit of a single cent is an overdraft
    first.append(dict(gen.make(gen.accounts[0], "debit", 1, gen.tick()), account="acct-0000"))
    second = [gen.make(account, "debit", 1, gen.tick()) for account in gen.accounts]  # balance persisted: 0
    model = Model()
    state = ledger.path("state")
    for name, events in (("a", first), ("b", second)):
        lines = to_lines(events)
        expected = model.ingest(lines, allow=("applied", "rejected"))
        result = ledger.ingest(write_lines(ledger.path(f"{name}.jsonl"), lines), state)
        assert_counts(result.stdout, expected["counts"])
        assert accounts_of(state) == model.balances, f"balances wrong after file {name}"
    assert set(model.balances.values()) == {0}


@pytest.mark.contract
def test_usage_errors_exit_2(ledger, seed):
    """A missing or unreadable input file, an unknown command, no command at all, a missing
    --state and option values out of range each exit 2 with one line on stderr; the state stays
    as it was."""
    gen = EventGen(seed, "neg-usage", n_accounts=3)
    state = ledger.path("state")
    unknown_run = ledger.spawn("frobnicate", "--state", ledger.path("other-state"))  # runs beside the ingest
    ledger.ingest(write_lines(ledger.path("events.jsonl"), to_lines(gen.stream(10))), state)
    before = (state / "balances.json").read_bytes()

    missing = ledger.path(f"no-such-file-{gen.rng.randrange(10**6)}.jsonl")
    result = ledger.run("ingest", missing, "--state", state)
    assert result.returncode == 2, "missing input file: " + result.describe()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"stderr should be one line naming the problem: {result.stderr!r}"
    assert (state / "balances.json").read_bytes() == before, "a failed invocation changed balances.json"

    unknown = unknown_run.result()
    assert unknown.returncode == 2, "unknown command: " + unknown.describe()
    lines = unknown.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"unknown command: stderr should be one line: {unknown.stderr!r}"

    src = ledger.path("events.jsonl")
    bad_usage = {  # each a usage error on an existing state: exit 2, one line, nothing changed
        "ingest without --state": ("ingest", src),
        "--checkpoint-every 0": ("ingest", src, "--state", state, "--checkpoint-every", "0"),
        "--allowed-lateness -1": ("ingest", src, "--state", state, "--allowed-lateness", "-1"),
        "replay without --state": ("replay",),
        "no command": (),
    }
    if ledger.uid is not None or os.geteuid() != 0:  # a file the product cannot read (not as root)
        unreadable = write_lines(ledger.path("unreadable.jsonl"), to_lines(gen.stream(3)))
        unreadable.chmod(0)
        bad_usage["an input file it cannot read"] = ("ingest", unreadable, "--state", state)
    runs = {name: ledger.spawn(*args) for name, args in bad_usage.items()}
    for name, run in runs.items():
        result = run.result()
        assert result.returncode == 2, f"{name}: " + result.describe()
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].strip(), f"{name}: stderr should be one line: {result.stderr!r}"
    assert (state / "balances.json").read_bytes() == before, "a usage error changed balances.json"


@pytest.mark.genuine
def test_byte_level_faults_are_rejected_not_fatal(ledger, seed):
    """Lines broken at the byte or structure level (not UTF-8, a NUL byte, nesting deeper than a
    parser's recursion limit, JSON scalars, junk nested in fields, NaN and 1e400, repeated keys,
    truncated JSON) are rejected with their code; CRLF line ends, whitespace-only lines, huge
    integer amounts and a last line without a newline are handled; stdin or a file alike.
    """
    gen = EventGen(seed, "neg-bytes", n_accounts=4)
    lines = [json.dumps(gen.event(account=acct)) for acct in gen.accounts]
    kinds = list(RAW_KINDS)
    gen.rng.shuffle(kinds)
    for kind in kinds:
        lines.append(raw_bad_line(gen, kind))
        event = gen.event()
        lines.append(json.dumps(event) + ("\r" if gen.rng.random() < 0.5 else ""))
        if gen.rng.random() < 0.3:
            lines.append(gen.rng.choice((b"", b"\r", b" \t ", b"\x0b")))
    account = gen.rng.choice(gen.accounts)
    huge = gen.rng.randint(10**20, 10**24)  # integers beyond 64 bits are integers
    lines += [json.dumps(gen.make(account, "credit", huge, gen.tick())),
              json.dumps(gen.make(account, "debit", huge, gen.tick()))]
    lines.append(json.dumps(gen.event()))
    model = Model()
    expected = model.ingest(lines, allow=("applied", "rejected"))
    data = raw_input(lines)[:-1]  # the last line has no newline
    src = ledger.path("events.jsonl")
    src.write_bytes(data)
    runs = {"file": ledger.spawn_ingest(src, ledger.path("state-file")),
            "stdin": ledger.spawn_ingest("-", ledger.path("state-stdin"), stdin=data)}
    for name, run in runs.items():
        result = run.result()
        assert_counts(result.stdout, expected["counts"])
        state = ledger.path(f"state-{name}")
        assert accounts_of(state) == model.balances, f"balances wrong ({name} input)"
        records = [json.loads(line) for line in nonblank_lines(state / "rejects.jsonl")]
        assert records == expected["rejects"], f"rejects.jsonl ({name} input)"
