"""Command-line interface: ``python3 -m ledger COMMAND ...``."""

import argparse
import json
import sys
from pathlib import Path

from .ingest import ingest
from .replay import replay
from .storage import EVENT_LOG

#: Exit status for a usage error (bad command line, missing input file).
EXIT_USAGE = 2

STDIN = "-"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are a single line on stderr."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _error(message, status):
    """Print a one-line error message on stderr and return ``status``."""
    print(f"ledger: error: {message}", file=sys.stderr)
    return status


def _int_at_least(minimum):
    """argparse type: an integer >= ``minimum``."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}: {value}")
        return value

    return parse


def build_parser():
    """Build the parser for every command."""
    parser = _Parser(prog="ledger", description="A command-line event ledger.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ingest_cmd = commands.add_parser(
        "ingest", help="apply the events of a JSON Lines file to a state directory"
    )
    ingest_cmd.add_argument(
        "events", metavar="EVENTS", help="JSON Lines file of events, or - for stdin"
    )
    ingest_cmd.add_argument(
        "--state", metavar="DIR", type=Path, required=True,
        help="state directory (created if missing)",
    )
    ingest_cmd.add_argument(
        "--checkpoint-every", metavar="N", type=_int_at_least(1), default=100,
        help="checkpoint the state every N input lines (default: 100)",
    )
    ingest_cmd.add_argument(
        "--allowed-lateness", metavar="SECONDS", type=_int_at_least(0), default=3600,
        help="how far behind the latest event time an event may be (default: 3600)",
    )
    ingest_cmd.set_defaults(handler=cmd_ingest)

    replay_cmd = commands.add_parser(
        "replay", help="rebuild the derived state files from the event log"
    )
    replay_cmd.add_argument("--state", metavar="DIR", type=Path, required=True,
                            help="state directory")
    replay_cmd.set_defaults(handler=cmd_replay)
    return parser


def cmd_ingest(args):
    """Run ``ingest`` and print the run's counts as one JSON line."""
    if args.events != STDIN and not Path(args.events).is_file():
        return _error(f"input file not found: {args.events}", EXIT_USAGE)
    if args.state.exists() and not args.state.is_dir():
        return _error(f"state path is not a directory: {args.state}", EXIT_USAGE)
    if args.events == STDIN:
        return _run_ingest(sys.stdin.buffer, args)
    try:
        events = open(args.events, "rb")
    except OSError as exc:
        return _error(f"cannot read input file {args.events}: {exc.strerror}", EXIT_USAGE)
    with events:
        return _run_ingest(events, args)


def _run_ingest(events, args):
    counts = ingest(events, args.state, args.checkpoint_every, args.allowed_lateness)
    print(json.dumps(counts, sort_keys=True))
    return 0


def cmd_replay(args):
    """Run ``replay`` and print the number of events replayed as one JSON line."""
    if not (args.state / EVENT_LOG).is_file():
        return _error(f"event log not found: {args.state / EVENT_LOG}", EXIT_USAGE)
    count = replay(args.state)
    print(json.dumps({"replayed": count}))
    return 0


def main(argv=None):
    """Run the command line and return the exit status."""
    args = build_parser().parse_args(argv)
    return args.handler(args)
