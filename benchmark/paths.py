"""Where the harness finds its data: the project checkout that holds episodes/, gates/, arms/."""

from __future__ import annotations

import os
from pathlib import Path

#: The project root: the checkout that holds ``episodes/``, ``gates/`` and ``arms/``.
#: ``MARATHON_HOME`` overrides it (for an installed package used against another checkout).
PROJECT_ROOT = Path(os.environ.get("MARATHON_HOME") or Path(__file__).resolve().parents[1])

EPISODES_DIR = PROJECT_ROOT / "episodes"
GATES_DIR = PROJECT_ROOT / "gates"
ARMS_DIR = PROJECT_ROOT / "arms"
RESULTS_DIR = PROJECT_ROOT / "results"
