"""Options of a report: the k of pass@k / pass^k and the bootstrap's resamples and seed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

#: Default number of bootstrap resamples for every bootstrap interval of a report.
DEFAULT_RESAMPLES = 10_000

#: Default seed of the bootstrap's random generator (``numpy.random.default_rng``).
DEFAULT_SEED = 0


class ReportOptions(BaseModel):
    """How a report computes its statistics."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    k: int | None = Field(default=None, ge=1)
    """The k of pass@k and pass^k: the number of independent trials (replicates) drawn per
    model x arm x agent. ``None``: the smallest number of complete replicates over the groups of
    the report, capped at 5 (so that both estimators are defined for every group). A group
    with fewer complete replicates than k gets no value (``n/a``)."""
    resamples: int = Field(default=DEFAULT_RESAMPLES, ge=100)
    """Bootstrap resamples for every percentile bootstrap interval (mean final score, marathon
    chart bands)."""
    seed: int = DEFAULT_SEED
    """Seed of the bootstrap's random generator; the same seed gives the same intervals."""
    confidence: float = Field(default=0.95, gt=0, lt=1)
    """Confidence level of every interval (Wilson and bootstrap)."""
