"""Seeded inputs, subscriber endpoints and an independent model of the ``relay`` specification.

Everything a gate check needs to *drive* the relay and *predict* what it must do lives here:

- :class:`Client`: plain HTTP/1.1 requests to the relay on 127.0.0.1 (``http.client``).
- :class:`Subscriber`: an HTTP endpoint on 127.0.0.1 that records every delivery it receives
  and answers according to a policy (acknowledge, fail with a status, reset the connection, or
  hold the request open until released); checks wait on it with bounded, event-driven waits.
- :class:`Gen`: seeded, realistic events (orders, customers, invoices) whose payloads carry
  personal data (emails, card numbers, nested and in free text), plus re-serialisations of a
  request that are the same JSON (member order, spacing, escapes).
- :class:`Model`: a small re-implementation of the final (E4) rules of the briefs: validation,
  idempotency (same key: duplicate if the same JSON, else conflict), staleness per ordering
  key, the subscriptions each event goes to, and redaction. It predicts responses and, per
  subscription, the events to be delivered and their order.

The generator never decides what the relay should do; the model does. Inputs of a gate active
from an early episode are valid under every later episode's rules (no stale versions, no
conflicting retries, no bad requests), so the reference passes every active gate after every
episode; :meth:`Model.post` raises if a check's input would break that.

FIFO sentinels: a subscription's deliveries are made one at a time in acceptance order, so once
a later event has been acknowledged, every delivery due before it has happened. Checks that
assert that something is NOT delivered (duplicates, stale events, re-sends after a restart) post
a sentinel event and wait for it instead of sleeping.
"""

from __future__ import annotations

import http.client
import json
import random
import re
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

#: Seconds a check waits for something the relay must do (deliver, acknowledge, answer).
WAIT = 15.0
#: Seconds a subscriber holds a request open at most (released earlier by the check).
HOLD_LIMIT = 60.0

# --------------------------------------------------------------------------- redaction

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
CARD = re.compile(r"(?<!\d)\d{4}([ -]?)\d{4}\1\d{4}\1\d{4}(?!\d)")


def mask_email(email: str) -> str:
    """``jane.doe@example.org`` -> ``j***@example.org``."""
    return f"{email[:1]}***@{email.rpartition('@')[2]}"


def mask_card(card: str) -> str:
    """``4111 1111 1111 1234`` -> ``****1234``."""
    return "****" + re.sub(r"\D", "", card)[-4:]


def redact(value):
    """The spec's redaction: in every string value (any depth; not object keys), emails, then
    card numbers, replaced by their masked forms."""
    if isinstance(value, str):
        return CARD.sub(lambda m: mask_card(m.group(0)), EMAIL.sub(lambda m: mask_email(m.group(0)), value))
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, dict):
        return {name: redact(item) for name, item in value.items()}
    return value


def personal_data(value) -> tuple[set[str], set[str]]:
    """``(emails lower-cased, card numbers as 16 digits)`` found in any string of ``value``."""
    emails, cards = set(), set()

    def walk(item):
        if isinstance(item, str):
            emails.update(m.group(0).lower() for m in EMAIL.finditer(item))
            cards.update(re.sub(r"\D", "", m.group(0)) for m in CARD.finditer(item))
        elif isinstance(item, list):
            for sub in item:
                walk(sub)
        elif isinstance(item, dict):
            for sub in item.values():
                walk(sub)
    walk(value)
    return emails, cards


_SEPARATORS = re.compile(r"[\s\-]")


def leaks(text: str, emails: set[str], cards: set[str]) -> list[str]:
    """Which of ``emails`` / ``cards`` occur in ``text`` (cards also with spaces or dashes)."""
    lowered, squeezed = text.lower(), _SEPARATORS.sub("", text)
    return sorted([e for e in emails if e in lowered] + [c for c in cards if c in squeezed])


# ------------------------------------------------------------------------------ client


