"""The proxy's usage records: one :class:`ProxyRecord` per request of a trial (forwarded or
refused), as JSON Lines."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from benchmark.errors import MarathonError
from benchmark.proxy.protocols import Protocol
from benchmark.records import UsageCall

#: Protocol of a record written by a harness before the protocols were named (field ``api``).
_OLD_API = {"anthropic": "anthropic-messages", "openai": "openai-responses"}


class ProxyRecord(BaseModel):
    """One request of a trial, forwarded and metered or refused: a line of the proxy's JSON Lines
    usage file. The request's method, target, status, refusal and error are in :attr:`call`."""

    model_config = ConfigDict(extra="forbid")

    seq: int
    """Sequence number of the request in this proxy's lifetime, 0-based."""
    time: datetime
    """When the request arrived (UTC)."""
    trial_id: str
    """Id of the trial accountable for the request: the trial whose socket it came in on (its
    container made it), else the trial whose token it presented."""
    keys: dict[str, Any]
    """The trial keys given to :meth:`MeteringProxy.register` (e.g. a
    :class:`~benchmark.records.TrialKeys` dump)."""
    episode: str | None
    """Episode the trial was in (from :meth:`MeteringProxy.set_attempt`); null before any."""
    attempt: int | None
    """Attempt number the trial was in, 1-based; null before any."""
    protocol: Protocol | None
    """The protocol of the request (``anthropic-messages``, ``openai-responses``,
    ``openai-chat``): the trial's, or the one whose path was requested; null when refused
    before one was known."""
    token_trial_id: str | None = None
    """The trial the presented token belongs to, when the token was presented on a connection
    it is not valid on (another trial's socket: a token used from another trial's container;
    TCP, for a token bound to a socket); null otherwise."""
    request_model: str
    """Model named in the request body (``api_model`` is the model the response names)."""
    stream: bool
    """Whether the response was a server-sent event stream."""
    ttfb_s: float | None
    """Seconds from request arrival to the first response byte passed on; null if none."""
    include_usage_added: bool = False
    """Whether the proxy added ``stream_options.include_usage`` to a streamed Chat Completions
    request that did not ask for usage (and took the usage chunk out of the answer)."""
    call: UsageCall
    """The request and its usage figures (``source="proxy"``): method, path, HTTP status,
    ``refused``, ``error``, tokens, cost."""

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        """Read lines of older harness versions (``api``, ``path`` and ``error`` at the top)."""
        if isinstance(data, dict) and "api" in data and "protocol" not in data:
            data = dict(data)
            data["protocol"] = _OLD_API.get(data.pop("api"))
            call = dict(data.get("call") or {})
            call.setdefault("path", data.pop("path", None))
            call.setdefault("error", data.pop("error", ""))
            data["call"] = call
        return data


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

