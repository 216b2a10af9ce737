"""An experiment as data: what ``marathon run`` runs, from flags and/or ``-c experiment.toml``.

The run is the cross product marathons x modes x arms x agents x models x efforts x replicates,
each a *trial* that plays every episode of its marathon in order. Example ``experiment.toml``::

    marathons = ["ledger", "relay"]   # or marathon = "ledger"
    mode = "cumulative"               # or "isolated", or "both"
    arms = ["prompt-only", "skill-only", "feedback-retry"]
    agents = ["oracle"]
    replicates = 2
    seed_base = 0
    jobs = 2
    out = "results"
    time_limit_s = 1800

    [providers.local]              # models named "local/<model>" (see benchmark.providers)
    protocol = "openai-chat"
    base_url = "http://127.0.0.1:8000/v1"

Command-line flags override the file's values. Agents that use no model (``oracle``, ``nop``)
get model and effort ``none``. A trial's seed depends only on the seed base and the replicate,
so every arm, agent, model and mode of one replicate sees the same gate inputs (paired
comparisons).

Modes (:data:`MODES`): ``cumulative`` (each episode starts from the workspace the agent left)
and ``isolated`` (each episode starts from the reference solution of the previous one, the
starter for the first: a counterfactual without accumulated debt); ``both`` plans the two.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from benchmark.errors import MarathonError
from benchmark.tomlfile import read_toml
from benchmark.paths import RESULTS_DIR
from benchmark.providers import RESERVED, Provider
from benchmark.records import TrialKeys

#: Model and effort of agents that use no model.
NO_MODEL = "none"
#: Model names with this prefix are simulated (a scripted server), flagged in the manifest.
SIMULATED_PREFIX = "scripted/"

#: Episode modes of a trial (``mode`` of the trial keys).
MODES = ("cumulative", "isolated")

#: Flag spelling of each field, for error messages about values given on the command line.
FLAGS = {
    "marathons": "--marathon", "marathon": "--marathon", "mode": "--mode", "arms": "--arm",
    "agents": "--agent", "models": "--model",
    "effort": "--effort", "replicates": "--replicates", "seed_base": "--seed-base",
    "jobs": "--jobs", "out": "--out", "time_limit_s": "--time-limit", "run_id": "--run-id",
    "episodes": "--episodes", "cluster": "--ray",
}


class ClusterConfig(BaseModel):
    """Where trials run when not in the driver's own threads (``[cluster]``; see
    docs/scaling.md)."""

    model_config = ConfigDict(extra="forbid")

    ray: str
    """Ray cluster address: ``HOST:PORT`` of a running cluster's head (GCS port), ``ray://HOST:PORT``
    (Ray Client), ``auto`` (the cluster this machine belongs to), or ``local:N`` (a throwaway
    cluster of N worker nodes on this machine, started and stopped by the run)."""

    @field_validator("ray")
    @classmethod
    def _address(cls, value: str) -> str:
        if value.startswith("local:"):
            if not re.fullmatch(r"local:[1-9][0-9]?", value):
                raise ValueError(f"{value!r}: local:N takes 1 to 99 worker nodes")
        elif value != "auto" and not re.fullmatch(r"(ray://)?[A-Za-z0-9.\[\]:_-]+:[0-9]+", value):
            raise ValueError(f"{value!r} is not a Ray address (HOST:PORT, ray://HOST:PORT, auto or local:N)")
        return value


class RunConfig(BaseModel):
    """The full configuration of a run, as recorded in its manifest."""

    model_config = ConfigDict(extra="forbid")

    marathons: list[str] = Field(min_length=1)
    """Marathon names (directories under ``episodes/``) or paths; ``marathon = "NAME"`` in a
    file (or a manifest of an older harness) means ``marathons = ["NAME"]``."""
    mode: Literal["cumulative", "isolated", "both"] = "cumulative"
    """Episode mode of the trials (see :data:`MODES`); ``both`` plans every trial in each."""
    arms: list[str] = Field(min_length=1)
    """Arm names (presets in ``arms/``) or paths to arm TOML files."""
    agents: list[str] = Field(min_length=1)
    """Agent names, e.g. ``oracle``."""
    models: list[str] = []
    """Models for agents that use one (names starting ``scripted/`` are simulated); must be
    empty when no agent uses a model."""
    effort: list[str] = []
    """Reasoning efforts for agents that use a model; empty means ``default``."""
    replicates: int = Field(default=1, ge=1)
    """Trials per arm x agent x model x effort; replicate r of every combination shares a seed."""
    seed_base: int = 0
    """Base from which every replicate's seed is derived."""
    jobs: int = Field(default=1, ge=1)
    """Trials run concurrently."""
    out: Path = RESULTS_DIR
    """Directory under which the run directory ``<out>/<run id>`` is created."""
    time_limit_s: float = Field(default=1800.0, gt=0)
    """Per-attempt agent time limit in seconds."""
    run_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Run id; generated from the start time when not given."""
    episodes: int | None = Field(default=None, ge=1)
    """Play only the first N episodes of the marathon (all when not given): a shorter run,
    recorded as such (the manifest's ``episodes`` and ``trials.parquet``'s
    ``episodes_planned`` list only those)."""
    cluster: ClusterConfig | None = None
    """Run the trials on a Ray cluster (``[cluster] ray = ADDRESS``, or ``--ray``); ``None``:
    in the driver's threads. Not part of the plan: a run may be resumed elsewhere."""
    providers: dict[str, Provider] = {}
    """Model providers by name (``[providers.NAME]`` tables): models named ``NAME/MODEL`` go
    there (see :mod:`benchmark.providers`). ``scripted``, ``anthropic`` and ``openai`` are built
    in and cannot be declared."""

    @model_validator(mode="before")
    @classmethod
    def _one_marathon(cls, data: Any) -> Any:
        if isinstance(data, dict) and "marathon" in data:
            data = dict(data)
            one = data.pop("marathon")
            if "marathons" in data:
                raise ValueError("give marathon or marathons, not both")
            data["marathons"] = [one] if isinstance(one, str) else one
        return data

    @field_validator("marathons")
    @classmethod
    def _distinct_marathons(cls, marathons: list[str]) -> list[str]:
        dup = next((m for m in marathons if marathons.count(m) > 1), None)
        if dup is not None:
            raise ValueError(f"marathon {dup!r} given twice")
        return marathons

    @property
    def modes(self) -> list[str]:
        """The modes planned: ``["cumulative"]``, ``["isolated"]`` or both."""
        return list(MODES) if self.mode == "both" else [self.mode]

    @field_validator("providers")
    @classmethod
    def _provider_names(cls, providers: dict[str, Provider]) -> dict[str, Provider]:
        for name in providers:
            if name in RESERVED:
                raise ValueError(f"provider {name!r} is built in (declare another name)")
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                raise ValueError(f"provider name {name!r}: use letters, digits, '_', '.', '-'")
        return providers


