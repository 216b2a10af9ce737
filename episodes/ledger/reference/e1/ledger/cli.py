"""Command-line interface: ``python3 -m ledger COMMAND ...``."""

import argparse
import json
import sys
from pathlib import Path

from .events import InvalidEvent
from .ingest import ingest

#: Exit status for a usage error (bad command line, missing input file).
EXIT_USAGE = 2
#: Exit status for input that cannot be processed.
EXIT_FAILURE = 1


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are a single line on stderr."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _error(message, status):
    """Print a one-line error message on stderr and return ``status``."""
    print(f"ledger: error: {message}", file=sys.stderr)
    return status


def build_parser():
    """Build the parser for every command."""
    parser = _Parser(prog="ledger", description="A command-line event ledger.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ingest_cmd = commands.add_parser(
        "ingest", help="apply the events of a JSON Lines file to a state directory"
    )
    ingest_cmd.add_argument("events", metavar="EVENTS", help="JSON Lines file of events")
    ingest_cmd.add_argument(
        "--state", metavar="DIR", type=Path, required=True,
        help="state directory (created if missing)",
    )
    ingest_cmd.set_defaults(handler=cmd_ingest)
    return parser


def cmd_ingest(args):
    """Run ``ingest`` and print this invocation's counts as one JSON line."""
    path = Path(args.events)
    if not path.is_file():
        return _error(f"input file not found: {args.events}", EXIT_USAGE)
    if args.state.exists() and not args.state.is_dir():
        return _error(f"state path is not a directory: {args.state}", EXIT_USAGE)
    try:
        events = open(path, "rb")
    except OSError as exc:
        return _error(f"cannot read input file {args.events}: {exc.strerror}", EXIT_USAGE)
    with events:
        try:
            counts = ingest(events, args.state)
        except InvalidEvent as exc:
            return _error(str(exc), EXIT_FAILURE)
    print(json.dumps(counts, sort_keys=True))
    return 0


def main(argv=None):
    """Run the command line and return the exit status."""
    args = build_parser().parse_args(argv)
    return args.handler(args)
