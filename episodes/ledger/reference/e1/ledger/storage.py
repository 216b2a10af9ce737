"""Files in the state directory."""

import json
import os

BALANCES = "balances.json"
LEDGER_LOG = "ledger.log"
#: Internal state carried across invocations (balances and seen ids).
STATE = "state.json"


def atomic_write_text(path, text):
    """Replace ``path`` with ``text`` atomically (temp file in the same directory + rename).

    Readers, and a run killed mid-write, see either the old or the new content.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def read_json(path, default=None):
    """Load a JSON file, or return ``default`` if it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return default
