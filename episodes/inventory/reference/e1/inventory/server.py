"""The HTTP interface: routing, request limits and answers (JSON bodies only).

Nothing about a request is logged: paths and bodies may hold customer data.
"""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from inventory import validate
from inventory.store import Refusal, Store

#: (path pattern, {method: handler name}).
ROUTES = [
    (re.compile(r"/items"), {"POST": "add_item"}),
    (re.compile(r"/items/([^/]+)"), {"GET": "get_item"}),
    (re.compile(r"/reservations"), {"POST": "reserve"}),
    (re.compile(r"/reservations/([^/]+)"), {"GET": "get_reservation"}),
    (re.compile(r"/reservations/([^/]+)/(confirm|cancel)"), {"POST": "settle"}),
]


class Handler(BaseHTTPRequestHandler):
    """One request: find its route, read its body, answer JSON."""

    protocol_version = "HTTP/1.1"
    store: Store  # set on the subclass made by make_server

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self):  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self):  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self):  # noqa: N802
        self._dispatch("DELETE")

    def do_PATCH(self):  # noqa: N802
        self._dispatch("PATCH")

    def log_message(self, format, *args):  # noqa: A002 - nothing is logged
        pass

    def _send(self, status: int, document: dict) -> None:
        data = json.dumps(document, separators=(",", ":")).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        try:
            body = self._body()
            for pattern, methods in ROUTES:
                match = pattern.fullmatch(path)
                if match:
                    if method not in methods:
                        raise Refusal(404, "not_found")
                    status, document = getattr(self, methods[method])(body, *match.groups())
                    self._send(status, document)
                    return
            raise Refusal(404, "not_found")
        except Refusal as refusal:
            self._send(refusal.status, {"error": refusal.code})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _key(self) -> str:
        key = self.headers.get("Idempotency-Key") or ""
        if not key:
            raise Refusal(400, "bad_request")
        return key

    # ------------------------------------------------------------------ handlers

    def add_item(self, body: bytes):
        document = validate.check_item(validate.parse_object(body))
        return 201, self.store.add_item(document)

    def get_item(self, body: bytes, sku: str):
        return 200, self.store.item(sku)

    def reserve(self, body: bytes):
        key = self._key()
        document = validate.check_reservation(validate.parse_object(body))
        return self.store.reserve(key, document)

    def get_reservation(self, body: bytes, reservation_id: str):
        return 200, self.store.reservation(reservation_id)

    def settle(self, body: bytes, reservation_id: str, action: str):
        return 200, self.store.settle(reservation_id, action)


def make_server(store: Store, port: int) -> ThreadingHTTPServer:
    """A threaded HTTP server on 127.0.0.1:``port`` (0: any free port) serving ``store``."""
    handler = type("BoundHandler", (Handler,), {"store": store})
    return ThreadingHTTPServer(("127.0.0.1", port), handler)
