"""The proxy's usage records: one :class:`ProxyRecord` per metered request, as JSON Lines."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from benchmark.errors import MarathonError
from benchmark.proxy.protocols import Api
from benchmark.records import UsageCall


class ProxyRecord(BaseModel):
    """One metered model request: a line of the proxy's JSON Lines usage file."""

    model_config = ConfigDict(extra="forbid")

    seq: int
    """Sequence number of the request in this proxy's lifetime, 0-based."""
    time: datetime
    """When the request arrived (UTC)."""
    trial_id: str
    """Id of the trial whose token made the request."""
    keys: dict[str, Any]
    """The trial keys given to :meth:`MeteringProxy.register` (e.g. a
    :class:`~benchmark.records.TrialKeys` dump)."""
    episode: str | None
    """Episode the trial was in (from :meth:`MeteringProxy.set_attempt`); null before any."""
    attempt: int | None
    """Attempt number the trial was in, 1-based; null before any."""
    api: Api
    """``anthropic`` (Messages API) or ``openai`` (Responses API)."""
    path: str
    """Request path, e.g. ``/v1/messages``."""
    request_model: str
    """Model named in the request body (``api_model`` is the model the response names)."""
    stream: bool
    """Whether the response was a server-sent event stream."""
    ttfb_s: float | None
    """Seconds from request arrival to the first response byte passed on; null if none."""
    error: str = ""
    """Why the call did not complete normally (upstream unreachable, dropped mid-stream,
    client gone); empty otherwise."""
    call: UsageCall
    """The usage figures (``source="proxy"``)."""


def load_usage(path: Path) -> list[ProxyRecord]:
    """Read a proxy usage file. A torn last line (a crash mid-write) is skipped.

    Raises:
        MarathonError: a line other than the last is not a valid record.
    """
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(ProxyRecord.model_validate_json(line))
        except ValidationError as e:
            if i == len(lines) - 1:
                continue
            raise MarathonError(f"{path}:{i + 1}: not a proxy usage record: {e.errors()[0]['msg']}") from None
    return records


def load_usage_calls(path: Path, *, trial_id: str | None = None, episode: str | None = None,
                     attempt: int | None = None) -> list[UsageCall]:
    """The :class:`~benchmark.records.UsageCall` records of a proxy usage file, in request
    order, optionally only those of one trial / episode / attempt."""
    return [r.call for r in load_usage(path)
            if (trial_id is None or r.trial_id == trial_id)
            and (episode is None or r.episode == episode)
            and (attempt is None or r.attempt == attempt)]

