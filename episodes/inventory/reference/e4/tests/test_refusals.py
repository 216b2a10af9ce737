"""Refusal codes."""

CUSTOMER = {"name": "Jane Doe", "email": "jane@example.org", "phone": "+44 7700 900123"}


def test_codes(service):
    s = service()
    s.call("POST", "/items", {"sku": "MUG-1", "name": "Mug", "stock": 5})
    good = {"customer": CUSTOMER, "lines": [{"sku": "MUG-1", "qty": 1}]}
    assert s.call("POST", "/reservations", good) == (400, {"error": "missing_idempotency_key"})
    assert s.call("POST", "/reservations", b"[1]", key="a") == (400, {"error": "malformed_json"})
    assert s.call("POST", "/reservations", {"lines": []}, key="a") == (400, {"error": "missing_field"})
    assert s.call("POST", "/reservations", {**good, "lines": []}, key="a") == (400, {"error": "wrong_type"})
    assert s.call("POST", "/reservations", {**good, "lines": [{"sku": "X", "qty": 1}]}, key="a") == \
        (422, {"error": "unknown_item"})
    assert s.call("POST", "/reservations", good, key="a")[0] == 201
    assert s.call("POST", "/reservations", {**good, "note": "x"}, key="a") == (409, {"error": "idempotency_conflict"})
    assert s.call("DELETE", "/items/MUG-1") == (405, {"error": "method_not_allowed"})
    assert s.call("GET", "/nothing") == (404, {"error": "not_found"})
