"""Gate ``idempotency`` (from E1): one reservation per idempotency key, however and whenever the
request is retried; stock is held once; confirm and cancel can be repeated."""

from __future__ import annotations

import json

import pytest

from _inventory import Gen, Shop, masked_customer, parallel


def _workload(shop: Shop, gen: Gen, skus: list[str], count: int) -> list[tuple[str, dict]]:
    """``count`` reservations, a third retried at once (re-serialised); the created ones."""
    made = []
    for _ in range(count):
        key, body = gen.key(), gen.reservation(skus)
        answer = shop.reserve(key, body, expect=(201, 409))
        if answer.status == 201:
            made.append((key, body))
            if gen.rng.random() < 0.35:
                shop.reserve(key, body, gen.variant(body), expect=(200,))
    return made


@pytest.mark.genuine
def test_retried_reservations_hold_stock_once(inventory, seed):
    """Retries, at once and much later, re-serialised, answer 200 naming the original and hold
    no more stock; repeated confirms and cancels change nothing."""
    gen = Gen(seed, "idem-retries")
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(5)
    made = _workload(shop, gen, skus, 28)
    assert len(made) >= 8, "check bug: too few reservations were possible"
    for key, body in gen.rng.sample(made, len(made) // 2):  # late retries, in another order
        shop.reserve(key, body, gen.variant(body), expect=(200,))
    rids = sorted(shop.model.reservations)
    for rid in gen.rng.sample(rids, len(rids) // 2):
        action = gen.rng.choice(["confirm", "cancel"])
        shop.settle(rid, action)
        shop.settle(rid, action)
    for key, body in gen.rng.sample(made, len(made) // 3):  # retries after confirm / cancel
        shop.reserve(key, body, gen.variant(body), expect=(200,))
    last = shop.add_items(1, stock=gen.rng.randint(2, 5))[0]  # a retry when nothing is left
    key, body = gen.key(), {"customer": gen.customer(), "lines": [{"sku": last, "qty": shop.model.items[last]["stock"]}]}
    shop.reserve(key, body, expect=(201,))
    shop.reserve(key, body, gen.variant(body), expect=(200,))
    shop.verify()


@pytest.mark.genuine
def test_simultaneous_retries_create_one_reservation(inventory, seed):
    """Six copies of a request sent at the same moment create one reservation (one 201, five
    200 naming it); requests for the last units at the same moment never oversell."""
    gen = Gen(seed, "idem-simultaneous")
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(3, stock=60)
    client = shop.client
    for _round in range(4):
        key, body = gen.key(), gen.reservation(skus)
        raws = [json.dumps(body)] + [gen.variant(body) for _ in range(5)]
        answers = parallel(lambda raw: client.post("/reservations", raw, key), [(r,) for r in raws])
        statuses = sorted(a.status for a in answers)
        assert statuses == [200] * 5 + [201], f"six simultaneous copies of key {key}: statuses {statuses}"
        ids = {(a.json() or {}).get("id") for a in answers}
        assert len(ids) == 1, f"six simultaneous copies of key {key} name several reservations: {ids}"
        shop.model.created(ids.pop(), key, raws[0])
    scarce = shop.add_items(1, stock=gen.rng.randint(3, 6))[0]
    requests = [(gen.key(), gen.reservation([scarce], qty=(1, 1))) for _ in range(10)]
    answers = parallel(lambda k, b: client.post("/reservations", b, k), requests, workers=10)
    granted = [(k, b, a) for (k, b), a in zip(requests, answers) if a.status == 201]
    refused = [a for a in answers if a.status != 201]
    stock = shop.model.items[scarce]["stock"]
    assert len(granted) == stock, (f"ten simultaneous requests for 1 of {stock} units: {len(granted)} "
                                   f"granted ({sorted(a.status for a in answers)})")
    assert all(a.status == 409 for a in refused), f"refusals: {[a.describe() for a in refused]}"
    for key, body, answer in granted:
        shop.model.created(answer.json()["id"], key, json.dumps(body))
    shop.verify()


@pytest.mark.genuine
def test_keys_survive_a_restart(inventory, seed):
    """After a stop (SIGTERM) and a start on the same state, every key is still known, confirmed
    and cancelled reservations keep their status, and new reservations get new ids."""
    gen = Gen(seed, "idem-restart")
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(4)
    made = _workload(shop, gen, skus, 16)
    for rid in sorted(shop.model.reservations)[::3]:
        shop.settle(rid, gen.rng.choice(["confirm", "cancel"]))
    shop.restart(kill=False)
    for key, body in made:
        shop.reserve(key, body, gen.variant(body), expect=(200,))
    for rid in sorted(shop.model.reservations)[::3]:
        shop.settle(rid, "confirm" if shop.model.reservations[rid].status == "confirmed" else "cancel")
    _workload(shop, gen, skus, 6)
    shop.verify("after a restart")


@pytest.mark.contract
def test_answer_documents(inventory, seed):
    """The documents of the brief: items, a new reservation (201), a retry (200), GET, confirm,
    cancel, and the refusals insufficient_stock and not_held."""
    gen = Gen(seed, "idem-documents")
    shop = Shop(inventory, gen).start()
    client = shop.client
    item = gen.item(stock=5)
    answer = client.post("/items", item)
    assert answer.status == 201, f"POST /items: {answer.describe()}"
    expected_item = {"sku": item["sku"], "name": item["name"], "stock": 5, "reserved": 0, "available": 5}
    assert {k: (answer.json() or {}).get(k) for k in expected_item} == expected_item, answer.describe()
    assert client.post("/items", item).json() == {"error": "item_exists"}
    key, body = gen.key(), gen.reservation([item["sku"]], qty=(2, 2))
    first = client.post("/reservations", body, key)
    document = first.json() or {}
    expected = {"status": "held", "customer": masked_customer(body["customer"]),
                "lines": [{"sku": item["sku"], "qty": 2}]}
    assert first.status == 201 and isinstance(document.get("id"), str), first.describe()
    assert {k: document.get(k) for k in expected} == expected, f"201 document: {document}"
    again = client.post("/reservations", gen.variant(body), key)
    assert again.status == 200 and again.json() == document, f"retry: expected 200 {document}, got {again.describe()}"
    got = client.get(f"/reservations/{document['id']}")
    assert got.status == 200 and got.json() == document, f"GET: expected {document}, got {got.describe()}"
    view = client.get(f"/items/{item['sku']}").json() or {}
    assert (view.get("reserved"), view.get("available")) == (2, 3), f"item after a hold of 2: {view}"
    short = client.post("/reservations", gen.reservation([item["sku"]], qty=(4, 4)), gen.key())
    assert short.status == 409 and short.json() == {"error": "insufficient_stock"}, short.describe()
    confirmed = client.post(f"/reservations/{document['id']}/confirm")
    assert confirmed.status == 200 and confirmed.json() == {**document, "status": "confirmed"}, confirmed.describe()
    refused = client.post(f"/reservations/{document['id']}/cancel")
    assert refused.status == 409 and refused.json() == {"error": "not_held"}, refused.describe()
    other = client.post("/reservations", gen.reservation([item["sku"]], qty=(1, 1)), gen.key()).json() or {}
    cancelled = client.post(f"/reservations/{other.get('id')}/cancel")
    assert cancelled.status == 200 and (cancelled.json() or {}).get("status") == "cancelled", cancelled.describe()
    refused = client.post(f"/reservations/{other.get('id')}/confirm")
    assert refused.status == 409 and refused.json() == {"error": "not_held"}, refused.describe()
    view = client.get(f"/items/{item['sku']}").json() or {}
    assert (view.get("stock"), view.get("reserved"), view.get("available")) == (5, 2, 3), \
        f"item after confirming 2 and cancelling 1: {view}"
