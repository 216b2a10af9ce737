"""An arm as data: ``arms/NAME.toml`` says what the agent is given and how attempts are run.

An *arm* is one experimental condition: the standing instructions the agent reads (written to the
workspace as ``CLAUDE.md`` and ``AGENTS.md`` by agents that read such files), an optional skill
directory (``SKILL.md`` with YAML front matter ``name`` and ``description``), and the
*controller* that runs the attempts of an episode (``single``, ``feedback-retry``,
``governed``; see :mod:`benchmark.controllers` and ``docs/arms.md``). Paths are relative to the TOML file.

Example ``arms/feedback-retry.toml``::

    name = "feedback-retry"
    description = "Instructions and recovery skill; re-prompted with failing gate names."
    instructions = "assets/instructions.md"
    skill = "assets/recovery"
    controller = "feedback-retry"
    feedback = "names"
    max_attempts = 3

A bad preset (malformed TOML, unknown field or controller, missing asset, ``max_attempts < 1``,
a budget on a controller that does not enforce budgets)
fails with a :class:`~benchmark.errors.MarathonError` naming the file and the field, before any
container starts.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from benchmark.budget import Budget
from benchmark.errors import MarathonError
from benchmark.tomlfile import field_error, read_toml
from benchmark.paths import ARMS_DIR

#: How much a re-prompt says about a red scoring.
FeedbackLevel = Literal["names", "messages"]


class Arm(BaseModel):
    """A loaded, validated arm. Paths are absolute once loaded by :func:`load_arm`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    """Arm name, equal to its file name without ``.toml``, e.g. ``feedback-retry``."""

    description: str = ""
    """One-line description for reports."""

    instructions: Path
    """Markdown text of standing instructions; written to the workspace as ``CLAUDE.md`` and
    ``AGENTS.md`` by agents that read such files (not by ``oracle`` or ``nop``)."""

    skill: Path | None = None
    """Skill directory holding ``SKILL.md`` (YAML front matter ``name``, ``description``);
    installed under ``.claude/skills/<name>/`` and ``.agents/skills/<name>/``."""

    controller: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    """Name of the controller that runs an episode's attempts: ``single``, ``feedback-retry``
    or ``governed`` (see :mod:`benchmark.controllers` and ``docs/arms.md``)."""

    feedback: FeedbackLevel = "names"
    """What a re-prompt after a red scoring tells the agent: ``names`` of the failing gates and
    checks, or ``messages``: the names plus the first failure message of each failing check.
    Gate source is never shown."""

    max_attempts: int = Field(default=1, ge=1)
    """Most attempts per episode (the first plus recovery attempts); 1 for ``single``."""

    session_continuity: bool = False
    """Whether agents that keep sessions continue the previous attempt's session instead of
    starting a new one (agents without sessions ignore it)."""

    self_checks: int = Field(default=0, ge=0)
    """Self-checks per episode: how many times the agent may run ``marathon-check`` inside its
    container to have the workspace scored as it stands and be shown what ``feedback`` allows
    (failing gate and check names); past the limit the command says so and scores nothing.
    0: no self-checks (the command says none is available)."""

    budget: Budget | None = None
    """Token and USD limits per episode and per trial (``[budget]`` table); only the
    ``governed`` controller enforces budgets, so other controllers reject one."""

    source: Path = Path(".")
    """The TOML file the arm was loaded from."""

    @property
    def skill_name(self) -> str | None:
        """The skill's ``name`` from its ``SKILL.md`` front matter, or ``None`` without a skill."""
        if self.skill is None:
            return None
        return _front_matter(self.skill / "SKILL.md")["name"]

    def config_hash(self) -> str:
        """SHA-256 (hex) over the TOML file, the instructions and every file of the skill.

        Two runs with the same hash gave the agent identical arm material.
        """
        h = hashlib.sha256()
        files = [self.source, self.instructions]
        if self.skill is not None:
            files += sorted(p for p in self.skill.rglob("*") if p.is_file())
        for path in files:
            h.update(path.name.encode())
            h.update(b"\0")
            h.update(path.read_bytes())
            h.update(b"\0")
        return h.hexdigest()


def _front_matter(path: Path) -> dict:
    """The YAML front matter of a Markdown file (between the leading ``---`` lines)."""
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        raise ValueError("no YAML front matter (the file must start with a '---' line)")
    head, sep, _ = text[4:].partition("\n---")
    if not sep:
        raise ValueError("YAML front matter is not closed by a '---' line")
    data = yaml.safe_load(head)
    if not isinstance(data, dict):
        raise ValueError("YAML front matter is not a mapping")
    for key in ("name", "description"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ValueError(f"front matter lacks a non-empty {key!r}")
    return data


def resolve_arm_path(name_or_path: str | Path) -> Path:
    """Map an arm name (``prompt-only``) or a path to a ``.toml`` file to the TOML file."""
    p = Path(name_or_path)
    if p.suffix == ".toml":
        return p
    return ARMS_DIR / f"{name_or_path}.toml"


def arm_names() -> list[str]:
    """Names of the presets in ``arms/``, sorted (including ones whose controller is not
    implemented yet)."""
    return sorted(p.stem for p in ARMS_DIR.glob("*.toml"))


def load_arm(name_or_path: str | Path) -> Arm:
    """Load and validate an arm by name (a preset in ``arms/``) or by path to its TOML file.

    Raises:
        MarathonError: the file is missing or malformed, a field is invalid, an asset is
            missing, or the controller is unknown or not implemented yet. The message names the
            file and the field.
    """
    from benchmark.controllers import check_controller, controller_enforces_budget

    toml_path = resolve_arm_path(name_or_path)
    if not toml_path.is_file():
        known = ", ".join(arm_names()) or "none"
        raise MarathonError(f"unknown arm {str(name_or_path)!r}: {toml_path} not found (presets: {known})")
    raw = read_toml(toml_path)
    root = toml_path.parent.resolve()
    try:
        arm = Arm.model_validate({**raw, "source": toml_path.resolve()})
    except ValidationError as e:
        raise field_error(toml_path, e) from None
    if arm.name != toml_path.stem:
        raise MarathonError(f"{toml_path}: name: {arm.name!r} differs from its file name {toml_path.stem!r}")
    instructions = (root / arm.instructions).resolve()
    if not instructions.is_file():
        raise MarathonError(f"{toml_path}: instructions: file {arm.instructions} not found")
    skill = None
    if arm.skill is not None:
        skill = (root / arm.skill).resolve()
        if not (skill / "SKILL.md").is_file():
            raise MarathonError(f"{toml_path}: skill: {arm.skill}/SKILL.md not found")
        try:
            _front_matter(skill / "SKILL.md")
        except (ValueError, yaml.YAMLError) as e:
            raise MarathonError(f"{toml_path}: skill: {arm.skill}/SKILL.md: {str(e).splitlines()[0]}") from None
    try:
        check_controller(arm.controller, arm.max_attempts)
    except MarathonError as e:
        raise MarathonError(f"{toml_path}: controller: {e}") from None
    if arm.budget is not None and not controller_enforces_budget(arm.controller):
        raise MarathonError(f"{toml_path}: budget: controller {arm.controller!r} does not enforce "
                            "budgets (only 'governed' does)")
    return arm.model_copy(update={"instructions": instructions, "skill": skill})
