"""Gate ``replay`` (active from E2): a replay re-sends exactly what was delivered.

``POST /subscriptions/{id}/replay`` (optionally ``{"from": EVENT_ID}``) re-delivers, in their
original order, the events already delivered to that subscription. Each replayed delivery must
be byte-for-byte the original body under the original delivery id, marked
``X-Relay-Replay: 1``, also after the relay was killed and restarted in between, and replays
change no delivery state. Dead-lettered, pending and other subscriptions' events are not
replayed.
"""

import time

import pytest

from _relay import FailFirst, Gen, Scenario

FLAGS = ("--retry-base-ms", "5", "--max-attempts", "3")
TOPICS = ["order.created", "order.paid", "invoice.sent"]


def next_millisecond():
    """Wait until the wall clock has moved to a later millisecond (a stamp would differ)."""
    start = int(time.time() * 1000)
    while int(time.time() * 1000) == start:
        time.sleep(0.0005)


def originals(endpoint):
    """``{event id: (body, delivery id)}`` of the acknowledged original deliveries."""
    return {d.event: (d.body, d.delivery_id) for d in endpoint.acked if not d.replay}


def replay(sc, name, body=None):
    response = sc.client.request("POST", f"/subscriptions/{sc.sub_ids[name]}/replay", body if body is not None else {})
    sc.responses.append(response)
    return response


def wait_replays(endpoint, count):
    endpoint.wait_for(lambda s: sum(d.replay for d in s.acked) >= count, f"{count} replayed deliveries")


def assert_replayed(endpoint, event_ids, what=""):
    """The replayed deliveries are exactly ``event_ids`` in order, each identical to its original."""
    replays = [d for d in endpoint.acked if d.replay]
    got = [d.event for d in replays]
    assert got == event_ids, f"replay{what}: replayed {got}, expected {event_ids}"
    sent = originals(endpoint)
    for delivery in replays:
        body, delivery_id = sent[delivery.event]
        assert delivery.body == body, (
            f"replay{what}: the replayed body of {delivery.event} differs from the original:\n"
            f"original {body[:300]!r}\nreplayed {delivery.body[:300]!r}")
        assert delivery.delivery_id == delivery_id, \
            f"replay{what}: {delivery.event} replayed under delivery id {delivery.delivery_id}, originally {delivery_id}"


@pytest.mark.genuine
def test_replay_resends_identical_deliveries_in_order(relay, endpoints, seed):
    """Every delivered event is replayed once, in the original order, byte for byte, after the
    originals (some of which needed retries)."""
    sc = Scenario(relay, endpoints, Gen(seed, "replay-all"), flags=FLAGS).start()
    policy = FailFirst({})
    sub = sc.subscribe("orders", TOPICS, policy=policy)
    sc.subscribe("billing", ["invoice.sent"])
    for _ in range(14):
        body = sc.gen.event(sc.gen.rng.choice(TOPICS))
        if sc.gen.rng.random() < 0.3:
            policy.failures[body["payload"]["ref"]] = [503]
        sc.post(sc.gen.idempotency_key(), body)
    sc.settle()
    sc.wait_recorded("orders", len(sc.expected("orders")))
    next_millisecond()
    answer = replay(sc, "orders")
    assert answer.status == 202, f"replay: {answer.describe()}"
    wait_replays(sub, len(sc.expected("orders")))
    assert_replayed(sub, sc.expected("orders"))
    assert not any(d.replay for d in sc.subscribers["billing"].received), "another subscription received replays"


@pytest.mark.genuine
def test_replay_from_an_event(relay, endpoints, seed):
    """``{"from": id}`` replays that event and every later one delivered to the subscription."""
    sc = Scenario(relay, endpoints, Gen(seed, "replay-from"), flags=FLAGS).start()
    sub = sc.subscribe("orders", TOPICS)
    for _ in range(12):
        sc.new_event(sc.gen.rng.choice(TOPICS))
    sc.settle()
    due = sc.expected("orders")
    sc.wait_recorded("orders", len(due))
    start = sc.gen.rng.randrange(1, len(due) - 2)
    answer = replay(sc, "orders", {"from": due[start]})
    assert answer.status == 202, f"replay from {due[start]}: {answer.describe()}"
    wait_replays(sub, len(due) - start)
    sc.settle()
    assert_replayed(sub, due[start:], f" from {due[start]}")


