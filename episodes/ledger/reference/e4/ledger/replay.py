"""The ``replay`` command: rebuild the derived state files from the event log."""

import json

from .state import Ledger
from .storage import EVENT_LOG, write_derived


def replay(state_dir):
    """Rebuild every derived file from ``events.jsonl`` alone; return the event count.

    The result is byte-for-byte what ``ingest`` wrote, since both render the
    same ledger with the same functions.
    """
    ledger = Ledger()
    count = 0
    with open(state_dir / EVENT_LOG, "rb") as log:
        for raw in log:
            if raw.strip():
                ledger.apply(json.loads(raw))
                count += 1
    write_derived(state_dir, ledger)
    return count
