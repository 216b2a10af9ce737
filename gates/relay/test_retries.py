"""Gate ``retries`` (active from E2): failed deliveries are retried, then dead-lettered.

Subscribers fail chosen deliveries (5xx answers, connections closed without an answer). A
failed attempt is retried with exponential backoff under the same delivery id and with the
same body until it is acknowledged or ``--max-attempts`` attempts have failed; then it is a
dead letter and the subscription's queue moves on. One subscription's trouble never holds up
another's deliveries, and a subscription's deliveries stay in acceptance order throughout.
"""

import pytest

from _relay import HOLD, RESET, FailFirst, Gen, Scenario

BASE_MS = 5
MAX_ATTEMPTS = 4
FLAGS = ("--retry-base-ms", str(BASE_MS), "--max-attempts", str(MAX_ATTEMPTS))
TOPICS = ["order.created", "order.paid", "invoice.sent"]


@pytest.mark.genuine
def test_failed_attempts_are_retried_until_acknowledged(relay, endpoints, seed):
    """Deliveries failing 1 to 3 times (5xx or a closed connection) are retried under the same
    delivery id with the same body; every event ends acknowledged once, in order."""
    sc = Scenario(relay, endpoints, Gen(seed, "retry-until-ok"), flags=FLAGS).start()
    rng = sc.gen.rng
    policy = FailFirst({})
    sub = sc.subscribe("orders", TOPICS, policy=policy)
    keys = []
    for _ in range(14):
        idem = sc.gen.idempotency_key()
        body = sc.gen.event(rng.choice(TOPICS))
        if rng.random() < 0.45:
            policy.failures[body["payload"]["ref"]] = [rng.choice([500, 503, 502, RESET])
                                                       for _ in range(rng.randint(1, MAX_ATTEMPTS - 1))]
        sc.post(idem, body)
        keys.append(idem)
    sc.settle()
    sc.assert_delivered_once_in_order("orders", " (with failed attempts)")
    for key in keys:
        attempts = [d for d in sub.received if d.event == sc.ids[key]]
        want = 1 + len(policy.failures.get(sc.model.events[key].body["payload"]["ref"], []))
        assert len(attempts) == want, f"event {sc.ids[key]}: {len(attempts)} attempts, expected {want}"
        assert len({d.delivery_id for d in attempts}) == 1 and attempts[0].delivery_id, \
            f"event {sc.ids[key]}: attempts carry different or no delivery ids {[d.delivery_id for d in attempts]}"
        assert len({d.body for d in attempts}) == 1, f"event {sc.ids[key]}: attempts carry different bodies"


@pytest.mark.genuine
def test_an_exhausted_delivery_is_dead_lettered_and_the_queue_moves_on(relay, endpoints, seed):
    """A delivery failing every attempt is tried exactly --max-attempts times, listed in
    GET /dead-letters and shown dead; the subscription's later events are still delivered."""
    sc = Scenario(relay, endpoints, Gen(seed, "retry-dead"), flags=FLAGS).start()
    policy = FailFirst({})
    sub = sc.subscribe("orders", TOPICS, policy=policy)
    sc.subscribe("audit", TOPICS)
    keys = []
    for i in range(10):
        idem = sc.gen.idempotency_key()
        body = sc.gen.event(sc.gen.rng.choice(TOPICS))
        if i in (2, 6):
            policy.failures[body["payload"]["ref"]] = [sc.gen.rng.choice([500, 503, RESET])] * 50
        sc.post(idem, body)
        keys.append(idem)
    sc.settle()
    dead = [sc.ids[keys[2]], sc.ids[keys[6]]]
    got = [e for e in sub.acked_events()]
    want = [e for e in sc.expected("orders") if e not in dead]
    assert got == want, f"subscription orders: acknowledged {got}, expected every event but the dead ones {want}"
    sc.assert_delivered_once_in_order("audit", " (beside a subscription with dead letters)")
    for event_id in dead:
        attempts = sum(d.event == event_id for d in sub.received)
        assert attempts == MAX_ATTEMPTS, f"event {event_id}: {attempts} attempts, expected --max-attempts {MAX_ATTEMPTS}"
    letters = sc.client.get("/dead-letters").json()
    listed = [(d.get("event"), d.get("subscription")) for d in (letters or {}).get("dead_letters", [])
              if isinstance(d, dict)] if isinstance(letters, dict) else []
    assert listed == [(event_id, sc.sub_ids["orders"]) for event_id in dead], f"GET /dead-letters: {letters}"
    for event_id in dead:
        shown = sc.client.get(f"/events/{event_id}").json()
        assert isinstance(shown, dict) and shown.get("deliveries") == {
            sc.sub_ids["orders"]: "dead", sc.sub_ids["audit"]: "delivered"}, f"GET /events/{event_id}: {shown}"