@pytest.mark.genuine
@pytest.mark.slow
def test_replay_after_a_restart_is_identical(relay, endpoints, seed):
    """Killed and restarted between the deliveries and the replay: the replay is still the
    original bytes, and later events are delivered after the replayed ones."""
    sc = Scenario(relay, endpoints, Gen(seed, "replay-restart"), flags=FLAGS).start()
    sub = sc.subscribe("orders", TOPICS)
    for _ in range(10):
        sc.new_event(sc.gen.rng.choice(TOPICS))
    sc.quiesce()
    due = sc.expected("orders")
    sc.restart()
    next_millisecond()
    answer = replay(sc, "orders")
    assert answer.status == 202, f"replay after a restart: {answer.describe()}"
    sc.settle()
    assert_replayed(sub, due, " after a restart")
    sc.assert_delivered_once_in_order("orders", " (replay after a restart)")
    sentinel = sc.expected("orders")[-1]
    order = [d.event for d in sub.acked]
    assert order.index(sentinel) > max(i for i, d in enumerate(sub.acked) if d.replay), \
        "an event accepted after the replay request was delivered before the replayed ones"


@pytest.mark.genuine
def test_replay_skips_undelivered_events_and_changes_no_state(relay, endpoints, seed):
    """Dead-lettered events are not replayed; the replay changes no counts or delivery states;
    a second replay gives the same again."""
    sc = Scenario(relay, endpoints, Gen(seed, "replay-skip"), flags=FLAGS).start()
    policy = FailFirst({})
    sub = sc.subscribe("orders", TOPICS, policy=policy)
    dead = []
    for i in range(10):
        idem, body = sc.gen.idempotency_key(), sc.gen.event(sc.gen.rng.choice(TOPICS))
        if i in (1, 5):
            policy.failures[body["payload"]["ref"]] = [500] * 10
            dead.append(idem)
        sc.post(idem, body)
    sc.settle()
    delivered = [e for e in sc.expected("orders") if sc.keys[e] not in dead]
    sc.wait_recorded("orders", len(delivered))
    counts = sc.client.get(f"/subscriptions/{sc.sub_ids['orders']}").json()
    for run in (1, 2):
        answer = replay(sc, "orders")
        assert answer.status == 202, f"replay: {answer.describe()}"
        wait_replays(sub, run * len(delivered))
    replays = [d.event for d in sub.acked if d.replay]
    assert replays == delivered * 2, f"two replays sent {replays}, expected the delivered events twice: {delivered}"
    assert sc.client.get(f"/subscriptions/{sc.sub_ids['orders']}").json() == counts, \
        "a replay changed the subscription's counts"
    for idem in dead:
        shown = sc.client.get(f"/events/{sc.ids[idem]}").json()
        assert isinstance(shown, dict) and shown.get("deliveries") == {sc.sub_ids["orders"]: "dead"}, \
            f"GET /events/{sc.ids[idem]} after a replay: {shown}"


@pytest.mark.contract
def test_replay_answer_and_unknown_subscription(relay, endpoints, seed):
    """The answer is 202 {"replayed": N}; an unknown subscription is 404."""
    sc = Scenario(relay, endpoints, Gen(seed, "replay-docs"), flags=FLAGS).start()
    sub = sc.subscribe("orders", TOPICS)
    for _ in range(5):
        sc.new_event(sc.gen.rng.choice(TOPICS))
    sc.settle()
    due = sc.expected("orders")
    sc.wait_recorded("orders", len(due))
    answer = replay(sc, "orders")
    assert answer.status == 202 and answer.json() == {"replayed": len(due)}, f"replay: {answer.describe()}"
    wait_replays(sub, len(due))
    assert all(d.headers.get("x-relay-replay") == "1" for d in sub.received if d.replay)
    first = replay(sc, "orders", {"from": due[0]})
    assert first.status == 202 and first.json() == {"replayed": len(due)}, \
        f"replay from the first delivered event {due[0]}: {first.describe()}"
    last = replay(sc, "orders", {"from": due[-1]})
    assert last.status == 202 and last.json() == {"replayed": 1}, f"replay from the last delivered event: {last.describe()}"
    missing = sc.client.request("POST", "/subscriptions/sub-does-not-exist/replay", {})
    assert missing.status == 404, f"replay of an unknown subscription: {missing.describe()}"
