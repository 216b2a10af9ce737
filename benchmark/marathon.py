"""A marathon as data: ``episodes/NAME/marathon.toml`` names its episodes, briefs and gates.

Adding a marathon needs no Python change: write the TOML, the briefs, the starter workspace,
the reference solutions and the gate modules. A malformed file fails with a
:class:`~benchmark.errors.MarathonError` that names the file and the field.

Example ``marathon.toml``::

    name = "ledger"
    description = "An event ledger that grows over four episodes."
    starter = "starter"
    gates = "../../gates/ledger"
    mutants = "../../gates/ledger/mutants"

    [[episodes]]
    id = "e1"
    title = "Ingest"
    brief = "e1/brief.md"
    reference = "reference/e1"

    [[gate]]
    name = "idempotency"
    active_from = "e1"

A marathon whose product needs more than the base images (Python 3.11, git) declares it; the
scorer and agent images are then derived for it (see :mod:`benchmark.images`)::

    [runtime]
    node = "22.23.5"          # exact Node.js, the official binary from the npm registry
    apt = ["sqlite3"]         # Debian bookworm packages

    # Optional; these are the defaults (``marathon mutate``, docs/gates-quality.md). A
    # TypeScript product says language = "typescript" (StrykerJS; its own default exclude).
    [mutation]
    language = "python"
    paths = ["."]
    exclude = ["**/tests/**", "**/test_*.py", "**/*_test.py", "**/conftest.py"]
    equivalents = "equivalent-mutants.toml"
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from benchmark.errors import MarathonError
from benchmark.paths import EPISODES_DIR
from benchmark.tomlfile import field_error, read_toml


#: Tool caches that are not part of a marathon's content (left by running pytest on the host).
JUNK_DIRS = frozenset({"__pycache__", ".pytest_cache", ".benchmarks"})


#: A Debian package name, optionally pinned (``name=version``), as ``apt-get install`` takes it.
APT_PACKAGE = r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$"


class RuntimeSpec(BaseModel):
    """What a marathon's product needs beyond the base images: ``[runtime]`` of marathon.toml.

    The scorer and agent images of a marathon with a runtime are derived from the plain ones by
    a content hash of this declaration (:func:`benchmark.images.build_runtime`); two marathons
    declaring the same runtime share the derived images. A marathon without ``[runtime]`` (or
    with an empty one) uses the plain images.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    apt: tuple[str, ...] = ()
    """Debian bookworm packages to install, e.g. ``["sqlite3"]`` or ``["jq=1.6-2.1"]``; no
    duplicates. Installed with ``apt-get install --no-install-recommends``."""

    node: str | None = Field(default=None, pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")
    """Exact Node.js version, e.g. ``22.23.5``: the official binary from the npm registry's
    ``node-linux-<arch>`` package, installed as ``/usr/local/bin/node`` (ahead of Debian's
    ``/usr/bin/node`` on ``PATH``). Node >= 22.18 runs ``.ts`` files directly (type stripping)."""

    @model_validator(mode="after")
    def _packages(self) -> "RuntimeSpec":
        for i, name in enumerate(self.apt):
            if not re.match(APT_PACKAGE, name):
                raise ValueError(f"apt[{i}]: {name!r} is not a Debian package name")
            if name.split("=")[0] in [n.split("=")[0] for n in self.apt[:i]]:
                raise ValueError(f"apt[{i}]: package {name.split('=')[0]!r} listed twice")
        return self

    @property
    def empty(self) -> bool:
        """True when the declaration asks for nothing (the plain images serve)."""
        return not self.apt and self.node is None

    def canonical(self) -> str:
        """The declaration as canonical JSON (packages sorted): what the derived tags hash."""
        return json.dumps({"apt": sorted(self.apt), "node": self.node}, sort_keys=True)


class EpisodeSpec(BaseModel):
    """One episode of a marathon: the brief the agent is told and the reference solution."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    """Short identifier, unique in the marathon, e.g. ``e1``."""

    title: str
    """Human title, e.g. ``Ingest``."""

    brief: Path
    """Markdown brief, relative to the marathon directory: exactly what the agent is told."""

    reference: Path
    """The complete workspace as it should stand after this episode (the oracle)."""


class GateSpec(BaseModel):
    """A hidden gate: one pytest module of checks, active from an episode on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    """Gate name; its checks live in ``<gates dir>/test_<name>.py``."""

    active_from: str
    """Id of the first episode after which the gate is scored; it stays active afterwards."""

    @property
    def filename(self) -> str:
        """The gate module's file name, ``test_<name>.py``."""
        return f"test_{self.name}.py"


#: Files of the final reference never mutated unless ``[mutation] exclude`` says otherwise, by
#: language: the product's own tests (globs relative to the reference), and for TypeScript the
#: installed packages.
DEFAULT_MUTATION_EXCLUDE = {
    "python": ("**/tests/**", "**/test_*.py", "**/*_test.py", "**/conftest.py"),
    "typescript": ("**/tests/**", "**/*.test.*", "**/*.spec.*", "**/node_modules/**"),
}


class MutationConfig(BaseModel):
    """The optional ``[mutation]`` table: which files of the final reference ``marathon mutate``
    mutates, with which mutant source. Every field has a default, so a Python marathon declares
    nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    language: Literal["python", "typescript"] = "python"
    """Language of the product; selects the mutant source (``python``: cosmic-ray;
    ``typescript``, also for JavaScript: StrykerJS)."""

    paths: list[str] = Field(default_factory=lambda: ["."], min_length=1)
    """Files or directories to mutate, relative to the final reference (``.``: all of it)."""

    exclude: list[str] = Field(default_factory=lambda: list(DEFAULT_MUTATION_EXCLUDE["python"]))
    """Glob patterns of files never mutated, relative to the final reference (``**`` spans
    directories). Setting it replaces the default: the product's own tests, by language
    (:data:`DEFAULT_MUTATION_EXCLUDE`)."""

    equivalents: Path = Path("equivalent-mutants.toml")
    """The reviewed list of equivalent mutants, relative to the marathon directory; a missing
    file means none."""

    @model_validator(mode="before")
    @classmethod
    def _language_default_exclude(cls, data):
        if isinstance(data, dict) and "exclude" not in data and data.get("language") in DEFAULT_MUTATION_EXCLUDE:
            data = {**data, "exclude": list(DEFAULT_MUTATION_EXCLUDE[data["language"]])}
        return data

    @field_validator("paths", "exclude")
    @classmethod
    def _relative(cls, values: list[str]) -> list[str]:
        for v in values:
            p = PurePosixPath(v)
            if not v or p.is_absolute() or ".." in p.parts:
                raise ValueError(f"{v!r} is not a path inside the reference")
        return values


class Marathon(BaseModel):
    """A loaded, validated marathon. Paths are absolute once loaded by :func:`load_marathon`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    """Marathon name, equal to its directory name under ``episodes/``."""

    description: str = ""
    """One-paragraph description for reports."""

    root: Path = Path(".")
    """The marathon directory (holding ``marathon.toml``)."""

    starter: Path
    """The starter workspace the agent begins from."""

    gates: Path
    """Directory of gate modules (never enters an agent's container)."""

    mutants: Path | None = None
    """Directory of mutants: ``<gate>/<name>.patch`` regressions of the final reference."""

    episodes: list[EpisodeSpec] = Field(min_length=1)
    """Episodes in order."""

    gate: list[GateSpec] = Field(min_length=1)
    """Gates with their activation episode."""

    runtime: RuntimeSpec | None = None
    """What the product needs beyond the base images (``[runtime]``); ``None`` when nothing
    (an empty table loads as ``None`` too)."""

    @field_validator("runtime")
    @classmethod
    def _nothing_is_none(cls, runtime: RuntimeSpec | None) -> RuntimeSpec | None:
        return None if runtime is None or runtime.empty else runtime
    mutation: MutationConfig = MutationConfig()
    """How ``marathon mutate`` draws mutants of the final reference (optional table)."""

    @model_validator(mode="after")
    def _consistent(self) -> "Marathon":
        ids = [e.id for e in self.episodes]
        for i, eid in enumerate(ids):
            if eid in ids[:i]:
                raise ValueError(f"episodes[{i}].id: duplicate episode {eid!r}")
        names = [g.name for g in self.gate]
        for i, g in enumerate(self.gate):
            if g.name in names[:i]:
                raise ValueError(f"gate[{i}].name: duplicate gate {g.name!r}")
            if g.active_from not in ids:
                raise ValueError(f"gate[{i}].active_from: unknown episode {g.active_from!r}")
        return self

    @property
    def episode_ids(self) -> list[str]:
        """Episode ids in order."""
        return [e.id for e in self.episodes]

    def episode(self, episode_id: str) -> EpisodeSpec:
        """The episode with this id. Raises :class:`MarathonError` if there is none."""
        for e in self.episodes:
            if e.id == episode_id:
                return e
        raise MarathonError(f"marathon {self.name}: unknown episode {episode_id!r}")

    def active_gates(self, through_episode: str) -> list[GateSpec]:
        """Gates scored after ``through_episode``: every gate active from it or an earlier one."""
        upto = self.episode_ids.index(self.episode(through_episode).id)
        return [g for g in self.gate if self.episode_ids.index(g.active_from) <= upto]

    def brief_text(self, episode_id: str) -> str:
        """The brief of an episode, as the agent will read it."""
        return self.episode(episode_id).brief.read_text(encoding="utf-8")

    def content_hash(self) -> str:
        """SHA-256 (hex) over every file of the marathon directory and its gates directory.

        Two runs with the same hash used identical briefs, starter, references and gates.
        """
        return tree_hash(self.root, self.gates)


def tree_hash(*bases: Path) -> str:
    """SHA-256 (hex) over the relative path and bytes of every file under each base directory,
    in sorted order, skipping tool caches (:data:`JUNK_DIRS`)."""
    h = hashlib.sha256()
    for base in bases:
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            if JUNK_DIRS.intersection(path.relative_to(base).parts):
                continue
            h.update(str(path.relative_to(base)).encode())
            h.update(b"\0")
            h.update(path.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


def resolve_marathon_path(name_or_path: str | Path) -> Path:
    """Map a marathon name (``ledger``) or a directory / ``marathon.toml`` path to the TOML file."""
    p = Path(name_or_path)
    if p.suffix == ".toml":
        return p
    if p.is_dir():
        return p / "marathon.toml"
    return EPISODES_DIR / str(name_or_path) / "marathon.toml"


def load_marathon(name_or_path: str | Path) -> Marathon:
    """Load and validate a marathon by name or path.

    Raises:
        MarathonError: the file is missing or malformed, a field is invalid, or a referenced
            file (brief, starter, reference, gate module) does not exist. The message names the
            file and the field.
    """
    toml_path = resolve_marathon_path(name_or_path)
    if not toml_path.is_file():
        raise MarathonError(f"unknown marathon {str(name_or_path)!r}: {toml_path} not found")
    raw = read_toml(toml_path)
    root = toml_path.parent.resolve()
    try:
        m = Marathon.model_validate({**raw, "root": root})
    except ValidationError as e:
        raise field_error(toml_path, e) from None
    if m.name != root.name:
        raise MarathonError(f"{toml_path}: name: {m.name!r} differs from its directory {root.name!r}")

    def need(rel: Path, field: str, kind: str = "file") -> Path:
        path = (root / rel).resolve()
        ok = path.is_file() if kind == "file" else path.is_dir()
        if not ok:
            raise MarathonError(f"{toml_path}: {field}: {kind} {rel} not found")
        return path

    episodes = [
        e.model_copy(
            update={
                "brief": need(e.brief, f"episodes[{i}].brief"),
                "reference": need(e.reference, f"episodes[{i}].reference", "directory"),
            }
        )
        for i, e in enumerate(m.episodes)
    ]
    gates = need(m.gates, "gates", "directory")
    final_reference = episodes[-1].reference
    for i, rel in enumerate(m.mutation.paths):
        if not (final_reference / rel).exists():
            raise MarathonError(f"{toml_path}: mutation.paths[{i}]: {rel} not found in the final "
                                f"reference {final_reference}")
    for i, g in enumerate(m.gate):
        if not (gates / g.filename).is_file():
            raise MarathonError(f"{toml_path}: gate[{i}].name: gate module {gates / g.filename} not found")
    return m.model_copy(
        update={
            "starter": need(m.starter, "starter", "directory"),
            "gates": gates,
            "mutants": need(m.mutants, "mutants", "directory") if m.mutants else None,
            "episodes": episodes,
            "mutation": m.mutation.model_copy(update={"equivalents": root / m.mutation.equivalents}),
        }
    )
