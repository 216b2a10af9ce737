"""The inventory's state and its journal.

The journal (``DIR/journal.jsonl``, one JSON object per line) is the durable state: every
change is appended and fsynced before it is answered, and the state is rebuilt from it on
start. A torn last line (the service killed mid-write) is dropped. Entries hold no personal
data: customers are stored masked.

Entry types (``seq`` numbers entries from 1):

- ``{"seq", "type": "item", "sku", "name", "stock"}``
- ``{"seq", "type": "reservation", "id", "key", "customer", "lines",
  "created_at", "expires_at"}`` (times in milliseconds since the epoch)
- ``{"seq", "type": "confirm" | "cancel", "id"}``
- ``{"seq", "type": "count", "key", "sku", "count_seq", "on_hand", "status"}``
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from inventory.mask import mask_customer

JOURNAL = "journal.jsonl"


class Refusal(Exception):
    """A request refused: HTTP ``status`` and error ``code``."""

    def __init__(self, status: int, code: str):
        super().__init__(code)
        self.status = status
        self.code = code


def iso(ms: int) -> str:
    """Milliseconds since the epoch -> ``2026-12-02T12:00:00.123Z``."""
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Store:
    """Items, reservations, counts and idempotency keys, rebuilt from the journal.

    Every public method takes the lock: requests are applied one at a time.
    """

    def __init__(self, directory: Path, hold_seconds: int, replay: list | None = None):
        self.directory = directory
        self.hold_ms = hold_seconds * 1000
        self.items: dict[str, dict] = {}
        self.reservations: dict[str, dict] = {}
        self.keys: dict[tuple[str, str], dict] = {}
        self.entries: list[dict] = []
        self.lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / JOURNAL
        if replay is not None:
            for entry in replay:
                self._apply(entry)
            with open(path, "w", encoding="utf-8") as handle:
                for entry in self.entries:
                    handle.write(json.dumps(entry, separators=(",", ":")) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        else:
            self._load(path)
        self.journal = open(path, "a", encoding="utf-8")

    # ------------------------------------------------------------------ journal

    def _load(self, path: Path) -> None:
        if not path.exists():
            return
        data = path.read_bytes()
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                entry = json.loads(line)
            except ValueError:
                break
            self._apply(entry)
            good += len(line)
        if good < len(data):
            with open(path, "r+b") as handle:
                handle.truncate(good)

    def _append(self, entry: dict) -> dict:
        entry = {"seq": len(self.entries) + 1, **entry}
        self.journal.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self.journal.flush()
        os.fsync(self.journal.fileno())
        self._apply(entry)
        return entry

    def _apply(self, entry: dict) -> None:
        kind = entry["type"]
        if kind == "item":
            self.items[entry["sku"]] = {"sku": entry["sku"], "name": entry["name"],
                                        "stock": entry["stock"], "count_seq": 0}
        elif kind == "reservation":
            self.reservations[entry["id"]] = {
                "id": entry["id"], "status": "held", "customer": entry["customer"],
                "lines": entry["lines"], "created_at": entry["created_at"],
                "expires_at": entry["expires_at"],
            }
            self.keys[("reservation", entry["key"])] = {"id": entry["id"]}
        elif kind == "confirm":
            self.reservations[entry["id"]]["status"] = "confirmed"
        elif kind == "cancel":
            self.reservations[entry["id"]]["status"] = "cancelled"
        elif kind == "count":
            if entry["status"] == "applied":
                item = self.items[entry["sku"]]
                item["stock"] = entry["on_hand"]
                item["count_seq"] = entry["count_seq"]
            self.keys[("count", entry["key"])] = {"sku": entry["sku"], "seq": entry["count_seq"]}
        self.entries.append(entry)

    def journal_document(self) -> dict:
        with self.lock:
            return {"entries": list(self.entries)}

    def close(self) -> None:
        self.journal.close()

    # ------------------------------------------------------------------ views

    def _status(self, reservation: dict, now: int) -> str:
        if reservation["status"] == "held" and now >= reservation["expires_at"]:
            return "expired"
        return reservation["status"]

    def _reserved(self, sku: str, now: int) -> int:
        total = 0
        for reservation in self.reservations.values():
            if self._status(reservation, now) in ("held", "confirmed"):
                for line in reservation["lines"]:
                    if line["sku"] == sku:
                        total += line["qty"]
        return total

    def _item_view(self, sku: str, now: int) -> dict:
        item = self.items[sku]
        reserved = self._reserved(sku, now)
        return {"sku": sku, "name": item["name"], "stock": item["stock"], "reserved": reserved,
                "available": item["stock"] - reserved, "count_seq": item["count_seq"]}

    def _reservation_view(self, reservation: dict, now: int) -> dict:
        return {
            "id": reservation["id"], "status": self._status(reservation, now),
            "customer": reservation["customer"], "lines": reservation["lines"],
            "created_at": iso(reservation["created_at"]), "expires_at": iso(reservation["expires_at"]),
        }

    def item(self, sku: str) -> dict:
        with self.lock:
            if sku not in self.items:
                raise Refusal(404, "not_found")
            return self._item_view(sku, now_ms())

    def reservation(self, reservation_id: str) -> dict:
        with self.lock:
            if reservation_id not in self.reservations:
                raise Refusal(404, "not_found")
            return self._reservation_view(self.reservations[reservation_id], now_ms())

    # ------------------------------------------------------------------ changes

    def add_item(self, body: dict) -> dict:
        with self.lock:
            if body["sku"] in self.items:
                raise Refusal(409, "item_exists")
            self._append({"type": "item", "sku": body["sku"], "name": body["name"],
                          "stock": body["stock"]})
            return self._item_view(body["sku"], now_ms())

    def reserve(self, key: str, body: dict) -> tuple[int, dict]:
        """``(201, document)`` for a new reservation, ``(200, document)`` for a retry."""
        with self.lock:
            now = now_ms()
            known = self.keys.get(("reservation", key))
            if known is not None:
                return 200, self._reservation_view(self.reservations[known["id"]], now)
            lines = [{"sku": line["sku"], "qty": line["qty"]} for line in body["lines"]]
            for line in lines:
                if line["sku"] not in self.items:
                    raise Refusal(422, "unknown_item")
            for line in lines:
                item = self.items[line["sku"]]
                if item["stock"] - self._reserved(line["sku"], now) < line["qty"]:
                    raise Refusal(409, "insufficient_stock")
            hold_ms = round(body["hold_seconds"] * 1000) if "hold_seconds" in body else self.hold_ms
            entry = self._append({
                "type": "reservation", "id": f"res-{len(self.reservations) + 1}", "key": key,
                "customer": mask_customer(body["customer"]), "lines": lines,
                "created_at": now, "expires_at": now + hold_ms,
            })
            return 201, self._reservation_view(self.reservations[entry["id"]], now)

    def settle(self, reservation_id: str, action: str) -> dict:
        """Confirm (``action="confirm"``) or cancel a held reservation; repeating is a no-op."""
        with self.lock:
            now = now_ms()
            reservation = self.reservations.get(reservation_id)
            if reservation is None:
                raise Refusal(404, "not_found")
            done = "confirmed" if action == "confirm" else "cancelled"
            status = self._status(reservation, now)
            if status == "expired":
                raise Refusal(409, "reservation_expired")
            if status != done:
                if status != "held":
                    raise Refusal(409, "not_held")
                self._append({"type": action, "id": reservation_id})
            return self._reservation_view(reservation, now)

    def count(self, key: str, body: dict) -> dict:
        """Apply a warehouse count unless a count with a greater or equal ``seq`` was applied."""
        with self.lock:
            known = self.keys.get(("count", key))
            if known is not None:
                return {"sku": known["sku"], "seq": known["seq"], "status": "duplicate"}
            item = self.items.get(body["sku"])
            if item is None:
                raise Refusal(422, "unknown_item")
            status = "applied" if body["seq"] > item["count_seq"] else "stale"
            self._append({"type": "count", "key": key, "sku": body["sku"],
                          "count_seq": body["seq"], "on_hand": body["on_hand"], "status": status})
            return {"sku": body["sku"], "seq": body["seq"], "status": status}
