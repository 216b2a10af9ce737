"""Gate ``negative_paths`` (from E4): every refusal answers its status and code (first rule
wins) with a body that is exactly ``{"error": code}``; refused requests change nothing, append
nothing to the journal and do not use up their key; a key reused for a different request is a
conflict; bad command lines exit 2 with one line on stderr."""

from __future__ import annotations

import json

import pytest

from _inventory import Gen, Model, Shop


def _battery(gen: Gen, skus: list[str], held: str, confirmed: str, expired: str, used_key: str,
             used_body: dict, count_key: str, count_body: dict) -> list[tuple]:
    """``(method, path, body, key, status, code)`` for every refusal rule, with seeded contents."""
    c = gen.customer
    line = {"sku": skus[0], "qty": 1}
    good = lambda **extra: {"customer": c(), "lines": [dict(line)], **extra}  # noqa: E731
    k = gen.key
    limit = 1024 * 1024
    return [
        ("POST", "/reservations", "x" * (limit + 1), k(), 413, "payload_too_large"),
        ("POST", "/items", "{" * (limit + gen.rng.randint(2, 99)), None, 413, "payload_too_large"),
        ("POST", "/reservations", "y" * limit, k(), 400, "malformed_json"),      # exactly 1 MiB: read
        ("POST", "/reservations", {"customer": c(), "lines": [{"sku": skus[3], "qty": 1}]}, k(), 409, "insufficient_stock"),
        ("GET", f"/reservations/res-{gen.rng.randint(10**6, 10**7)}", None, None, 404, "not_found"),
        ("GET", f"/items/NOPE-{gen.rng.randint(100, 999)}", None, None, 404, "not_found"),
        ("GET", "/reservation", None, None, 404, "not_found"),
        ("POST", f"/orders/{gen.rng.randint(1, 99)}", good(), k(), 404, "not_found"),
        ("POST", f"/reservations/nope-{gen.rng.randint(1, 99)}/confirm", None, None, 404, "not_found"),
        ("DELETE", f"/items/{skus[0]}", None, None, 405, "method_not_allowed"),
        ("PUT", "/reservations", good(), k(), 405, "method_not_allowed"),
        ("GET", "/stock-counts", None, None, 405, "method_not_allowed"),
        ("POST", "/journal", {}, None, 405, "method_not_allowed"),
        ("POST", "/items", "{\"sku\": \"X-1\", \"name\": ", None, 400, "malformed_json"),
        ("POST", "/items", [{"sku": "X-1", "name": "Mug", "stock": 1}], None, 400, "malformed_json"),
        ("POST", "/items", {"sku": "X-2", "stock": 3}, None, 400, "missing_field"),
        ("POST", "/items", {"sku": "bad sku!", "name": "Mug", "stock": 3}, None, 400, "wrong_type"),
        ("POST", "/items", {"sku": "X" * 65, "name": "Mug", "stock": 3}, None, 400, "wrong_type"),
        ("POST", "/items", {"sku": "X-3", "name": "", "stock": 3}, None, 400, "wrong_type"),
        ("POST", "/items", {"sku": "X-4", "name": "Mug", "stock": -1}, None, 400, "wrong_type"),
        ("POST", "/items", {"sku": "X-5", "name": "Mug", "stock": True}, None, 400, "wrong_type"),
        ("POST", "/items", {"sku": "X-6", "name": "Mug", "stock": 2.5}, None, 400, "wrong_type"),
        ("POST", "/items", {"sku": skus[1], "name": "Mug", "stock": 2}, None, 409, "item_exists"),
        ("POST", "/reservations", good(), None, 400, "missing_idempotency_key"),
        ("POST", "/reservations", good(), "", 400, "missing_idempotency_key"),
        ("POST", "/reservations", "[not json", None, 400, "missing_idempotency_key"),
        ("POST", "/reservations", json.dumps(good())[:-1], k(), 400, "malformed_json"),
        ("POST", "/reservations", b"\xff\xfe{" + json.dumps(good()).encode("utf-16-le")[2:] + b"}", k(), 400, "malformed_json"),
        ("POST", "/reservations", "\"a string\"", k(), 400, "malformed_json"),
        ("POST", "/reservations", {"customer": c()}, k(), 400, "missing_field"),
        ("POST", "/reservations", {"lines": [dict(line)]}, k(), 400, "missing_field"),
        ("POST", "/reservations", {"customer": {**c(), "email": None} | {}, "lines": "x"}, k(), 400, "wrong_type"),
        ("POST", "/reservations", {"customer": {k_: v for k_, v in c().items() if k_ != "phone"},
                                   "lines": [dict(line)]}, k(), 400, "missing_field"),
        ("POST", "/reservations", {"customer": c(), "lines": [{"sku": skus[0]}]}, k(), 400, "missing_field"),
        ("POST", "/reservations", {"customer": "someone", "lines": [{"qty": 1}]}, k(), 400, "missing_field"),
        ("POST", "/reservations", {"customer": [c()], "lines": [dict(line)]}, k(), 400, "wrong_type"),
        ("POST", "/reservations", {"customer": {**c(), "phone": 447700900123}, "lines": [dict(line)]}, k(), 400, "wrong_type"),
        ("POST", "/reservations", {"customer": {**c(), "name": ""}, "lines": [dict(line)]}, k(), 400, "wrong_type"),
        ("POST", "/reservations", {"customer": c(), "lines": []}, k(), 400, "wrong_type"),
        ("POST", "/reservations", {"customer": c(), "lines": {"sku": skus[0], "qty": 1}}, k(), 400, "wrong_type"),
        ("POST", "/reservations", {"customer": c(), "lines": [skus[0]]}, k(), 400, "wrong_type"),
        ("POST", "/reservations", {"customer": c(), "lines": [{"sku": 7, "qty": 1}]}, k(), 400, "wrong_type"),
        ("POST", "/reservations", {"customer": c(), "lines": [{"sku": skus[0], "qty": 0}]}, k(), 400, "wrong_type"),
        ("POST", "/reservations", {"customer": c(), "lines": [{"sku": skus[0], "qty": True}]}, k(), 400, "wrong_type"),
        ("POST", "/reservations", {"customer": c(), "lines": [{"sku": skus[0], "qty": 1.0}]}, k(), 400, "wrong_type"),
        ("POST", "/reservations", {"customer": c(), "lines": [dict(line), dict(line)]}, k(), 400, "wrong_type"),
        ("POST", "/reservations", good(hold_seconds=0), k(), 400, "wrong_type"),
        ("POST", "/reservations", good(hold_seconds=-gen.rng.randint(1, 300)), k(), 400, "wrong_type"),
        ("POST", "/reservations", good(hold_seconds=86400.5), k(), 400, "wrong_type"),
        ("POST", "/reservations", good(hold_seconds="60"), k(), 400, "wrong_type"),
        ("POST", "/reservations", good(hold_seconds=True), k(), 400, "wrong_type"),
        ("POST", "/reservations", {**used_body, "lines": [{"sku": skus[0], "qty": 2}]}, used_key, 409, "idempotency_conflict"),
        ("POST", "/reservations", {"customer": c(), "lines": [dict(line), {"sku": "NOPE-1", "qty": 1}]}, k(), 422, "unknown_item"),
        ("POST", "/reservations", {"customer": c(), "lines": [{"sku": skus[2], "qty": 10_000}]}, k(), 409, "insufficient_stock"),
        ("POST", f"/reservations/{expired}/confirm", None, None, 409, "reservation_expired"),
        ("POST", f"/reservations/{expired}/cancel", None, None, 409, "reservation_expired"),
        ("POST", f"/reservations/{confirmed}/cancel", None, None, 409, "not_held"),
        ("POST", "/stock-counts", {"sku": skus[0], "seq": 9, "on_hand": 1}, None, 400, "missing_idempotency_key"),
        ("POST", "/stock-counts", "{\"sku\": 1,", k("cnt"), 400, "malformed_json"),
        ("POST", "/stock-counts", {"sku": skus[0], "on_hand": 1}, k("cnt"), 400, "missing_field"),
        ("POST", "/stock-counts", {"sku": skus[0], "seq": 0, "on_hand": 1}, k("cnt"), 400, "wrong_type"),
        ("POST", "/stock-counts", {"sku": skus[0], "seq": "9", "on_hand": 1}, k("cnt"), 400, "wrong_type"),
        ("POST", "/stock-counts", {"sku": skus[0], "seq": 9, "on_hand": -1}, k("cnt"), 400, "wrong_type"),
        ("POST", "/stock-counts", {"sku": skus[0], "seq": 9, "on_hand": False}, k("cnt"), 400, "wrong_type"),
        ("POST", "/stock-counts", {"sku": None, "seq": 9, "on_hand": 1}, k("cnt"), 400, "wrong_type"),
        ("POST", "/stock-counts", {**count_body, "on_hand": count_body["on_hand"] + 1}, count_key, 409, "idempotency_conflict"),
        ("POST", "/stock-counts", {"sku": "NOPE-2", "seq": 1, "on_hand": 1}, k("cnt"), 422, "unknown_item"),
    ]


