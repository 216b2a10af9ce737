"""Entry point for ``python3 -m ledger``."""

import sys

from .cli import main

sys.exit(main())
