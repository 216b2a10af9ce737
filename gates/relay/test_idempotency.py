"""Gate ``idempotency`` (active from E1): one event per idempotency key, delivered once.

Producers retry: a ``POST /events`` whose ``Idempotency-Key`` was already accepted must answer
200 naming the original event and cause no delivery, whether the retry comes at once, much
later, after a restart of the relay, or at the same moment as the original. Retries carry the
same JSON serialised differently (member order, spacing, escapes), which every episode treats
as the same event. Some events carry an ordering ``key`` and ``version`` (ignored before E3,
always increasing per key here), so that from E3 on a retry must still be a duplicate, not a
stale event.
"""

import json
import threading

import pytest

from _relay import Gen, Scenario, redact


def busy_input(sc, count, keyed_share=0.4):
    """``count`` events over the scenario's topics, with retries; returns the keys posted."""
    gen = sc.gen
    posted = []
    for _ in range(count):
        key = version = None
        if gen.rng.random() < keyed_share:
            key = f"order-{gen.rng.randrange(100, 110)}"
            version = sc.model.newest.get(key, 0) + gen.rng.randint(1, 3)  # always newer
        idem = gen.idempotency_key()
        body = gen.event(gen.rng.choice(["order.created", "order.paid", "invoice.sent"]), key, version)
        sc.post(idem, body, raw=gen.variant(body) if gen.rng.random() < 0.5 else None)
        posted.append((idem, body))
        if gen.rng.random() < 0.35:  # an immediate retry
            sc.post(idem, body, raw=gen.variant(body))
        if posted and gen.rng.random() < 0.3:  # a late retry of an earlier event
            old_idem, old_body = gen.rng.choice(posted)
            sc.post(old_idem, old_body, raw=gen.variant(old_body))
    return posted


@pytest.mark.genuine
def test_retried_requests_are_delivered_once(relay, endpoints, seed):
    """Retries (immediate, late, re-serialised) answer 200 with the original id; each matching
    subscription gets each event exactly once, in acceptance order; others get nothing."""
    sc = Scenario(relay, endpoints, Gen(seed, "idem-retries")).start()
    sc.subscribe("orders", ["order.created", "order.paid"])
    sc.subscribe("billing", ["order.paid", "invoice.sent"])
    sc.subscribe("idle", ["customer.updated"])
    busy_input(sc, 36)
    sc.settle(["orders", "billing"])
    sc.settle(["idle"])
    for name in ("orders", "billing", "idle"):
        sc.assert_delivered_once_in_order(name)


@pytest.mark.genuine
def test_keys_and_subscriptions_survive_a_restart(relay, endpoints, seed):
    """After a stop (SIGTERM) and start on the same state directory, every retry is still a
    duplicate, nothing is delivered again, and the subscriptions still receive new events."""
    sc = Scenario(relay, endpoints, Gen(seed, "idem-restart")).start()
    sc.subscribe("orders", ["order.created", "order.paid"])
    sc.subscribe("billing", ["order.paid", "invoice.sent"])
    posted = busy_input(sc, 20)
    sc.quiesce()
    sc.restart(kill=False)
    for idem, body in sc.gen.rng.sample(posted, len(posted)):
        sc.post(idem, body, raw=sc.gen.variant(body))
    busy_input(sc, 8)
    sc.settle()
    for name in ("orders", "billing"):
        sc.assert_delivered_once_in_order(name, " (across a restart)")


@pytest.mark.genuine
def test_simultaneous_retries_create_one_event(relay, endpoints, seed):
    """The same key sent on several connections at once: one event, one delivery; every answer
    names that event (one 202, the others 200)."""
    sc = Scenario(relay, endpoints, Gen(seed, "idem-concurrent")).start()
    sc.subscribe("orders", ["order.created"])
    client = sc.client
    for round_ in range(5):
        idem = sc.gen.idempotency_key()
        body = sc.gen.event("order.created")
        raws = [sc.gen.variant(body) for _ in range(6)]
        barrier = threading.Barrier(len(raws))
        answers = [None] * len(raws)

        def send(i):
            barrier.wait(5)
            answers[i] = client.post_event(idem, raws[i])

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(raws))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        codes = sorted(a.status for a in answers if a is not None)
        ids = {(a.json() or {}).get("id") for a in answers if a is not None}
        assert codes == [200] * 5 + [202], f"round {round_}: answers {codes} (expected one 202 and five 200)"
        assert len(ids) == 1, f"round {round_}: the answers name different events {sorted(map(str, ids))}"
        sc.model.post(idem, raws[0])
        event_id = ids.pop()
        sc.ids[idem], sc.keys[event_id] = event_id, idem
    sc.settle()
    sc.assert_delivered_once_in_order("orders", " (simultaneous retries)")