def cluster_config(address: str, flag: str = "--ray") -> ClusterConfig:
    """Validate a Ray address into a :class:`ClusterConfig`.

    Raises:
        MarathonError: malformed address (the message starts with ``flag``).
    """
    try:
        return ClusterConfig(ray=address)
    except ValidationError as e:
        raise MarathonError(f"{flag}: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None


def derive_seed(seed_base: int, replicate: int) -> int:
    """The seed of replicate ``replicate`` (1-based): a 31-bit integer from SHA-256 over the seed
    base and the replicate, identical for every arm, agent and model."""
    digest = hashlib.sha256(f"marathon-seed:{seed_base}:{replicate}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def trial_id(arm: str, agent: str, model: str, effort: str, replicate: int,
             marathon: str | None = None, mode: str = "cumulative") -> str:
    """The id of a trial, ``[<marathon>.]<arm>.<agent>.<model>.<effort>.r<replicate>[.isolated]``
    (every part slugged to ``[A-Za-z0-9_-]``): the marathon is named when the run has several,
    the mode when it is ``isolated``, so a single-marathon cumulative run keeps the plain ids."""
    head = f"{_slug(marathon)}." if marathon else ""
    tail = "" if mode == "cumulative" else f".{_slug(mode)}"
    return f"{head}{_slug(arm)}.{_slug(agent)}.{_slug(model)}.{_slug(effort)}.r{replicate}{tail}"


def _absolute_if_path(value: str, base: Path) -> str:
    """A marathon or arm given as a path (contains ``/`` or ends in ``.toml``) made absolute
    against ``base``, so a resume from another directory finds it; names stay names."""
    if "/" in value or value.endswith(".toml"):
        return str((base / value).resolve())
    return value


def load_config(config_file: Path | None, overrides: dict[str, Any]) -> RunConfig:
    """Merge an experiment TOML file (optional) with command-line values and validate.

    Args:
        config_file: path of an experiment TOML file, or ``None``.
        overrides: field -> value from flags; ``None`` values and empty lists are ignored.

    Raises:
        MarathonError: the file is missing or malformed, or a value is invalid. The message
            names the file and field, or the flag.
    """
    raw: dict[str, Any] = {}
    source: dict[str, str] = {}
    if config_file is not None:
        if not config_file.is_file():
            raise MarathonError(f"-c: experiment file {config_file} not found")
        raw = read_toml(config_file)
        base = config_file.parent
        if isinstance(raw.get("out"), str):
            raw["out"] = str((base / raw["out"]).resolve())
        if isinstance(raw.get("marathon"), str):
            raw["marathon"] = _absolute_if_path(raw["marathon"], base)
        if isinstance(raw.get("marathons"), list):
            raw["marathons"] = [_absolute_if_path(m, base) if isinstance(m, str) else m
                                for m in raw["marathons"]]
        if isinstance(raw.get("arms"), list):
            raw["arms"] = [_absolute_if_path(a, base) if isinstance(a, str) else a for a in raw["arms"]]
        source = {k: f"{config_file}: {k}" for k in raw}
    for key, value in overrides.items():
        if value is None or value == () or value == []:
            continue
        value = list(value) if isinstance(value, tuple) else value
        if key in ("marathon", "marathons"):  # flags replace the file's marathon(s)
            values = [value] if isinstance(value, str) else value
            raw.pop("marathon", None)
            key, value = "marathons", [_absolute_if_path(m, Path.cwd()) for m in values]
        elif key == "arms":
            value = [_absolute_if_path(a, Path.cwd()) for a in value]
        elif key == "out":
            value = Path(value).resolve()
        elif key == "ray":
            key, value = "cluster", {**(raw.get("cluster") or {}), "ray": value}
        raw[key] = value
        source[key] = FLAGS.get(key, key)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "marathons"
        where = source.get(field) or (f"{config_file}: {field}" if config_file else FLAGS.get(field, field))
        if len(first["loc"]) > 1 and config_file is not None and where == f"{config_file}: {field}":
            where += "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"][1:])
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing" and len(first["loc"]) == 1:
            msg = f"required (give {FLAGS.get(field, field)} or set {field} in -c FILE)"
        raise MarathonError(f"{where}: {msg}") from None


