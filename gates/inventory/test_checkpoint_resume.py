"""Gate ``checkpoint_resume`` (from E2): every answered change survives ``kill -9``; a service
killed in the middle of simultaneous requests restarts consistent (each reservation whole or
absent, stock held exactly by the reservations it knows); ids and keys survive."""

from __future__ import annotations

import json
import threading

import pytest

from _inventory import Gen, Shop


def _work(shop: Shop, gen: Gen, skus: list[str], count: int) -> list[tuple[str, dict]]:
    made = []
    for _ in range(count):
        key, body = gen.key(), gen.reservation(skus)
        if shop.reserve(key, body, expect=(201, 409)).status == 201:
            made.append((key, body))
    held = [rid for rid, r in shop.model.reservations.items() if r.status == "held"]
    for rid in gen.rng.sample(held, len(held) // 3):
        shop.settle(rid, gen.rng.choice(["confirm", "cancel"]))
    return made


@pytest.mark.genuine
def test_answered_changes_survive_a_kill(inventory, seed):
    """Killed right after its last answer, twice: items, reservations, confirms and cancels are
    all there, and every key is still a retry."""
    gen = Gen(seed, "resume-answered")
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(4)
    made = _work(shop, gen, skus, 14)
    shop.restart(kill=True)
    shop.verify("after kill -9")
    skus += shop.add_items(2)
    made += _work(shop, gen, skus, 8)
    shop.restart(kill=True)
    for key, body in made:
        shop.reserve(key, body, gen.variant(body), expect=(200,))
    shop.verify("after a second kill -9")


@pytest.mark.genuine
def test_kill_during_simultaneous_requests(inventory, seed):
    """Eight clients reserve at once; the service is killed mid-stream. After a restart every
    answered reservation is there, each unanswered one is whole or absent (its retry says which),
    and the stock held is exactly what the known reservations hold."""
    gen = Gen(seed, "resume-midstream")
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(3, stock=200)
    requests = [(gen.key(), gen.reservation(skus)) for _ in range(64)]
    client = shop.client
    answered: dict[str, str] = {}
    changed = threading.Condition()

    def worker(share):
        for key, body in share:
            answer = client.post("/reservations", body, key, quiet=True)
            if answer is None:
                return
            assert answer.status == 201, f"POST /reservations (key {key}): {answer.describe()}"
            with changed:
                answered[key] = answer.json()["id"]
                changed.notify_all()

    threads = [threading.Thread(target=worker, args=(requests[i::8],), daemon=True) for i in range(8)]
    for thread in threads:
        thread.start()
    with changed:
        changed.wait_for(lambda: len(answered) >= 20 or not any(t.is_alive() for t in threads), timeout=60)
    shop.process.kill()
    for thread in threads:
        thread.join(30)
    assert len(answered) >= 20, f"only {len(answered)} of 64 reservations were answered before the kill"
    shop.start()
    for key, body in requests:
        retry = shop.client.post("/reservations", gen.variant(body), key)
        if key in answered:
            assert retry.status == 200 and (retry.json() or {}).get("id") == answered[key], \
                f"answered reservation (key {key}, id {answered[key]}) after kill -9: retry gave {retry.describe()}"
        else:
            assert retry.status in (200, 201), f"unanswered reservation (key {key}) retried: {retry.describe()}"
        rid = (retry.json() or {}).get("id")
        assert rid not in shop.model.reservations, f"two keys name reservation {rid}"
        shop.model.created(rid, key, json.dumps(body))
    shop.verify("after kill -9 mid-stream")


@pytest.mark.genuine
def test_repeated_kills_keep_ids_and_keys(inventory, seed):
    """Three rounds of work and kill -9: reservations made after a restart never reuse an id,
    and every key ever answered is still a retry."""
    gen = Gen(seed, "resume-ids")
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(3, stock=90)
    made = []
    for round_ in range(3):
        made += _work(shop, gen, skus, 6 + round_)
        shop.restart(kill=True)
        for key, body in gen.rng.sample(made, min(len(made), 6)):
            shop.reserve(key, body, gen.variant(body), expect=(200,))
    shop.verify("after three kills")


@pytest.mark.contract
def test_documents_are_unchanged_by_a_kill(inventory, seed):
    """``GET`` of every item and reservation answers the same document after kill -9 and restart."""
    gen = Gen(seed, "resume-documents")
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(3)
    _work(shop, gen, skus, 10)
    paths = [f"/items/{s}" for s in sorted(shop.model.items)] + \
            [f"/reservations/{r}" for r in sorted(shop.model.reservations)]
    before = {path: shop.client.get(path).json() for path in paths}
    shop.restart(kill=True)
    for path in paths:
        after = shop.client.get(path).json()
        assert after == before[path], f"GET {path}: {before[path]} before kill -9, {after} after"
