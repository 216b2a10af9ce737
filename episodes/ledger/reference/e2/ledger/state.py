"""The in-memory ledger state and its JSON forms."""

import json


class Ledger:
    """Per-account balances (in cents) and the set of event ids already seen."""

    def __init__(self, balances=None, seen=()):
        self.balances = dict(balances or {})
        self.seen = set(seen)

    def is_duplicate(self, event_id):
        """True if an event with this id was already processed."""
        return event_id in self.seen

    def apply(self, event):
        """Apply a credit or debit to its account and remember its id."""
        self.seen.add(event["id"])
        amount = event["amount"] if event["type"] == "credit" else -event["amount"]
        account = event["account"]
        self.balances[account] = self.balances.get(account, 0) + amount

    def to_dict(self):
        """The persisted form: plain JSON values in a deterministic order."""
        return {
            "balances": dict(sorted(self.balances.items())),
            "seen": sorted(self.seen),
        }

    @classmethod
    def from_dict(cls, data):
        """Rebuild a ledger from :meth:`to_dict` output."""
        return cls(balances=data["balances"], seen=data["seen"])

    def balances_document(self):
        """The exact text of ``balances.json``."""
        return render_json({"accounts": self.balances})


def render_json(document):
    """Render a derived state file: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"
