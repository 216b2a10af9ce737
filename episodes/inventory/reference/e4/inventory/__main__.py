"""Entry point: ``python3 -m inventory --state DIR --port PORT [...]``."""

import sys

from inventory.cli import main

if __name__ == "__main__":
    sys.exit(main())
