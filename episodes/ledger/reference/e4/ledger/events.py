"""Input events: validation, the masked record form and log lines.

Nothing produced here ever quotes an input line: lines may hold personal data.
"""

import json
import re
from datetime import datetime

from .mask import mask_card, mask_email

#: Fields every event carries, in the order they appear in ``ledger.log``.
FIELDS = ("id", "account", "type", "amount", "ts")

#: Optional personal-data fields and the function that masks each of them.
PERSONAL_FIELDS = {"email": mask_email, "card": mask_card}

EVENT_TYPES = ("credit", "debit")

#: Event times are UTC, exactly ``YYYY-MM-DDTHH:MM:SSZ``.
TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TS_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")

# Reason codes for rejected lines, in the order they are checked.
MALFORMED_JSON = "malformed_json"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
UNKNOWN_TYPE = "unknown_type"
NON_POSITIVE_AMOUNT = "non_positive_amount"
OVERDRAFT = "overdraft"


class Rejected(Exception):
    """An input line that is rejected: its reason code and event id (or None)."""

    def __init__(self, reason, event_id=None):
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id


def parse_event(raw):
    """Parse and validate one input line (bytes or str) into an event dict.

    Raises Rejected with the first matching reason code among
    malformed_json, missing_field, wrong_type, unknown_type and
    non_positive_amount. (Overdrafts depend on the ledger; see
    :meth:`ledger.state.Ledger.would_overdraw`.)
    """
    try:
        event = json.loads(raw)
    except (ValueError, RecursionError):
        raise Rejected(MALFORMED_JSON) from None
    if not isinstance(event, dict):
        raise Rejected(MALFORMED_JSON)
    event_id = event.get("id") if isinstance(event.get("id"), str) else None
    if any(field not in event for field in FIELDS):
        raise Rejected(MISSING_FIELD, event_id)
    if not _well_typed(event):
        raise Rejected(WRONG_TYPE, event_id)
    if event["type"] not in EVENT_TYPES:
        raise Rejected(UNKNOWN_TYPE, event_id)
    if event["amount"] <= 0:
        raise Rejected(NON_POSITIVE_AMOUNT, event_id)
    return event


def _well_typed(event):
    """True if every field present has its JSON type (``null`` never does)."""
    strings = ["id", "account", "type"] + [field for field in PERSONAL_FIELDS if field in event]
    amount = event["amount"]
    return (
        all(isinstance(event[field], str) for field in strings)
        and isinstance(amount, int)
        and not isinstance(amount, bool)
        and is_valid_ts(event["ts"])
    )


def is_valid_ts(value):
    """True for a string that is exactly ``YYYY-MM-DDTHH:MM:SSZ`` and a real time."""
    if not isinstance(value, str) or not _TS_SHAPE.fullmatch(value):
        return False
    try:
        parse_ts(value)
    except ValueError:
        return False
    return True


def parse_ts(text):
    """Parse an event time (``YYYY-MM-DDTHH:MM:SSZ``) into a naive UTC datetime."""
    return datetime.strptime(text, TS_FORMAT)


def hour_start(ts):
    """The start of the hour an event time falls in: ``...T09:41:07Z`` -> ``...T09:00:00Z``."""
    return ts[:13] + ":00:00Z"


def masked(event):
    """Return the event's known fields with personal data masked.

    Unknown fields are dropped; absent personal fields stay absent.
    """
    record = {field: event[field] for field in FIELDS}
    for field, mask in PERSONAL_FIELDS.items():
        if field in event:
            record[field] = mask(event[field])
    return record


def log_record(event):
    """Format the ``events.jsonl`` / ``dead_letter.jsonl`` line (without newline)."""
    return json.dumps(masked(event), sort_keys=True)


def log_line(outcome, event):
    """Format the ``ledger.log`` line (without newline) for one event.

    Example: ``applied id=e-1 account=acct-0001 type=credit amount=500
    email=j***@example.com card=****1111``.
    """
    record = masked(event)
    keys = [field for field in FIELDS if field != "ts"] + list(PERSONAL_FIELDS)
    parts = [outcome] + [f"{key}={record[key]}" for key in keys if key in record]
    return " ".join(parts)


def reject_record(number, rejection):
    """Format the ``rejects.jsonl`` line (without newline) for a rejected input line."""
    return json.dumps({"line": number, "reason": rejection.reason, "id": rejection.event_id})


def reject_log_line(number, rejection):
    """Format the ``ledger.log`` line for a rejected input line.

    Example: ``rejected line=7 reason=missing_field id=e-9`` (no ``id=`` when
    the line has no usable id).
    """
    line = f"rejected line={number} reason={rejection.reason}"
    if rejection.event_id is not None:
        line += f" id={rejection.event_id}"
    return line
