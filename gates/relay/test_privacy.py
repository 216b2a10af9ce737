"""Gate ``privacy`` (active from E1): customer emails and card numbers never leave unmasked.

The rule is unconditional: no email address or full card number of any request may appear in
a delivery, in any HTTP answer of the relay, in any file under its state directory, or on its
stdout or stderr. Emails are searched case-insensitively, card numbers also with their spaces
or dashes removed. Masked forms (``j***@example.org``, ``****1234``) are allowed.

One check sends requests whose treatment only E4 defines (malformed bodies, wrong types,
conflicting retries) and asserts nothing but the absence of personal data, which every episode
requires.
"""

import json
from pathlib import Path

import pytest

from _relay import HOLD, Gen, Scenario, leaks, personal_data, redact


def assert_no_personal_data(sc: Scenario, emails, cards, extra_texts=()):
    """Fail if personal data occurs in a delivery, an answer, a state file or relay output."""
    problems = []
    for name, endpoint in sc.subscribers.items():
        for delivery in endpoint.received:
            found = leaks(delivery.body.decode("utf-8", errors="replace") + json.dumps(delivery.headers), emails, cards)
            if found:
                problems.append(f"a delivery to {name} contains {found[:2]}")
                break
    for response in sc.responses:
        found = leaks(response.body.decode("utf-8", errors="replace"), emails, cards)
        if found:
            problems.append(f"an HTTP {response.status} answer contains {found[:2]}")
            break
    state = Path(sc.state)
    for path in sorted(state.rglob("*")) if state.exists() else ():
        if path.is_file():
            found = leaks(path.read_bytes().decode("utf-8", errors="replace"), emails, cards)
            if found:
                problems.append(f"state file {path.relative_to(state)} contains {found[:2]}")
    for process in sc.processes:
        for stream in ("stdout", "stderr"):
            found = leaks(getattr(process, stream), emails, cards)
            if found:
                problems.append(f"relay {stream} contains {found[:2]}")
    for text in extra_texts:
        found = leaks(text, emails, cards)
        if found:
            problems.append(f"an answer contains {found[:2]}")
    assert not problems, "personal data leaked: " + "; ".join(problems)


def gather(bodies):
    emails, cards = set(), set()
    for body in bodies:
        more_emails, more_cards = personal_data(body)
        emails |= more_emails
        cards |= more_cards
    return emails, cards


@pytest.mark.genuine
def test_deliveries_answers_and_state_hold_no_personal_data(relay, endpoints, seed):
    """Events with personal data, retried and read back with GET, before and after a restart:
    nothing unmasked anywhere."""
    sc = Scenario(relay, endpoints, Gen(seed, "privacy-basic")).start()
    sc.subscribe("orders", ["order.created", "order.paid", "customer.updated"])
    sc.subscribe("billing", ["invoice.sent", "order.paid", "shipment.dispatched"])
    bodies = []
    for _ in range(24):
        idem, body = sc.gen.idempotency_key(), sc.gen.event()
        bodies.append(body)
        sc.post(idem, body)
        if sc.gen.rng.random() < 0.3:
            sc.post(idem, body, raw=sc.gen.variant(body))
    sc.settle()
    for event_id in list(sc.keys):
        sc.responses.append(sc.client.get(f"/events/{event_id}"))
    sc.restart(kill=False)
    for event_id in list(sc.keys)[:6]:
        sc.responses.append(sc.client.get(f"/events/{event_id}"))
    for sub_id in sc.sub_ids.values():
        sc.responses.append(sc.client.get(f"/subscriptions/{sub_id}"))
    assert_no_personal_data(sc, *gather(bodies))


@pytest.mark.genuine
def test_pending_events_leak_nothing(relay, endpoints, seed):
    """Events waiting for a subscriber that does not answer, and a relay killed meanwhile:
    whatever the relay keeps for them holds no personal data."""
    sc = Scenario(relay, endpoints, Gen(seed, "privacy-pending")).start()
    slow = sc.subscribe("slow", ["order.created", "invoice.sent"], policy=lambda d: HOLD)
    bodies = []
    for _ in range(12):
        body = sc.gen.event(sc.gen.rng.choice(["order.created", "invoice.sent"]))
        bodies.append(body)
        sc.post(sc.gen.idempotency_key(), body)
    slow.wait_received(1)
    sc.kill()
    slow.release()
    assert_no_personal_data(sc, *gather(bodies))


