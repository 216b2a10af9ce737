"""The state directory: derived files, append-only logs and checkpoints.

Crash safety: every file is either rewritten atomically (temp file + rename)
or append-only. ``checkpoint.json`` is the commit record. It holds the whole
ledger state (balances, windows, the seen-id set and the latest event time),
the progress of the ingest run under way, and the committed size of every
append-only file. Opening the
directory truncates each append-only file to its committed size, discarding
whatever a killed run wrote after its last checkpoint, so that the state on
disk is exactly the checkpointed one.

Atomic writes are not fsynced: they survive the process being killed at any
moment, not a power failure.
"""

import json
import os

from .state import Ledger, render_json

BALANCES = "balances.json"
CHECKPOINT = "checkpoint.json"
DEAD_LETTER = "dead_letter.jsonl"
EVENT_LOG = "events.jsonl"
LEDGER_LOG = "ledger.log"
REJECTS = "rejects.jsonl"
WINDOWS = "windows.json"

#: Files only ever appended to; their committed sizes are part of a checkpoint.
APPEND_ONLY = (DEAD_LETTER, EVENT_LOG, LEDGER_LOG, REJECTS)

CHECKPOINT_VERSION = 1


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


def write_derived(state_dir, ledger):
    """Write every derived state file from ``ledger``."""
    atomic_write_text(state_dir / BALANCES, ledger.balances_document())
    atomic_write_text(state_dir / WINDOWS, ledger.windows_document())


def _truncate(path, size):
    """Cut ``path`` back to ``size`` bytes if it is longer."""
    try:
        if os.path.getsize(path) > size:
            os.truncate(path, size)
    except FileNotFoundError:
        pass


class StateStore:
    """A state directory opened for an ingest run (use as a context manager).

    ``ledger`` is the last committed ledger; ``run`` is the progress record of
    an interrupted run (``None`` if the last run completed).
    """

    def __init__(self, state_dir):
        self.dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        saved = read_json(state_dir / CHECKPOINT)
        if saved is None:
            self.ledger, self.run, sizes = Ledger(), None, {}
        else:
            self.ledger = Ledger.from_dict(saved["ledger"])
            self.run, sizes = saved["run"], saved["files"]
        self._logs = {}
        for name in APPEND_ONLY:
            _truncate(state_dir / name, sizes.get(name, 0))
            self._logs[name] = open(state_dir / name, "ab")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def append(self, name, line):
        """Append one line (without newline) to the append-only file ``name``."""
        self._logs[name].write(line.encode("utf-8") + b"\n")

    def checkpoint(self, run=None):
        """Commit the current state.

        Order matters: the logs are flushed and the derived files written
        before ``checkpoint.json`` is replaced, so a checkpoint never refers
        to data that is not on disk.
        """
        for log in self._logs.values():
            log.flush()
        write_derived(self.dir, self.ledger)
        record = {
            "version": CHECKPOINT_VERSION,
            "ledger": self.ledger.to_dict(),
            "files": {name: log.tell() for name, log in self._logs.items()},
            "run": run,
        }
        atomic_write_text(self.dir / CHECKPOINT, render_json(record))

    def close(self):
        for log in self._logs.values():
            log.close()
