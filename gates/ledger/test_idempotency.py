"""Gate ``idempotency`` (active from E1): every event id takes effect at most once.

Duplicates are re-sent copies of earlier events: in the same file (far apart,
across the default 100-line checkpoint batch, out of time order), across
invocations, and re-deliveries with the same id but a different payload.
Expected balances and counts come from the independent model in ``_events``.
All inputs stay within the default allowed lateness and never overdraw.
"""

import json

import pytest

from _events import (
    MAX_DEBIT, EventGen, Model, accounts_of, assert_counts, counts_of, to_lines, write_lines,
)


@pytest.mark.genuine
def test_same_file_twice_changes_nothing(ledger, seed):
    """Ingesting the same file again counts every event duplicate and changes no balance, also
    for debits larger than their account's balance by then (a duplicate is never an overdraft)."""
    gen = EventGen(seed, "idem-twice")
    events = gen.stream(60)
    for account in gen.rng.sample(gen.accounts, 2):  # drained to exactly 0: re-sent debits exceed it
        events.append(gen.make(account, "debit", gen.balances[account], gen.tick()))
        gen.balances[account] = 0
    lines = to_lines(events)
    src = write_lines(ledger.path("events.jsonl"), lines)
    state = ledger.path("new") / "nested" / "state"  # DIR and its parents are created
    model = Model()

    first = ledger.ingest(src, state)
    assert_counts(first.stdout, model.ingest(lines)["counts"])
    assert accounts_of(state) == model.balances

    second = ledger.ingest(src, state)
    assert_counts(second.stdout, model.ingest(lines)["counts"])
    assert accounts_of(state) == model.balances, "balances changed when the same file was ingested again"


@pytest.mark.genuine
def test_repeated_ids_in_one_file_apply_once(ledger, seed):
    """Copies far from their original (over 100 lines, older ts) or near it (re-stamped) have no effect."""
    gen = EventGen(seed, "idem-infile", n_accounts=8)
    events = gen.with_duplicates(gen.stream(200), count=25, min_gap=105)
    events = gen.with_duplicates(events, count=10, min_gap=2, max_gap=30, restamp=True)
    lines = to_lines(events)
    state = ledger.path("state")
    model = Model()
    expected = model.ingest(lines)
    assert expected["counts"]["duplicate"] == 35

    result = ledger.ingest(write_lines(ledger.path("events.jsonl"), lines), state)
    assert_counts(result.stdout, expected["counts"])
    assert accounts_of(state) == model.balances


@pytest.mark.genuine
def test_duplicates_across_invocations(ledger, seed):
    """Ids seen by an earlier invocation stay seen, even when re-delivered with another payload."""
    gen = EventGen(seed, "idem-across", n_accounts=7)
    first = gen.stream(70)
    # Second file: new events mixed with copies of the first file's events,
    # half of them re-deliveries whose amount differs (same id: still a duplicate).
    second = gen.stream(50)
    for index, original in enumerate(gen.rng.sample(first, 20)):
        copy = dict(original)
        if index % 2:
            copy["amount"] = gen.rng.randint(1, MAX_DEBIT)
        second.insert(gen.rng.randrange(len(second) + 1), copy)
    # Third invocation: a re-sent slice spanning both earlier files.
    third = first[-15:] + second[:15]
    state = ledger.path("state")
    model = Model()
    for name, events in (("a", first), ("b", second), ("c", third)):
        lines = to_lines(events)
        result = ledger.ingest(write_lines(ledger.path(f"{name}.jsonl"), lines), state)
        assert_counts(result.stdout, model.ingest(lines)["counts"])
        assert accounts_of(state) == model.balances, f"balances wrong after file {name}"


@pytest.mark.contract
def test_balances_and_counts_formats(ledger, seed):
    """balances.json is exactly sorted 2-space JSON with a trailing newline; stdout one sorted-key JSON line."""
    gen = EventGen(seed, "idem-format", n_accounts=9)
    lines = to_lines(gen.with_duplicates(gen.stream(40), count=5, min_gap=3))
    state = ledger.path("state")
    model = Model()
    expected = model.ingest(lines)["counts"]

    result = ledger.ingest(write_lines(ledger.path("events.jsonl"), lines), state)
    assert (state / "balances.json").read_text(encoding="utf-8") == model.balances_text()
    out = result.stdout
    assert out.endswith("\n") and out.count("\n") == 1, f"stdout is not exactly one line: {out!r}"
    counts = counts_of(out)
    assert out.rstrip("\n") == json.dumps(counts, sort_keys=True), f"stdout is not sorted-key JSON: {out!r}"
    assert counts["applied"] == expected["applied"] and counts["duplicate"] == expected["duplicate"]


@pytest.mark.genuine
def test_ids_are_exact_strings(ledger, seed):
    """An id is its exact string: ids differing only in letter case, surrounding spaces or a
    Unicode accent are different events (all applied); the exact same id is a duplicate in
    the same and in a later invocation, whatever else the re-sent line carries."""
    gen = EventGen(seed, "idem-exact", n_accounts=4)
    events = gen.stream(8)
    variants = []
    for event in gen.rng.sample(events[4:], 3):
        for other in (event["id"].upper(), f" {event['id']}", event["id"] + "\u00e9", event["id"] + "e\u0301"):
            variants.append(dict(gen.event(), id=other))
    lines = to_lines(events + variants)
    resend = [json.dumps(dict(event, account=gen.rng.choice(gen.accounts), type="credit"))
              for event in gen.rng.sample(events + variants, 5)]
    model = Model()
    state = ledger.path("state")
    for name, part in (("a", lines + resend[:2]), ("b", resend[2:])):
        result = ledger.ingest(write_lines(ledger.path(f"{name}.jsonl"), part), state)
        assert_counts(result.stdout, model.ingest(part)["counts"])
        assert accounts_of(state) == model.balances, f"balances wrong after file {name}"