def _setup(inventory, gen: Gen):
    """A shop with items, a held, a confirmed and an expired reservation, a used key and count."""
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(3, stock=20) + shop.add_items(1, stock=0)
    used_key, used_body = gen.key(), gen.reservation(skus[:1], qty=(1, 1), lines=1)
    held = shop.reserve(used_key, used_body).json()["id"]
    confirmed = shop.reserve(gen.key(), gen.reservation(skus[:3], qty=(1, 1))).json()["id"]
    shop.settle(confirmed, "confirm")
    expired = shop.reserve(gen.key(), gen.reservation(skus[:3], qty=(1, 1), hold=0.2)).json()["id"]
    count_key, count_body = gen.key("cnt"), {"sku": skus[1], "seq": 3, "on_hand": 25}
    shop.count(count_key, count_body)
    shop.wait_past(shop.model.reservations[expired].expires_at)
    battery = _battery(gen, skus, held, confirmed, expired, used_key, used_body, count_key, count_body)
    return shop, skus, battery


def _send(client, method, path, body, key):
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.request(method, path, body, headers)


@pytest.mark.contract
def test_each_refusal_answers_its_code(inventory, seed):
    """Each rule of the brief, in several forms: exact status and body ``{"error": code}``."""
    gen = Gen(seed, "negative-codes")
    shop, _skus, battery = _setup(inventory, gen)
    wrong = []
    for method, path, body, key, status, code in battery:
        answer = _send(shop.client, method, path, body, key)
        if answer.status != status or answer.json() != {"error": code}:
            shown = body if not isinstance(body, str) or len(body) < 200 else f"<{len(body)} bytes>"
            wrong.append(f"{method} {path} {shown!r:.160} (key {key!r}): expected {status} {code}, "
                         f"got {answer.describe()[:120]}")
    assert not wrong, f"{len(wrong)} of {len(battery)} refusals wrong:\n" + "\n".join(wrong[:12])


