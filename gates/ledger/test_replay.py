"""Gate ``replay`` (active from E2): derived state is a pure function of the event log.

``replay --state DIR`` must rebuild ``balances.json`` (and, from E3,
``windows.json``) from ``DIR/events.jsonl`` alone, byte for byte, and the same
input must always give byte-identical derived files. Runs that are compared
happen with different hash seeds, so set-ordered output in a derived file is
caught every time; the replay that is compared with ingest's files runs with its
wall clock 400 days ahead (``marathon_product.shifted_clock``), so a wall-clock
stamp written by ingest, by replay or by both is caught every time too, down to
a stamp of the year alone (one check does it, not every check; where libfaketime
is missing, that check waits for the next wall-clock second instead).
"""

import json
import time

import pytest
from marathon_product import shifted_clock

from _events import (
    EventGen, Model, accounts_of, assert_counts, iso, mask_card, mask_email, mixed_outcomes, nonblank_lines,
    outcomes_in_force, to_lines, write_lines, write_raw,
)


def log_record(event):
    """The exact text of an event's ``events.jsonl`` / ``dead_letter.jsonl`` line (DESIGN.md):
    ``json.dumps(..., sort_keys=True)`` of its fields, personal data masked, other fields dropped."""
    record = {field: event[field] for field in ("id", "account", "type", "amount", "ts")}
    if "email" in event:
        record["email"] = mask_email(event["email"])
    if "card" in event:
        record["card"] = mask_card(event["card"])
    return json.dumps(record, sort_keys=True)

#: Derived state files and the key of the mapping each one holds.
DERIVED = {"balances.json": "accounts", "windows.json": "windows"}


def next_second():
    """Sleep until just after the next wall-clock second starts (where the clock
    cannot be shifted).

    Called right after the run whose output is compared, so the wait is the
    rest of the current second (0.5 s on average), never a whole second.
    """
    now = time.time()
    time.sleep(int(now) + 1.005 - now)


def derived_files(state):
    """``{name: bytes}`` of the derived state files present in ``state``."""
    return {name: (state / name).read_bytes() for name in DERIVED if (state / name).is_file()}


def derived_documents(state):
    """``{name: mapping}``: the parsed ``accounts`` / ``windows`` of the derived files present.

    Used where runs are compared without a wall-clock second between them,
    so that only the byte-level checks judge volatile extra content.
    """
    documents = {}
    for name, content in derived_files(state).items():
        document = json.loads(content)
        documents[name] = document.get(DERIVED[name]) if isinstance(document, dict) else document
    return documents


def two_invocations(gen):
    """Inputs of two ingest invocations: the second re-sends part of the first."""
    first = gen.with_duplicates(gen.stream(50), count=6, min_gap=4)
    second = gen.stream(30) + first[5:20]
    return to_lines(first), to_lines(second)


@pytest.mark.genuine
@pytest.mark.slow
def test_replay_rebuilds_derived_files_from_event_log(ledger, seed):
    """With everything but events.jsonl deleted, replay rebuilds identical derived files, also
    with its wall clock 400 days ahead of ingest's."""
    gen = EventGen(seed, "replay-rebuild", n_accounts=12)
    model = Model()
    state = ledger.path("state")
    for name, lines in zip("ab", two_invocations(gen)):
        ledger.ingest(write_lines(ledger.path(f"{name}.jsonl"), lines), state)
        model.ingest(lines)
    assert accounts_of(state) == model.balances
    expected = derived_files(state)

    for path in sorted(state.rglob("*"), reverse=True):
        if path.name != "events.jsonl" or path.parent != state:
            path.rmdir() if path.is_dir() else path.unlink()
    later = shifted_clock(days=400)  # a wall-clock stamp at any granularity differs
    if later is None:
        next_second()
    result = ledger.run("replay", "--state", state, env=later)
    assert result.returncode == 0, "replay failed: " + result.describe()
    assert derived_files(state).keys() == expected.keys(), "replay did not rebuild every derived file"
    for name, content in expected.items():
        assert (state / name).read_bytes() == content, f"replayed {name} differs from the one ingest wrote"


@pytest.mark.genuine
def test_same_input_gives_identical_files(ledger, seed):
    """The same input in two state directories gives byte-identical derived files.

    The two runs differ in hash seed (set or dict-of-set iteration order);
    the wall-clock difference is left to the rebuild check above.
    """
    gen = EventGen(seed, "replay-determinism", n_accounts=12)
    first, second = two_invocations(gen)
    src = write_lines(ledger.path("events.jsonl"), first + second)
    states = [ledger.path("state-1"), ledger.path("state-2")]
    runs = [ledger.spawn_ingest(src, state) for state in states]  # independent: side by side
    for run in runs:
        run.result()
    one, two = (derived_files(state) for state in states)
    assert "balances.json" in one, "balances.json was not written"
    assert one.keys() == two.keys()
    for name in one:
        assert one[name] == two[name], f"{name} differs between two runs on the same input"