@dataclass
class Response:
    """One HTTP response of the relay."""

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
    """HTTP requests to a relay on 127.0.0.1 (one connection per request)."""

    def __init__(self, port: int):
        self.port = port

    def request(self, method: str, path: str, body=None, headers: dict | None = None) -> Response:
        """Send a request; ``body`` is bytes/str as is, anything else JSON-encoded.

        A relay that does not answer within :data:`WAIT` seconds fails the check.
        """
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
            response = connection.getresponse()
            return Response(response.status, response.read(), {k.lower(): v for k, v in response.getheaders()})
        except (OSError, http.client.HTTPException) as exc:
            pytest.fail(f"{method} {path}: no HTTP answer from the relay ({exc.__class__.__name__}: {exc})",
                        pytrace=False)
        finally:
            connection.close()

    def subscribe(self, url: str, topics: list[str]) -> str:
        """``POST /subscriptions``; returns the subscription id (requires 201 and an id)."""
        response = self.request("POST", "/subscriptions", {"url": url, "topics": topics})
        body = response.json()
        assert response.status == 201 and isinstance(body, dict) and isinstance(body.get("id"), str), \
            f"POST /subscriptions: expected 201 with an id, got {response.describe()}"
        return body["id"]

    def post_event(self, key: str | None, body) -> Response:
        """``POST /events`` with ``Idempotency-Key: key`` (none if ``key`` is None)."""
        return self.request("POST", "/events", body, {"Idempotency-Key": key} if key is not None else {})

    def get(self, path: str) -> Response:
        return self.request("GET", path)


# -------------------------------------------------------------------------- subscriber

#: Policy actions besides an HTTP status: keep the request open; close it without answering.
HOLD, RESET = "hold", "reset"


@dataclass
class Delivery:
    """One request a subscriber received."""

    index: int
    """0-based position among the requests this subscriber received."""
    event: str | None
    """The delivered event's id: the body's ``id``."""
    delivery_id: str | None
    """``X-Relay-Delivery``."""
    attempt: str | None
    """``X-Relay-Attempt``."""
    replay: bool
    """``X-Relay-Replay: 1`` present."""
    body: bytes
    document: object
    received_at: float
    """``time.monotonic()`` when the request was read."""
    headers: dict = field(default_factory=dict)


def ack_all(delivery: Delivery) -> int | str:
    """Acknowledge everything."""
    return 200


def hold_after(count: int):
    """Acknowledge the first ``count`` requests, hold every later one."""
    return lambda delivery: 200 if delivery.index < count else HOLD


class FailFirst:
    """A policy failing the first ``n`` attempts of chosen events (by payload ``ref``)."""

    def __init__(self, failures: dict[str, list]):
        self.failures = failures  # ref -> actions for its first attempts, e.g. [503, RESET]
        self.seen: dict[str, int] = {}

    def __call__(self, delivery):
        ref = ((delivery.document or {}).get("payload") or {}).get("ref") if isinstance(delivery.document, dict) else None
        if delivery.replay or ref not in self.failures:
            return 200
        count = self.seen.get(ref, 0)
        self.seen[ref] = count + 1
        actions = self.failures[ref]
        return actions[count] if count < len(actions) else 200


