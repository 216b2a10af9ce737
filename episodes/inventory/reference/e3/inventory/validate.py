"""Validation of request bodies: anything that is not as the briefs describe is refused with
``400 {"error": "bad_request"}``."""

from __future__ import annotations

import json

from inventory.store import Refusal


def _bad() -> Refusal:
    return Refusal(400, "bad_request")


def parse_object(body: bytes) -> dict:
    """The body as a JSON object."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _bad() from None
    if not isinstance(document, dict):
        raise _bad()
    return document


def _int(value, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _text(value) -> bool:
    return isinstance(value, str) and value != ""


def check_item(body: dict) -> dict:
    if not (_text(body.get("sku")) and _text(body.get("name")) and _int(body.get("stock"), 0)):
        raise _bad()
    return body


def check_reservation(body: dict) -> dict:
    customer, lines = body.get("customer"), body.get("lines")
    if not isinstance(customer, dict) or not all(_text(customer.get(n)) for n in ("name", "email", "phone")):
        raise _bad()
    if not isinstance(lines, list) or not lines:
        raise _bad()
    if not all(isinstance(l, dict) and _text(l.get("sku")) and _int(l.get("qty"), 1) for l in lines):
        raise _bad()
    if len({l["sku"] for l in lines}) != len(lines):
        raise _bad()
    if "hold_seconds" in body:
        hold = body["hold_seconds"]
        if isinstance(hold, bool) or not isinstance(hold, (int, float)) or not 0 < hold <= 86400:
            raise _bad()
    return body


def check_count(body: dict) -> dict:
    if not (_text(body.get("sku")) and _int(body.get("seq"), 1) and _int(body.get("on_hand"), 0)):
        raise _bad()
    return body
