"""Seeded inputs, an HTTP client and an independent model of the ``inventory`` specification.

Everything a gate check needs to *drive* the service and *predict* what it must answer:

- :class:`Client`: plain HTTP/1.1 requests to the service on 127.0.0.1 (``http.client``); a
  service that does not answer within :data:`WAIT` s fails the check, or gives no verdict when
  the host starved it.
- :class:`Gen`: seeded, realistic items and reservation requests whose customers carry personal
  data (names, emails, phone numbers in several formats), plus re-serialisations of a request
  that are the same JSON (member order, spacing, escapes).
- :class:`Model`: a small re-implementation of the final (E4) rules of the briefs: validation,
  idempotency (same key: the original if the same JSON, else a conflict), stock held by
  reservations, confirm/cancel, expiry, warehouse counts with sequence numbers, masking.
- :class:`Shop`: one service under test, its state directory and the model, driven together;
  keeps every answer and process output for the privacy checks.

The generator never decides what the service should answer; the model does. Inputs of a gate
active from an early episode are valid under every later episode's rules (no conflicting
retries, no bad requests, no unknown items; holds long enough never to expire during a check),
so the reference passes every active gate after every episode; :meth:`Model.expect` raises if a
check's input would break that.

Time: the service and the checks share the machine's clock. A check asserts that a
reservation has expired only once the clock is past its ``expires_at`` (a lower bound, which a
slow machine cannot break), and that one is still held only when it was held for an hour.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest

#: Seconds a check waits for an answer of the service.
WAIT = 20.0
#: Default hold of a reservation (``--hold-seconds``), seconds.
DEFAULT_HOLD = 900
#: Largest ``hold_seconds`` a request may ask for.
MAX_HOLD = 86400
ISO_MS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")

# --------------------------------------------------------------------------- masking


def mask_email(email: str) -> str:
    """``jane.doe@example.org`` -> ``j***@example.org``."""
    return f"{email[0]}***@{email.split('@')[-1]}"


def mask_name(name: str) -> str:
    """``Jane van Doe`` -> ``J. v. D.``."""
    return " ".join(word[:1] + "." for word in name.split())


def mask_phone(phone: str) -> str:
    """``+44 7700 900123`` -> ``***23``."""
    return "***" + re.sub(r"\D", "", phone)[-2:]


def masked_customer(customer: dict) -> dict:
    return {"name": mask_name(customer["name"]), "email": mask_email(customer["email"]),
            "phone": mask_phone(customer["phone"])}


_SQUEEZE = re.compile(r"[\s\-+().]")


class Secrets:
    """The personal data a check sent: emails, full names, name words and phone numbers."""

    def __init__(self):
        self.words: set[str] = set()
        self.phones: set[str] = set()

    def add_customer(self, customer: dict) -> None:
        self.words.add(customer["email"].lower())
        self.words.add(customer["name"].lower())
        self.words.update(w.lower() for w in customer["name"].split() if len(w) >= 5)
        digits = re.sub(r"\D", "", customer["phone"])
        self.phones.add(digits)

    def add_text(self, emails=(), phones=()) -> None:
        self.words.update(e.lower() for e in emails)
        self.phones.update(re.sub(r"\D", "", p) for p in phones)

    def leaks(self, text: str) -> list[str]:
        """Which secrets occur in ``text`` (phones also with spaces, dashes, dots, brackets)."""
        lowered, squeezed = text.lower(), _SQUEEZE.sub("", text)
        return sorted([w for w in self.words if w in lowered] + [p for p in self.phones if p in squeezed])


def tree_text(root: Path, limit: int = 4 * 1024 * 1024) -> dict[str, str]:
    """Every file under ``root`` (not following links), decoded leniently: ``{relative path: text}``."""
    found = {}
    if not root.exists():
        return found
    for top, _dirs, files in os.walk(root):
        for name in files:
            path = Path(top) / name
            if path.is_symlink() or not path.is_file():
                continue
            try:
                with open(path, "rb") as handle:
                    data = handle.read(limit)
            except OSError:
                continue
            found[str(path.relative_to(root))] = data.decode("utf-8", errors="replace")
    return found


# ---------------------------------------------------------------------------- client


@dataclass
class Response:
    """One HTTP response of the service."""

    status: int
    body: bytes
    headers: dict

    def json(self):
        """The body parsed as JSON (``None`` if it is not JSON)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def describe(self) -> str:
        return f"HTTP {self.status} {self.body[:300]!r}"


