"""The reviewed list of equivalent mutants of a marathon (``equivalent-mutants.toml``).

An equivalent mutant changes the code without changing any behaviour a brief asks for, so no
gate can or should kill it; counting it as a survivor would understate the gates. Nothing finds
them automatically: a maintainer reviews a surviving mutant and, when it is equivalent, adds an
entry with a one-line reason. Entries are keyed by the *change* (the file and the removed and
added lines of the mutant's diff), not by operator and occurrence, which shift whenever the code
above changes. Example::

    [[equivalent]]
    file = "ledger/state.py"
    reason = "n is never 0 here: both branches set the same value"
    diff = '''
    -    if n < 0:
    +    if n <= 0:
    '''

``diff`` may be the whole diff as ``marathon mutate`` prints it: headers, hunk lines and context
lines are ignored, and so is the indentation of changed lines. An entry matching no mutant of the
current reference is *stale* and reported, so the list never silently rots.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from benchmark.mutation.source import Mutant
from benchmark.tomlfile import field_error, read_toml


def change_lines(diff: str) -> tuple[str, ...]:
    """The changed lines of a unified diff, each as its sign and its stripped text, e.g.
    ``("-if n < 0:", "+if n <= 0:")``.

    Lines before the first hunk header (``@@``) are file headers when there is one; without hunk
    headers (a pasted fragment), every line starting with ``-`` or ``+`` counts except
    ``--- ``/``+++ `` file headers.
    """
    lines = diff.splitlines()
    hunk = next((i for i, line in enumerate(lines) if line.startswith("@@")), None)
    if hunk is not None:
        body = [line for line in lines[hunk:] if not line.startswith("@@")]
    else:
        body = [line for line in lines if not line.startswith(("--- ", "+++ "))]
    return tuple(line[0] + line[1:].strip() for line in body if line[:1] in ("-", "+"))


class EquivalentMutant(BaseModel):
    """One reviewed equivalent mutant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(min_length=1)
    """File the mutant changes, relative to the final reference, e.g. ``ledger/state.py``."""
    diff: str
    """The mutant's diff (or just its ``-``/``+`` lines) as ``marathon mutate`` prints it."""
    reason: str
    """One line: why no behaviour a brief asks for can tell the mutant from the reference."""

    @field_validator("diff")
    @classmethod
    def _has_change(cls, v: str) -> str:
        if not change_lines(v):
            raise ValueError("no '-' or '+' line: paste the mutant's diff")
        return v

    @field_validator("reason")
    @classmethod
    def _one_line(cls, v: str) -> str:
        if not v.strip() or "\n" in v.strip():
            raise ValueError("must be one non-empty line")
        return v.strip()

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        """``(file, changed lines)``: what a mutant must match."""
        return self.file, change_lines(self.diff)


class EquivalentsFile(BaseModel):
    """The file ``equivalent-mutants.toml``: a list of ``[[equivalent]]`` tables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    equivalent: list[EquivalentMutant] = []
    """The reviewed equivalent mutants."""


def load_equivalents(path: Path) -> list[EquivalentMutant]:
    """The entries of ``path``; none if the file does not exist.

    Raises:
        MarathonError: malformed TOML or an invalid entry; one line naming the file and the
            field, e.g. ``equivalent-mutants.toml: equivalent[2].reason: Field required``.
    """
    if not path.is_file():
        return []
    try:
        return EquivalentsFile.model_validate(read_toml(path)).equivalent
    except ValidationError as e:
        raise field_error(path, e) from None


def match_equivalents(mutants: list[Mutant], entries: list[EquivalentMutant]
                      ) -> tuple[dict[str, int], list[int]]:
    """Match mutants to entries by file and changed lines.

    Returns:
        ``(matched, stale)``: mutant id -> index of its entry, for every mutant an entry covers
        (two mutants making the same change on identical lines share one entry); and the
        indices of entries matching no mutant.
    """
    by_key: dict[tuple[str, tuple[str, ...]], int] = {}
    for i, entry in enumerate(entries):
        by_key.setdefault(entry.key, i)
    matched = {}
    for m in mutants:
        if m.diff and (i := by_key.get((m.file, change_lines(m.diff)))) is not None:
            matched[m.id] = i
    used = {entries[i].key for i in matched.values()}
    return matched, [i for i, entry in enumerate(entries) if entry.key not in used]
