"""Shared fixtures: the two-episode ``tiny`` test marathon (tests/fixtures/tiny) and the harness
images; :func:`run_cli` runs the command line in a subprocess. (The scorer and validate tests use
the ``answer`` marathon from ``tests/answer_fixtures.py``.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
TINY = HERE / "fixtures" / "tiny"
ROOT = HERE.parent

# Fixture marathons hold gate modules named test_*.py: they are run by the scorer, never
# collected as the harness's own tests.
collect_ignore_glob = ["fixtures/*"]


@pytest.fixture(scope="session")
def tiny() -> Path:
    """Path of the two-episode test marathon (fast gates)."""
    return TINY


@pytest.fixture(scope="session")
def images():
    """The harness images (built once if missing; reused across tests)."""
    from benchmark.images import build_images

    return build_images(agent=True, log=lambda line: None)


def unique_run_id(name: str) -> str:
    """A run id no other test on this Docker engine uses. Run ids are the user's choice, and
    other checkouts' tests share the engine (with harness versions that clean up by run id
    alone), so tests that make containers use unique ones."""
    import secrets

    return f"{name}-{secrets.token_hex(3)}"


def run_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``marathon ARGS`` in a subprocess from the project root."""
    return subprocess.run(
        [sys.executable, "-c", "from benchmark.cli import main; main()", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )
