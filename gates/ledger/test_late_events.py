"""Gate ``late_events`` (active from E3): event-time windows, watermark and dead letters.

The watermark is the greatest applied event time (across invocations) minus
the allowed lateness. Events at or after it are applied to their balance and
hourly window even when out of order; events before it are dead-lettered and
counted ``late``; an id already seen (applied or dead-lettered) is a
duplicate first. Expectations come from the model in ``_events``.
"""

import json

import pytest

from _events import (
    EventGen, Model, accounts_of, assert_counts, counts_of, iso, nonblank_lines, to_lines, windows_of,
    write_lines,
)


def spread_stream(gen, n):
    """``n`` in-order events 20..240 s apart, so they span a few hourly windows."""
    events = [gen.event(account=acct, ts=gen.tick(20, 240)) for acct in gen.accounts]
    events += [gen.event(ts=gen.tick(20, 240)) for _ in range(n - len(events))]
    return events


def check_state(state, model, late_count):
    """Balances and windows match the model; dead_letter.jsonl has one line per late event."""
    assert accounts_of(state) == model.balances
    assert windows_of(state) == model.windows
    dead = nonblank_lines(state / "dead_letter.jsonl")
    assert len(dead) == late_count, f"dead_letter.jsonl has {len(dead)} lines for {late_count} late events"


@pytest.mark.genuine
def test_out_of_order_events_within_lateness_are_applied(ledger, seed):
    """Events up to ~55 min behind the newest are applied, to the window of their own hour."""
    gen = EventGen(seed, "late-within", n_accounts=5)
    events = spread_stream(gen, 20)
    for _ in range(40):
        if gen.rng.random() < 0.3:
            events.append(gen.event(ts=gen.clock - gen.rng.randint(60, 3_300)))
        else:
            events.append(gen.event(ts=gen.tick(20, 240)))
    lines = to_lines(events)
    model = Model()
    expected = model.ingest(lines, allow=("applied",))
    state = ledger.path("state")
    result = ledger.ingest(write_lines(ledger.path("events.jsonl"), lines), state)
    assert_counts(result.stdout, expected["counts"])
    check_state(state, model, 0)


@pytest.mark.genuine
def test_too_late_events_are_dead_lettered_not_applied(ledger, seed):
    """Events older than the watermark go to dead_letter.jsonl, count as late and change nothing."""
    gen = EventGen(seed, "late-dead", n_accounts=5)
    events = spread_stream(gen, 20)
    for _ in range(40):
        events.append(gen.event(ts=gen.tick(20, 240)))
        if gen.rng.random() < 0.2:
            events.append(gen.stray(ts=gen.clock - 3_601 - gen.rng.randint(0, 6_000)))
    account = gen.rng.choice(gen.accounts)  # a late debit larger than the balance: late, not an overdraft
    events.append(gen.make(account, "debit", gen.balances[account] + gen.rng.randint(1, 999),
                           gen.clock - 3_601 - gen.rng.randint(0, 6_000)))
    events.append(gen.event(ts=gen.tick(20, 240)))
    lines = to_lines(events)
    model = Model()
    expected = model.ingest(lines, allow=("applied", "late"))
    assert expected["counts"]["late"] >= 1
    state = ledger.path("state")
    result = ledger.ingest(write_lines(ledger.path("events.jsonl"), lines), state)
    assert_counts(result.stdout, expected["counts"])
    check_state(state, model, expected["counts"]["late"])


@pytest.mark.genuine
def test_watermark_persists_across_invocations(ledger, seed):
    """An event too late for the watermark of an earlier invocation is late in a new one."""
    gen = EventGen(seed, "late-persist", n_accounts=4)
    first = spread_stream(gen, 30)
    newest = gen.clock
    second = [
        gen.stray(ts=newest - 3_601 - gen.rng.randint(0, 1_800)),  # late only with a persisted watermark
        gen.event(ts=newest - gen.rng.randint(600, 3_000)),  # behind, but within lateness
        gen.stray(ts=newest - 3_601 - gen.rng.randint(0, 1_800)),
    ] + spread_stream(gen, 10)
    model = Model()
    state = ledger.path("state")
    for name, events in (("a", first), ("b", second)):
        lines = to_lines(events)
        expected = model.ingest(lines, allow=("applied", "late"))
        result = ledger.ingest(write_lines(ledger.path(f"{name}.jsonl"), lines), state)
        assert_counts(result.stdout, expected["counts"])
    check_state(state, model, len(model.dead))


@pytest.mark.genuine
def test_seen_ids_are_duplicates_before_late(ledger, seed):
    """A dead-lettered id is seen: re-sent, even with a fresh time, it is a duplicate, as is an old applied id."""
    gen = EventGen(seed, "late-dup", n_accounts=4)
    events = spread_stream(gen, 20)
    gen.tick(3_700, 4_000)  # the first events are now too late
    events += spread_stream(gen, 10)
    dead = gen.stray(ts=gen.clock - 3_601 - gen.rng.randint(600, 3_000))
    events.append(dead)
    events += spread_stream(gen, 5)
    events.append(dict(dead))  # still too late, but a duplicate first
    events.append(dict(dead, ts=iso(gen.clock - 100)))  # same id with an in-range time: still a duplicate
    events.append(dict(events[0]))  # an applied event re-sent when too late: duplicate, not late
    lines = to_lines(events)
    model = Model()
    expected = model.ingest(lines, allow=("applied", "late", "duplicate"))
    assert expected["counts"]["duplicate"] == 3 and expected["counts"]["late"] == 1
    state = ledger.path("state")
    result = ledger.ingest(write_lines(ledger.path("events.jsonl"), lines), state)
    assert_counts(result.stdout, expected["counts"])
    check_state(state, model, 1)