class Subscriber:
    """A subscriber endpoint on 127.0.0.1: records deliveries, answers by ``policy``.

    ``received``: every request, in arrival order; ``acked``: the ones answered 2xx, in the
    order of the answers. The policy may be replaced at any time.
    """

    def __init__(self, name: str, policy=None):
        self.name = name
        self.policy = policy or ack_all
        self.received: list[Delivery] = []
        self.acked: list[Delivery] = []
        self._changed = threading.Condition()
        self._release_status: int | None = None
        self._closed = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                owner._handle(self, body)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/hooks/{self.name}"

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._changed:
            delivery = Delivery(
                index=len(self.received),
                event=document.get("id") if isinstance(document, dict) else None,
                delivery_id=headers.get("x-relay-delivery"), attempt=headers.get("x-relay-attempt"),
                replay=headers.get("x-relay-replay") == "1", body=body, document=document,
                received_at=time.monotonic(), headers=headers,
            )
            self.received.append(delivery)
            self._changed.notify_all()
            action = self.policy(delivery)
            if action == HOLD:
                deadline = time.monotonic() + HOLD_LIMIT
                while self._release_status is None and not self._closed and time.monotonic() < deadline:
                    self._changed.wait(0.05)
                action = self._release_status or 503
        handler.close_connection = True
        if action == RESET:
            return
        # Counted as acknowledged before the answer is written: the relay may start its next
        # delivery (another handler thread) as soon as it reads the answer, and `acked` must
        # keep the order in which the answers were given.
        acked = 200 <= int(action) < 300
        if acked:
            with self._changed:
                self.acked.append(delivery)
                self._changed.notify_all()
        try:
            handler.send_response(int(action))
            handler.send_header("Content-Length", "0")
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.flush()
        except OSError:
            if acked:
                with self._changed:
                    self.acked.remove(delivery)
                    self._changed.notify_all()

    def release(self, status: int = 503) -> None:
        """Answer every held request (now and later ones the policy holds) with ``status``."""
        with self._changed:
            self._release_status = status
            self._changed.notify_all()

    def rearm(self, policy) -> None:
        """New policy; holding works again (after :meth:`release`)."""
        with self._changed:
            self.policy = policy
            self._release_status = None

    def wait_for(self, predicate, what: str, timeout: float = WAIT) -> None:
        """Wait until ``predicate(self)`` holds; fail the check with ``what`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"subscriber {self.name}: timed out after {timeout:g} s waiting for {what} "
                                f"(received {len(self.received)}, acknowledged {len(self.acked)})",
                                pytrace=False)
                self._changed.wait(min(left, 0.5))

    def wait_acked(self, event_id: str, what: str | None = None) -> None:
        """Wait until a delivery of ``event_id`` has been acknowledged."""
        self.wait_for(lambda s: any(d.event == event_id for d in s.acked),
                      what or f"the delivery of {event_id}")

    def wait_received(self, count: int) -> None:
        """Wait until at least ``count`` requests have arrived."""
        self.wait_for(lambda s: len(s.received) >= count, f"{count} requests")

    def acked_events(self, replays: bool = False) -> list[str | None]:
        """Event ids of acknowledged deliveries (replays only, or originals only), in order."""
        return [d.event for d in self.acked if d.replay == replays]

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()


# --------------------------------------------------------------------------- generator

TOPICS = ("order.created", "order.paid", "customer.updated", "invoice.sent", "shipment.dispatched")
FIRST = ("jane", "omar", "li", "ana", "pierre", "fatima", "kenji", "olga", "noah", "zoë",
         "amara", "diego", "inès", "yusuf", "mia", "tomas", "priya", "lars")
LAST = ("doe", "haddad", "wei", "silva", "martin", "khan", "sato", "ivanova", "smith", "okafor",
        "lopez", "moreau", "demir", "rossi", "novak", "patel", "berg", "taylor")
DOMAINS = ("example.org", "example.com", "example.net", "mail.example.co.uk", "my-shop.example.com")
#: How the parts of an email's local part are joined: every character class of an address.
LOCAL_JOINS = (".", ".", "_", "-", "+", "%")


def rng_for(seed: int, salt: str) -> random.Random:
    """A ``random.Random`` seeded from the trial seed plus a per-check salt."""
    return random.Random(seed * 1_000_003 + zlib.crc32(salt.encode("utf-8")))


class Gen:
    """Seeded realistic events; every payload holds personal data and a unique ``ref``."""

    def __init__(self, seed: int, salt: str):
        self.rng = rng_for(seed, salt)
        self.salt = salt
        self._n = 0
        self._keys = 0

    def idempotency_key(self) -> str:
        """A fresh idempotency key such as ``idem-0007-3fa2c1``."""
        self._keys += 1
        return f"idem-{self._keys:04d}-{self.rng.getrandbits(24):06x}"

    def customer(self) -> dict:
        first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
        local = f"{first}{self.rng.choice(LOCAL_JOINS)}{last}{self.rng.randrange(10, 100)}"
        local = local.replace("ë", "e").replace("è", "e")
        if self.rng.random() < 0.2:
            local = local.upper()
        return {"name": f"{first.title()} {last.title()}", "email": f"{local}@{self.rng.choice(DOMAINS)}"}

    def card(self) -> str:
        digits = self.rng.choice("45") + "".join(self.rng.choice("0123456789") for _ in range(15))
        sep = self.rng.choice(["", "", " ", "-"])
        return sep.join(digits[i:i + 4] for i in range(0, 16, 4))

    def not_a_card(self) -> str:
        """Digits a card mask must leave alone: 15 or 17 to 20 digits, or 16 digits whose
        groups are joined by different separators (DESIGN.md: not a card number)."""
        kind = self.rng.randrange(3)
        if kind == 2:
            digits = "".join(self.rng.choice("0123456789") for _ in range(16))
            return f"{digits[:4]} {digits[4:8]}-{digits[8:12]} {digits[12:]}"
        length = 15 if kind == 0 else self.rng.randint(17, 20)
        return "".join(self.rng.choice("0123456789") for _ in range(length))

    def payload(self, topic: str) -> dict:
        """A payload for ``topic`` with a unique ``ref`` and personal data in several places."""
        self._n += 1
        customer = self.customer()
        ref = f"{self.salt[:3]}-{self._n:04d}-{self.rng.getrandbits(16):04x}"
        payload: dict = {"ref": ref, "customer": customer}
        if topic.startswith("order"):
            payload["items"] = [{"sku": f"SKU-{self.rng.randrange(1000, 9999)}", "qty": self.rng.randint(1, 4)}
                                for _ in range(self.rng.randint(1, 3))]
            payload["amount_cents"] = self.rng.randint(100, 90_000)
            payload["payment"] = {"card": self.card(), "method": "card"}
        elif topic == "customer.updated":
            payload["changes"] = ["email", self.rng.choice(["address", "phone", "name"])]
            payload["previous_email"] = self.customer()["email"]
        elif topic == "invoice.sent":
            payload["note"] = (f"Invoice sent to {customer['email']}, paid with card "
                               f"{self.card()} on file.")
        else:
            payload["contacts"] = [self.customer()["email"], {"backup": self.customer()["email"]}]
            payload["tracking"] = f"parcel {self.not_a_card()} ({self.not_a_card()})"
        if self.rng.random() < 0.3:
            payload["reference"] = self.not_a_card()
        if self.rng.random() < 0.4:  # JSON's other values: null, booleans, fractions
            payload["coupon"] = self.rng.choice([None, False, True, 0.5])
        if self.rng.random() < 0.3:
            payload["comment"] = f"cc {self.customer()['email']} and {self.customer()['email']}"
        return payload

    def event(self, topic: str | None = None, key: str | None = None, version: int | None = None) -> dict:
        """A request body for ``POST /events``."""
        topic = topic or self.rng.choice(TOPICS)
        body = {"topic": topic, "payload": self.payload(topic)}
        if key is not None:
            body["key"], body["version"] = key, version
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
        return " " + json.dumps(reorder(body), ensure_ascii=True) + "\n"


# ------------------------------------------------------------------------------- model


@dataclass
class ModelEvent:
    key: str
    body: dict
    status: str  # "accepted" or "stale"
    subscriptions: list[str]


class Model:
    """The final (E4) rules of the briefs, for predicting responses and deliveries.

    Subscriptions are named by the check (their product ids are mapped separately); events by
    their idempotency key.
    """

    def __init__(self):
        self.subscriptions: dict[str, list[str]] = {}
        self.events: dict[str, ModelEvent] = {}
        self.order: list[str] = []
        self.newest: dict[str, int] = {}

    def subscribe(self, name: str, topics: list[str]) -> None:
        self.subscriptions[name] = list(topics)

    @staticmethod
    def invalid(key: str | None, raw: str | bytes) -> tuple[int, str] | None:
        """``(status, code)`` if the request is rejected by validation, else None."""
        if not key:
            return 400, "missing_idempotency_key"
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, "malformed_json"
        if not isinstance(body, dict):
            return 400, "malformed_json"
        if "topic" not in body or "payload" not in body or ("key" in body) != ("version" in body):
            return 400, "missing_field"
        topic, payload = body["topic"], body["payload"]
        if not isinstance(topic, str) or not topic or not isinstance(payload, dict):
            return 400, "wrong_type"
        if "key" in body:
            key_, version = body["key"], body["version"]
            if (not isinstance(key_, str) or not key_ or not isinstance(version, int)
                    or isinstance(version, bool) or version < 1):
                return 400, "wrong_type"
        return None

    def post(self, key: str | None, raw: str | bytes,
             allow: tuple[str, ...] = ("accepted", "duplicate")) -> tuple[int, str, str | None]:
        """Apply one ``POST /events``; return ``(HTTP status, status word or error code,
        idempotency key of the event the answer names)``.

        ``allow`` lists the outcomes the check means its input to have; any other raises
        AssertionError (a generator bug, reported as such).
        """
        rejection = self.invalid(key, raw)
        if rejection is not None:
            outcome = (*rejection, None)
        else:
            body = json.loads(raw)
            fields = {name: body[name] for name in ("topic", "payload", "key", "version") if name in body}
            earlier = self.events.get(key)
            if earlier is not None:
                outcome = (200, "duplicate", key) if earlier.body == fields else (409, "idempotency_conflict", None)
            elif "key" in fields and fields["version"] <= self.newest.get(fields["key"], 0):
                self.events[key] = ModelEvent(key, fields, "stale", [])
                self.order.append(key)
                outcome = (202, "stale", key)
            else:
                if "key" in fields:
                    self.newest[fields["key"]] = fields["version"]
                subs = [name for name, topics in self.subscriptions.items() if fields["topic"] in topics]
                self.events[key] = ModelEvent(key, fields, "accepted", subs)
                self.order.append(key)
                outcome = (202, "accepted", key)
        assert outcome[1] in allow, f"generator bug: POST /events with key {key!r} would be {outcome[1]}"
        return outcome

    def deliveries(self, name: str) -> list[str]:
        """Idempotency keys of the events due to subscription ``name``, in delivery order."""
        return [key for key in self.order if name in self.events[key].subscriptions]


# --------------------------------------------------------------------------- scenarios


class Scenario:
    """A relay, its subscribers and the model, driven together by a check.

    ``ids`` maps idempotency keys to the relay's event ids (from its answers); ``keys`` the
    reverse. ``responses`` keeps every HTTP response (for the privacy checks).
    """

    def __init__(self, relay, endpoints, gen: Gen, state=None, flags: tuple = ()):
        self.runner, self.endpoints, self.gen = relay, endpoints, gen
        self.state = state or relay.path("state")
        self.flags = tuple(flags)
        self.model = Model()
        self.process = None
        self.subscribers: dict[str, Subscriber] = {}
        self.sub_ids: dict[str, str] = {}
        self.ids: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        self.responses: list[Response] = []
        self.processes = []

    # lifecycle -----------------------------------------------------------------------

    def start(self) -> "Scenario":
        self.process = self.runner.start(self.state, *self.flags)
        self.processes.append(self.process)
        return self

    def kill(self) -> None:
        self.process.kill()

    def restart(self, kill: bool = True) -> None:
        """Stop the relay (SIGKILL, or SIGTERM when ``kill`` is false) and start it again."""
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.start()

    @property
    def client(self) -> Client:
        return Client(self.process.port)

    # requests --------------------------------------------------------------------------

    def subscribe(self, name: str, topics: list[str], policy=None) -> Subscriber:
        endpoint = self.endpoints(name, policy)
        self.subscribers[name] = endpoint
        self.sub_ids[name] = self.client.subscribe(endpoint.url, topics)
        self.model.subscribe(name, topics)
        return endpoint

    def post(self, key: str | None, body, raw: str | None = None,
             allow: tuple[str, ...] = ("accepted", "duplicate")) -> Response:
        """POST an event and check the answer against the model: status code, and for an
        accepted, stale or duplicate event the id (a duplicate names the original event)."""
        raw = raw if raw is not None else json.dumps(body)
        status, word, named = self.model.post(key, raw, allow)
        response = self.client.post_event(key, raw)
        self.responses.append(response)
        document = response.json()
        assert response.status == status, (
            f"POST /events (key {key}): expected HTTP {status} ({word}), got {response.describe()}")
        if named is not None:
            assert isinstance(document, dict) and isinstance(document.get("id"), str), \
                f"POST /events (key {key}): answer has no event id: {response.describe()}"
            if word in ("accepted", "stale"):
                assert document["id"] not in self.keys, \
                    f"POST /events (key {key}): event id {document['id']} was already given to another event"
                self.ids[key], self.keys[document["id"]] = document["id"], key
            else:
                assert document["id"] == self.ids[named], (
                    f"POST /events (key {key}): a duplicate must name the original event "
                    f"{self.ids[named]}, got {document['id']}")
        return response

    def new_event(self, topic: str | None = None, key: str | None = None, version: int | None = None,
                  allow: tuple[str, ...] = ("accepted",)) -> str:
        """Generate, POST and return the idempotency key of a new event."""
        idem = self.gen.idempotency_key()
        self.post(idem, self.gen.event(topic, key, version), allow=allow)
        return idem

    def settle(self, names=None) -> None:
        """Post a sentinel event to each subscription (its first topic) and wait until it is
        acknowledged: every delivery due before it has then been made (FIFO)."""
        for name in names or list(self.subscribers):
            idem = self.new_event(self.model.subscriptions[name][0])
            for other, endpoint in self.subscribers.items():
                if other in self.model.events[idem].subscriptions:
                    endpoint.wait_acked(self.ids[idem], f"the sentinel event {self.ids[idem]}")

    def quiesce(self) -> None:
        """Settle, then wait until the relay has recorded every due delivery as delivered (no
        dead letters expected): a kill now must not cause any delivery to be sent again."""
        self.settle()
        for name in self.subscribers:
            self.wait_recorded(name, len(self.expected(name)))

    def wait_recorded(self, name: str, delivered: int) -> None:
        """Poll ``GET /subscriptions/{id}`` (every 10 ms, at most :data:`WAIT` s) until it counts
        ``delivered`` deliveries as delivered: acknowledged AND recorded by the relay."""
        sub_id = self.sub_ids[name]
        deadline = time.monotonic() + WAIT
        while True:
            doc = self.client.get(f"/subscriptions/{sub_id}").json()
            if isinstance(doc, dict) and doc.get("delivered") == delivered:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"GET /subscriptions/{sub_id} did not count {delivered} delivered deliveries "
                            f"within {WAIT:g} s (last answer {doc})", pytrace=False)
            time.sleep(0.01)

    # expectations ----------------------------------------------------------------------

    def expected(self, name: str) -> list[str]:
        """Relay event ids due to subscription ``name``, in order."""
        return [self.ids[key] for key in self.model.deliveries(name)]

    def assert_delivered_once_in_order(self, name: str, what: str = "") -> None:
        """The acknowledged (non-replay) deliveries of ``name`` are exactly the expected events,
        each once, in acceptance order."""
        got = self.subscribers[name].acked_events()
        want = self.expected(name)
        if got == want:
            return
        extra = sorted({e for e in got if got.count(e) > 1})
        missing = [e for e in want if e not in got]
        unknown = [e for e in got if e not in want]
        detail = []
        if extra:
            detail.append(f"delivered more than once: {extra[:5]}")
        if missing:
            detail.append(f"never acknowledged: {missing[:5]}")
        if unknown:
            detail.append(f"not due to this subscription: {unknown[:5]}")
        if not detail:
            first = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
            detail.append(f"out of order from position {first + 1}: got {got[first:first + 3]}, "
                          f"expected {want[first:first + 3]}")
        raise AssertionError(f"subscription {name}{what}: {len(got)} deliveries acknowledged for "
                             f"{len(want)} events due; " + "; ".join(detail))


def port_is_closed(port: int) -> bool:
    """True when nothing accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) != 0
