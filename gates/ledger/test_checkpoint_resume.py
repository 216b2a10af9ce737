"""Gate ``checkpoint_resume`` (active from E2): a SIGKILLed run, re-run, ends as if never killed.

Kill tests stream the input through stdin (``ingest - ... --checkpoint-every
N``): the check feeds the first k lines, keeps stdin open, waits until the
process has consumed them and blocks for more, sends SIGKILL, then re-runs the
same command with the whole input on stdin. k and N are chosen so that
re-sent copies of events committed by the last checkpoint come after it: a
checkpoint that forgets the seen-id set re-applies them.

Compared with an uninterrupted run and with the model: the balances and
hourly windows, and the event log line by line (each line's event fields, so
an event lost, applied twice or out of order shows up). Files are compared
parsed, not byte for byte: runs compared here happen within the same second,
so a wall-clock stamp would make a byte comparison flaky; catching stamps is
the replay gate's business, where compared runs straddle a second boundary.
"""

import json

import pytest

from _events import EventGen, Model, accounts_of, assert_counts, nonblank_lines, to_lines, write_lines


def spanning_input(gen, n, head, copies):
    """``n`` events plus ``copies`` re-sent copies of the first ``head`` events placed after them."""
    events = gen.stream(n)
    for original in gen.rng.sample(events[:head], copies):
        events.insert(gen.rng.randrange(head + 6, len(events) + 1), dict(original))
    return to_lines(events)


EVENT_FIELDS = ("id", "account", "type", "amount", "ts")


def log_entry(line):
    """An event-log line reduced to its event fields (the raw line if it is not a JSON object)."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    return tuple(record.get(field) for field in EVENT_FIELDS) if isinstance(record, dict) else line


def final_state(state):
    """What must match an uninterrupted run: balances, windows (if any), the event log."""
    windows = state / "windows.json"
    return {
        "balances": accounts_of(state),
        "windows": json.loads(windows.read_text(encoding="utf-8")).get("windows") if windows.is_file() else None,
        "events.jsonl": [log_entry(line) for line in nonblank_lines(state / "events.jsonl")],
    }


def first_difference(got, want):
    """1-based index of the first differing item of two lists."""
    for index, (a, b) in enumerate(zip(got, want), start=1):
        if a != b:
            return index
    return min(len(got), len(want)) + 1


def assert_same_state(resumed, reference, model):
    """The resumed state equals the uninterrupted one, and its balances the model's."""
    got, want = final_state(resumed), final_state(reference)
    assert want["balances"] == model.balances, "the uninterrupted run itself has wrong balances"
    assert len(want["events.jsonl"]) == len(model.applied), \
        "events.jsonl of the uninterrupted run does not have one line per applied event"
    assert got["balances"] == want["balances"], "after kill and re-run, balances differ from an uninterrupted run"
    assert got["windows"] == want["windows"], "after kill and re-run, windows differ from an uninterrupted run"
    assert got["events.jsonl"] == want["events.jsonl"], (
        f"after kill and re-run, events.jsonl has {len(got['events.jsonl'])} lines (uninterrupted: "
        f"{len(want['events.jsonl'])}), first difference at line "
        f"{first_difference(got['events.jsonl'], want['events.jsonl'])}"
    )


def killed_then_resumed(ledger, state, lines, stops, every):
    """Kill a streaming ingest after each prefix length in ``stops``, then re-run to completion."""
    args = ("ingest", "-", "--state", state, "--checkpoint-every", str(every))
    for stop in stops:
        run = ledger.start(*args)
        run.feed("".join(line + "\n" for line in lines[:stop]))
        run.wait_idle(state)
        run.kill()
    return ledger.run(*args, stdin="".join(line + "\n" for line in lines))


@pytest.mark.genuine
@pytest.mark.slow
def test_killed_run_resumes_to_uninterrupted_state(ledger, seed):
    """Killed after 25 lines (checkpoints every 10), the re-run reaches the uninterrupted state."""
    gen = EventGen(seed, "ckpt-once", n_accounts=6)
    lines = spanning_input(gen, 70, head=20, copies=8)
    model = Model()
    model.ingest(lines)
    reference, resumed = ledger.path("uninterrupted"), ledger.path("resumed")
    stdin = "".join(line + "\n" for line in lines)
    uninterrupted = ledger.spawn_ingest("-", reference, "--checkpoint-every", "10", stdin=stdin)

    result = killed_then_resumed(ledger, resumed, lines, stops=[25], every=10)
    uninterrupted.result()
    assert result.returncode == 0, "re-run after kill failed: " + result.describe()
    assert_same_state(resumed, reference, model)


@pytest.mark.genuine
@pytest.mark.slow
def test_repeated_kills_resume_to_uninterrupted_state(ledger, seed):
    """Killed twice (after 17, then 45 lines; checkpoints every 7), the final state is still exact."""
    gen = EventGen(seed, "ckpt-twice", n_accounts=7)
    lines = spanning_input(gen, 80, head=40, copies=12)
    model = Model()
    model.ingest(lines)
    reference, resumed = ledger.path("uninterrupted"), ledger.path("resumed")
    uninterrupted = ledger.spawn_ingest("-", reference, "--checkpoint-every", "7",
                                        stdin="".join(line + "\n" for line in lines))

    result = killed_then_resumed(ledger, resumed, lines, stops=[17, 45], every=7)
    uninterrupted.result()
    assert result.returncode == 0, "re-run after kills failed: " + result.describe()
    assert_same_state(resumed, reference, model)


@pytest.mark.genuine
def test_checkpoint_interval_and_source_do_not_change_result(ledger, seed):
    """File or stdin input, checkpoints every line, every 3 lines or by default: same counts and state."""
    gen = EventGen(seed, "ckpt-interval", n_accounts=6)
    lines = spanning_input(gen, 26, head=10, copies=5)
    model = Model()
    counts = model.ingest(lines)["counts"]
    src = write_lines(ledger.path("events.jsonl"), lines)
    stdin = src.read_text(encoding="utf-8")
    runs = {  # independent state directories: run side by side
        "default": ledger.spawn_ingest(src, ledger.path("default")),
        "every-1-stdin": ledger.spawn_ingest("-", ledger.path("every-1-stdin"), "--checkpoint-every", "1", stdin=stdin),
        "every-3": ledger.spawn_ingest(src, ledger.path("every-3"), "--checkpoint-every", "3"),
    }
    for name, run in runs.items():
        assert_counts(run.result().stdout, counts)
        assert_same_state(ledger.path(name), ledger.path("default"), model)


@pytest.mark.contract
def test_checkpoint_file_is_valid_json(ledger, seed):
    """checkpoint.json exists and is valid JSON after a run with --checkpoint-every, and after a kill."""
    gen = EventGen(seed, "ckpt-file", n_accounts=4)
    lines = to_lines(gen.stream(23))
    done, killed = ledger.path("done"), ledger.path("killed")
    completed = ledger.spawn_ingest(write_lines(ledger.path("events.jsonl"), lines), done, "--checkpoint-every", "5")
    run = ledger.start("ingest", "-", "--state", killed, "--checkpoint-every", "5")
    run.feed("".join(line + "\n" for line in lines[:12]))
    run.wait_idle(killed)
    run.kill()
    completed.result()
    for state in (done, killed):
        path = state / "checkpoint.json"
        assert path.is_file(), f"no checkpoint.json in the state directory ({state.name} run)"
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise AssertionError(f"checkpoint.json is not valid JSON ({state.name} run): {exc}") from None
