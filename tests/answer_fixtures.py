"""Fixtures for the scorer, validate and mutate tests: the scorer image and the ``answer`` and
``double`` marathons.

``answer`` (tests/fixtures/answer) is a one-episode marathon whose product must print 42; its
gate has three tagged checks and one untagged check, and two mutants (one caught, one not).
``double`` (tests/fixtures/double) doubles a positive number; one of its checks draws its input
from the seed, and one of its two mutants is caught on seed 1 only (``tests/test_mutate.py``
lists the fate of its cosmic-ray mutants).
Import the fixtures into a test module: ``from tests.answer_fixtures import answer, scorer_image``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.marathon import Marathon, load_marathon

ANSWER = Path(__file__).parent / "fixtures" / "answer"
DOUBLE = Path(__file__).parent / "fixtures" / "double"


@pytest.fixture(scope="session")
def scorer_image() -> str:
    """Tag of the scorer image; builds base and scorer images if their recipes changed."""
    from benchmark.images import build_images

    return build_images(agent=False, log=lambda line: None).scorer


@pytest.fixture(scope="session")
def answer() -> Marathon:
    """The loaded ``answer`` marathon."""
    return load_marathon(ANSWER)
