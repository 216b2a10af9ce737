"""Gate ``late_events`` (from E3): warehouse counts that arrive late, twice or out of order never
overwrite a newer count; holds expire and release their units; confirms and cancels that come
after the hold are refused; all of it across kills and replay."""

from __future__ import annotations

import json
import time

import pytest

from _inventory import Gen, Shop, parse_time


def _counts(gen: Gen, sku: str, n: int) -> list[tuple[str, dict]]:
    """``n`` counts of ``sku`` (seq 1..n) in a shuffled order, each with its key."""
    counts = [(gen.key("cnt"), {"sku": sku, "seq": seq, "on_hand": gen.rng.randint(0, 40)})
              for seq in range(1, n + 1)]
    gen.rng.shuffle(counts)
    return counts


def _check_count_seq(shop: Shop) -> None:
    for sku, item in shop.model.items.items():
        got = shop.client.get(f"/items/{sku}").json() or {}
        assert got.get("count_seq") == item["count_seq"], \
            f"GET /items/{sku}: count_seq {got.get('count_seq')!r}, expected {item['count_seq']}"


@pytest.mark.genuine
def test_out_of_order_counts_never_overwrite_newer_ones(inventory, seed):
    """Shuffled counts of several items, some sent twice: each is applied only if newer than every
    count applied before; stock, reserved and available follow (available may go negative)."""
    gen = Gen(seed, "late-shuffled")
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(4)
    for _ in range(8):
        shop.reserve(gen.key(), gen.reservation(skus), expect=(201, 409))
    queue = [count for sku in skus for count in _counts(gen, sku, 6)]
    gen.rng.shuffle(queue)
    for i, (key, body) in enumerate(queue):
        shop.count(key, body, gen.variant(body))
        if gen.rng.random() < 0.3:
            earlier = queue[gen.rng.randrange(i + 1)]
            shop.count(earlier[0], earlier[1], gen.variant(earlier[1]))
    shop.verify()
    _check_count_seq(shop)


@pytest.mark.genuine
def test_retried_counts_are_duplicates_before_stale(inventory, seed):
    """A retry of a count that was applied, sent after a newer count, is a duplicate (not stale),
    also after a restart; a new count with an old seq is stale."""
    gen = Gen(seed, "late-duplicates")
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(3)
    sent = []
    for sku in skus:
        low, high = gen.rng.randint(1, 4), gen.rng.randint(5, 9)
        for seq in (low, high):
            key, body = gen.key("cnt"), {"sku": sku, "seq": seq, "on_hand": gen.rng.randint(0, 30)}
            shop.count(key, body)
            sent.append((key, body))
    for key, body in sent:
        shop.count(key, body, gen.variant(body))
    for sku in skus:
        shop.count(gen.key("cnt"), {"sku": sku, "seq": gen.rng.randint(1, 5), "on_hand": 99})
    shop.restart(kill=True)
    for key, body in gen.rng.sample(sent, len(sent)):
        shop.count(key, body, gen.variant(body))
    shop.verify()
    _check_count_seq(shop)


@pytest.mark.genuine
def test_count_order_survives_a_kill_and_replay(inventory, seed):
    """After kill -9, and on a replica built from the journal, a count older than the newest
    applied one is still stale and a newer one applied."""
    gen = Gen(seed, "late-durable")
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(3)
    for sku in skus:
        for key, body in _counts(gen, sku, 4):
            shop.count(key, body)
    shop.restart(kill=True)
    journal = shop.client.get("/journal").json()
    path = inventory.path("journal.json")
    path.write_text(json.dumps(journal), encoding="utf-8")
    replica = Shop(inventory, gen, state=inventory.path("replica")).start("--replay", path)
    replica.model = shop.model
    for target in (shop, replica):
        for sku in skus:
            top = shop.model.items[sku]["count_seq"]
            stale = {"sku": sku, "seq": gen.rng.randint(1, top), "on_hand": 77}
            status, word = shop.model.count(gen.key("cnt"), json.dumps(stale))
            answer = target.client.post("/stock-counts", stale, gen.key("cnt"))
            assert (answer.status, (answer.json() or {}).get("status")) == (200, "stale"), \
                f"count seq {stale['seq']} after seq {top} was applied (after kill -9 / on a replica): {answer.describe()}"
        target.verify()
        _check_count_seq(target)
    for sku in skus:  # newer counts still apply, on each
        newer = {"sku": sku, "seq": shop.model.items[sku]["count_seq"] + 1, "on_hand": 5}
        key = gen.key("cnt")
        shop.count(key, newer)
        answer = replica.client.post("/stock-counts", newer, key)
        assert (answer.json() or {}).get("status") == "applied", f"replica: newer count {newer}: {answer.describe()}"


