"""Items, reservations, retries, confirm/cancel, masking and restarts."""

CUSTOMER = {"name": "Jane van Doe", "email": "jane.doe@example.org", "phone": "+44 7700 900123"}


def test_mask():
    from inventory.mask import mask_customer

    assert mask_customer({**CUSTOMER, "address": "1 Road"}) == {
        "name": "J. v. D.", "email": "j***@example.org", "phone": "***23"}


def test_reserve_retry_confirm_cancel(service):
    s = service()
    assert s.call("POST", "/items", {"sku": "MUG-1", "name": "Mug", "stock": 5})[0] == 201
    body = {"customer": CUSTOMER, "lines": [{"sku": "MUG-1", "qty": 2}]}
    status, first = s.call("POST", "/reservations", body, key="k1")
    assert status == 201 and first["status"] == "held" and first["customer"]["email"] == "j***@example.org"
    assert s.call("POST", "/reservations", body, key="k1") == (200, first)
    assert s.call("GET", "/items/MUG-1")[1]["available"] == 3
    status, answer = s.call("POST", "/reservations", {"customer": CUSTOMER, "lines": [{"sku": "MUG-1", "qty": 4}]}, key="k2")
    assert (status, answer) == (409, {"error": "insufficient_stock"})
    assert s.call("POST", f"/reservations/{first['id']}/cancel")[1]["status"] == "cancelled"
    assert s.call("POST", f"/reservations/{first['id']}/confirm") == (409, {"error": "not_held"})
    assert s.call("GET", "/items/MUG-1")[1]["available"] == 5


def test_state_survives_a_restart_and_holds_no_personal_data(service, tmp_path):
    s = service()
    s.call("POST", "/items", {"sku": "MUG-1", "name": "Mug", "stock": 5})
    status, first = s.call("POST", "/reservations", {"customer": CUSTOMER, "lines": [{"sku": "MUG-1", "qty": 1}]}, key="k")
    s.stop()
    s = service()
    assert s.call("GET", f"/reservations/{first['id']}") == (200, first)
    text = "".join(p.read_text() for p in (tmp_path / "state").iterdir())
    assert "jane" not in text.lower() and "900123" not in text
