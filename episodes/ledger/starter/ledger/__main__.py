"""Command-line entry point: ``python3 -m ledger COMMAND ...``.

This is a stub: every command is still to be implemented.
"""

import argparse
import sys


def main(argv=None):
    """Parse the command line and report that nothing is implemented yet."""
    parser = argparse.ArgumentParser(
        prog="ledger", description="A command-line event ledger."
    )
    parser.add_argument("command", help="the command to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the command")
    args = parser.parse_args(argv)
    print(f"ledger: error: command {args.command!r} is not implemented", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