class Client:
    """HTTP requests to a service on 127.0.0.1 (one connection per request).

    ``starved(what, limit)`` is called when an answer does not come in time: it raises
    ``NoVerdict`` if the host starved the service. ``record``: a list every response is
    appended to (for the privacy checks).
    """

    def __init__(self, port: int, starved=None, record: list | None = None):
        self.port = port
        self._starved = starved
        self.record = record

    def request(self, method: str, path: str, body=None, headers: dict | None = None,
                quiet: bool = False) -> Response | None:
        """Send a request; ``body`` is bytes/str as is, anything else JSON-encoded. ``quiet``:
        a connection error (the service was killed) returns None instead of failing the check."""
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        headers = dict(headers or {})
        if body is not None:
            headers.setdefault("Content-Type", "application/json")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT)
        try:
            connection.request(method, path, body=body, headers=headers)
            answer = connection.getresponse()
            response = Response(answer.status, answer.read(), {k.lower(): v for k, v in answer.getheaders()})
        except TimeoutError as exc:
            if quiet:
                return None
            if self._starved:
                self._starved(f"did not answer {method} {path}", WAIT)
            pytest.fail(f"{method} {path}: no HTTP answer within {WAIT:g} s ({exc})", pytrace=False)
        except (OSError, http.client.HTTPException) as exc:
            if quiet:
                return None
            pytest.fail(f"{method} {path}: no HTTP answer from the service ({exc.__class__.__name__}: {exc})",
                        pytrace=False)
        finally:
            connection.close()
        if self.record is not None:
            self.record.append(response)
        return response

    def post(self, path: str, body=None, key: str | None = None, quiet: bool = False) -> Response | None:
        return self.request("POST", path, body, {"Idempotency-Key": key} if key is not None else {}, quiet)

    def get(self, path: str) -> Response:
        return self.request("GET", path)


