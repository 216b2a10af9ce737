"""Gate ``negative_paths`` (active from E4): bad requests are refused precisely, and harmlessly.

Every refused request gets its status and ``{"error": CODE}`` and changes nothing: no event, no
delivery, no remembered idempotency key (a later valid request with that key is accepted). A
retry whose key names a different event is a conflict (409), while the same JSON serialised
differently is still a duplicate. The relay keeps serving throughout; a bad command line exits
2 with one line on stderr.
"""

import json

import pytest

from _relay import Gen, Model, Scenario

TOPICS = ["order.created", "order.paid"]


def bad_event_requests(gen):
    """``[(idempotency key or None, raw body, status, code)]``: one request per refusal kind,
    several of them with more than one fault (the first in the documented order wins)."""
    good = gen.event("order.created")
    cases = [
        (None, json.dumps(good), 400, "missing_idempotency_key"),
        ("", json.dumps(good), 400, "missing_idempotency_key"),
        (None, "{not json", 400, "missing_idempotency_key"),
        (gen.idempotency_key(), json.dumps(good)[:-5], 400, "malformed_json"),
        (gen.idempotency_key(), json.dumps([good]), 400, "malformed_json"),
        (gen.idempotency_key(), "null", 400, "malformed_json"),
        (gen.idempotency_key(), json.dumps({"payload": good["payload"]}), 400, "missing_field"),
        (gen.idempotency_key(), json.dumps({"topic": "order.paid"}), 400, "missing_field"),
        (gen.idempotency_key(), json.dumps({**good, "key": "order-1"}), 400, "missing_field"),
        (gen.idempotency_key(), json.dumps({**good, "version": 3}), 400, "missing_field"),
        (gen.idempotency_key(), json.dumps({"topic": 7}), 400, "missing_field"),
        (gen.idempotency_key(), json.dumps({**good, "topic": ""}), 400, "wrong_type"),
        (gen.idempotency_key(), json.dumps({**good, "topic": None}), 400, "wrong_type"),
        (gen.idempotency_key(), json.dumps({**good, "payload": [1, 2]}), 400, "wrong_type"),
        (gen.idempotency_key(), json.dumps({**good, "payload": "text"}), 400, "wrong_type"),
        (gen.idempotency_key(), json.dumps({**good, "key": "order-1", "version": 0}), 400, "wrong_type"),
        (gen.idempotency_key(), json.dumps({**good, "key": "order-1", "version": 2.5}), 400, "wrong_type"),
        (gen.idempotency_key(), json.dumps({**good, "key": "order-1", "version": True}), 400, "wrong_type"),
        (gen.idempotency_key(), json.dumps({**good, "key": "order-1", "version": "3"}), 400, "wrong_type"),
        (gen.idempotency_key(), json.dumps({**good, "key": "", "version": 3}), 400, "wrong_type"),
    ]
    for case in cases:  # the model agrees with every expectation written here
        assert Model.invalid(case[0], case[1]) == (case[2], case[3]), f"table bug: {case}"
    return cases


def assert_error(response, status, code, what):
    assert response.status == status and response.json() == {"error": code}, \
        f"{what}: expected HTTP {status} {{\"error\": \"{code}\"}}, got {response.describe()}"


