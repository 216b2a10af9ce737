"""The journal, kill -9 and replay."""

import json

CUSTOMER = {"name": "Jane Doe", "email": "jane@example.org", "phone": "+44 7700 900123"}


def test_replica_is_the_same(service, tmp_path):
    s = service()
    s.call("POST", "/items", {"sku": "MUG-1", "name": "Mug", "stock": 5})
    _, res = s.call("POST", "/reservations", {"customer": CUSTOMER, "lines": [{"sku": "MUG-1", "qty": 2}]}, key="k")
    s.call("POST", f"/reservations/{res['id']}/confirm")
    s.stop(kill=True)
    s = service()
    status, journal = s.call("GET", "/journal")
    assert status == 200 and [e["seq"] for e in journal["entries"]] == [1, 2, 3]
    (tmp_path / "j.json").write_text(json.dumps(journal))
    replica = service(tmp_path / "replica", "--replay", str(tmp_path / "j.json"))
    assert replica.call("GET", "/journal") == (200, journal)
    assert replica.call("GET", f"/reservations/{res['id']}") == s.call("GET", f"/reservations/{res['id']}")
    assert replica.call("POST", "/reservations", {"customer": CUSTOMER, "lines": [{"sku": "MUG-1", "qty": 2}]},
                        key="k")[0] == 200
