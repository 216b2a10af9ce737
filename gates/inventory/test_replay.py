"""Gate ``replay`` (from E2): ``GET /journal`` lists every change in order, holds no refused or
read-only request, survives a kill; a service started with ``--replay FILE`` on an empty state
rebuilds the same state from it: same documents, same journal, same keys, same ids after."""

from __future__ import annotations

import json

import pytest

from _inventory import Gen, Shop


def _history(shop: Shop, gen: Gen, skus: list[str], count: int) -> list[tuple[str, dict]]:
    made = []
    for _ in range(count):
        key, body = gen.key(), gen.reservation(skus)
        if shop.reserve(key, body, expect=(201, 409)).status == 201:
            made.append((key, body))
            if gen.rng.random() < 0.25:
                shop.reserve(key, body, gen.variant(body), expect=(200,))
    held = [rid for rid, r in shop.model.reservations.items() if r.status == "held"]
    for rid in gen.rng.sample(held, len(held) // 2):
        shop.settle(rid, gen.rng.choice(["confirm", "cancel"]))
    return made


def _journal(shop: Shop) -> dict:
    answer = shop.client.get("/journal")
    document = answer.json()
    assert answer.status == 200 and isinstance(document, dict) and isinstance(document.get("entries"), list), \
        f"GET /journal: expected 200 with an entries list, got {answer.describe()}"
    return document


def _replica(inventory, gen: Gen, journal: dict, name: str) -> Shop:
    path = inventory.path(f"{name}.json")
    path.write_text(json.dumps(journal), encoding="utf-8")
    return Shop(inventory, gen, state=inventory.path(name)).start("--replay", path)


def _documents(shop: Shop, skus, rids) -> dict:
    paths = [f"/items/{s}" for s in sorted(skus)] + [f"/reservations/{r}" for r in sorted(rids)]
    return {path: (shop.client.get(path).json()) for path in paths}


@pytest.mark.genuine
def test_replayed_journal_rebuilds_the_same_state(inventory, seed):
    """A journal of items, reservations, retries, confirms and cancels, exported after a kill,
    replayed into an empty state: every document and the journal itself are the same, also
    after the replica is killed and restarted."""
    gen = Gen(seed, "replay-rebuild")
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(4)
    _history(shop, gen, skus, 12)
    shop.restart(kill=True)
    skus += shop.add_items(1)
    _history(shop, gen, skus, 6)
    journal = _journal(shop)
    replica = _replica(inventory, gen, journal, "replica")
    mine = _documents(shop, shop.model.items, shop.model.reservations)
    theirs = _documents(replica, shop.model.items, shop.model.reservations)
    for path, document in mine.items():
        assert theirs[path] == document, f"GET {path}: {document} on the original, {theirs[path]} on the replica"
    assert _journal(replica) == journal, "the replica's journal differs from the journal it was replayed from"
    replica.restart(kill=True)  # the replayed state is the replica's own durable state
    again = _documents(replica, shop.model.items, shop.model.reservations)
    for path, document in mine.items():
        assert again[path] == document, \
            f"GET {path}: {document} on the original, {again[path]} on the replica after kill -9 and restart"
    assert _journal(replica) == journal, "the replica's journal changed across kill -9 and restart"


@pytest.mark.genuine
def test_replica_remembers_keys_and_continues_alike(inventory, seed):
    """On the replica every key is a retry naming the original; the same new requests sent to the
    original and the replica get the same answers, and their journals stay equal."""
    gen = Gen(seed, "replay-continue")
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(3, stock=40)
    made = _history(shop, gen, skus, 10)
    replica = _replica(inventory, gen, _journal(shop), "replica")
    replica.model = shop.model
    for key, body in made:
        answer = replica.client.post("/reservations", gen.variant(body), key)
        rid = shop.model.res_keys[key]
        assert answer.status == 200 and (answer.json() or {}).get("id") == rid, \
            f"replica: retry of key {key}: expected 200 naming {rid}, got {answer.describe()}"
    for _ in range(8):
        key, body = gen.key(), gen.reservation(skus)
        ours, theirs = shop.client.post("/reservations", body, key), replica.client.post("/reservations", body, key)
        mine, other = ours.json() or {}, theirs.json() or {}
        assert (ours.status, mine.get("id"), mine.get("status")) == (theirs.status, other.get("id"), other.get("status")), \
            f"same request (key {key}): original {ours.describe()}, replica {theirs.describe()}"
        if ours.status == 201:
            shop.model.created(mine["id"], key, json.dumps(body))
    shop.verify("original")
    replica.verify("replica")
    mine, theirs = _journal(shop), _journal(replica)
    assert len(theirs["entries"]) == len(mine["entries"]), \
        f"journals diverged: {len(mine['entries'])} entries on the original, {len(theirs['entries'])} on the replica"


@pytest.mark.contract
def test_journal_is_ordered_and_durable(inventory, seed):
    """Entries are objects numbered ``seq`` 1, 2, 3, ...; each change adds entries, reads,
    retries and refusals add none; the journal is the same after kill -9."""
    gen = Gen(seed, "replay-journal")
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(2, stock=6)
    first = _journal(shop)["entries"]
    assert len(first) >= 2, f"two items created, journal has {len(first)} entries"
    key, body = gen.key(), gen.reservation(skus, qty=(1, 1), lines=1)
    shop.reserve(key, body)
    grown = _journal(shop)["entries"]
    assert len(grown) > len(first) and grown[:len(first)] == first, "a reservation must append to the journal"
    shop.reserve(key, body, gen.variant(body), expect=(200,))
    shop.reserve(gen.key(), gen.reservation(skus[:1], qty=(7, 7), lines=1), expect=(409,))
    shop.verify()
    rid = shop.model.res_keys[key]
    shop.settle(rid, "confirm")
    settled = _journal(shop)["entries"]
    assert len(settled) > len(grown), "a confirm must append to the journal"
    shop.settle(rid, "confirm")
    again = _journal(shop)["entries"]
    assert again == settled, "a retry, a refusal, a read or a repeated confirm appended to the journal"
    assert all(isinstance(e, dict) for e in again) and [e.get("seq") for e in again] == list(range(1, len(again) + 1)), \
        f"entries must be objects with seq 1..{len(again)}: {[e.get('seq') if isinstance(e, dict) else e for e in again]}"
    shop.restart(kill=True)
    assert _journal(shop)["entries"] == again, "the journal changed across kill -9"
