"""The ``ingest`` command: apply a stream of events to the state directory.

Input is processed line by line as it arrives, and committed with a
checkpoint every N lines. If a run is killed, running the same command on the
same input again resumes it: the input lines the interrupted run had already
committed are recognised (by their digest) and skipped, so the final state,
and the counts printed, are those of an uninterrupted run.
"""

import base64
import hashlib
from itertools import chain, islice

from .events import InvalidEvent, log_line, log_record, parse_event
from .storage import DEAD_LETTER, EVENT_LOG, LEDGER_LOG, StateStore

OUTCOMES = ("applied", "duplicate", "late")


class Progress:
    """How far the current run has read its input, and its counts so far."""

    def __init__(self):
        self.lines = 0
        self.counts = dict.fromkeys(OUTCOMES, 0)
        self._hash = hashlib.sha256()

    def consume(self, raw):
        """Account for one more input line (blank or not)."""
        self.lines += 1
        self._hash.update(raw)

    def digest(self):
        """Digest of the lines consumed so far (base64, so no long digit runs)."""
        return base64.urlsafe_b64encode(self._hash.digest()).decode("ascii")

    def to_dict(self):
        """The progress record stored in a checkpoint while the run is under way."""
        return {"counts": dict(self.counts), "digest": self.digest(), "lines": self.lines}


def resume(lines, saved):
    """Return ``(progress, remaining lines)`` for a run over ``lines``.

    ``saved`` is the progress record of an interrupted run, if any. When the
    input starts with exactly the lines that run committed, they are skipped
    and its counts carried over; otherwise the input is processed from the
    start as a new run.
    """
    progress = Progress()
    if saved is None:
        return progress, lines
    lines = iter(lines)
    prefix = list(islice(lines, saved["lines"]))
    for raw in prefix:
        progress.consume(raw)
    if progress.lines == saved["lines"] and progress.digest() == saved["digest"]:
        progress.counts = dict(saved["counts"])
        return progress, lines
    return Progress(), chain(prefix, lines)


def process(raw, number, ledger, store, allowed_lateness):
    """Classify and record one non-blank input line; return its outcome.

    A repeated id is a duplicate (even if that event was dead-lettered);
    otherwise an event older than the watermark is late and dead-lettered;
    otherwise it is applied.
    """
    try:
        event = parse_event(raw)
    except InvalidEvent as exc:
        raise InvalidEvent(f"line {number}: {exc}") from None
    if ledger.is_duplicate(event["id"]):
        outcome = "duplicate"
    elif ledger.is_late(event, allowed_lateness):
        outcome = "late"
        ledger.mark_seen(event["id"])
        store.append(DEAD_LETTER, log_record(event))
    else:
        outcome = "applied"
        ledger.apply(event)
        store.append(EVENT_LOG, log_record(event))
    store.append(LEDGER_LOG, log_line(outcome, event))
    return outcome


def ingest(lines, state_dir, checkpoint_every=100, allowed_lateness=3600):
    """Process raw input lines (bytes) in order and return the run's counts.

    Blank lines are skipped. An event is a duplicate, with no effect, if its
    id was already seen (in this input or an earlier run); it is late if its
    time is before the watermark (the greatest event time applied so far
    minus ``allowed_lateness`` seconds); otherwise it is applied.
    """
    with StateStore(state_dir) as store:
        progress, lines = resume(lines, store.run)
        for raw in lines:
            progress.consume(raw)
            if raw.strip():
                outcome = process(raw, progress.lines, store.ledger, store, allowed_lateness)
                progress.counts[outcome] += 1
            if progress.lines % checkpoint_every == 0:
                store.checkpoint(progress.to_dict())
        store.checkpoint(None)
    return progress.counts