def parallel(function, arguments: list, workers: int = 8) -> list:
    """``[function(*a) for a in arguments]``, run side by side on ``workers`` threads."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda a: function(*a), arguments))


# ------------------------------------------------------------------------- generator

PRODUCTS = ("Ceramic mug", "Steel bottle", "Wool socks", "Desk lamp", "Notebook A5", "Tea kettle",
            "Phone stand", "Yoga mat", "Canvas tote", "Glass jar", "Oak cutting board", "Rain jacket")
FIRST = ("Jannik", "Omarion", "Lorena", "Amara", "Pierre", "Fatima", "Kenji", "Olga", "Noah",
         "Diego", "Ines", "Yusuf", "Priya", "Lars", "Svetlana", "Tomasz", "Ngozi", "Harriet")
LAST = ("Haddad", "Silva", "Martin", "Khan", "Sato", "Ivanova", "Okafor", "Lopez", "Moreau",
        "Demir", "Rossi", "Novak", "Patel", "Bergstrom", "Taylor", "Nakamura", "Mensah", "Kowalski")
DOMAINS = ("example.org", "example.com", "example.net", "mail.example.co.uk", "my-shop.example.com")
LOCAL_JOINS = (".", ".", "_", "-", "+")


def rng_for(seed: int, salt: str) -> random.Random:
    """A ``random.Random`` seeded from the trial seed plus a per-check salt."""
    return random.Random(seed * 1_000_003 + zlib.crc32(salt.encode("utf-8")))


class Gen:
    """Seeded realistic items, customers and requests."""

    def __init__(self, seed: int, salt: str):
        self.rng = rng_for(seed, salt)
        self._keys = 0
        self._skus = 0
        self.secrets = Secrets()

    def key(self, prefix: str = "res") -> str:
        """A fresh idempotency key such as ``res-0007-3fa2c1``."""
        self._keys += 1
        return f"{prefix}-{self._keys:04d}-{self.rng.getrandbits(24):06x}"

    def item(self, stock: int | None = None) -> dict:
        self._skus += 1
        sku = f"{self.rng.choice(['SKU', 'ITM', 'P'])}-{self._skus:03d}{self.rng.choice('ABCDEFXYZ')}"
        return {"sku": sku, "name": self.rng.choice(PRODUCTS),
                "stock": self.rng.randint(8, 30) if stock is None else stock}

    def phone(self) -> str:
        digits = lambda n: "".join(self.rng.choice("0123456789") for _ in range(n))  # noqa: E731
        style = self.rng.randrange(4)
        if style == 0:
            return f"+44 7{digits(3)} {digits(6)}"
        if style == 1:
            return f"({self.rng.randint(201, 989)}) {digits(3)}-{digits(4)}"
        if style == 2:
            return "+33-6-" + "-".join(digits(2) for _ in range(4))
        return f"+1.{self.rng.randint(201, 989)}.{digits(3)}.{digits(4)}"

    def customer(self) -> dict:
        first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
        name = f"{first} {last}" if self.rng.random() < 0.8 else f"{first} de {last}"
        local = f"{first.lower()}{self.rng.choice(LOCAL_JOINS)}{last.lower()}{self.rng.randrange(10, 100)}"
        if self.rng.random() < 0.2:
            local = local.upper()
        customer = {"name": name, "email": f"{local}@{self.rng.choice(DOMAINS)}", "phone": self.phone()}
        self.secrets.add_customer(customer)
        return customer

    def reservation(self, skus: list[str], qty: tuple[int, int] = (1, 3), lines: int | None = None,
                    extras: bool = False, hold: float | None = None) -> dict:
        """A ``POST /reservations`` body for 1-3 of ``skus`` (or ``lines`` of them)."""
        count = lines if lines is not None else self.rng.randint(1, min(3, len(skus)))
        chosen = self.rng.sample(skus, count)
        body: dict = {"customer": self.customer(),
                      "lines": [{"sku": sku, "qty": self.rng.randint(*qty)} for sku in chosen]}
        if hold is not None:
            body["hold_seconds"] = hold
        if extras:
            other = self.customer()
            body["customer"]["address"] = f"{self.rng.randint(1, 99)} Harbour Road, flat {self.rng.randint(1, 9)}"
            body["customer"]["birthday"] = f"19{self.rng.randint(50, 99)}-0{self.rng.randint(1, 9)}-1{self.rng.randint(0, 9)}"
            body["note"] = f"Call {other['phone']} or mail {other['email']} if {other['name']} is out"
            body["channel"] = self.rng.choice(["web", "store", "phone"])
        return body

    def variant(self, body) -> str:
        """The same JSON as ``body``, serialised differently (member order, spacing, escapes)."""
        def reorder(value):
            if isinstance(value, dict):
                items = list(value.items())
                self.rng.shuffle(items)
                return {k: reorder(v) for k, v in items}
            if isinstance(value, list):
                return [reorder(v) for v in value]
            return value
        style = self.rng.randrange(3)
        if style == 0:
            return json.dumps(reorder(body), indent=2)
        if style == 1:
            return json.dumps(reorder(body), ensure_ascii=False, separators=(",", ":"))
        return " " + json.dumps(reorder(body)).replace("/", "\\/") + "\n"


# ----------------------------------------------------------------------------- model


def parse_time(text) -> float | None:
    """``2026-12-02T12:00:00.123Z`` -> seconds since the epoch; None if not that format."""
    if not isinstance(text, str) or not ISO_MS.fullmatch(text):
        return None
    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return moment.timestamp()


@dataclass
class ModelReservation:
    id: str
    key: str
    body: dict
    lines: list
    customer: dict
    hold: float
    status: str = "held"
    expires_at: float | None = None
    """Seconds since the epoch, from the service's answer (short holds only)."""

    def state(self, now: float) -> str:
        if self.status == "held" and self.expires_at is not None and now > self.expires_at:
            return "expired"
        return self.status