@pytest.mark.contract
def test_each_refusal_has_its_status_and_code(relay, endpoints, seed):
    """Every documented refusal: bad events, bad subscriptions, unknown ids and routes, wrong
    methods, oversized bodies, bad replays."""
    sc = Scenario(relay, endpoints, Gen(seed, "neg-codes")).start()
    sc.subscribe("orders", TOPICS)
    client = sc.client
    for key, raw, status, code in bad_event_requests(sc.gen):
        assert_error(client.post_event(key, raw), status, code, f"POST /events {raw[:60]!r} (key {key!r})")
    url = sc.subscribers["orders"].url
    for body, code in [
        ("[]", "malformed_json"), ("{", "malformed_json"),
        ({"url": url}, "missing_field"), ({"topics": ["a"]}, "missing_field"),
        ({"url": "ftp://example.org/x", "topics": ["a"]}, "wrong_type"),
        ({"url": 5, "topics": ["a"]}, "wrong_type"),
        ({"url": url, "topics": []}, "wrong_type"), ({"url": url, "topics": "order.paid"}, "wrong_type"),
        ({"url": url, "topics": ["ok", ""]}, "wrong_type"),
    ]:
        assert_error(client.request("POST", "/subscriptions", body), 400, code, f"POST /subscriptions {body!r}")
    assert_error(client.get("/events/evt-404-no-such"), 404, "not_found", "GET of an unknown event")
    assert_error(client.get("/subscriptions/sub-404-no-such"), 404, "not_found", "GET of an unknown subscription")
    sub_id = sc.sub_ids["orders"]
    for path in ("/no/such/route", "/events/a/b", f"/subscriptions/{sub_id}/replay/x", "/dead-letters/x"):
        assert_error(client.get(path), 404, "not_found", f"GET of the unknown route {path}")
    assert_error(client.request("POST", f"/subscriptions/{sub_id}/resend", {}), 404, "not_found",
                 "POST of an unknown route under a subscription")
    for method, path in [("DELETE", "/events"), ("GET", "/events"), ("PUT", "/subscriptions"),
                         ("GET", "/subscriptions"), ("POST", "/events/evt-1"),
                         ("DELETE", f"/subscriptions/{sub_id}"), ("GET", f"/subscriptions/{sub_id}/replay"),
                         ("POST", "/dead-letters")]:
        assert_error(client.request(method, path, {} if method in ("POST", "PUT") else None), 405,
                     "method_not_allowed", f"{method} {path}")
    # 1 MiB is the largest body accepted (spaces: a payload no masking pattern works hard on).
    head, tail = '{"topic": "audit.size", "payload": {"blob": "', '"}}'
    exact = head + " " * (1024 * 1024 - len(head) - len(tail)) + tail
    answer = client.post_event(sc.gen.idempotency_key(), exact)
    assert answer.status == 202 and (answer.json() or {}).get("status") == "accepted", \
        f"a body of exactly 1 MiB (1,048,576 bytes): expected 202 accepted, got {answer.describe()}"
    assert_error(client.post_event(sc.gen.idempotency_key(), exact[:-2] + ' "}}'), 413, "payload_too_large",
                 "a body of 1 MiB + 1 byte")
    assert_error(client.request("POST", f"/subscriptions/{sub_id}/replay", "[1]"), 400, "malformed_json", "replay body []")
    assert_error(client.request("POST", f"/subscriptions/{sub_id}/replay", {"from": 3}), 400, "wrong_type",
                 "replay from a number")
    assert_error(client.request("POST", f"/subscriptions/{sub_id}/replay", {"from": "evt-404-no-such"}), 404,
                 "not_found", "replay from an event never delivered to the subscription")


@pytest.mark.genuine
def test_bad_requests_change_nothing_and_the_relay_keeps_serving(relay, endpoints, seed):
    """Bad requests mixed into a stream of good ones: every good event is delivered once, in
    order; no refused request creates an event or a delivery."""
    sc = Scenario(relay, endpoints, Gen(seed, "neg-stream")).start()
    sc.subscribe("orders", TOPICS)
    sc.subscribe("billing", ["order.paid"])
    bad = bad_event_requests(sc.gen)
    sc.gen.rng.shuffle(bad)
    for i in range(24):
        sc.new_event(sc.gen.rng.choice(TOPICS))
        if i < len(bad):
            key, raw, status, code = bad[i]
            response = sc.post(key, raw, raw=raw, allow=(code,))
            assert response.json() == {"error": code}, f"refusal: {response.describe()}"
    sc.settle()
    sc.assert_delivered_once_in_order("orders", " (with bad requests mixed in)")
    sc.assert_delivered_once_in_order("billing", " (with bad requests mixed in)")
    for delivery in sc.subscribers["orders"].received:
        assert delivery.event in sc.keys, f"a delivery of {delivery.event}, which no accepted request created"


@pytest.mark.genuine
def test_a_refused_requests_key_is_not_remembered(relay, endpoints, seed):
    """A valid request reusing the key of a refused one is accepted and delivered, in the same
    run and after a restart."""
    sc = Scenario(relay, endpoints, Gen(seed, "neg-unseen")).start()
    sc.subscribe("orders", TOPICS)
    reused = []
    for key, raw, status, code in bad_event_requests(sc.gen):
        if key:
            sc.post(key, raw, raw=raw, allow=(code,))
            reused.append(key)
    later = sc.gen.rng.sample(reused, 4)
    for key in reused:
        if key not in later:
            sc.post(key, sc.gen.event(sc.gen.rng.choice(TOPICS)), allow=("accepted",))
    sc.quiesce()
    sc.restart()
    for key in later:
        sc.post(key, sc.gen.event(sc.gen.rng.choice(TOPICS)), allow=("accepted",))
    sc.settle()
    sc.assert_delivered_once_in_order("orders", " (keys of refused requests reused)")


