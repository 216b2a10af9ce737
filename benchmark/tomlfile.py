"""Reading the harness's TOML files (marathons, arms, experiments, prices) with one-line errors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from benchmark.errors import MarathonError


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file.

    Raises:
        MarathonError: the file is missing, not UTF-8, or not valid TOML; the message names it.
    """
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MarathonError(f"{path}: not found") from None
    except UnicodeDecodeError:
        raise MarathonError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise MarathonError(f"{path}: malformed TOML: {e}") from None


def field_error(path: Path, err: ValidationError) -> MarathonError:
    """A one-line error naming the file and the first invalid field, e.g.
    ``arms/x.toml: max_attempts: Input should be greater than or equal to 1``.

    List positions print as ``episodes[2].brief``.
    """
    first = err.errors()[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
    msg = first["msg"].removeprefix("Value error, ")
    return MarathonError(f"{path}: {loc + ': ' if loc else ''}{msg}")
