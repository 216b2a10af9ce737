"""Gate ``late_events`` (active from E3): late versions of a key never overwrite newer ones.

Events may carry an ordering ``key`` and a ``version``. An event whose version is not greater
than the greatest version already accepted for its key (in this run or any earlier run on the
state directory) arrived late: it is answered 202 ``stale``, recorded, and never delivered,
dead-lettered or replayed. Events of other keys and events without a key are unaffected. A
retry of an already-answered request is a duplicate first, whatever its version.
"""

import re
import time
from datetime import datetime

import pytest

from _relay import FailFirst, Gen, Scenario

FLAGS = ("--retry-base-ms", "5", "--max-attempts", "3")
TOPICS = ["order.created", "order.paid"]


def shuffled_versions(sc, keys, per_key):
    """Events for ``keys`` with versions 1..per_key arriving partly out of order, mixed with
    unkeyed events; returns ``[(idem, body)]`` in sending order."""
    rng = sc.gen.rng
    queue = []
    for key in keys:
        versions = list(range(1, per_key + 1))
        for i in range(len(versions) - 1):  # local swaps: late by one or two versions
            if rng.random() < 0.4:
                j = min(len(versions) - 1, i + rng.randint(1, 2))
                versions[i], versions[j] = versions[j], versions[i]
        queue.append([(key, v) for v in versions])
    out = []
    while any(queue):
        lane = rng.choice([q for q in queue if q])
        key, version = lane.pop(0)
        out.append((sc.gen.idempotency_key(), sc.gen.event(rng.choice(TOPICS), key, version)))
        if rng.random() < 0.3:
            out.append((sc.gen.idempotency_key(), sc.gen.event(rng.choice(TOPICS))))
    return out


ANY = ("accepted", "stale", "duplicate")


@pytest.mark.genuine
def test_late_versions_are_stale_and_never_delivered(relay, endpoints, seed):
    """Versions arriving after a greater one of the same key are answered stale, shown stale
    with no deliveries, and never delivered; all others are delivered in order."""
    sc = Scenario(relay, endpoints, Gen(seed, "late-stale"), flags=FLAGS).start()
    sc.subscribe("orders", TOPICS)
    sc.subscribe("paid", ["order.paid"])
    sent = shuffled_versions(sc, [f"order-{n}" for n in sc.gen.rng.sample(range(1000, 9999), 4)], 6)
    for idem, body in sent:
        sc.post(idem, body, allow=ANY)
    stale = [idem for idem, _ in sent if sc.model.events[idem].status == "stale"]
    assert stale, "generator bug: no stale event"
    sc.settle()
    sc.assert_delivered_once_in_order("orders", " (with late versions)")
    sc.assert_delivered_once_in_order("paid", " (with late versions)")
    for idem in stale:
        shown = sc.client.get(f"/events/{sc.ids[idem]}").json()
        assert isinstance(shown, dict) and shown.get("status") == "stale" and not shown.get("deliveries"), \
            f"GET /events/{sc.ids[idem]} of a stale event: {shown}"


@pytest.mark.genuine
def test_newest_versions_survive_a_kill(relay, endpoints, seed):
    """After a kill and restart, a version not greater than one accepted before is stale."""
    sc = Scenario(relay, endpoints, Gen(seed, "late-restart"), flags=FLAGS).start()
    sc.subscribe("orders", TOPICS)
    keys = [f"order-{n}" for n in sc.gen.rng.sample(range(1000, 9999), 3)]
    for version in (2, 5, 9):
        for key in keys:
            sc.new_event(sc.gen.rng.choice(TOPICS), key, version)
    sc.quiesce()
    sc.restart()
    for key in keys:
        for version in sc.gen.rng.sample([1, 3, 4, 6, 8, 9], 3):
            sc.new_event(sc.gen.rng.choice(TOPICS), key, version, allow=("stale",))
        sc.new_event(sc.gen.rng.choice(TOPICS), key, 10)
    sc.settle()
    sc.assert_delivered_once_in_order("orders", " (late versions after a restart)")


@pytest.mark.genuine
def test_retries_are_duplicates_before_they_are_stale(relay, endpoints, seed):
    """A retry of an accepted event after a newer version was accepted, and a retry of a stale
    event, are duplicates naming the original event, not new stale events."""
    sc = Scenario(relay, endpoints, Gen(seed, "late-dup"), flags=FLAGS).start()
    sc.subscribe("orders", TOPICS)
    key = f"order-{sc.gen.rng.randrange(1000, 9999)}"
    old = sc.gen.idempotency_key()
    old_body = sc.gen.event("order.created", key, 1)
    sc.post(old, old_body)
    newer = sc.new_event("order.paid", key, 4)
    late = sc.new_event("order.paid", key, 3, allow=("stale",))
    late_body = {name: sc.model.events[late].body[name] for name in ("topic", "payload", "key", "version")}
    for _ in range(2):
        sc.post(old, old_body, raw=sc.gen.variant(old_body))
        sc.post(late, late_body, raw=sc.gen.variant(late_body))
    sc.quiesce()
    sc.restart()
    sc.post(old, old_body, raw=sc.gen.variant(old_body))
    sc.post(late, late_body, raw=sc.gen.variant(late_body))
    sc.settle()
    sc.assert_delivered_once_in_order("orders")
    assert sc.ids[newer] in sc.subscribers["orders"].acked_events()