@pytest.mark.genuine
def test_expired_holds_release_units_and_refuse_late_settlement(inventory, seed):
    """Short holds run out: the reservations show expired, their units are available again,
    confirm and cancel are refused as too late, retries hold nothing; long holds are untouched."""
    gen = Gen(seed, "late-expiry")
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(3, stock=50)
    short, long_ = [], []
    for i in range(10):
        hold = round(gen.rng.uniform(0.2, 0.6), 3) if i % 2 == 0 else None
        key, body = gen.key(), gen.reservation(skus, hold=hold)
        answer = shop.reserve(key, body, expect=(201,))
        (short if hold else long_).append((key, body, answer.json()["id"]))
        if hold is None:
            document = answer.json()
            created, expires = parse_time(document.get("created_at")), parse_time(document.get("expires_at"))
            assert created is not None and expires is not None and round(expires - created, 3) == 900, \
                f"default hold (no --hold-seconds): created_at {document.get('created_at')}, expires_at {document.get('expires_at')}"
    # Settled at once, a short hold never expires (unless this machine was slower than the hold).
    settled = {}
    for action in ("confirm", "cancel"):
        body = gen.reservation(skus, hold=1.5)
        answer = shop.client.post("/reservations", body, gen.key())
        rid = answer.json()["id"]
        done = shop.client.post(f"/reservations/{rid}/{action}")
        if done.status == 200:
            settled[rid] = (body, done.json()["status"], parse_time(answer.json()["expires_at"]))
    shop.wait_past(max([shop.model.reservations[rid].expires_at for _, _, rid in short] +
                       [expires for _, _, expires in settled.values()]))
    for rid, (body, status, _) in settled.items():
        got = shop.client.get(f"/reservations/{rid}").json() or {}
        assert got.get("status") == status, f"a reservation {status} before its hold ran out shows {got.get('status')!r}"
        if status == "confirmed":
            shop.model.created(rid, f"settled-{rid}", json.dumps(body))
            shop.model.reservations[rid].status = "confirmed"
    shop.verify("after the short holds ran out")
    for key, body, rid in short:
        shop.settle(rid, gen.rng.choice(["confirm", "cancel"]))
        shop.reserve(key, body, gen.variant(body), expect=(200,))
    for _, _, rid in long_[::2]:
        shop.settle(rid, "confirm")
    for sku in skus:  # every unit the short holds had is available again
        free = shop.model.item_view(sku, time.time())["available"]
        shop.reserve(gen.key(), {"customer": gen.customer(), "lines": [{"sku": sku, "qty": free}]}, expect=(201,))
    shop.verify("after settling")


@pytest.mark.genuine
def test_holds_run_out_while_stopped_and_on_a_replica(inventory, seed):
    """Holds that run out while the service is stopped are expired when it comes back; a replica
    built from the journal shows the same times and statuses."""
    gen = Gen(seed, "late-stopped")
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(2, stock=40)
    for i in range(6):
        shop.reserve(gen.key(), gen.reservation(skus, hold=round(gen.rng.uniform(0.2, 0.5), 3) if i % 2 else None))
    shop.process.kill()
    shop.wait_past(max(r.expires_at for r in shop.model.reservations.values() if r.expires_at))
    shop.start()
    shop.verify("restarted after the holds ran out")
    journal = shop.client.get("/journal").json()
    path = inventory.path("journal.json")
    path.write_text(json.dumps(journal), encoding="utf-8")
    replica = Shop(inventory, gen, state=inventory.path("replica")).start("--replay", path)
    replica.model = shop.model
    replica.verify("replica")
    for rid in sorted(shop.model.reservations):
        mine, theirs = shop.client.get(f"/reservations/{rid}").json(), replica.client.get(f"/reservations/{rid}").json()
        assert mine == theirs, f"GET /reservations/{rid}: {mine} on the original, {theirs} on the replica"