class Model:
    """The final (E4) rules. Reservations are named by the ids the service gave them."""

    def __init__(self, hold: float = DEFAULT_HOLD):
        self.hold = hold
        self.items: dict[str, dict] = {}
        self.reservations: dict[str, ModelReservation] = {}
        self.res_keys: dict[str, str] = {}
        self.count_keys: dict[str, dict] = {}

    # ----------------------------------------------------------- validation (E4)

    @staticmethod
    def _int(value, least: int) -> bool:
        return type(value) is int and value >= least

    @staticmethod
    def parse(raw) -> dict | None:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None
        return body if isinstance(body, dict) else None

    def invalid_item(self, raw) -> str | None:
        body = self.parse(raw)
        if body is None:
            return "malformed_json"
        if not {"sku", "name", "stock"} <= body.keys():
            return "missing_field"
        if not (isinstance(body["sku"], str) and re.fullmatch(r"[A-Za-z0-9._\-]{1,64}", body["sku"])):
            return "wrong_type"
        if not (isinstance(body["name"], str) and body["name"]) or not self._int(body["stock"], 0):
            return "wrong_type"
        return None

    def invalid_reservation(self, key, raw) -> str | None:
        if not key:
            return "missing_idempotency_key"
        body = self.parse(raw)
        if body is None:
            return "malformed_json"
        if "customer" not in body or "lines" not in body:
            return "missing_field"
        customer, lines = body["customer"], body["lines"]
        if isinstance(customer, dict) and not {"name", "email", "phone"} <= customer.keys():
            return "missing_field"
        if isinstance(lines, list) and any(isinstance(l, dict) and not {"sku", "qty"} <= l.keys() for l in lines):
            return "missing_field"
        if not isinstance(customer, dict) or any(not isinstance(customer[n], str) or customer[n] == ""
                                                 for n in ("name", "email", "phone")):
            return "wrong_type"
        if not isinstance(lines, list) or len(lines) == 0:
            return "wrong_type"
        skus = [l.get("sku") if isinstance(l, dict) else None for l in lines]
        if any(not isinstance(l, dict) or not isinstance(l["sku"], str) or not self._int(l["qty"], 1)
               for l in lines) or len(set(skus)) != len(skus):
            return "wrong_type"
        if "hold_seconds" in body:
            hold = body["hold_seconds"]
            if type(hold) not in (int, float) or not 0 < hold <= MAX_HOLD:
                return "wrong_type"
        return None

    def invalid_count(self, key, raw) -> str | None:
        if not key:
            return "missing_idempotency_key"
        body = self.parse(raw)
        if body is None:
            return "malformed_json"
        if not {"sku", "seq", "on_hand"} <= body.keys():
            return "missing_field"
        if not isinstance(body["sku"], str) or not self._int(body["seq"], 1) or not self._int(body["on_hand"], 0):
            return "wrong_type"
        return None

    # ---------------------------------------------------------------- state

    def reserved(self, sku: str, now: float) -> int:
        return sum(line["qty"] for r in self.reservations.values() if r.state(now) in ("held", "confirmed")
                   for line in r.lines if line["sku"] == sku)

    def item_view(self, sku: str, now: float) -> dict:
        item = self.items[sku]
        reserved = self.reserved(sku, now)
        return {"sku": sku, "name": item["name"], "stock": item["stock"], "reserved": reserved,
                "available": item["stock"] - reserved}

    def reservation_view(self, rid: str, now: float) -> dict:
        r = self.reservations[rid]
        return {"id": rid, "status": r.state(now), "customer": r.customer, "lines": r.lines}

    # ---------------------------------------------------------------- requests

    def add_item(self, raw) -> tuple[int, str | None]:
        """``(status, error code or None)`` of ``POST /items``; applies it."""
        bad = self.invalid_item(raw)
        if bad:
            return 400, bad
        body = json.loads(raw)
        if body["sku"] in self.items:
            return 409, "item_exists"
        self.items[body["sku"]] = {"name": body["name"], "stock": body["stock"], "count_seq": 0}
        return 201, None

    def reserve(self, key, raw, now: float) -> tuple[int, str | None, str | None]:
        """``(status, error code or None, id of the reservation answered or None)``. A new
        reservation is recorded by :meth:`created` once the service named its id."""
        bad = self.invalid_reservation(key, raw)
        if bad:
            return 400, bad, None
        body = json.loads(raw)
        if key in self.res_keys:
            rid = self.res_keys[key]
            if self.reservations[rid].body != body:
                return 409, "idempotency_conflict", None
            return 200, None, rid
        if any(line["sku"] not in self.items for line in body["lines"]):
            return 422, "unknown_item", None
        for line in body["lines"]:
            if self.items[line["sku"]]["stock"] - self.reserved(line["sku"], now) < line["qty"]:
                return 409, "insufficient_stock", None
        return 201, None, None

    def created(self, rid: str, key: str, raw, expires_at: float | None = None) -> None:
        body = json.loads(raw)
        hold = body.get("hold_seconds", self.hold)
        self.reservations[rid] = ModelReservation(
            rid, key, body, [{"sku": l["sku"], "qty": l["qty"]} for l in body["lines"]],
            masked_customer(body["customer"]), hold, expires_at=expires_at)
        self.res_keys[key] = rid

    def settle(self, rid: str, action: str, now: float) -> tuple[int, str | None]:
        r = self.reservations.get(rid)
        if r is None:
            return 404, "not_found"
        done = "confirmed" if action == "confirm" else "cancelled"
        state = r.state(now)
        if state == "expired":
            return 409, "reservation_expired"
        if state == done:
            return 200, None
        if state != "held":
            return 409, "not_held"
        r.status = done
        return 200, None

    def count(self, key, raw) -> tuple[int, str]:
        """``(status, "applied" | "stale" | "duplicate" or an error code)``; applies it."""
        bad = self.invalid_count(key, raw)
        if bad:
            return 400, bad
        body = json.loads(raw)
        if key in self.count_keys:
            return (200, "duplicate") if self.count_keys[key] == body else (409, "idempotency_conflict")
        item = self.items.get(body["sku"])
        if item is None:
            return 422, "unknown_item"
        self.count_keys[key] = body
        if body["seq"] > item["count_seq"]:
            item["stock"], item["count_seq"] = body["on_hand"], body["seq"]
            return 200, "applied"
        return 200, "stale"