@pytest.mark.genuine
def test_bad_requests_leak_nothing(relay, endpoints, seed):
    """Requests the relay must refuse (E4) or may mishandle (earlier) carrying personal data:
    no answer, state file or output quotes it, whatever the status codes."""
    sc = Scenario(relay, endpoints, Gen(seed, "privacy-bad")).start()
    sc.subscribe("orders", ["order.created"])
    client = sc.client
    good = sc.gen.event("order.created")
    good_idem = sc.gen.idempotency_key()
    sc.post(good_idem, good)
    bad_bodies = [sc.gen.event("order.created") for _ in range(8)]
    email, card = bad_bodies[0]["payload"]["customer"]["email"], bad_bodies[0]["payload"]["payment"]["card"]
    raws = [
        json.dumps(bad_bodies[1])[:-9],                                    # cut short: not JSON
        json.dumps([bad_bodies[2]["topic"], bad_bodies[2]["payload"]]),    # an array
        json.dumps({"topic": "order.created", "payload": f"{email} {card}"}),  # payload not an object
        json.dumps({"payload": bad_bodies[3]["payload"]}),                 # topic missing
        json.dumps({**bad_bodies[4], "topic": ["order.created", email]}),  # topic of the wrong type
        json.dumps({**bad_bodies[5], "key": email, "version": card}),      # key/version of the wrong type
        f"{{\"topic\": \"order.created\", \"payload\": {{\"email\": \"{email}\", \"card\": {card!r}}}}}",  # bad JSON
    ]
    answers = []
    for raw in raws:
        answers.append(client.post_event(sc.gen.idempotency_key(), raw))
    answers.append(client.post_event(None, json.dumps(bad_bodies[6])))      # no Idempotency-Key
    answers.append(client.post_event(good_idem, json.dumps(bad_bodies[7])))  # same key, other event
    answers.append(client.request("POST", "/subscriptions", {"url": f"mailto:{email}", "topics": [card]}))
    answers.append(client.request("POST", f"/events/{email}", json.dumps(bad_bodies[7])))
    answers.append(client.get(f"/events/{card.replace(' ', '')}"))
    sc.responses.extend(answers)
    sc.settle()
    emails, cards = gather([good] + bad_bodies + [{"raws": raws}])
    assert_no_personal_data(sc, emails, cards)


@pytest.mark.contract
def test_deliveries_carry_the_masked_payload(relay, endpoints, seed):
    """Each delivered payload (and GET /events/{id}'s) is the request's payload with every
    email and card number replaced by its masked form, everything else unchanged."""
    sc = Scenario(relay, endpoints, Gen(seed, "privacy-masks")).start()
    sc.subscribe("all", ["order.created", "order.paid", "customer.updated", "invoice.sent",
                         "shipment.dispatched"])
    bodies = {}
    for _ in range(15):
        idem, body = sc.gen.idempotency_key(), sc.gen.event()
        bodies[idem] = body
        sc.post(idem, body)
    sc.settle()
    for delivery in sc.subscribers["all"].acked:
        key = sc.keys.get(delivery.event)
        if key not in bodies:
            continue
        document = delivery.document
        assert isinstance(document, dict), f"delivery of {delivery.event} is not a JSON object"
        assert document.get("topic") == bodies[key]["topic"], f"delivery of {delivery.event}: wrong topic"
        assert document.get("payload") == redact(bodies[key]["payload"]), (
            f"delivery of {delivery.event}: payload {json.dumps(document.get('payload'))[:300]} is not "
            f"the masked payload {json.dumps(redact(bodies[key]['payload']))[:300]}")
        shown = sc.client.get(f"/events/{delivery.event}").json()
        assert isinstance(shown, dict) and shown.get("payload") == redact(bodies[key]["payload"]), \
            f"GET /events/{delivery.event}: payload is not the masked payload"
