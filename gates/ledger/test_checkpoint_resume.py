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

import copy

from _events import (
    EventGen, Model, accounts_of, counts_of, mask_card, mask_email, assert_counts, mixed_outcomes, nonblank_lines, outcomes_in_force, to_lines,
    write_lines, write_raw,
)
from _kills import kill_points


def spanning_input(gen, n, head, copies):
    """``n`` events plus ``copies`` re-sent copies of the first ``head`` events placed after them."""
    events = gen.stream(n)
    for original in gen.rng.sample(events[:head], copies):
        events.insert(gen.rng.randrange(head + 6, len(events) + 1), dict(original))
    return to_lines(events)


EVENT_FIELDS = ("id", "account", "type", "amount", "ts")
#: What a line of events.jsonl or dead_letter.jsonl holds (the spec's record: masked personal data).
RECORD_FIELDS = EVENT_FIELDS + ("email", "card")


def log_entry(line, fields=EVENT_FIELDS):
    """A log line reduced to ``fields`` (the raw line if it is not a JSON object)."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    return tuple(record.get(field) for field in fields) if isinstance(record, dict) else line


def _document(path, key):
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        return f"not JSON: {exc}"
    return document.get(key) if isinstance(document, dict) else document


def final_state(state):
    """The "final state" of DESIGN.md: balances, windows, the event log and the dead letters
    (each line reduced to the spec's record fields), as parsed values."""
    return {
        "balances.json": _document(state / "balances.json", "accounts"),
        "windows.json": _document(state / "windows.json", "windows"),
        "events.jsonl": [log_entry(line, RECORD_FIELDS) for line in nonblank_lines(state / "events.jsonl")],
        "dead_letter.jsonl": [log_entry(line, RECORD_FIELDS) for line in nonblank_lines(state / "dead_letter.jsonl")],
    }


def first_difference(got, want):
    """1-based index of the first differing item of two lists."""
    for index, (a, b) in enumerate(zip(got, want), start=1):
        if a != b:
            return index
    return min(len(got), len(want)) + 1


def model_state(model, windows):
    """:func:`final_state` as the model predicts it (``windows``: whether the product keeps
    windows and dead letters, i.e. its episode is E3 or later)."""
    def record(event):
        return tuple(event[field] for field in EVENT_FIELDS) + (
            mask_email(event["email"]) if "email" in event else None,
            mask_card(event["card"]) if "card" in event else None)
    return {"balances.json": model.balances, "windows.json": model.windows if windows else None,
            "events.jsonl": [record(event) for event in model.applied],
            "dead_letter.jsonl": [record(event) for event in model.dead] if windows else []}


def assert_same_state(resumed, reference, model, what="after kill and re-run", completed=None):
    """The resumed state equals the uninterrupted one, and both the model's.

    ``completed``: the model after the same input once more, whose state is also accepted. A
    run killed after its last commit (before printing its counts, say) has fully happened:
    its re-run is a second invocation, which may apply lines the first rejected (an overdraft
    covered by a later credit).
    """
    got, want = final_state(resumed), final_state(reference)
    if completed is not None and got == model_state(completed, want["windows.json"] is not None):
        return
    assert want["balances.json"] == model.balances, "the uninterrupted run itself has wrong balances"
    assert [entry[:5] for entry in want["events.jsonl"]] == [
        tuple(event[field] for field in EVENT_FIELDS) for event in model.applied
    ], "events.jsonl of the uninterrupted run does not list the applied events in order"
    if want["windows.json"] is not None:
        assert want["windows.json"] == model.windows, "the uninterrupted run itself has wrong windows"
        assert len(want["dead_letter.jsonl"]) == len(model.dead), \
            "dead_letter.jsonl of the uninterrupted run does not have one line per late event"
    for name in ("balances.json", "windows.json"):
        assert got[name] == want[name], f"{what}, {name} differs from an uninterrupted run's"
    for name in ("events.jsonl", "dead_letter.jsonl"):
        assert got[name] == want[name], (
            f"{what}, {name} has {len(got[name])} lines (uninterrupted: {len(want[name])}), "
            f"first difference at line {first_difference(got[name], want[name])}"
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
    """checkpoint.json exists and is valid JSON after a run with --checkpoint-every, and after a
    kill that came after N lines or more (N = 5, and N = 1: a checkpoint after every line)."""
    gen = EventGen(seed, "ckpt-file", n_accounts=4)
    lines = to_lines(gen.stream(23))
    done, killed, killed_1 = ledger.path("done"), ledger.path("killed"), ledger.path("killed-every-1")
    completed = ledger.spawn_ingest(write_lines(ledger.path("events.jsonl"), lines), done, "--checkpoint-every", "5")
    runs = {state: ledger.start("ingest", "-", "--state", state, "--checkpoint-every", every)
            for state, every in ((killed, "5"), (killed_1, "1"))}  # side by side
    for state, fed in ((killed, 12), (killed_1, 3)):
        runs[state].feed("".join(line + "\n" for line in lines[:fed]))
    for state, run in runs.items():
        run.wait_idle(state)
        run.kill()
    completed.result()
    for state in (done, killed, killed_1):
        path = state / "checkpoint.json"
        assert path.is_file(), f"no checkpoint.json in the state directory ({state.name} run)"
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise AssertionError(f"checkpoint.json is not valid JSON ({state.name} run): {exc}") from None


@pytest.mark.genuine
def test_a_different_input_after_a_kill_is_processed_in_full(ledger, seed):
    """Killed after a checkpoint, then given another input (not the killed run's): every event
    of the new input is applied. A checkpoint resumes the same input only; one that matched on
    the line count alone would skip the new input's first lines."""
    gen = EventGen(seed, "ckpt-other-input", n_accounts=4)
    first = to_lines(gen.stream(16))
    state = ledger.path("state")
    run = ledger.start("ingest", "-", "--state", state, "--checkpoint-every", "4")
    run.feed("".join(line + "\n" for line in first[:13]))
    run.wait_idle(state)
    run.kill()
    # Credits only (no overdraft whatever part of the killed run was kept), in time order.
    other = [gen.make(gen.rng.choice(gen.accounts), "credit", gen.rng.randint(100, 900), gen.tick())
             for _ in range(14)]
    result = ledger.ingest(write_lines(ledger.path("other.jsonl"), to_lines(other)), state,
                           "--checkpoint-every", "4")
    assert counts_of(result.stdout).get("applied") == len(other), (
        f"the other input's {len(other)} new events were not all applied: {result.stdout.strip()!r}")
    entries = [log_entry(line) for line in nonblank_lines(state / "events.jsonl")]
    logged = [entry[0] if isinstance(entry, tuple) else entry for entry in entries]
    missing = [event["id"] for event in other if logged.count(event["id"]) != 1]
    assert not missing, (f"{len(missing)} of the other input's {len(other)} events are not in "
                         f"events.jsonl exactly once (first: {missing[0]})")


def opened_state(ledger, gen, name="opening"):
    """A state directory after a first, valid invocation; returns it, its events and the
    outcomes the product's episode knows (from the keys of the counts it printed)."""
    events = gen.stream(12)
    state = ledger.path(name)
    result = ledger.ingest(write_lines(ledger.path(f"{name}.jsonl"), to_lines(events)), state)
    return state, events, outcomes_in_force(result.stdout)


@pytest.mark.genuine
@pytest.mark.slow
def test_killed_at_any_step_resumes_to_uninterrupted_state(ledger, seed):
    """Killed at varied steps of a run (a file just opened for writing, between the renames
    of two files, before or after printing the counts, mid-input; once or twice in a row; on
    a state with earlier invocations and on an empty one), on an input mixing every outcome of
    the episode, the re-run reaches the final state of an uninterrupted run: balances,
    windows, event log and dead letters.

    The product kills itself just before its Nth state-changing step (the fault hook in its
    Python, see ``_fault_hook.py``), so where it dies does not depend on timing: the steps
    are listed by a traced uninterrupted run first.
    """
    gen = EventGen(seed, "ckpt-steps", n_accounts=5)
    opening, earlier, outcomes = opened_state(ledger, gen)
    lines = mixed_outcomes(gen, 44, outcomes, earlier=earlier, shares=(0.15, 0.3, 0.2))
    model = Model()
    model.ingest(to_lines(earlier))
    model.ingest(lines, allow=tuple(outcomes))
    src = write_raw(ledger.path("events.jsonl"), lines)
    args = (src, "--checkpoint-every", "4")
    trace = ledger.path("traces/uninterrupted.txt")
    reference = ledger.clone(opening, "uninterrupted")
    ledger.ingest(*args[:1], reference, *args[1:], env=ledger.fault_env(trace=trace))
    steps = ledger.steps(trace)
    points = kill_points(steps, gen.rng, limit=6, anywhere=1)
    repeated = sorted(gen.rng.sample(points, 2)) if len(points) >= 2 else points

    # Both inputs in one, on an empty state (no checkpoint yet when the first kill comes).
    fresh_model = Model()
    fresh_model.ingest(to_lines(earlier) + lines, allow=tuple(outcomes))
    fresh_src = write_raw(ledger.path("fresh.jsonl"), to_lines(earlier) + lines)
    fresh_trace = ledger.path("traces/fresh.txt")
    fresh_reference = ledger.path("fresh-uninterrupted")
    ledger.ingest(fresh_src, fresh_reference, *args[1:], env=ledger.fault_env(trace=fresh_trace))
    fresh_steps = ledger.steps(fresh_trace)
    # killed before the first checkpoint is written: logs appended, nothing committed (without a
    # step naming a checkpoint: in the first third of the run)
    first_checkpoint = next((number for number, label in enumerate(fresh_steps, start=1)
                             if "checkpoint" in label.lower()), len(fresh_steps) // 3)
    fresh_points = kill_points(fresh_steps[:first_checkpoint], gen.rng, limit=2)

    chains = {f"killed-at-{point}": [point] for point in points}
    states = {name: ledger.clone(opening, name) for name in chains}
    for point in fresh_points:
        chains[f"fresh-killed-at-{point}"] = [point]
        states[f"fresh-killed-at-{point}"] = ledger.path(f"fresh-killed-at-{point}")
    # killed twice: its first kill is killed-at-repeated[0]'s, so it starts from a copy of that
    # state once the first kills are done, and is killed again at repeated[1]
    chains["killed-twice"] = repeated
    for round_ in range(max([1, *map(len, chains.values())])):
        runs = [ledger.spawn_ingest(fresh_src if name.startswith("fresh") else src, states[name], *args[1:],
                                    expect_ok=False,
                                    env=ledger.fault_env(kill_at=kills[round_]))
                for name, kills in chains.items() if round_ < len(kills) and (name, round_) != ("killed-twice", 0)]
        for run in runs:
            run.result()
        if round_ == 0:
            states["killed-twice"] = (ledger.clone(states[f"killed-at-{repeated[0]}"], "killed-twice")
                                      if repeated else ledger.clone(opening, "killed-twice"))
    completed = {False: copy.deepcopy(model), True: copy.deepcopy(fresh_model)}  # the input once more
    completed[False].ingest(lines, allow=tuple(outcomes) + ("applied",))
    completed[True].ingest(to_lines(earlier) + lines, allow=tuple(outcomes) + ("applied",))
    finals = {name: ledger.spawn_ingest(fresh_src if name.startswith("fresh") else src, state, *args[1:],
                                        expect_ok=False)
              for name, state in states.items()}
    for name, run in finals.items():
        result = run.result()
        fresh = name.startswith("fresh")
        trace_steps = fresh_steps if fresh else steps
        where = (f"killed before step(s) {chains[name]} of {len(trace_steps)} "
                 f"({', '.join(trace_steps[p - 1] for p in chains[name] if p <= len(trace_steps))})"
                 f"{' on an empty state' if fresh else ''}")
        assert result.returncode == 0, f"re-run after being {where} failed: " + result.describe()
        assert_same_state(states[name], fresh_reference if fresh else reference, fresh_model if fresh else model,
                          what=f"after being {where} and re-run",
                          completed=completed[fresh])
