"""Seeded event generation and an independent model of the ledger specification.

Everything a gate check needs to *build* an input and *predict* the product's
state lives here, so that the checks themselves stay short:

- :class:`EventGen` produces realistic, seeded events (``acct-0003``,
  ``name.surname@example.org``, 16-digit card numbers, ISO UTC ``ts`` in order)
  that are valid under every episode's rules: every account opens with a large
  credit and debits are kept small enough that no debit (nor a re-sent copy of
  one) can ever overdraw, and time moves forward in small steps so nothing is
  too late unless a check asks for it.
- :class:`Model` is a tiny re-implementation of the final (E4) classification
  rules of the briefs: a line that is not a well-formed event is rejected;
  a well-formed event is a duplicate, else late, else an overdraft (rejected),
  else applied. It computes the expected counts, balances, hourly windows and
  reject records of any sequence of invocations.
- A few helpers render and read the product's files.

The generator never decides what the product should do; the model does. Checks
assert that their generated inputs contain no unintended rejects or late
events (see :meth:`Model.ingest`), so a generator bug shows up as a check
error rather than as a silently wrong expectation.
"""

from __future__ import annotations

import json
import random
import re
import time
import zlib
from datetime import datetime
from pathlib import Path

#: Default allowed lateness in seconds (E3).
DEFAULT_LATENESS = 3600

#: An account's first event is a credit of at least this many cents, and no
#: debit ever takes a generated account's balance below it.
FLOOR = 5_000

#: Largest generated debit: never more than FLOOR, so any debit (original,
#: re-sent copy or late) fits in every generated account's balance.
MAX_DEBIT = FLOOR

FIRST_NAMES = (
    "jane", "omar", "li", "ana", "pierre", "fatima", "kenji", "olga", "noah",
    "amara", "diego", "ines", "yusuf", "mia", "tomas", "priya", "lars", "zoe",
)
SURNAMES = (
    "doe", "haddad", "wei", "silva", "martin", "khan", "sato", "ivanova",
    "smith", "okafor", "lopez", "moreau", "demir", "rossi", "novak", "patel",
    "berg", "taylor",
)
DOMAINS = ("example.org", "example.com", "example.net")

TS_RE = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\Z")
REQUIRED = ("id", "account", "type", "amount", "ts")


# --------------------------------------------------------------------------- time


