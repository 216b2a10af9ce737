"""The in-memory ledger state and its JSON forms."""

import json
from datetime import timedelta

from .events import hour_start, parse_ts


def _empty_window():
    return {"count": 0, "credits": 0, "debits": 0, "net": 0}


class Ledger:
    """Everything ingest knows about the events it has processed.

    - ``balances``: account -> balance in cents;
    - ``windows``: account -> hour start -> count, credits, debits and net;
    - ``seen``: ids of processed events (applied or dead-lettered);
    - ``max_ts``: the greatest event time applied so far, or ``None``.
    """

    def __init__(self, balances=None, windows=None, seen=(), max_ts=None):
        self.balances = dict(balances or {})
        self.windows = {account: dict(hours) for account, hours in (windows or {}).items()}
        self.seen = set(seen)
        self.max_ts = max_ts

    def is_duplicate(self, event_id):
        """True if an event with this id was already processed."""
        return event_id in self.seen

    def watermark(self, allowed_lateness):
        """Events before this time are too late; ``None`` until an event is applied."""
        if self.max_ts is None:
            return None
        return parse_ts(self.max_ts) - timedelta(seconds=allowed_lateness)

    def is_late(self, event, allowed_lateness):
        """True if the event's time is before the watermark."""
        watermark = self.watermark(allowed_lateness)
        return watermark is not None and parse_ts(event["ts"]) < watermark

    def would_overdraw(self, event):
        """True for a debit larger than its account's current balance."""
        balance = self.balances.get(event["account"], 0)
        return event["type"] == "debit" and event["amount"] > balance

    def mark_seen(self, event_id):
        """Remember an id without applying its event (a dead-lettered event)."""
        self.seen.add(event_id)

    def apply(self, event):
        """Apply a credit or debit to its balance and hourly window; remember its id."""
        self.seen.add(event["id"])
        account, amount = event["account"], event["amount"]
        credit = event["type"] == "credit"
        signed = amount if credit else -amount
        self.balances[account] = self.balances.get(account, 0) + signed
        hours = self.windows.setdefault(account, {})
        window = hours.setdefault(hour_start(event["ts"]), _empty_window())
        window["count"] += 1
        window["credits" if credit else "debits"] += amount
        window["net"] += signed
        if self.max_ts is None or parse_ts(event["ts"]) > parse_ts(self.max_ts):
            self.max_ts = event["ts"]

    def to_dict(self):
        """The persisted form: plain JSON values in a deterministic order."""
        return {
            "balances": self.balances,
            "max_ts": self.max_ts,
            "seen": sorted(self.seen),
            "windows": self.windows,
        }

    @classmethod
    def from_dict(cls, data):
        """Rebuild a ledger from :meth:`to_dict` output."""
        return cls(
            balances=data["balances"],
            windows=data["windows"],
            seen=data["seen"],
            max_ts=data["max_ts"],
        )

    def balances_document(self):
        """The exact text of ``balances.json``."""
        return render_json({"accounts": self.balances})

    def windows_document(self):
        """The exact text of ``windows.json``."""
        return render_json({"windows": self.windows})


def render_json(document):
    """Render a state file: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"
