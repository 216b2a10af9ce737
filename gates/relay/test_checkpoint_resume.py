"""Gate ``checkpoint_resume`` (active from E2): a relay killed at any moment resumes exactly.

The relay is SIGKILLed while subscribers hold deliveries open (so the kill lands at a known
point: the held delivery is in flight, everything before it on that subscription was
acknowledged and, by the one-at-a-time rule, recorded), then started again on the same state
directory. Afterwards every accepted event must reach every subscription it was due to, each
acknowledged exactly once and in acceptance order: deliveries acknowledged before the kill are
not sent again, the one in flight is sent again with the same delivery id, and idempotency keys
answered before the kill are still known.
"""

import pytest

from _relay import Gen, Scenario, ack_all, hold_after

FLAGS = ("--retry-base-ms", "5", "--max-attempts", "8")
TOPICS = ["order.created", "order.paid", "invoice.sent"]


def post_many(sc, count, topics=TOPICS):
    return [sc.new_event(sc.gen.rng.choice(topics)) for _ in range(count)]


def held_delivery(endpoint):
    """The delivery id of the request the endpoint is holding (the last one it received)."""
    return endpoint.received[-1].delivery_id


@pytest.mark.genuine
@pytest.mark.slow
def test_in_flight_and_queued_deliveries_survive_a_kill(relay, endpoints, seed):
    """Killed while one subscriber holds its first delivery (the rest queued behind it) and
    another has acknowledged everything: after the restart the first gets every event once, in
    order, the held one again under the same delivery id; the second gets nothing again."""
    sc = Scenario(relay, endpoints, Gen(seed, "ckpt-inflight"), flags=FLAGS).start()
    slow = sc.subscribe("slow", ["order.created", "order.paid"], policy=hold_after(0))
    sc.subscribe("fast", ["order.paid", "invoice.sent"])
    post_many(sc, 16)
    slow.wait_received(1)
    held = held_delivery(slow)
    sc.wait_recorded("fast", len(sc.expected("fast")))
    sc.kill()
    slow.release()
    slow.rearm(ack_all)
    sc.start()
    post_many(sc, 4)
    sc.settle()
    sc.assert_delivered_once_in_order("slow", " (killed with a delivery in flight)")
    sc.assert_delivered_once_in_order("fast", " (killed after acknowledging everything)")
    assert any(d.delivery_id == held for d in slow.acked), \
        f"the delivery in flight at the kill ({held}) was not sent again with the same delivery id"


@pytest.mark.genuine
@pytest.mark.slow
def test_repeated_kills_resend_nothing_acknowledged(relay, endpoints, seed):
    """Killed twice mid-stream (after k and after k + j acknowledged deliveries): the final
    deliveries are each event exactly once, in order; retries of earlier keys stay duplicates."""
    sc = Scenario(relay, endpoints, Gen(seed, "ckpt-twice"), flags=FLAGS).start()
    rng = sc.gen.rng
    first, second = rng.randint(3, 7), rng.randint(4, 8)
    sub = sc.subscribe("orders", TOPICS, policy=hold_after(first))
    posted = post_many(sc, 24)
    sub.wait_received(first + 1)
    sc.kill()
    sub.release()
    held_index = len(sub.received) + second  # the re-sent held delivery and second - 1 more are acknowledged
    sub.rearm(hold_after(held_index))
    sc.start()
    sub.wait_received(held_index + 1)
    sc.kill()
    sub.release()
    sub.rearm(ack_all)
    sc.start()
    for idem in rng.sample(posted, 6):
        body = {name: sc.model.events[idem].body[name] for name in ("topic", "payload")}
        sc.post(idem, body, raw=sc.gen.variant(body))
    sc.settle()
    sc.assert_delivered_once_in_order("orders", " (killed twice)")


@pytest.mark.genuine
def test_answered_keys_survive_a_kill(relay, endpoints, seed):
    """Killed right after answering: every event answered 202 is delivered after the restart,
    and a retry of its key is a duplicate naming it."""
    sc = Scenario(relay, endpoints, Gen(seed, "ckpt-keys"), flags=FLAGS).start()
    sub = sc.subscribe("orders", TOPICS, policy=hold_after(2))
    posted = post_many(sc, 14)
    sub.wait_received(3)
    sc.kill()
    sub.release()
    sub.rearm(ack_all)
    sc.start()
    for idem in posted:
        body = {name: sc.model.events[idem].body[name] for name in ("topic", "payload")}
        sc.post(idem, body, raw=sc.gen.variant(body))
    sc.settle()
    sc.assert_delivered_once_in_order("orders", " (killed after answering)")


@pytest.mark.contract
def test_status_documents_after_a_restart(relay, endpoints, seed):
    """After a kill and restart, GET /subscriptions/{id} counts pending and delivered
    deliveries, and GET /events/{id} shows each delivery's state."""
    sc = Scenario(relay, endpoints, Gen(seed, "ckpt-status"), flags=FLAGS).start()
    sub = sc.subscribe("orders", TOPICS, policy=hold_after(3))
    post_many(sc, 8)
    sub.wait_received(4)
    sc.kill()
    sub.release()
    sub.rearm(hold_after(len(sub.received)))  # hold the re-sent delivery: 5 stay pending
    sc.start()
    sub.wait_received(5)
    sub_id = sc.sub_ids["orders"]
    doc = sc.client.get(f"/subscriptions/{sub_id}").json()
    assert isinstance(doc, dict) and doc.get("pending") == 5 and doc.get("delivered") == 3, \
        f"GET /subscriptions/{sub_id} after the restart: {doc} (expected pending 5, delivered 3)"
    states = {}
    for event_id in sc.expected("orders"):
        shown = sc.client.get(f"/events/{event_id}").json()
        states[event_id] = (shown or {}).get("deliveries", {}).get(sub_id) if isinstance(shown, dict) else None
    want = {event_id: "delivered" if i < 3 else "pending" for i, event_id in enumerate(sc.expected("orders"))}
    assert states == want, f"GET /events/{{id}} delivery states after the restart: {states}"
    sub.release(200)