@pytest.mark.contract
def test_allowed_lateness_option_and_boundary(ledger, seed):
    """--allowed-lateness sets the watermark; an event exactly at the watermark is applied, 1 s before is late."""
    lateness = 600
    gen = EventGen(seed, "late-option", n_accounts=4)
    events = spread_stream(gen, 25)
    newest = gen.clock
    events += [
        gen.event(ts=newest - lateness),  # exactly at the watermark: applied
        gen.stray(ts=newest - lateness - 1),  # one second before: late
        gen.stray(ts=newest - gen.rng.randint(lateness + 60, 3_000)),  # late here, not by default
    ]
    lines = to_lines(events)
    model = Model()
    expected = model.ingest(lines, lateness=lateness, allow=("applied", "late"))
    assert expected["counts"]["late"] == 2
    state = ledger.path("state")
    result = ledger.ingest(write_lines(ledger.path("events.jsonl"), lines), state,
                           "--allowed-lateness", str(lateness))
    assert_counts(result.stdout, expected["counts"])
    check_state(state, model, 2)


@pytest.mark.contract
def test_windows_file_format(ledger, seed):
    """windows.json is exactly the spec's document: sorted keys, 2-space indent, trailing newline."""
    gen = EventGen(seed, "late-format", n_accounts=5)
    events = spread_stream(gen, 30)
    events.append(gen.stray(ts=gen.clock - 7_300))
    lines = to_lines(events)
    model = Model()
    model.ingest(lines, allow=("applied", "late"))
    state = ledger.path("state")
    ledger.ingest(write_lines(ledger.path("events.jsonl"), lines), state)
    assert (state / "windows.json").read_text(encoding="utf-8") == model.windows_text()


@pytest.mark.genuine
def test_watermark_moves_only_with_applied_events(ledger, seed):
    """Lines that are not applied move no watermark: a duplicate re-stamped hours ahead, a
    dead-lettered event, and (from E4) a rejected line stamped hours ahead leave later in-range
    events applied; a dead-lettered id stays seen in a later invocation; the first event of an
    empty ledger is never late; --allowed-lateness 0 makes every earlier event late, and the
    default lateness is exactly 3600 s at its boundary.
    """
    gen = EventGen(seed, "late-moves", n_accounts=4)
    events = spread_stream(gen, 16)
    ahead = gen.clock + gen.rng.randint(7_200, 20_000)
    events.append(dict(events[3], ts=iso(ahead)))  # duplicate from the future: no watermark move
    dead = gen.stray(ts=gen.clock - 3_601 - gen.rng.randint(0, 900))
    events.append(dead)
    events.append(gen.event(ts=gen.clock - gen.rng.randint(600, 3_000)))  # in range: applied
    opening = ledger.ingest(write_lines(ledger.path("probe.jsonl"), to_lines(events[:1])), ledger.path("probe"))
    lines = to_lines(events)
    if "rejected" in counts_of(opening.stdout):  # E4: a rejected line from the future moves nothing
        lines.append(json.dumps(dict(gen.stray(ts=ahead), type="refund")))
        lines.append(json.dumps(dict(gen.stray(ts=ahead), amount=0)))
    lines.append(json.dumps(gen.event(ts=gen.clock - gen.rng.randint(600, 3_000))))
    newest = gen.clock
    second = [dict(dead, ts=iso(newest)),  # a dead-lettered id from an earlier run: duplicate
              gen.event(ts=newest - 3_600),  # exactly at the default watermark: applied
              gen.stray(ts=newest - 3_601)]  # one second before: late
    model = Model()
    state = ledger.path("state")
    for name, part in (("a", lines), ("b", to_lines(second))):
        expected = model.ingest(part, allow=("applied", "late", "duplicate", "rejected"))
        result = ledger.ingest(write_lines(ledger.path(f"{name}.jsonl"), part), state)
        assert_counts(result.stdout, expected["counts"])
    check_state(state, model, len(model.dead))

    gen = EventGen(seed, "late-strict", n_accounts=3)  # a fresh state: fresh balances
    strict = spread_stream(gen, 6)
    strict.append(gen.stray(ts=gen.clock - 1))  # behind the newest by 1 s: late with lateness 0
    strict.append(gen.event(ts=gen.clock))  # as new as the newest: applied
    strict_lines = to_lines(strict)
    strict_model = Model()
    expected = strict_model.ingest(strict_lines, lateness=0, allow=("applied", "late"))
    assert expected["counts"]["late"] == 1
    result = ledger.ingest(write_lines(ledger.path("strict.jsonl"), strict_lines), ledger.path("strict"),
                           "--allowed-lateness", "0")
    assert_counts(result.stdout, expected["counts"])
