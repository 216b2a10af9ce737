"""Holds that expire and warehouse counts out of order."""

import time

CUSTOMER = {"name": "Jane Doe", "email": "jane@example.org", "phone": "+44 7700 900123"}


def test_expired_hold_releases_units(service):
    s = service()
    s.call("POST", "/items", {"sku": "MUG-1", "name": "Mug", "stock": 5})
    _, res = s.call("POST", "/reservations", {"customer": CUSTOMER, "lines": [{"sku": "MUG-1", "qty": 2}],
                                              "hold_seconds": 0.2}, key="k")
    assert res["expires_at"].endswith("Z")
    time.sleep(0.3)
    assert s.call("GET", f"/reservations/{res['id']}")[1]["status"] == "expired"
    assert s.call("GET", "/items/MUG-1")[1]["available"] == 5
    assert s.call("POST", f"/reservations/{res['id']}/confirm") == (409, {"error": "reservation_expired"})


def test_counts_out_of_order(service):
    s = service()
    s.call("POST", "/items", {"sku": "MUG-1", "name": "Mug", "stock": 5})
    assert s.call("POST", "/stock-counts", {"sku": "MUG-1", "seq": 2, "on_hand": 9}, key="c2")[1]["status"] == "applied"
    assert s.call("POST", "/stock-counts", {"sku": "MUG-1", "seq": 1, "on_hand": 1}, key="c1")[1]["status"] == "stale"
    assert s.call("POST", "/stock-counts", {"sku": "MUG-1", "seq": 2, "on_hand": 9}, key="c2")[1]["status"] == "duplicate"
    item = s.call("GET", "/items/MUG-1")[1]
    assert (item["stock"], item["count_seq"]) == (9, 2)
