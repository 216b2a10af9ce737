"""The ``ingest`` command: apply a stream of events to the state directory."""

from .events import InvalidEvent, log_line, parse_event
from .state import Ledger, render_json
from .storage import BALANCES, LEDGER_LOG, STATE, atomic_write_text, read_json


def load_ledger(state_dir):
    """Load the ledger persisted in ``state_dir`` (empty if there is none yet)."""
    data = read_json(state_dir / STATE)
    return Ledger() if data is None else Ledger.from_dict(data)


def save_ledger(state_dir, ledger):
    """Persist the ledger and write ``balances.json``."""
    atomic_write_text(state_dir / BALANCES, ledger.balances_document())
    atomic_write_text(state_dir / STATE, render_json(ledger.to_dict()))


def ingest(lines, state_dir):
    """Process input lines in order and return this invocation's counts.

    ``lines`` is an iterable of raw lines (bytes); blank lines are skipped.
    Each event is applied unless its id was already seen (in this input or an
    earlier invocation), in which case it is a duplicate with no effect.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    ledger = load_ledger(state_dir)
    counts = {"applied": 0, "duplicate": 0}
    try:
        with open(state_dir / LEDGER_LOG, "a", encoding="utf-8") as log:
            for number, raw in enumerate(lines, start=1):
                if not raw.strip():
                    continue
                try:
                    event = parse_event(raw)
                except InvalidEvent as exc:
                    raise InvalidEvent(f"line {number}: {exc}") from None
                if ledger.is_duplicate(event["id"]):
                    outcome = "duplicate"
                else:
                    outcome = "applied"
                    ledger.apply(event)
                counts[outcome] += 1
                log.write(log_line(outcome, event) + "\n")
    finally:
        # Keep the persisted state in step with what ledger.log records.
        save_ledger(state_dir, ledger)
    return counts