@pytest.mark.genuine
def test_refused_requests_change_nothing(inventory, seed):
    """After every refused request (sent side by side, in a seeded order) the journal is the same
    and every item and reservation reads as before; the service keeps serving."""
    gen = Gen(seed, "negative-nothing")
    shop, skus, battery = _setup(inventory, gen)
    before = shop.client.get("/journal").json()
    gen.rng.shuffle(battery)
    client = shop.client
    answers = [_send(client, m, p, b, k) for m, p, b, k, _s, _c in battery]
    assert all(400 <= a.status < 500 for a in answers), \
        f"refusals answered {sorted({a.status for a in answers})}"
    after = shop.client.get("/journal").json()
    assert after == before, (f"refused requests changed the journal: {len((before or {}).get('entries', []))} "
                             f"entries before, {len((after or {}).get('entries', []))} after")
    shop.verify("after the refused requests")
    shop.reserve(gen.key(), gen.reservation(skus[:3]), expect=(201,))
    shop.restart(kill=True)
    shop.verify("after a restart")


@pytest.mark.genuine
def test_a_refused_requests_key_is_not_used_up(inventory, seed):
    """A key first carried by a refused request (bad JSON, missing or wrong member, unknown item,
    not enough stock) then carries a good one: it is created (201), and retried it is a retry."""
    gen = Gen(seed, "negative-keys")
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(2, stock=6)
    client = shop.client
    for bad in ("{\"customer\":", {"lines": [{"sku": skus[0], "qty": 1}]},
                {"customer": gen.customer(), "lines": [{"sku": skus[0], "qty": -1}]},
                {"customer": gen.customer(), "lines": [{"sku": "NOPE-9", "qty": 1}]},
                {"customer": gen.customer(), "lines": [{"sku": skus[1], "qty": 7}]}):
        key = gen.key()
        answer = client.post("/reservations", bad, key)
        assert 400 <= answer.status < 500, f"bad reservation: {answer.describe()}"
        body = gen.reservation(skus, qty=(1, 1))
        shop.reserve(key, body, expect=(201,))
        shop.reserve(key, body, gen.variant(body), expect=(200,))
    for bad in ({"sku": skus[0], "seq": "x", "on_hand": 1}, {"sku": "NOPE-9", "seq": 1, "on_hand": 1}):
        key = gen.key("cnt")
        assert 400 <= client.post("/stock-counts", bad, key).status < 500
        shop.count(key, {"sku": skus[0], "seq": shop.model.items[skus[0]]["count_seq"] + 1, "on_hand": 9})
    shop.verify()