# ------------------------------------------------------------------------------ shop


class Shop:
    """One service under test (restartable on the same state), its model and its records.

    ``answers`` holds every HTTP response; ``processes`` every service started (their output).
    Every request goes through the model first: an answer that differs from the model's fails
    the check with both.
    """

    def __init__(self, runner, gen: Gen, flags: tuple = (), state: Path | None = None,
                 hold: float = DEFAULT_HOLD):
        self.runner, self.gen, self.flags = runner, gen, tuple(str(f) for f in flags)
        self.state = state or runner.path("state")
        self.model = Model(hold)
        self.answers: list[Response] = []
        self.processes: list = []
        self.process = None
        self.lock = threading.Lock()

    # ------------------------------------------------------------ process

    def start(self, *extra) -> "Shop":
        self.process = self.runner.start(self.state, *self.flags, *extra)
        self.processes.append(self.process)
        return self

    @property
    def client(self) -> Client:
        return Client(self.process.port, self.process.no_verdict_if_starved, self.answers)

    def restart(self, kill: bool = True) -> None:
        """SIGKILL (or SIGTERM) the service and start it again on the same state."""
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.start()

    # ------------------------------------------------------------ requests

    def add_items(self, count: int, stock: int | None = None) -> list[str]:
        """Create ``count`` items (side by side); their skus."""
        items = [self.gen.item(stock) for _ in range(count)]
        for item in items:
            status, _ = self.model.add_item(json.dumps(item))
            assert status == 201, "generator bug: duplicate sku"
        answers = parallel(lambda item: self.client.post("/items", item), [(i,) for i in items])
        for item, answer in zip(items, answers):
            assert answer.status == 201, f"POST /items {item['sku']}: expected 201, got {answer.describe()}"
        return [item["sku"] for item in items]

    def reserve(self, key: str, body, raw: str | None = None, expect=(201, 200)) -> Response:
        """``POST /reservations``, checked against the model (status, and for a 200 the id of
        the original). ``raw``: the body as sent, if not ``json.dumps(body)``."""
        raw = raw if raw is not None else json.dumps(body)
        with self.lock:
            status, code, rid = self.model.reserve(key, raw, time.time())
            assert status in expect, f"generator bug: reservation {key} would be {status} {code}"
            answer = self.client.post("/reservations", raw, key)
            self._expect(answer, status, code, f"POST /reservations (key {key})")
            document = answer.json()
            if status == 201:
                assert isinstance(document, dict) and isinstance(document.get("id"), str), \
                    f"POST /reservations (key {key}): 201 without an id: {answer.describe()}"
                assert document["id"] not in self.model.reservations, \
                    f"POST /reservations (key {key}): new reservation reuses id {document['id']!r}"
                short = json.loads(raw).get("hold_seconds", self.model.hold) < 60
                expires = parse_time(document.get("expires_at")) if short else None
                assert not short or expires is not None, \
                    f"POST /reservations (key {key}): expires_at missing or not UTC ISO 8601 with ms: {answer.describe()}"
                self.model.created(document["id"], key, raw, expires)
            elif status == 200:
                assert isinstance(document, dict) and document.get("id") == rid, \
                    f"POST /reservations retried with key {key}: expected 200 naming {rid}, got {answer.describe()}"
        return answer

    def settle(self, rid: str, action: str) -> Response:
        with self.lock:
            status, code = self.model.settle(rid, action, time.time())
            answer = self.client.post(f"/reservations/{rid}/{action}")
            self._expect(answer, status, code, f"POST /reservations/{rid}/{action}")
            if status == 200:
                document = answer.json()
                assert isinstance(document, dict) and document.get("status") == self.model.reservations[rid].status, \
                    f"POST /reservations/{rid}/{action}: expected status {self.model.reservations[rid].status}, got {answer.describe()}"
        return answer

    def count(self, key: str, body, raw: str | None = None) -> Response:
        raw = raw if raw is not None else json.dumps(body)
        with self.lock:
            status, word = self.model.count(key, raw)
            answer = self.client.post("/stock-counts", raw, key)
            if status == 200:
                document = answer.json()
                assert answer.status == 200 and isinstance(document, dict) and document.get("status") == word, \
                    f"POST /stock-counts {raw.strip()} (key {key}): expected 200 status {word!r}, got {answer.describe()}"
            else:
                self._expect(answer, status, word, f"POST /stock-counts (key {key})")
        return answer

    @staticmethod
    def _expect(answer: Response, status: int, code: str | None, what: str) -> None:
        if code is not None:
            assert answer.status == status and answer.json() == {"error": code}, \
                f"{what}: expected {status} {{\"error\": \"{code}\"}}, got {answer.describe()}"
        else:
            assert answer.status == status, f"{what}: expected {status}, got {answer.describe()}"

    # ------------------------------------------------------------ verification

    def verify(self, what: str = "") -> None:
        """Every item and reservation the model knows answers as the model says (side by side).

        Requires every short hold to be decided: either past its ``expires_at`` or settled.
        """
        now = time.time()
        for r in self.model.reservations.values():
            if r.status == "held" and r.expires_at is not None and r.hold < 60:
                assert now > r.expires_at + 0.005, "check bug: verify() while a short hold may still be running"
        skus = sorted(self.model.items)
        rids = sorted(self.model.reservations)
        client = self.client
        items = parallel(lambda sku: client.get(f"/items/{sku}"), [(s,) for s in skus])
        docs = parallel(lambda rid: client.get(f"/reservations/{rid}"), [(r,) for r in rids])
        suffix = f" ({what})" if what else ""
        for sku, answer in zip(skus, items):
            expected = self.model.item_view(sku, now)
            got = answer.json()
            assert answer.status == 200 and isinstance(got, dict), f"GET /items/{sku}{suffix}: {answer.describe()}"
            shown = {name: got.get(name) for name in expected}
            assert shown == expected, f"GET /items/{sku}{suffix}: expected {expected}, got {got}"
        for rid, answer in zip(rids, docs):
            expected = self.model.reservation_view(rid, now)
            got = answer.json()
            assert answer.status == 200 and isinstance(got, dict), f"GET /reservations/{rid}{suffix}: {answer.describe()}"
            shown = {name: got.get(name) for name in expected}
            assert shown == expected, f"GET /reservations/{rid}{suffix}: expected {expected}, got {got}"

    def wait_past(self, moment: float) -> None:
        """Sleep until the clock is past ``moment`` (seconds since the epoch), plus 10 ms."""
        left = moment + 0.01 - time.time()
        if left > 0:
            time.sleep(left)

    # ------------------------------------------------------------ privacy

    def texts(self) -> dict[str, str]:
        """Everything the service showed or kept: answers, outputs, files under the state
        directory, its working directory and HOME."""
        found = {f"answer {i}": a.body.decode("utf-8", errors="replace") for i, a in enumerate(self.answers)}
        for i, p in enumerate(self.processes):
            found[f"stdout of run {i}"] = p.stdout
            found[f"stderr of run {i}"] = p.stderr
        for label, root in (("state", self.state), ("workspace", self.runner.workdir), ("home", self.runner.home)):
            for name, text in tree_text(root).items():
                found[f"{label}/{name}"] = text
        return found

    def assert_no_leaks(self, secrets: Secrets | None = None, what: str = "") -> None:
        secrets = secrets or self.gen.secrets
        bad = {place: secrets.leaks(text) for place, text in self.texts().items()}
        bad = {place: found for place, found in bad.items() if found}
        assert not bad, f"personal data leaked{' (' + what + ')' if what else ''}: " + "; ".join(
            f"{place}: {', '.join(found[:3])}" for place, found in list(bad.items())[:5])
