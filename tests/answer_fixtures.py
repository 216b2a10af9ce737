"""Fixtures for the scorer and validate tests: the scorer image and the ``answer`` marathon.

``answer`` (tests/fixtures/answer) is a one-episode marathon whose product must print 42; its
gate has three tagged checks and one untagged check, and two mutants (one caught, one not).
Import the fixtures into a test module: ``from tests.answer_fixtures import answer, scorer_image``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.marathon import Marathon, load_marathon

ANSWER = Path(__file__).parent / "fixtures" / "answer"


@pytest.fixture(scope="session")
def scorer_image() -> str:
    """Tag of the scorer image; builds base and scorer images if their recipes changed."""
    from benchmark.images import build_images

    return build_images(agent=False, log=lambda line: None).scorer


@pytest.fixture(scope="session")
def answer() -> Marathon:
    """The loaded ``answer`` marathon."""
    return load_marathon(ANSWER)