@pytest.mark.genuine
def test_a_key_reused_for_another_request_is_a_conflict(inventory, seed):
    """Same key: the same JSON re-serialised is a retry; another quantity, another customer whose
    masked form is the same, or another value of an ignored member is a conflict (409) and
    changes nothing; reservation and count keys are separate."""
    gen = Gen(seed, "negative-conflicts")
    shop = Shop(inventory, gen).start()
    skus = shop.add_items(2, stock=30)
    client = shop.client
    for _ in range(3):
        key, body = gen.key(), gen.reservation(skus, qty=(1, 2), extras=True)
        shop.reserve(key, body, expect=(201,))
        twin = json.loads(json.dumps(body))
        email = twin["customer"]["email"]
        twin["customer"]["email"] = email[0] + "x" + email[1:]       # masks the same
        phone = twin["customer"]["phone"]
        other_phone = phone[:-3] + ("1" if phone[-3] != "1" else "2") + phone[-2:]   # masks the same
        conflicts = [
            {**body, "lines": [{**body["lines"][0], "qty": body["lines"][0]["qty"] + 1}, *body["lines"][1:]]},
            twin,
            {**body, "customer": {**body["customer"], "phone": other_phone}},
            {**body, "note": body["note"] + "!"},
            {**body, "hold_seconds": 600},
        ]
        for other in conflicts:
            shop.reserve(key, other, expect=(409,))
        shop.reserve(key, body, gen.variant(body), expect=(200,))
        count = {"sku": skus[0], "seq": shop.model.items[skus[0]]["count_seq"] + 1, "on_hand": 12}
        shop.count(key, count)                       # the same key, for a count: separate
        for other in ({**count, "on_hand": 13}, {**count, "seq": count["seq"] + 1}, {**count, "sku": skus[1]},
                      {**count, "on_hand": 0}, {**count, "note": "recount"}):
            shop.count(key, other)                   # 409
        shop.count(key, count, gen.variant(count))   # duplicate
    shop.verify()


@pytest.mark.contract
def test_bad_command_lines_exit_2(inventory, seed):
    """``--state`` missing or a file, an unknown option, a bad ``--port`` or ``--hold-seconds``, a
    missing or malformed ``--replay`` file, a used state with ``--replay``: exit 2, one line on
    stderr; ``--hold-seconds 1`` and a replay into an empty directory start."""
    gen = Gen(seed, "negative-cli")
    used = inventory.path("used")
    shop = Shop(inventory, gen, state=used).start()
    shop.add_items(1)
    journal = shop.client.get("/journal").json()
    shop.process.terminate()
    good = inventory.path("journal.json")
    good.write_text(json.dumps(journal), encoding="utf-8")
    bad = []
    for i, text in enumerate(["[1, 2]", "{\"entries\": 3}", "not json", "{\"entries\": [{\"seq\": 1}]}",
                              "{\"entries\": [7]}", "{\"entries\": [{\"seq\": 1, \"type\": \"cancel\", \"id\": []}]}"]):
        bad.append(inventory.path(f"bad-{i}.json"))
        bad[-1].write_text(text, encoding="utf-8")
    a_file = inventory.path("a-file")
    a_file.write_text("not a directory\n", encoding="utf-8")
    fresh = lambda name: str(inventory.path(name))  # noqa: E731
    lines = [
        *[("--state", fresh(f"r{i}"), "--port", "0", "--replay", str(path)) for i, path in enumerate(bad)],
        ("--state", str(a_file), "--port", "0"),
        ("--state", fresh("h"), "--port", "-1"),
        ("--state", fresh("i"), "--port", "65536"),
        ("--state", fresh("j"), "--port", "0", "--hold-seconds", "-5"),
        ("--port", "0"),
        ("--state", fresh("a"), "--port", "0", "--colour"),
        ("--state", fresh("b"), "--port", str(gen.rng.randint(65536, 99999))),
        ("--state", fresh("c"), "--port", "eighty"),
        ("--state", fresh("d"), "--port", "0", "--hold-seconds", "0"),
        ("--state", fresh("e"), "--port", "0", "--hold-seconds", "1.5"),
        ("--state", fresh("f"), "--port", "0", "--replay", fresh("missing.json")),
        ("--state", str(used), "--port", "0", "--replay", str(good)),
    ]
    runs = [inventory.spawn(*argv) for argv in lines]
    wrong = []
    for argv, run in zip(lines, runs):
        code = run.wait()
        err = run.stderr.strip()
        if code != 2 or len(err.splitlines()) != 1:
            wrong.append(f"{' '.join(argv)}: exit {code}, stderr {err[-200:]!r}")
    assert not wrong, "bad command lines must exit 2 with one line on stderr:\n" + "\n".join(wrong)
    # The edges of the good ones still start: --hold-seconds 1, a replay into an empty directory.
    empty = inventory.path("empty")
    empty.mkdir()
    empty.chmod(0o1777)  # made by the runner: open to the product's uid
    for argv in (("--hold-seconds", "1"), ("--replay", str(good))):
        state = empty if argv[0] == "--replay" else inventory.path("edge") / "not" / "yet"
        inventory.start(state, *argv).terminate()
