"""Command line: ``python3 -m inventory --state DIR [--port N]``.

A bad command line exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from inventory.server import make_server
from inventory.store import Store


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise SystemExit(_usage(message))


def _usage(message: str) -> int:
    print(f"inventory: error: {message}", file=sys.stderr)
    return 2


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {value}")
    return value


def main(argv=None) -> int:
    """Run the service until SIGTERM; 0 on a clean stop, 2 on a bad command line."""
    parser = _Parser(prog="inventory", description="An HTTP service for stock reservations.")
    parser.add_argument("--state", required=True, help="state directory (created if missing)")
    parser.add_argument("--port", type=_port, default=0, help="port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args(argv)
    state = Path(args.state)
    try:
        store = Store(state)
    except OSError as error:
        return _usage(f"--state: {state}: {error.strerror}")
    server = make_server(store, args.port)

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()
        store.close()
    return 0