def iso(epoch: int) -> str:
    """Format epoch seconds as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def epoch(ts: str) -> int:
    """Parse ``YYYY-MM-DDTHH:MM:SSZ`` into epoch seconds (``fromisoformat``: 20x ``strptime``'s speed)."""
    return int(datetime.fromisoformat(ts).timestamp())


def _real_time(ts: str) -> bool:
    """True for a string in the exact format ``YYYY-MM-DDTHH:MM:SSZ`` naming a real time."""
    if not TS_RE.match(ts):
        return False
    try:
        datetime.fromisoformat(ts)
    except ValueError:
        return False
    return True


def hour_key(ts: str) -> str:
    """The hourly window key of an event time: ``YYYY-MM-DDTHH:00:00Z``."""
    return ts[:13] + ":00:00Z"


# ------------------------------------------------------------------------ masking


def mask_email(email: str) -> str:
    """``jane.doe@example.org`` -> ``j***@example.org``: the first character of the local part
    (which ends at the last ``@``), ``***@``, the domain; ``***`` for a value without ``@``."""
    local, at, domain = email.rpartition("@")
    return f"{local[:1]}***@{domain}" if at else "***"


def mask_card(card: str) -> str:
    """``4111111111111111`` -> ``****1111``: ``****`` and the last four digits among its characters."""
    return "****" + "".join(char for char in card if char in "0123456789")[-4:]


# ---------------------------------------------------------------------- generator


def rng_for(seed: int, salt: str) -> random.Random:
    """A ``random.Random`` seeded from the trial seed plus a per-check salt."""
    return random.Random(seed * 1_000_003 + zlib.crc32(salt.encode("utf-8")))


class EventGen:
    """Seeded generator of realistic events valid under every episode's rules.

    Events come out in time order (``step`` = 1..12 s apart by default). The
    generator tracks the balance of every account as if each event it returns
    from :meth:`event` were applied, and keeps every balance >= ``FLOOR``
    after an account's opening credit, while debits are at most ``MAX_DEBIT``.
    Events made with :meth:`stray` do not count towards the balances (use them
    for events that must not be applied, such as too-late ones).
    """

    def __init__(self, seed: int, salt: str, n_accounts: int = 6):
        self.rng = rng_for(seed, salt)
        numbers = self.rng.sample(range(1, 10_000), n_accounts)
        self.accounts = [f"acct-{n:04d}" for n in numbers]
        self.customers = {acct: self._customer() for acct in self.accounts}
        # Some day in 2024, at a random second, so windows cross hour boundaries.
        self.clock = epoch("2024-01-01T00:00:00Z") + self.rng.randrange(360) * 86_400
        self.clock += self.rng.randrange(86_400)
        self.balances: dict[str, int] = {}
        self._ids: set[str] = set()

    def _customer(self) -> tuple[str, str]:
        first = self.rng.choice(FIRST_NAMES)
        last = self.rng.choice(SURNAMES)
        email = f"{first}.{last}{self.rng.randrange(10, 100)}@{self.rng.choice(DOMAINS)}"
        card = self.rng.choice("45") + "".join(self.rng.choice("0123456789") for _ in range(15))
        return email, card

    def new_id(self) -> str:
        """A fresh, unique event id such as ``evt-00017-3fa2c1``."""
        while True:
            event_id = f"evt-{len(self._ids) + 1:05d}-{self.rng.getrandbits(24):06x}"
            if event_id not in self._ids:
                self._ids.add(event_id)
                return event_id

    def tick(self, low: int = 1, high: int = 12) -> int:
        """Advance the clock by a random step and return the new time."""
        self.clock += self.rng.randint(low, high)
        return self.clock

    def make(self, account: str, kind: str, amount: int, ts: int, event_id: str | None = None) -> dict:
        """Build one event dict (with the account's customer email and card)."""
        email, card = self.customers[account]
        return {
            "id": event_id or self.new_id(),
            "account": account,
            "type": kind,
            "amount": amount,
            "ts": iso(ts),
            "email": email,
            "card": card,
        }

    def event(self, account: str | None = None, ts: int | None = None) -> dict:
        """The next in-order event, counted towards the tracked balances."""
        account = account or self.rng.choice(self.accounts)
        balance = self.balances.get(account)
        if balance is None:
            kind, amount = "credit", self.rng.randint(20_000, 90_000)
        elif balance - FLOOR >= 100 and self.rng.random() < 0.45:
            kind, amount = "debit", self.rng.randint(1, min(MAX_DEBIT, balance - FLOOR))
        else:
            kind, amount = "credit", self.rng.randint(100, 9_000)
        self.balances[account] = (balance or 0) + (amount if kind == "credit" else -amount)
        return self.make(account, kind, amount, self.tick() if ts is None else ts)

    def stray(self, ts: int, account: str | None = None) -> dict:
        """An event NOT counted towards the balances (for events that will not apply).

        It targets an account that already has its opening credit, and its
        amount is at most ``MAX_DEBIT``, so even as a debit it never overdraws.
        """
        opened = [acct for acct in self.accounts if acct in self.balances]
        account = account or self.rng.choice(opened)
        kind = self.rng.choice(("credit", "debit"))
        return self.make(account, kind, self.rng.randint(1, MAX_DEBIT), ts)

    def stream(self, n: int) -> list[dict]:
        """``n`` in-order events; the first events open every account."""
        events = [self.event(account=acct) for acct in self.accounts[:n]]
        events += [self.event() for _ in range(n - len(events))]
        return events

    def with_duplicates(
        self, events: list[dict], count: int, min_gap: int, max_gap: int | None = None,
        restamp: bool = False,
    ) -> list[dict]:
        """Return ``events`` with ``count`` re-sent copies inserted.

        Each copy lands ``min_gap`` to ``max_gap`` (default: any number of)
        positions after its original, so duplicates can span batch and
        checkpoint boundaries. Copies keep their original (older) ``ts``, so
        they are out of time order, unless ``restamp``: then a copy carries the
        time of the event just before it (a re-delivery stamped on re-send).
        """
        out = list(events)
        for _ in range(count):
            src = self.rng.randrange(0, len(out) - min_gap)
            last = len(out) if max_gap is None else min(len(out), src + max_gap)
            pos = self.rng.randrange(src + min_gap, last + 1)
            copy = dict(out[src])
            if restamp:
                copy["ts"] = out[pos - 1]["ts"]
            out.insert(pos, copy)
        return out


# -------------------------------------------------------------------------- model


class Model:
    """An independent model of the product's state (final, E4 rules).

    Classification of each non-blank line, in order: rejected if not a
    well-formed event (first matching code of malformed_json, missing_field,
    wrong_type, unknown_type, non_positive_amount); then duplicate (id seen:
    applied or dead-lettered); late (``ts`` < greatest applied ``ts`` -
    lateness); rejected as overdraft (a debit larger than the balance);
    applied. Generated inputs never rely on where ``overdraft`` sits relative
    to duplicate and late (no re-sent or late debit exceeds its balance).
    """

    def __init__(self):
        self.balances: dict[str, int] = {}
        self.windows: dict[str, dict[str, dict[str, int]]] = {}
        self.seen: set[str] = set()
        self.max_ts: int | None = None
        self.applied: list[dict] = []
        self.dead: list[dict] = []

    # classification -----------------------------------------------------------

    @staticmethod
    def malformation(raw: str | bytes) -> tuple[str | None, object]:
        """Return ``(reason or None, parsed line)``: why a line is not a well-formed event.

        ``raw`` is a line of text or of bytes (bytes that are not UTF-8 are not JSON: RFC 8259).
        """
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            event = json.loads(text)
        except (ValueError, RecursionError):
            return "malformed_json", None
        if not isinstance(event, dict):
            return "malformed_json", None
        if any(field not in event for field in REQUIRED):
            return "missing_field", event
        amount = event["amount"]
        strings = ["id", "account", "type", "ts"] + [f for f in ("email", "card") if f in event]
        if (
            not all(isinstance(event[f], str) for f in strings)
            or not isinstance(amount, int)
            or isinstance(amount, bool)
            or not _real_time(event["ts"])
        ):
            return "wrong_type", event
        if event["type"] not in ("credit", "debit"):
            return "unknown_type", event
        if amount <= 0:
            return "non_positive_amount", event
        return None, event

    def ingest(
        self,
        lines: list[str],
        lateness: int = DEFAULT_LATENESS,
        allow: tuple[str, ...] = ("applied", "duplicate"),
    ) -> dict:
        """Process one invocation's input lines; return its counts and outcomes.

        ``allow`` lists the outcomes the caller intends its input to contain;
        any other outcome raises AssertionError (a generator bug, reported as
        such instead of silently changing the expectation).

        Returns ``{"counts": {...}, "outcomes": [...], "rejects": [...]}`` where
        ``outcomes`` has one entry per input line (``None`` for blank lines)
        and ``rejects`` the expected ``rejects.jsonl`` records.
        """
        counts = dict.fromkeys(("applied", "duplicate", "late", "rejected"), 0)
        outcomes: list[str | None] = []
        rejects: list[dict] = []
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                outcomes.append(None)
                continue
            reason, event = self.malformation(raw)
            if reason is None:
                if event["id"] in self.seen:
                    outcome = "duplicate"
                elif self.max_ts is not None and epoch(event["ts"]) < self.max_ts - lateness:
                    outcome = "late"
                    self.seen.add(event["id"])
                    self.dead.append(event)
                elif event["type"] == "debit" and event["amount"] > self.balances.get(event["account"], 0):
                    reason = "overdraft"
                else:
                    outcome = "applied"
                    self._apply(event)
            if reason is not None:
                outcome = "rejected"
                event_id = event.get("id") if isinstance(event, dict) else None
                rejects.append({"line": number, "reason": reason,
                                "id": event_id if isinstance(event_id, str) else None})
            assert outcome in allow, f"generator bug: line {number} would be {outcome}: {raw}"
            counts[outcome] += 1
            outcomes.append(outcome)
        return {"counts": counts, "outcomes": outcomes, "rejects": rejects}

    def _apply(self, event: dict) -> None:
        self.seen.add(event["id"])
        self.applied.append(event)
        amount = event["amount"]
        signed = amount if event["type"] == "credit" else -amount
        self.balances[event["account"]] = self.balances.get(event["account"], 0) + signed
        ts = epoch(event["ts"])
        self.max_ts = ts if self.max_ts is None else max(self.max_ts, ts)
        window = self.windows.setdefault(event["account"], {}).setdefault(
            hour_key(event["ts"]), {"count": 0, "credits": 0, "debits": 0, "net": 0}
        )
        window["count"] += 1
        window["credits" if event["type"] == "credit" else "debits"] += amount
        window["net"] = window["credits"] - window["debits"]

    # expected files ------------------------------------------------------------

    def balances_text(self) -> str:
        """The exact expected text of ``balances.json``."""
        return render({"accounts": self.balances})

    def windows_text(self) -> str:
        """The exact expected text of ``windows.json``."""
        return render({"windows": self.windows})


# ------------------------------------------------------------ bad lines, mixed inputs


def bad_line(gen: EventGen, kind: str) -> str:
    """One bad input line of the given kind, built around a fresh event of ``gen``.

    The event is not counted in the generator's balances. Kinds are named
    after the reason code they must get; ``+`` marks lines with several
    faults, where the first code in the spec's order wins.
    """
    account = gen.rng.choice([acct for acct in gen.accounts if acct in gen.balances])
    event = gen.make(account, "credit", gen.rng.randint(100, 900), gen.clock)
    ts = event["ts"]
    if kind == "malformed_json":
        return json.dumps(event)[: gen.rng.randint(10, 40)]
    if kind == "malformed_json/array":
        return json.dumps([event["id"], event["account"], event["amount"]])
    if kind == "missing_field":
        del event[gen.rng.choice(("account", "type", "amount", "ts"))]
    elif kind == "missing_field/id":
        del event["id"]
    elif kind == "missing_field+unknown_type":
        del event["ts"]
        event["type"] = "refund"
    elif kind == "wrong_type/string":
        event["amount"] = str(event["amount"])
    elif kind == "wrong_type/bool":
        event["amount"] = True
    elif kind == "wrong_type/float":
        event["amount"] = event["amount"] + 0.5
    elif kind == "wrong_type/ts":
        event["ts"] = event["ts"].replace("T", " ").rstrip("Z")
    elif kind == "wrong_type/ts_shape":  # parseable by a lenient parser, not the exact format
        short = next((ts[:i] + ts[i + 1:] for i in (5, 8, 11) if ts[i] == "0"), ts.lower())
        event["ts"] = gen.rng.choice((ts.lower(), short))  # e.g. 2024-05-01t09:00:00z, 2024-5-01T09:00:00Z
    elif kind == "wrong_type/ts_offset":
        event["ts"] = gen.rng.choice((ts[:-1] + "+00:00", ts.replace("-", "/"), ts + " "))
    elif kind == "wrong_type/id":
        event["id"] = gen.rng.choice((gen.rng.randint(1, 10**6), [event["id"]], {"id": event["id"]}))
    elif kind == "wrong_type/date":
        event["ts"] = event["ts"][:5] + "02-30" + event["ts"][10:]  # right shape, no such day
    elif kind == "wrong_type/null":
        event[gen.rng.choice(("account", "type", "amount"))] = None
    elif kind == "wrong_type/email":
        event["email"] = gen.rng.randint(1, 10**6)
    elif kind == "wrong_type+non_positive":
        event["ts"] = event["ts"][:-1] + ".000Z"
        event["amount"] = 0
    elif kind == "unknown_type":
        event["type"] = gen.rng.choice(("refund", "Credit", "transfer"))
    elif kind == "non_positive_amount":
        event["amount"] = gen.rng.choice((0, -gen.rng.randint(1, 500)))
    elif kind == "overdraft":
        event.update(type="debit", amount=gen.balances[account] + gen.rng.randint(1, 50))
    elif kind == "overdraft/new_account":
        event.update(account="acct-0000", type="debit", amount=gen.rng.randint(1, 50))
    else:
        raise ValueError(kind)
    return json.dumps(event)


REASON_KINDS = (
    "malformed_json", "malformed_json/array", "missing_field", "missing_field/id",
    "missing_field+unknown_type", "wrong_type/string", "wrong_type/bool", "wrong_type/float",
    "wrong_type/ts", "wrong_type/ts_shape", "wrong_type/ts_offset", "wrong_type/id", "wrong_type/date", "wrong_type/null", "wrong_type/email",
    "wrong_type+non_positive", "unknown_type", "non_positive_amount", "overdraft",
    "overdraft/new_account",
)


def raw_bad_line(gen: EventGen, kind: str) -> bytes:
    """One bad line at the byte or structure level (bytes), around a fresh event of ``gen``.

    Every kind has one reason code under the E4 brief (the model decides it): bytes that are
    not UTF-8, a NUL byte, nesting deeper than any parser's recursion limit, JSON that is not
    an object, junk nested in a field, numbers that are not integers, duplicate keys.
    """
    account = gen.rng.choice([acct for acct in gen.accounts if acct in gen.balances])
    event = gen.make(account, "credit", gen.rng.randint(100, 900), gen.clock)
    text = json.dumps(event)
    if kind == "invalid_utf8":  # a Latin-1 byte inside the id: not UTF-8, so not JSON
        return text.replace(event["id"], event["id"] + "\xe9").encode("latin-1")
    if kind == "invalid_utf8/lone":
        return b"\xff\xfe" + text.encode("utf-8")
    if kind == "nul":
        return text.replace('"type"', '"ty\x00pe"').encode("utf-8")
    if kind == "deep":
        return ("[" * 100_000 + "]" * 100_000).encode("ascii")
    if kind == "scalar":
        return gen.rng.choice((b"null", b"42", b'"credit"', b"true", b"[]"))
    if kind == "empty_object":
        return b"{}"
    if kind == "nested_junk":
        field = gen.rng.choice(("id", "account", "type", "ts"))
        event[field] = {"value": event[field], "junk": [1, [2, {"x": None}]]}
    elif kind == "float_integral":  # a float equal to an integer is still not an integer
        event["amount"] = float(event["amount"])
    elif kind == "float_inf":
        event["amount"] = 1e400
    elif kind == "nan":
        return text.replace(f'"amount": {event["amount"]}', '"amount": NaN').encode("utf-8")
    elif kind == "duplicate_key":  # the last value of a repeated key counts (JSON parsers agree)
        return text.replace('"amount": ', '"amount": 5, "amount": -', 1).encode("utf-8")
    elif kind == "truncated":
        return text.encode("utf-8")[: gen.rng.randint(1, len(text) - 2)]
    else:
        raise ValueError(kind)
    return json.dumps(event).encode("utf-8")


RAW_KINDS = (
    "invalid_utf8", "invalid_utf8/lone", "nul", "deep", "scalar", "empty_object", "nested_junk",
    "float_integral", "float_inf", "nan", "duplicate_key", "truncated",
)


def outcomes_in_force(stdout: str) -> set[str]:
    """The outcomes the product's episode knows, from the keys of its printed counts.

    ``applied`` and ``duplicate`` always; ``late`` once the product prints a ``late`` key (E3),
    ``rejected`` once it prints ``rejected`` (E4). Used to mix every outcome of the episode
    in force into an input without feeding an earlier episode lines it leaves unspecified.
    """
    keys = set(counts_of(stdout))
    return {"applied", "duplicate"} | ({"late"} if "late" in keys else set()) | (
        {"rejected"} if "rejected" in keys else set())


def mixed_outcomes(gen: EventGen, n: int, outcomes: set[str], earlier: list[dict] = (),
                   shares: tuple[float, float, float] = (0.14, 0.10, 0.20)) -> list:
    """About ``n`` input lines mixing every outcome in ``outcomes`` (see :func:`outcomes_in_force`).

    Always: applied events (credits and debits, some far apart in time so windows differ) and
    duplicates: copies of applied events of this input or of ``earlier`` (an earlier
    invocation), some re-delivered with another amount or time. With ``late``: events behind
    the watermark and later copies of them (duplicates, also with a fresh time). With
    ``rejected``: bad lines of every reason code and byte-level faults, blank lines, lines
    CR-terminated lines, and valid retries of rejected ids (applied). ``shares``: the
    share of lines that are duplicates, late lines and bad lines (when in force). Lines are
    ``str`` or ``bytes`` (write them with :func:`write_raw`).
    """
    dup_share, late_share, bad_share = shares
    lines: list = []
    applied: list[dict] = list(earlier)
    dead: list[dict] = []
    rejected_ids: list[str] = []
    bad: list = []
    late, rejects = "late" in outcomes, "rejected" in outcomes
    kinds = list(REASON_KINDS) + list(RAW_KINDS)
    gen.rng.shuffle(kinds)
    kinds.append("overdraft")  # drawn first: every input with bad lines has an overdraft
    for account in gen.accounts:
        if account not in gen.balances:
            event = gen.event(account=account)
            applied.append(event)
            lines.append(json.dumps(event))
    while len(lines) < n:
        roll = gen.rng.random()
        if rejects and not bad:  # the first bad line comes first: an overdraft, then its credit
            roll = dup_share + late_share + bad_share / 2
        if roll < dup_share and applied:
            copy = dict(gen.rng.choice(applied))
            if gen.rng.random() < 0.3:
                copy["amount"] = gen.rng.randint(1, MAX_DEBIT)
            lines.append(json.dumps(copy))
        elif late and roll < dup_share + late_share:
            if dead and gen.rng.random() < 0.4:
                copy = dict(gen.rng.choice(dead))
                if gen.rng.random() < 0.5:
                    copy["ts"] = iso(gen.clock)
                lines.append(json.dumps(copy))
            else:
                event = gen.stray(ts=gen.clock - 3_601 - gen.rng.randint(0, 5_000))
                dead.append(event)
                lines.append(json.dumps(event))
        elif rejects and roll < dup_share + late_share + bad_share:
            if rejected_ids and gen.rng.random() < 0.3:
                account = gen.rng.choice([acct for acct in gen.accounts if acct in gen.balances])
                lines.append(json.dumps(gen.make(account, "credit", gen.rng.randint(100, 900),
                                                 gen.tick(), rejected_ids.pop())))
            elif gen.rng.random() < 0.15:
                lines.append(gen.rng.choice(("", " ", "\t", "\r")))
            elif bad and gen.rng.random() < 0.15:
                lines.append(gen.rng.choice(bad))  # a bad line re-sent: rejected again
            else:
                kind = kinds.pop() if kinds else gen.rng.choice(REASON_KINDS)
                line = raw_bad_line(gen, kind) if kind in RAW_KINDS else bad_line(gen, kind)
                parsed = Model.malformation(line)[1]
                if isinstance(parsed, dict) and isinstance(parsed.get("id"), str):
                    rejected_ids.append(parsed["id"])
                bad.append(line)
                lines.append(line)
                if kind.startswith("overdraft"):  # then a credit that would cover it: the
                    # overdraft stays rejected (its balance is the one at its line)
                    lines.append(json.dumps(gen.make(parsed["account"], "credit", parsed["amount"] + 500,
                                                     gen.tick()) if parsed["account"] in gen.customers
                                            else dict(parsed, id=gen.new_id(), type="credit", amount=999)))
        else:
            event = gen.event(ts=gen.tick(1, 90))
            applied.append(event)
            line = json.dumps(event)
            lines.append(line + "\r" if rejects and gen.rng.random() < 0.1 else line)
    return lines


# ------------------------------------------------------------------------ helpers


def render(document: object) -> str:
    """Render a derived state file: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def to_lines(events: list[dict]) -> list[str]:
    """Serialise events as JSON Lines (without newlines), keys sorted as a producer might."""
    return [json.dumps(event, sort_keys=True) for event in events]


def raw_input(lines: list) -> bytes:
    """Lines (``str`` or ``bytes``) as one input: each followed by a newline."""
    return b"".join((line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n" for line in lines)


def write_raw(path: Path, lines: list) -> Path:
    """Write lines (``str`` or ``bytes``) to ``path`` with :func:`raw_input`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw_input(lines))
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    """Write ``lines`` to ``path``, one per line, with a trailing newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def counts_of(stdout: str) -> dict:
    """Parse the one-line JSON counts object printed by ``ingest``."""
    text = stdout.strip()
    assert text, "ingest printed nothing on stdout (expected a JSON object of counts)"
    try:
        counts = json.loads(text.splitlines()[-1])
    except ValueError:
        raise AssertionError(f"ingest stdout is not a JSON object of counts: {text[:200]!r}") from None
    assert isinstance(counts, dict), f"ingest stdout is not a JSON object: {text[:200]!r}"
    return counts


def assert_counts(stdout: str, expected: dict) -> None:
    """Assert the printed counts: the expected keys match, any other key is 0.

    Keys an episode has not introduced yet (``late``, ``rejected``) may be
    absent when the expected count is 0.
    """
    counts = counts_of(stdout)
    for key, value in expected.items():
        if value or key in ("applied", "duplicate"):
            assert counts.get(key) == value, f"count {key!r}: got {counts.get(key)!r}, expected {value} (stdout {counts})"
        else:
            assert counts.get(key, 0) == 0, f"count {key!r}: got {counts.get(key)!r}, expected 0 (stdout {counts})"
    extra = {k: v for k, v in counts.items() if k not in expected and v}
    assert not extra, f"unexpected non-zero counts {extra} (stdout {counts})"


def read_json(path: Path) -> object:
    """Load a JSON state file, failing the check clearly if absent or invalid."""
    assert path.is_file(), f"{path.name} was not written in the state directory"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise AssertionError(f"{path.name} is not valid JSON: {exc}") from None


def accounts_of(state: Path) -> dict:
    """The ``accounts`` mapping of ``DIR/balances.json``."""
    doc = read_json(state / "balances.json")
    assert isinstance(doc, dict) and isinstance(doc.get("accounts"), dict), \
        "balances.json is not of the form {\"accounts\": {...}}"
    return doc["accounts"]


def windows_of(state: Path) -> dict:
    """The ``windows`` mapping of ``DIR/windows.json``."""
    doc = read_json(state / "windows.json")
    assert isinstance(doc, dict) and isinstance(doc.get("windows"), dict), \
        "windows.json is not of the form {\"windows\": {...}}"
    return doc["windows"]


def nonblank_lines(path: Path) -> list[str]:
    """The non-blank lines of a text file (empty list if the file is absent)."""
    if not path.is_file():
        return []
    return [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
