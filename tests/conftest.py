"""Shared fixtures: the scorer image (built once per session) and fixture marathons."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def scorer_image() -> str:
    """Tag of the scorer image; builds base and scorer images if their recipes changed."""
    from benchmark.images import build_images

    return build_images(agent=False, log=lambda line: None).scorer


@pytest.fixture(scope="session")
def tiny():
    """The one-episode ``tiny`` test marathon (``python3 -m tiny`` must print 42)."""
    from benchmark.marathon import load_marathon

    return load_marathon(FIXTURES / "tiny")
