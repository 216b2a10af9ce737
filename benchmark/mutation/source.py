"""Mutant sources: the interface between ``marathon mutate`` and a mutation-testing library.

A :class:`MutantSource` enumerates the mutants of a reference workspace and applies one of them
to a copy of it. The harness does everything else (sampling, scoring with the real scorer,
classification, reports), so a source for another product language plugs in by implementing
these two methods and registering under the ``[mutation] language`` name it serves
(:data:`SOURCES`). Python is served by cosmic-ray (:mod:`benchmark.mutation.cosmicray`),
TypeScript and JavaScript by StrykerJS (:mod:`benchmark.mutation.stryker`).
"""

from __future__ import annotations

import difflib
import hashlib
from abc import ABC, abstractmethod
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from benchmark.errors import MarathonError
from benchmark.marathon import MutationConfig


class Mutant(BaseModel):
    """One mutant of the final reference: a single small change to one file."""

    model_config = ConfigDict(frozen=True)

    id: str
    """Short stable id: the first 10 hex digits of SHA-1 over ``file``, ``operator`` and
    ``occurrence``; the same for the same reference code in every session."""
    file: str
    """File changed, relative to the reference (POSIX separators), e.g. ``ledger/cli.py``."""
    line: int
    """First line (1-based) of the changed code in the unmutated file."""
    operator: str
    """The library's name of the mutation operator, e.g. ``core/NumberReplacer``."""
    occurrence: int
    """Index of this change among the operator's possible changes in ``file`` (0-based); it
    shifts when the code above changes, so it is not a key across code edits."""
    function: str = ""
    """Name of the enclosing function or class, when the library reports it."""
    diff: str = ""
    """Unified diff (``a/<file>``, ``b/<file>``, 2 lines of context); empty for a mutant the
    source filtered out."""
    skip_reason: str | None = None
    """Why the source filtered the mutant out (never scored), e.g. ``operator filter``;
    ``None`` for a mutant to score."""


def mutant_id(file: str, operator: str, occurrence: int) -> str:
    """The :attr:`Mutant.id` of a mutant: 10 hex digits of SHA-1 over its location."""
    return hashlib.sha1(f"{file}\0{operator}\0{occurrence}".encode()).hexdigest()[:10]


def unified_diff(file: str, before: str, after: str) -> str:
    """A unified diff of one file's text, ``a/<file>`` to ``b/<file>``, 2 lines of context."""
    lines = difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                 f"a/{file}", f"b/{file}", n=2)
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


class MutantSource(ABC):
    """A mutation-testing library used as a generator of mutants (never as a test runner).

    Implementations must not change ``reference``; :meth:`mutants` may cache its work in
    ``workdir`` (a directory owned by the session, empty the first time), and is called from
    one thread; :meth:`apply` may be called from several threads at once.
    """

    language: str
    """The ``[mutation] language`` this source serves, e.g. ``python``."""

    @property
    @abstractmethod
    def name(self) -> str:
        """Library name and version, e.g. ``cosmic-ray 8.7.0`` (recorded with the results)."""

    @property
    @abstractmethod
    def filters(self) -> list[str]:
        """Human-readable description of every filter the source applies (for the summary)."""

    @abstractmethod
    def mutants(self, reference: Path, config: MutationConfig, workdir: Path) -> list[Mutant]:
        """Every mutant of the files ``config`` selects in ``reference``, filtered ones
        included (with :attr:`Mutant.skip_reason`), sorted by file, line, operator, occurrence.

        Raises:
            MarathonError: the library failed (message names the step), or a file does not parse.
        """

    @abstractmethod
    def apply(self, mutant: Mutant, tree: Path) -> None:
        """Write ``mutant`` into ``tree``, a copy of the reference (its file changes in place).

        Raises:
            MarathonError: the mutant no longer applies (the file changed).
        """


def mutant_source(config: MutationConfig) -> MutantSource:
    """The source serving ``config.language``.

    Raises:
        MarathonError: no source for the language, or its library is not installed (the
            message says how to install it).
    """
    factory = SOURCES.get(config.language)
    if factory is None:
        raise MarathonError(f"[mutation] language: no mutant source for {config.language!r}")
    return factory()


def _cosmic_ray() -> MutantSource:
    try:
        from benchmark.mutation.cosmicray import CosmicRaySource
    except ImportError as e:
        raise MarathonError(f"marathon mutate needs cosmic-ray ({e.name} is missing): "
                            "pip install -e '.[mutate]'") from None
    return CosmicRaySource()


def _stryker() -> MutantSource:
    from benchmark.mutation.stryker import StrykerSource

    return StrykerSource()


#: Mutant source factories by ``[mutation] language``.
SOURCES = {"python": _cosmic_ray, "typescript": _stryker}