@pytest.mark.contract
def test_answer_and_status_documents(relay, endpoints, seed):
    """201/202/200 answers and GET /events/{id}, GET /subscriptions/{id} have the documented
    members and values."""
    sc = Scenario(relay, endpoints, Gen(seed, "idem-docs")).start()
    endpoint = endpoints("docs")
    client = sc.client
    created = client.request("POST", "/subscriptions", {"url": endpoint.url, "topics": ["order.paid"]})
    doc = created.json()
    assert created.status == 201 and isinstance(doc, dict), created.describe()
    assert doc.get("url") == endpoint.url and doc.get("topics") == ["order.paid"] and isinstance(doc.get("id"), str), \
        f"POST /subscriptions answer: {doc}"
    sc.subscribers["docs"], sc.sub_ids["docs"] = endpoint, doc["id"]
    sc.model.subscribe("docs", ["order.paid"])

    idem = sc.gen.idempotency_key()
    body = sc.gen.event("order.paid")
    first = client.post_event(idem, body)
    assert first.status == 202 and first.json() == {"id": first.json()["id"], "status": "accepted"}, first.describe()
    again = client.post_event(idem, body)
    assert again.status == 200 and again.json() == {"id": first.json()["id"], "status": "duplicate"}, again.describe()
    sc.model.post(idem, json.dumps(body))
    event_id = first.json()["id"]
    sc.ids[idem], sc.keys[event_id] = event_id, idem
    endpoint.wait_acked(event_id)

    event = client.get(f"/events/{event_id}")
    doc = event.json()
    assert event.status == 200 and isinstance(doc, dict), event.describe()
    assert doc.get("id") == event_id and doc.get("topic") == "order.paid" and doc.get("status") == "accepted", doc
    assert doc.get("payload") == redact(body["payload"]), "GET /events/{id}: payload is not the masked payload"
    sc.settle()
    # Acknowledged is not yet recorded: wait (bounded) until the relay counts both deliveries.
    sc.wait_recorded("docs", 2)
    event = client.get(f"/events/{event_id}").json()
    assert event.get("deliveries") == {sc.sub_ids["docs"]: "delivered"}, f"GET /events/{{id}} deliveries: {event}"
    sub = client.get(f"/subscriptions/{sc.sub_ids['docs']}")
    doc = sub.json()
    assert sub.status == 200 and isinstance(doc, dict), sub.describe()
    assert doc.get("pending") == 0 and doc.get("delivered") == 2 and doc.get("url") == endpoint.url, \
        f"GET /subscriptions/{{id}}: {doc}"

    # Delivery headers: Content-Type, X-Relay-Event naming the event, and one X-Relay-Delivery
    # id per event and subscription (a second subscription gets another id for the same event).
    other = sc.subscribe("copy", ["order.paid"])
    idem = sc.new_event("order.paid")
    sc.settle()
    for name, received in (("docs", endpoint.received), ("copy", other.received)):
        for delivery in received:
            assert delivery.headers.get("content-type", "").split(";")[0].strip() == "application/json", \
                f"delivery to {name}: Content-Type {delivery.headers.get('content-type')!r}"
            assert delivery.headers.get("x-relay-event") == delivery.event, \
                f"delivery to {name}: X-Relay-Event {delivery.headers.get('x-relay-event')!r} for event {delivery.event}"
            assert delivery.delivery_id, f"delivery to {name} of {delivery.event} has no X-Relay-Delivery"
    ids = [{d.event: d.delivery_id for d in received} for received in (endpoint.received, other.received)]
    assert len(set(ids[0].values())) == len(ids[0]), f"one delivery id for several events: {ids[0]}"
    assert ids[0][sc.ids[idem]] != ids[1][sc.ids[idem]], \
        f"two subscriptions got the same delivery id {ids[1][sc.ids[idem]]} for event {sc.ids[idem]}"