@pytest.mark.genuine
@pytest.mark.slow
def test_ingest_continues_after_replay(ledger, seed):
    """Replay leaves a usable state: later ingests still see earlier ids; replay stays in step."""
    gen = EventGen(seed, "replay-continue", n_accounts=10)
    first, _ = two_invocations(gen)
    model = Model()
    state = ledger.path("state")
    opening = ledger.ingest(write_lines(ledger.path("a.jsonl"), first), state)
    model.ingest(first)
    # the second input mixes every outcome the episode knows: ids dead-lettered or rejected
    # before the replay must keep their status after it
    outcomes = outcomes_in_force(opening.stdout)
    earlier = [json.loads(line) for line in first]
    second = mixed_outcomes(gen, 30, outcomes, earlier=earlier)
    second += mixed_outcomes(gen, 10, outcomes, earlier=earlier)

    middle = len(second) * 3 // 4
    for name, part in (("b", second[:middle]), ("c", second[middle:])):
        if name == "c":  # dead-lettered events of b re-sent in time: still duplicates after replay
            part = part + [json.dumps(dict(event, ts=iso(gen.clock))) for event in model.dead]
        result = ledger.ingest(write_raw(ledger.path(f"{name}.jsonl"), part), state)
        assert_counts(result.stdout, model.ingest(part, allow=tuple(outcomes))["counts"])
        if name == "b":  # a replay on a state that has applied, duplicate, dead-lettered and rejected ids
            replayed = ledger.run("replay", "--state", state)
            assert replayed.returncode == 0, "replay failed: " + replayed.describe()
            assert accounts_of(state) == model.balances, "replay changed the balances"
    assert accounts_of(state) == model.balances
    after_ingest = derived_documents(state)
    replayed = ledger.run("replay", "--state", state)
    assert replayed.returncode == 0, "replay failed: " + replayed.describe()
    assert derived_documents(state) == after_ingest, "replay after the second ingest changed derived state"


@pytest.mark.contract
def test_event_log_lists_applied_events(ledger, seed):
    """events.jsonl: one JSON line per applied event, in apply order, exactly the sorted-key record
    of its fields (``json.dumps(..., sort_keys=True)``; the masking is privacy's check)."""
    gen = EventGen(seed, "replay-log", n_accounts=6)
    first, second = two_invocations(gen)
    model = Model()
    state = ledger.path("state")
    for name, lines in (("a", first), ("b", second)):
        ledger.ingest(write_lines(ledger.path(f"{name}.jsonl"), lines), state)
        model.ingest(lines)

    lines = nonblank_lines(state / "events.jsonl")
    assert len(lines) == len(model.applied), \
        f"events.jsonl has {len(lines)} lines for {len(model.applied)} applied events"
    for number, (line, event) in enumerate(zip(lines, model.applied), start=1):
        record = json.loads(line)
        assert isinstance(record, dict), f"events.jsonl line {number} is not a JSON object"
        for field in ("id", "account", "type", "amount", "ts"):
            assert record.get(field) == event[field], \
                f"events.jsonl line {number}: {field}={record.get(field)!r}, expected {event[field]!r}"
        # the exact record, keys sorted; whether email and card are masked is privacy's business
        personal = {field: record.get(field) for field in ("email", "card") if field in event}
        assert line == json.dumps({**json.loads(log_record(event)), **personal}, sort_keys=True), \
            f"events.jsonl line {number} is not the sorted-key record of the event's fields: {line!r}"


@pytest.mark.contract
def test_replay_output_and_missing_log(ledger, seed):
    """replay prints {"replayed": N} for N logged events; without events.jsonl it exits 2 with one stderr line."""
    gen = EventGen(seed, "replay-output", n_accounts=5)
    first, _ = two_invocations(gen)
    model = Model()
    model.ingest(first)
    state = ledger.path("state")
    empty = ledger.path("empty-state")
    empty.mkdir()
    missing_run = ledger.spawn("replay", "--state", empty)  # independent: runs beside the ingest
    ledger.ingest(write_lines(ledger.path("events.jsonl"), first), state)
    result = ledger.run("replay", "--state", state)
    assert result.returncode == 0, "replay failed: " + result.describe()
    assert json.loads(result.stdout) == {"replayed": len(model.applied)}, f"replay stdout: {result.stdout!r}"

    missing = missing_run.result()
    assert missing.returncode == 2, "replay without events.jsonl: " + missing.describe()
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"replay without events.jsonl: stderr should be one line: {missing.stderr!r}"