@pytest.mark.genuine
def test_stale_events_are_never_dead_lettered_or_replayed(relay, endpoints, seed):
    """A failing subscriber dead-letters its due events only; a replay re-sends delivered
    events only: stale ones appear in neither."""
    sc = Scenario(relay, endpoints, Gen(seed, "late-replay"), flags=FLAGS).start()
    policy = FailFirst({})
    sub = sc.subscribe("orders", TOPICS, policy=policy)
    sent = shuffled_versions(sc, [f"order-{n}" for n in sc.gen.rng.sample(range(1000, 9999), 2)], 5)
    for i, (idem, body) in enumerate(sent):
        if i == 1:
            policy.failures[body["payload"]["ref"]] = [500] * 10
        sc.post(idem, body, allow=ANY)
    sc.settle()
    dead_key = sent[1][0]
    stale = {sc.ids[idem] for idem, _ in sent if sc.model.events[idem].status == "stale"}
    letters = sc.client.get("/dead-letters").json()
    listed = [d.get("event") for d in letters.get("dead_letters", [])] if isinstance(letters, dict) else letters
    want_dead = [] if sc.model.events[dead_key].status == "stale" else [sc.ids[dead_key]]
    assert listed == want_dead, f"GET /dead-letters: {letters} (stale events: {sorted(stale)})"
    delivered = [e for e in sc.expected("orders") if e not in want_dead]
    sc.wait_recorded("orders", len(delivered))
    answer = sc.client.request("POST", f"/subscriptions/{sc.sub_ids['orders']}/replay", {})
    assert answer.status == 202, f"replay: {answer.describe()}"
    sub.wait_for(lambda s: sum(d.replay for d in s.acked) >= len(delivered), "the replay")
    sc.settle()
    replayed = [d.event for d in sub.acked if d.replay]
    assert replayed == delivered, f"replayed {replayed}, expected the delivered events {delivered}"
    assert not stale & {d.event for d in sub.received}, "a stale event was sent to the subscriber"


ISO_MS = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z\Z")


@pytest.mark.contract
def test_delivery_carries_key_version_and_acceptance_time(relay, endpoints, seed):
    """A keyed event's delivery body has "key", "version" and "accepted_at" (UTC, ISO 8601
    with milliseconds, between request and answer), the same on every attempt; an unkeyed
    event's has accepted_at and no key; stale answers read {"id", "status": "stale"}."""
    sc = Scenario(relay, endpoints, Gen(seed, "late-body"), flags=FLAGS).start()
    policy = FailFirst({})
    sub = sc.subscribe("orders", TOPICS, policy=policy)
    key = f"order-{sc.gen.rng.randrange(1000, 9999)}"
    body = sc.gen.event("order.created", key, 7)
    policy.failures[body["payload"]["ref"]] = [503]
    idem = sc.gen.idempotency_key()
    before = time.time()
    sc.post(idem, body)
    after = time.time()
    plain = sc.new_event("order.paid")
    stale_answer = sc.client.post_event(sc.gen.idempotency_key(), sc.gen.event("order.paid", key, 7))
    doc = stale_answer.json()
    assert stale_answer.status == 202 and isinstance(doc, dict) and doc.get("status") == "stale" \
        and set(doc) == {"id", "status"}, f"answer to a stale event: {stale_answer.describe()}"
    sc.settle()
    attempts = [d for d in sub.received if d.event == sc.ids[idem]]
    assert len(attempts) == 2 and attempts[0].body == attempts[1].body, "the retried body differs from the first"
    doc = attempts[-1].document
    assert doc.get("key") == key and doc.get("version") == 7, f"delivery body: {attempts[-1].body[:300]!r}"
    stamp = doc.get("accepted_at")
    assert isinstance(stamp, str) and ISO_MS.match(stamp), f"accepted_at {stamp!r} is not YYYY-MM-DDTHH:MM:SS.mmmZ"
    accepted = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    assert before - 1 <= accepted <= after + 1, f"accepted_at {stamp} is not the time the event was accepted"
    unkeyed = next(d.document for d in sub.acked if d.event == sc.ids[plain])
    assert "key" not in unkeyed and "version" not in unkeyed and ISO_MS.match(unkeyed.get("accepted_at", "")), \
        f"delivery body of an unkeyed event: {unkeyed}"
