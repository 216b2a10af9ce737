"""Trusted harness code for the hidden ``inventory`` gates.

- Registers the two check tags, ``genuine`` and ``contract`` (every check carries exactly one;
  recorded as the JUnit XML property ``tag``), and the scheduling hint ``slow``.
- ``seed``: the trial seed, int env ``MARATHON_SEED`` (default 0).
- ``inventory``: a :class:`ServiceRunner` that starts the product under test,
  ``python3 -m inventory --state DIR --port 0 FLAGS...``, in a fresh copy of the snapshot (env
  ``MARATHON_SNAPSHOT``), as a black box driven over HTTP on 127.0.0.1.

The product runs through ``marathon_product`` (installed in the scorer image): as its own uid,
in a copy of the snapshot it owns, with a scrubbed environment (PATH, HOME, LANG); each service
is a ``marathon_product.Service`` (readiness, bounded output, kill), kept separate from the
checks' logic in ``_inventory.py``. Every wait is bounded (20 s): a service that does not report
its port, answer, or exit, fails the check instead of hanging it, unless the kernel shows the
host starved it of CPU (then the check has no verdict, and the scoring is repeated).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from marathon_product import Product, Service

TAGS = ("genuine", "contract")


def pytest_configure(config):
    """Register the check tags (and the scheduling hint ``slow``) as markers."""
    config.addinivalue_line(
        "markers", "genuine: a property any competent implementation of the briefs must have"
    )
    config.addinivalue_line(
        "markers", "contract: an interface detail that only the brief states (exact code, name or format)"
    )
    config.addinivalue_line(
        "markers", "slow: a check that takes several times longer than most (scheduled first)"
    )


def pytest_collection_modifyitems(session, config, items):
    """Run ``slow`` checks first (stable order otherwise), so that only short ones are left for
    the end when the scorer shares the checks between pytest processes."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _check_tag(request):
    """Require exactly one tag marker per check and record it as property ``tag``."""
    tags = [mark.name for mark in request.node.iter_markers() if mark.name in TAGS]
    if len(tags) != 1:
        pytest.fail(
            f"{request.node.nodeid}: a check needs exactly one of "
            f"@pytest.mark.genuine / @pytest.mark.contract, found {tags or 'none'}",
            pytrace=False,
        )
    request.node.user_properties.append(("tag", tags[0]))


@pytest.fixture
def seed() -> int:
    """The trial seed (env ``MARATHON_SEED``, default 0)."""
    raw = os.environ.get("MARATHON_SEED", "0").strip() or "0"
    try:
        return int(raw)
    except ValueError:
        raise pytest.UsageError(f"MARATHON_SEED must be an integer, got {raw!r}") from None


class ServiceRunner(Product):
    """Starts services from a private copy of the snapshot, as the product uid; keeps every
    process it started (killed by :meth:`close`)."""

    def __init__(self, snapshot: Path, tmp: Path):
        super().__init__(snapshot, tmp, ["python3", "-m", "inventory"], name="inventory",
                         ignore=(".git", "__pycache__"))

    def env(self) -> dict:
        return {"LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}

    def spawn(self, *args) -> Service:
        """Start ``python3 -m inventory ARGS...`` without waiting for anything."""
        return Service(self, args)

    def start(self, state: Path, *flags) -> Service:
        """Start a service on ``state`` (``--port 0``) and wait until it listens."""
        return self.spawn("--state", state, "--port", "0", *flags).wait_listening()


@pytest.fixture
def inventory(tmp_path) -> ServiceRunner:
    """A runner for the snapshot under test, in a fresh copy (env MARATHON_SNAPSHOT)."""
    raw = os.environ.get("MARATHON_SNAPSHOT")
    if not raw:
        raise pytest.UsageError("MARATHON_SNAPSHOT is not set: point it at the snapshot to test")
    snapshot = Path(raw).resolve()
    if not snapshot.is_dir():
        raise pytest.UsageError(f"MARATHON_SNAPSHOT is not a directory: {snapshot}")
    runner = ServiceRunner(snapshot, tmp_path)
    yield runner
    runner.close()