@pytest.mark.genuine
def test_a_key_reused_for_another_event_is_a_conflict(relay, endpoints, seed):
    """The same key with a different event (payload, topic or version; also one differing only
    in an email that masks the same) is 409 and changes nothing; the same JSON re-serialised is
    a duplicate; the original is delivered once."""
    sc = Scenario(relay, endpoints, Gen(seed, "neg-conflict")).start()
    sc.subscribe("orders", TOPICS)
    client = sc.client
    idem = sc.gen.idempotency_key()
    body = sc.gen.event("order.created", f"order-{sc.gen.rng.randrange(1000, 9999)}", 2)
    body["payload"]["codes"] = [1, 23]
    sc.post(idem, body)
    email = body["payload"]["customer"]["email"]
    at = email.index("@")
    twin = email[0] + ("x" if email[1] != "x" else "y") + email[2:at] + email[at:]  # masks the same
    others = [
        {**body, "payload": {**body["payload"], "amount_cents": body["payload"]["amount_cents"] + 1}},
        {**body, "payload": {**body["payload"], "codes": [12, 3]}},  # the original's are [1, 23]
        {**body, "topic": "order.paid"},
        {**body, "version": 3},
        {k: v for k, v in body.items() if k not in ("key", "version")},
        {**body, "payload": {**body["payload"], "customer": {**body["payload"]["customer"], "email": twin}}},
    ]
    for other in others:
        assert_error(client.post_event(idem, json.dumps(other)), 409, "idempotency_conflict",
                     "same key, different event")
        sc.model.post(idem, json.dumps(other), allow=("idempotency_conflict",))
    sc.post(idem, body, raw=sc.gen.variant(body))
    sc.new_event("order.paid")
    sc.settle()
    sc.assert_delivered_once_in_order("orders", " (conflicting retries)")
    original = next(d.document for d in sc.subscribers["orders"].acked if d.event == sc.ids[idem])
    assert original.get("payload", {}).get("amount_cents") == body["payload"]["amount_cents"], \
        "a conflicting request changed the original event"


@pytest.mark.contract
def test_bad_command_lines_exit_2_with_one_line(relay, endpoints, seed):
    """A missing --state, an unknown flag and bad numbers each exit 2 with one stderr line that
    names the problem: the option at fault, in a line that differs from the line of a problem
    with another option."""
    state = relay.path("state")
    runs = {
        "no --state": relay.spawn("--port", "0"),
        "unknown flag": relay.spawn("--state", state, "--port", "0", "--colour", "red"),
        "--max-attempts 0": relay.spawn("--state", state, "--port", "0", "--max-attempts", "0"),
        "--retry-base-ms -5": relay.spawn("--state", state, "--port", "0", "--retry-base-ms", "-5"),
        "--port abc": relay.spawn("--state", state, "--port", "abc"),
        "--port 65536": relay.spawn("--state", state, "--port", "65536"),
        "--state without a value": relay.spawn("--port", "0", "--state"),
        "--retry-base-ms 10ms": relay.spawn("--state", state, "--port", "0", "--retry-base-ms", "10ms"),
        "--max-attempts x3": relay.spawn("--state", state, "--port", "0", "--max-attempts", "x3"),
    }
    # The smallest values in range are a good command line.
    good = relay.spawn("--state", state, "--port", "0", "--retry-base-ms", "0", "--max-attempts", "1")
    # The line names the problem: the option at fault (brief E4).
    names = {"no --state": "--state", "unknown flag": "--colour", "--max-attempts 0": "--max-attempts",
             "--retry-base-ms -5": "--retry-base-ms", "--port abc": "--port", "--port 65536": "--port",
             "--state without a value": "--state", "--retry-base-ms 10ms": "--retry-base-ms",
             "--max-attempts x3": "--max-attempts"}
    said = {}
    for what, process in runs.items():
        code = process.wait()
        lines = [line for line in process.stderr.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1, f"{what}: expected exit 2 and one stderr line, got {process.describe()}"
        assert names[what] in lines[0], f"{what}: the stderr line does not name {names[what]}: {lines[0]!r}"
        said[what] = lines[0]
    # A line that names the problem differs between problems with different options at fault (a
    # usage synopsis alone names every option, whatever the problem).
    for one in runs:
        for other in runs:
            if names[one] != names[other]:
                assert said[one] != said[other], \
                    f"{one} and {other}: the same stderr line, which names neither problem: {said[one]!r}"
    good.wait_listening()
    assert good.proc.poll() is None, f"--retry-base-ms 0 --max-attempts 1: {good.describe()}"
