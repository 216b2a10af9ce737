"""Command line and HTTP server of the service.

This is a stub: it listens, and answers every request with 501 (not implemented yet).
"""

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Handler(BaseHTTPRequestHandler):
    """Answers every request with 501."""

    def _not_implemented(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        data = json.dumps({"error": "not_implemented"}).encode("utf-8")
        self.send_response(501)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _not_implemented

    def log_message(self, format, *args):
        pass


def main(argv=None):
    """Parse the command line and serve until stopped."""
    parser = argparse.ArgumentParser(prog="inventory", description="An HTTP service for stock reservations.")
    parser.add_argument("--state", required=True, help="state directory (created if missing)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args(argv)
    Path(args.state).mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
