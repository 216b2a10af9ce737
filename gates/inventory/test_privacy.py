"""Gate ``privacy`` (from E1): customer names, emails and phone numbers appear nowhere (answers,
journal, files, stdout, stderr) except in their masked forms; what the request carries beyond
the customer's name, email and phone is not kept."""

from __future__ import annotations

import json

import pytest

from _inventory import Gen, Shop, masked_customer


def _busy_shop(inventory, gen: Gen, count: int, extras: bool = False) -> Shop:
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(4)
    for _ in range(count):
        key, body = gen.key(), gen.reservation(skus, extras=extras)
        if shop.reserve(key, body, expect=(201, 409)).status == 201 and gen.rng.random() < 0.3:
            shop.reserve(key, body, gen.variant(body), expect=(200,))
    for rid in sorted(shop.model.reservations)[::2]:
        shop.settle(rid, gen.rng.choice(["confirm", "cancel"]))
    return shop


def _read_everything(shop: Shop) -> None:
    """GET every reservation and item, and the journal (whatever it answers)."""
    shop.verify()
    shop.client.get("/journal")


@pytest.mark.genuine
def test_answers_and_state_hold_no_personal_data(inventory, seed):
    """Reservations, retries, confirms, cancels, reads, a restart and reads again: no name, email
    or phone number anywhere."""
    gen = Gen(seed, "privacy-plain")
    shop = _busy_shop(inventory, gen, 18)
    _read_everything(shop)
    shop.restart(kill=False)
    _read_everything(shop)
    shop.assert_no_leaks()


@pytest.mark.genuine
def test_extra_members_are_not_kept(inventory, seed):
    """A customer's address and birthday and a free-text note quoting someone else's phone and
    email are neither shown nor kept, also after a kill and restart."""
    gen = Gen(seed, "privacy-extras")
    shop = _busy_shop(inventory, gen, 12, extras=True)
    _read_everything(shop)
    shop.restart(kill=True)
    _read_everything(shop)
    extras = set()
    for r in shop.model.reservations.values():
        extras.add(r.body["customer"]["address"].lower())
    shop.gen.secrets.words.update(extras)
    shop.assert_no_leaks()


@pytest.mark.genuine
def test_refused_requests_leak_nothing(inventory, seed):
    """Requests refused for every reason, carrying personal data, are answered without quoting
    it, and nothing of them is kept."""
    gen = Gen(seed, "privacy-refused")
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(2, stock=4)
    client = shop.client
    key, body = gen.key(), gen.reservation(skus, qty=(1, 1), lines=1)
    shop.reserve(key, body)
    too_much = gen.reservation(skus, qty=(9, 9), lines=1)
    customer = gen.customer()
    text = json.dumps(gen.reservation(skus))
    bad = [
        ("/reservations", too_much, gen.key()),                                   # insufficient stock
        ("/reservations", text[: len(text) // 2 + 7], gen.key()),                 # truncated JSON
        ("/reservations", json.dumps([gen.reservation(skus)]), gen.key()),        # an array
        ("/reservations", {"customer": f"{customer['name']} <{customer['email']}>",
                           "lines": [{"sku": skus[0], "qty": 1}]}, gen.key()),    # customer a string
        ("/reservations", {"customer": {**gen.customer(), "phone": 447700900000 + gen.rng.randint(1, 99999)},
                           "lines": [{"sku": skus[0], "qty": 1}]}, gen.key()),    # phone a number
        ("/reservations", {"customer": gen.customer(), "lines": [{"sku": "NOPE-" + gen.customer()["email"], "qty": 1}]},
         gen.key()),                                                              # unknown item
        ("/reservations", gen.reservation(skus), None),                            # no key
    ]
    gen.secrets.add_text(phones=[str(bad[4][1]["customer"]["phone"])])
    for path, payload, idem in bad:
        answer = client.post(path, payload, idem)
        assert 400 <= answer.status < 500, f"POST {path} with a bad request: expected a 4xx, got {answer.describe()}"
    # The key of another request (a conflict from E4 on; before, a retry naming the original).
    answer = client.post("/reservations", gen.reservation(skus, qty=(1, 1), lines=1), key)
    assert answer.status in (200, 409), f"POST /reservations reusing a key: {answer.describe()}"
    for path in (f"/reservations/{customer['email']}", f"/items/{customer['email']}",
                 f"/reservations/{gen.customer()['phone'].replace(' ', '')}/confirm"):
        answer = client.get(path) if "confirm" not in path else client.post(path)
        assert answer.status == 404, f"{path}: expected 404, got {answer.describe()}"
    shop.verify("after the refused requests")
    shop.restart(kill=False)
    shop.verify("after a restart")
    shop.assert_no_leaks()


@pytest.mark.contract
def test_customer_is_masked_exactly(inventory, seed):
    """Every answer shows the customer as the brief masks it: initials, ``j***@domain``, ``***``
    plus the phone's last two digits; nothing else."""
    gen = Gen(seed, "privacy-masks")
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(3, stock=80)
    client = shop.client
    for _ in range(10):
        key, body = gen.key(), gen.reservation(skus, extras=gen.rng.random() < 0.5)
        answer = client.post("/reservations", body, key)
        expected = masked_customer(body["customer"])
        for what, got in (("201", answer), ("200", client.post("/reservations", body, key)),
                          ("GET", client.get(f"/reservations/{(answer.json() or {}).get('id')}"))):
            document = got.json() or {}
            assert document.get("customer") == expected, \
                f"{what} of a reservation for {mask_hint(body['customer'])}: customer {document.get('customer')}, expected {expected}"


def mask_hint(customer: dict) -> str:
    """A description of a customer for messages that gives nothing away."""
    return f"a customer with a {len(customer['name'].split())}-word name"
