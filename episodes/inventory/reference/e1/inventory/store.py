"""The inventory's state and its journal.

The journal (``DIR/journal.jsonl``, one JSON object per line) is the durable state: every
change is appended before it is answered, and the state is rebuilt from it on start. A torn last line (the service killed mid-write) is dropped. Entries hold no personal
data: customers are stored masked.

Entry types (``seq`` numbers entries from 1):

- ``{"seq", "type": "item", "sku", "name", "stock"}``
- ``{"seq", "type": "reservation", "id", "key", "customer", "lines"}``
- ``{"seq", "type": "confirm" | "cancel", "id"}``
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from inventory.mask import mask_customer

JOURNAL = "journal.jsonl"


class Refusal(Exception):
    """A request refused: HTTP ``status`` and error ``code``."""

    def __init__(self, status: int, code: str):
        super().__init__(code)
        self.status = status
        self.code = code


class Store:
    """Items, reservations and idempotency keys, rebuilt from the journal.

    Every public method takes the lock: requests are applied one at a time.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.items: dict[str, dict] = {}
        self.reservations: dict[str, dict] = {}
        self.keys: dict[tuple[str, str], dict] = {}
        self.entries: list[dict] = []
        self.lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / JOURNAL
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
        self._apply(entry)
        return entry

    def _apply(self, entry: dict) -> None:
        kind = entry["type"]
        if kind == "item":
            self.items[entry["sku"]] = {"sku": entry["sku"], "name": entry["name"],
                                        "stock": entry["stock"]}
        elif kind == "reservation":
            self.reservations[entry["id"]] = {
                "id": entry["id"], "status": "held", "customer": entry["customer"],
                "lines": entry["lines"],
            }
            self.keys[("reservation", entry["key"])] = {"id": entry["id"]}
        elif kind == "confirm":
            self.reservations[entry["id"]]["status"] = "confirmed"
        elif kind == "cancel":
            self.reservations[entry["id"]]["status"] = "cancelled"
        self.entries.append(entry)

    def close(self) -> None:
        self.journal.close()

    # ------------------------------------------------------------------ views

    def _reserved(self, sku: str) -> int:
        total = 0
        for reservation in self.reservations.values():
            if reservation["status"] in ("held", "confirmed"):
                for line in reservation["lines"]:
                    if line["sku"] == sku:
                        total += line["qty"]
        return total

    def _item_view(self, sku: str) -> dict:
        item = self.items[sku]
        reserved = self._reserved(sku)
        return {"sku": sku, "name": item["name"], "stock": item["stock"], "reserved": reserved,
                "available": item["stock"] - reserved}

    def _reservation_view(self, reservation: dict) -> dict:
        return {"id": reservation["id"], "status": reservation["status"],
                "customer": reservation["customer"], "lines": reservation["lines"]}

    def item(self, sku: str) -> dict:
        with self.lock:
            if sku not in self.items:
                raise Refusal(404, "not_found")
            return self._item_view(sku)

    def reservation(self, reservation_id: str) -> dict:
        with self.lock:
            if reservation_id not in self.reservations:
                raise Refusal(404, "not_found")
            return self._reservation_view(self.reservations[reservation_id])

    # ------------------------------------------------------------------ changes

    def add_item(self, body: dict) -> dict:
        with self.lock:
            if body["sku"] in self.items:
                raise Refusal(409, "item_exists")
            self._append({"type": "item", "sku": body["sku"], "name": body["name"],
                          "stock": body["stock"]})
            return self._item_view(body["sku"])

    def reserve(self, key: str, body: dict) -> tuple[int, dict]:
        """``(201, document)`` for a new reservation, ``(200, document)`` for a retry."""
        with self.lock:
            known = self.keys.get(("reservation", key))
            if known is not None:
                return 200, self._reservation_view(self.reservations[known["id"]])
            lines = [{"sku": line["sku"], "qty": line["qty"]} for line in body["lines"]]
            for line in lines:
                if line["sku"] not in self.items:
                    raise Refusal(422, "unknown_item")
            for line in lines:
                item = self.items[line["sku"]]
                if item["stock"] - self._reserved(line["sku"]) < line["qty"]:
                    raise Refusal(409, "insufficient_stock")
            entry = self._append({
                "type": "reservation", "id": f"res-{len(self.reservations) + 1}", "key": key,
                "customer": mask_customer(body["customer"]), "lines": lines,
            })
            return 201, self._reservation_view(self.reservations[entry["id"]])

    def settle(self, reservation_id: str, action: str) -> dict:
        """Confirm (``action="confirm"``) or cancel a held reservation; repeating is a no-op."""
        with self.lock:
            reservation = self.reservations.get(reservation_id)
            if reservation is None:
                raise Refusal(404, "not_found")
            done = "confirmed" if action == "confirm" else "cancelled"
            status = reservation["status"]
            if status != done:
                if status != "held":
                    raise Refusal(409, "not_held")
                self._append({"type": action, "id": reservation_id})
            return self._reservation_view(reservation)