def check_output_dir(out: Path, flag: str = "--out") -> None:
    """Check that files can be written under directory ``out`` (created if missing), without
    writing anything.

    Raises:
        MarathonError: ``out`` (or its nearest existing ancestor) is not a directory, or is not
            writable; the message starts with ``flag``.
    """
    probe = out.resolve()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise MarathonError(f"{flag}: {probe} is not a directory: cannot create {out}"
                            if probe != out.resolve() else f"{flag}: {out} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise MarathonError(f"{flag}: {probe} is not writable")


def plan_trials(config: RunConfig, run_id: str, marathons: str | list[str],
                uses_model: dict[str, bool]) -> list[TrialKeys]:
    """The trials of a run, replicate-major (so an interrupted run has covered every marathon,
    mode and arm of its first replicates).

    Args:
        config: the validated configuration.
        run_id: the run's id.
        marathons: the marathons' names, in the order of ``config.marathons`` (one name: a
            single-marathon run).
        uses_model: agent name -> whether it uses a model.

    Raises:
        MarathonError: an agent needs a model and none is given, or models are given but no
            agent uses one.
    """
    if config.models and not any(uses_model.values()):
        raise MarathonError(f"--model: agents {', '.join(config.agents)} use no model: drop --model")
    names = [marathons] if isinstance(marathons, str) else list(marathons)
    trials: list[TrialKeys] = []
    for replicate in range(1, config.replicates + 1):
        seed = derive_seed(config.seed_base, replicate)
        for marathon, mode, arm in itertools.product(names, config.modes, config.arms):
            for agent in config.agents:
                if uses_model[agent]:
                    if not config.models:
                        raise MarathonError(f"--model: agent {agent!r} needs a model")
                    combos = [(m, e) for m in config.models for e in (config.effort or ["default"])]
                else:
                    combos = [(NO_MODEL, NO_MODEL)]
                for model, effort in combos:
                    arm_name = Path(arm).stem
                    tid = trial_id(arm_name, agent, model, effort, replicate,
                                   marathon if len(names) > 1 else None, mode)
                    trials.append(TrialKeys(
                        run_id=run_id, trial_id=tid, marathon=marathon, arm=arm_name, agent=agent,
                        model=model, effort=effort, mode=mode, replicate=replicate, seed=seed,
                    ))
    ids = [t.trial_id for t in trials]
    dup = next((i for i in ids if ids.count(i) > 1), None)
    if dup:
        raise MarathonError(f"--marathon/--arm/--agent/--model: two trials would share the id "
                            f"{dup!r} (repeated value?)")
    return trials