@pytest.mark.contract
def test_expiry_and_count_documents(inventory, seed):
    """``created_at``/``expires_at`` in UTC ISO 8601 with milliseconds, the hold apart (the
    request's ``hold_seconds``, else ``--hold-seconds``); the count answers and ``count_seq``."""
    gen = Gen(seed, "late-documents")
    default = gen.rng.randint(100, 5000)
    shop = Shop(inventory, gen, flags=("--hold-seconds", default), hold=default).start()
    skus = shop.add_items(2, stock=30)
    for hold in (None, 2.5, gen.rng.randint(60, 3000), 0.75, 86400):
        body = gen.reservation(skus, hold=hold)
        answer = shop.client.post("/reservations", body, gen.key())
        document = answer.json() or {}
        created, expires = parse_time(document.get("created_at")), parse_time(document.get("expires_at"))
        assert answer.status == 201 and created is not None and expires is not None, \
            f"created_at / expires_at must be UTC ISO 8601 with milliseconds: {answer.describe()}"
        expected = hold if hold is not None else default
        assert round((expires - created) * 1000) == round(expected * 1000), \
            f"hold {expected} s: created_at {document['created_at']}, expires_at {document['expires_at']}"
        again = shop.client.get(f"/reservations/{document['id']}").json() or {}
        assert (again.get("created_at"), again.get("expires_at")) == (document["created_at"], document["expires_at"])
    fresh = shop.client.get(f"/items/{skus[1]}").json() or {}
    assert fresh.get("count_seq") == 0, f"an item never counted: count_seq {fresh.get('count_seq')!r}, expected 0"
    sku = skus[0]
    key = gen.key("cnt")
    for body, word in (({"sku": sku, "seq": 4, "on_hand": 11}, "applied"), ({"sku": sku, "seq": 2, "on_hand": 3}, "stale")):
        answer = shop.client.post("/stock-counts", body, gen.key("cnt") if word == "stale" else key)
        assert answer.status == 200 and answer.json() == {"sku": sku, "seq": body["seq"], "status": word}, answer.describe()
    answer = shop.client.post("/stock-counts", {"sku": sku, "seq": 4, "on_hand": 11}, key)
    assert answer.status == 200 and answer.json() == {"sku": sku, "seq": 4, "status": "duplicate"}, answer.describe()
    answer = shop.client.post("/stock-counts", {"sku": sku, "seq": 4, "on_hand": 12}, gen.key("cnt"))
    assert answer.status == 200 and answer.json() == {"sku": sku, "seq": 4, "status": "stale"}, \
        f"a new count with the seq of the newest applied one is stale: {answer.describe()}"
    item = shop.client.get(f"/items/{sku}").json() or {}
    assert (item.get("stock"), item.get("count_seq")) == (11, 4), f"after counts 4 (11 units) and 2: {item}"
    answer = shop.client.post("/stock-counts", {"sku": skus[1], "seq": 1, "on_hand": 0}, gen.key("cnt"))
    item = shop.client.get(f"/items/{skus[1]}").json() or {}
    assert answer.status == 200 and (item.get("stock"), item.get("count_seq")) == (0, 1), \
        f"count seq 1 with 0 units on hand: {answer.describe()}, then {item}"
    unknown = shop.client.post("/stock-counts", {"sku": "NO-SUCH-1", "seq": 1, "on_hand": 1}, gen.key("cnt"))
    assert unknown.status == 422 and unknown.json() == {"error": "unknown_item"}, unknown.describe()
