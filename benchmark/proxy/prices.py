"""``pricing.toml``: USD per million tokens of each kind, per model, and the cost of a call."""

from __future__ import annotations

import fnmatch
import logging
import re
from datetime import date as Date
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from benchmark.paths import PROJECT_ROOT
from benchmark.records import UsageCall
from benchmark.tomlfile import field_error, read_toml

log = logging.getLogger(__name__)

#: The default price table, at the project root.
PRICING_FILE = PROJECT_ROOT / "pricing.toml"

class Price(BaseModel):
    """One price of one model, with where it comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    usd_per_mtok: float = Field(ge=0)
    """Price in USD per million tokens."""
    date: Date
    """Date on which the price was read from its source."""
    source: str = Field(min_length=1)
    """Where the price comes from: a URL of the vendor's price list, or ``simulation``."""


class ModelPrice(BaseModel):
    """The four prices of one model (USD per million tokens of each kind)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Price
    """Input tokens that are neither cache reads nor cache writes."""
    output: Price
    """Output tokens (reasoning tokens included, where the provider bills them as output)."""
    cache_write: Price
    """Input tokens written to the prompt cache (Anthropic's 5-minute cache write price)."""
    cache_read: Price
    """Input tokens read from the prompt cache."""


class PriceTable(BaseModel):
    """``pricing.toml``: model name (or ``fnmatch`` pattern such as ``scripted/*``) to prices.

    A model name is looked up exactly, then without a trailing ``-YYYYMMDD`` date, then against
    the patterns in file order. An unknown model costs ``None`` (and is warned about once).
    """

    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelPrice]
    """Prices by model name or pattern."""

    _warned: set[str] = PrivateAttr(default_factory=set)

    @classmethod
    def load(cls, path: Path = PRICING_FILE) -> "PriceTable":
        """Read and validate a price table.

        Raises:
            MarathonError: the file is missing, not TOML, or a price lacks a field.
        """
        data = read_toml(path)
        try:
            table = cls.model_validate(data)
        except ValidationError as e:
            raise field_error(path, e) from None
        return table

    def lookup(self, model: str) -> ModelPrice | None:
        """The prices of ``model``, or ``None`` when the table does not know it."""
        if model in self.models:
            return self.models[model]
        undated = re.sub(r"-\d{8}$", "", model)
        if undated in self.models:
            return self.models[undated]
        for pattern, price in self.models.items():
            if any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(model, pattern):
                return price
        return None

    def cost(self, model: str, call: UsageCall) -> float | None:
        """Cost in USD of one call's tokens, or ``None`` for a model the table does not know
        (logged as a warning the first time)."""
        price = self.lookup(model)
        if price is None:
            if model not in self._warned:
                self._warned.add(model)
                log.warning("pricing.toml has no price for model %r: its cost is recorded as null", model)
            return None
        return (call.input_tokens * price.input.usd_per_mtok
                + call.output_tokens * price.output.usd_per_mtok
                + call.cache_write_tokens * price.cache_write.usd_per_mtok
                + call.cache_read_tokens * price.cache_read.usd_per_mtok) / 1e6