@pytest.mark.genuine
def test_a_stuck_subscriber_does_not_hold_up_others(relay, endpoints, seed):
    """While one subscriber holds its first delivery open, another subscription receives all
    of its events; released, the first then receives its events in order."""
    sc = Scenario(relay, endpoints, Gen(seed, "retry-isolation"), flags=FLAGS).start()
    stuck = sc.subscribe("stuck", TOPICS, policy=lambda d: HOLD if d.index == 0 else 200)
    sc.subscribe("free", ["order.paid", "invoice.sent"])
    for _ in range(12):
        sc.new_event(sc.gen.rng.choice(TOPICS))
    stuck.wait_received(1)
    for event_id in sc.expected("free"):
        sc.subscribers["free"].wait_acked(event_id, f"{event_id} while another subscriber is stuck")
    assert len(stuck.received) == 1, "the stuck subscriber got a second delivery while its first was open"
    stuck.release(200)
    sc.settle()
    sc.assert_delivered_once_in_order("stuck")
    sc.assert_delivered_once_in_order("free")


@pytest.mark.contract
def test_attempt_numbers_backoff_and_dead_letter_document(relay, endpoints, seed):
    """X-Relay-Attempt counts 1, 2, ...; attempt k+1 starts at least base * 2^(k-1) ms after
    attempt k; a dead letter reads {"event", "subscription", "attempts"}."""
    sc = Scenario(relay, endpoints, Gen(seed, "retry-headers"), flags=("--retry-base-ms", "40", "--max-attempts", "3")).start()
    policy = FailFirst({})
    sub = sc.subscribe("orders", ["order.created"], policy=policy)
    body = sc.gen.event("order.created")
    policy.failures[body["payload"]["ref"]] = [503] * 3
    idem = sc.gen.idempotency_key()
    sc.post(idem, body)
    sc.settle()
    sc.wait_recorded("orders", 1)  # the sentinel acknowledged AND recorded, before the documents
    attempts = [d for d in sub.received if d.event == sc.ids[idem]]
    assert [d.attempt for d in attempts] == ["1", "2", "3"], \
        f"X-Relay-Attempt of the three attempts: {[d.attempt for d in attempts]}"
    for k in (1, 2):
        gap_ms = (attempts[k].received_at - attempts[k - 1].received_at) * 1000
        assert gap_ms >= 40 * 2 ** (k - 1) - 2, \
            f"attempt {k + 1} came {gap_ms:.0f} ms after attempt {k}; expected at least {40 * 2 ** (k - 1)} ms"
    letters = sc.client.get("/dead-letters").json()
    assert letters == {"dead_letters": [{"event": sc.ids[idem], "subscription": sc.sub_ids["orders"], "attempts": 3}]}, \
        f"GET /dead-letters: {letters}"
    doc = sc.client.get(f"/subscriptions/{sc.sub_ids['orders']}").json()
    assert isinstance(doc, dict) and (doc.get("pending"), doc.get("delivered"), doc.get("dead")) == (0, 1, 1), \
        f"GET /subscriptions/{{id}}: {doc}"
