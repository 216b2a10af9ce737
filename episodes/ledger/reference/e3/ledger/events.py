"""Input events: parsing, the masked record form and ``ledger.log`` lines."""

import json
from datetime import datetime

from .mask import mask_card, mask_email

#: Fields every event carries, in the order they appear in ``ledger.log``.
FIELDS = ("id", "account", "type", "amount", "ts")

#: Personal-data fields and the function that masks each of them.
PERSONAL_FIELDS = {"email": mask_email, "card": mask_card}

EVENT_TYPES = ("credit", "debit")

#: Event times are UTC, exactly ``YYYY-MM-DDTHH:MM:SSZ``.
TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class InvalidEvent(ValueError):
    """An input line that is not a usable event."""


def parse_event(raw):
    """Parse one input line (bytes or str) into an event dict.

    Raises InvalidEvent, whose message never quotes the line (it may hold
    personal data).
    """
    try:
        event = json.loads(raw)
    except ValueError:
        raise InvalidEvent("not a JSON object") from None
    if not isinstance(event, dict):
        raise InvalidEvent("not a JSON object")
    for field in FIELDS:
        if field not in event:
            raise InvalidEvent(f"missing field {field!r}")
    if not (isinstance(event["id"], str) and isinstance(event["account"], str)):
        raise InvalidEvent("id and account must be strings")
    if event["type"] not in EVENT_TYPES:
        raise InvalidEvent("type is neither credit nor debit")
    amount = event["amount"]
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise InvalidEvent("amount is not a positive integer")
    try:
        parse_ts(event["ts"])
    except (TypeError, ValueError):
        raise InvalidEvent("ts is not a YYYY-MM-DDTHH:MM:SSZ time") from None
    return event


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
    """Format the ``ledger.log`` line (without newline) for one input event.

    Example: ``applied id=e-1 account=acct-0001 type=credit amount=500
    email=j***@example.com card=****1111``.
    """
    record = masked(event)
    keys = [field for field in FIELDS if field != "ts"] + list(PERSONAL_FIELDS)
    parts = [outcome] + [f"{key}={record[key]}" for key in keys if key in record]
    return " ".join(parts)
