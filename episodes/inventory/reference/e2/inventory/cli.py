"""Command line: ``python3 -m inventory --state DIR [--port N] [--replay FILE]``.

A bad command line exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
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


def _journal_entries(path: str) -> list:
    """The entries of a journal document (``{"entries": [...]}``, as ``GET /journal`` gives)."""
    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    entries = document.get("entries") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError("not a journal document")
    return entries


def main(argv=None) -> int:
    """Run the service until SIGTERM; 0 on a clean stop, 2 on a bad command line."""
    parser = _Parser(prog="inventory", description="An HTTP service for stock reservations.")
    parser.add_argument("--state", required=True, help="state directory (created if missing)")
    parser.add_argument("--port", type=_port, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--replay", metavar="FILE", help="rebuild an empty state from a journal document")
    args = parser.parse_args(argv)
    state = Path(args.state)
    replay = None
    if args.replay is not None:
        if state.exists() and (not state.is_dir() or any(state.iterdir())):
            return _usage(f"--state: {state} must be empty or missing with --replay")
        try:
            replay = _journal_entries(args.replay)
        except (OSError, ValueError) as error:
            return _usage(f"--replay: {args.replay}: {error.__class__.__name__}")
    try:
        store = Store(state, replay)
    except (KeyError, TypeError, ValueError) as error:
        return _usage(f"--replay: {args.replay}: not a journal ({error.__class__.__name__})")
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
