"""Validation of request bodies: the first rule a request breaks decides its error code.

Order: ``malformed_json`` (not a JSON object), ``missing_field``, ``wrong_type``.
"""

from __future__ import annotations

import json
import re

from inventory.store import Refusal

SKU = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_HOLD_SECONDS = 86400


def parse_object(body: bytes) -> dict:
    """The body as a JSON object, else ``malformed_json``."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Refusal(400, "malformed_json") from None
    if not isinstance(document, dict):
        raise Refusal(400, "malformed_json")
    return document


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_text(value) -> bool:
    return isinstance(value, str) and bool(value)


def _missing(document: dict, *names: str) -> None:
    for name in names:
        if name not in document:
            raise Refusal(400, "missing_field")


def _wrong_type() -> Refusal:
    return Refusal(400, "wrong_type")


def check_item(body: dict) -> dict:
    """``{"sku", "name", "stock"}``: sku of 1-64 letters, digits, ``.``, ``_``, ``-``; name a
    non-empty string; stock an integer >= 0."""
    _missing(body, "sku", "name", "stock")
    if not isinstance(body["sku"], str) or not SKU.fullmatch(body["sku"]):
        raise _wrong_type()
    if not is_text(body["name"]) or not is_int(body["stock"]) or body["stock"] < 0:
        raise _wrong_type()
    return body


def check_reservation(body: dict) -> dict:
    """``{"customer": {"name", "email", "phone"}, "lines": [{"sku", "qty"}, ...], "hold_seconds"?}``."""
    _missing(body, "customer", "lines")
    customer, lines = body["customer"], body["lines"]
    if isinstance(customer, dict):
        _missing(customer, "name", "email", "phone")
    if isinstance(lines, list):
        for line in lines:
            if isinstance(line, dict):
                _missing(line, "sku", "qty")
    if not isinstance(customer, dict):
        raise _wrong_type()
    if not all(is_text(customer[name]) for name in ("name", "email", "phone")):
        raise _wrong_type()
    if not isinstance(lines, list) or not lines:
        raise _wrong_type()
    seen = set()
    for line in lines:
        if not isinstance(line, dict) or not isinstance(line["sku"], str):
            raise _wrong_type()
        if not is_int(line["qty"]) or line["qty"] < 1 or line["sku"] in seen:
            raise _wrong_type()
        seen.add(line["sku"])
    if "hold_seconds" in body:
        hold = body["hold_seconds"]
        if isinstance(hold, bool) or not isinstance(hold, (int, float)):
            raise _wrong_type()
        if not 0 < hold <= MAX_HOLD_SECONDS:
            raise _wrong_type()
    return body


def check_count(body: dict) -> dict:
    """``{"sku", "seq", "on_hand"}``: seq an integer >= 1, on_hand an integer >= 0."""
    _missing(body, "sku", "seq", "on_hand")
    if not isinstance(body["sku"], str):
        raise _wrong_type()
    if not is_int(body["seq"]) or body["seq"] < 1:
        raise _wrong_type()
    if not is_int(body["on_hand"]) or body["on_hand"] < 0:
        raise _wrong_type()
    return body
