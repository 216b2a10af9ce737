"""Model access for a run: where each model's calls go, checked before anything starts, and the
services that serve model agents while the run's driver session lives.

Every model call of a trial goes from the CLI in its container, through the in-container
forwarder (:data:`benchmark.sandbox.PROXY_URL`), to the run's
:class:`~benchmark.proxy.MeteringProxy` on a Unix socket in a per-run host directory, and from
there upstream:

- a model whose name starts with ``scripted/`` goes to the run's
  :class:`~benchmark.scripted.ScriptedServer` on the host's loopback: a **simulation** that
  demonstrates the pipeline and the arms' control loops, not any real model's behaviour;
- any other model goes to the vendor API of its agent (``claude-code``: Anthropic, ``codex``:
  OpenAI) with the key from the driver's environment (``ANTHROPIC_API_KEY`` /
  ``OPENAI_API_KEY``; base URL ``ANTHROPIC_BASE_URL`` / ``OPENAI_BASE_URL`` when set, a trailing
  ``/v1`` dropped, else the vendor's). The key stays in the driver process: containers get a
  per-trial token only.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from benchmark.agents import Agent
from benchmark.errors import MarathonError
from benchmark.experiment import SIMULATED_PREFIX
from benchmark.proxy import MeteringProxy, ModelEndpoint, ProxyConfig, Upstream
from benchmark.records import TrialKeys
from benchmark.rundir import HOST_TMP, host_tmp_prefix
from benchmark.sandbox import PROXY_SOCKET, PROXY_URL

#: API -> (environment variable of the key, of the base URL, default base URL, display name).
VENDORS: dict[str, tuple[str, str, str, str]] = {
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "https://api.anthropic.com", "Anthropic"),
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL", "https://api.openai.com", "OpenAI"),
}
#: What :func:`model_upstreams` says of a simulated model.
SIMULATION = "scripted model server (simulation)"
#: File name of the proxy's usage log in the run directory (JSON Lines, one row per model call).
USAGE_LOG = "proxy-usage.jsonl"


def socket_dir_prefix(nonce: str) -> str:
    """Name prefix of a run's proxy socket directories in ``/tmp``:
    ``marathon-<run nonce>-proxy-`` (short, so the socket path stays under the 108-byte limit;
    the nonce is the run directory's, :mod:`benchmark.rundir`, so it never names another
    run's directory, even one with the same run id)."""
    return f"{host_tmp_prefix(nonce)}proxy-"


def is_simulated(model: str) -> bool:
    """Whether ``model`` is a simulated (scripted) model."""
    return model.startswith(SIMULATED_PREFIX)


def _vendor_base_url(api: str, environ: Mapping[str, str]) -> str:
    _, url_var, default, _ = VENDORS[api]
    url = (environ.get(url_var) or default).rstrip("/")
    return url.removesuffix("/v1")


def model_upstreams(trials: list[TrialKeys], agents: Mapping[str, Agent],
                    environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Where the calls of each model of the run go: :data:`SIMULATION` or a vendor's base URL.

    Args:
        trials: the planned trials.
        agents: agent name -> an instance (for ``uses_model`` and the API it calls).
        environ: the environment holding the vendor keys.

    Returns:
        model -> upstream, for the trials of agents that use a model (empty when none does).

    Raises:
        MarathonError: an unknown ``scripted/`` policy, or a real model whose agent's API key is
            not in the environment (one line naming the model, agent and variable).
    """
    from benchmark.scripted import POLICIES

    upstreams: dict[str, str] = {}
    for t in trials:
        agent = agents[t.agent]
        if not agent.uses_model:
            continue
        if is_simulated(t.model):
            policy = t.model[len(SIMULATED_PREFIX):]
            if policy not in POLICIES:
                raise MarathonError(f"--model {t.model}: unknown scripted model (known: "
                                    f"{', '.join(SIMULATED_PREFIX + p for p in POLICIES)})")
            upstreams[t.model] = SIMULATION
            continue
        api = getattr(agent, "api", None)
        if api not in VENDORS:
            raise MarathonError(f"--model {t.model}: agent {t.agent!r} names no vendor API; "
                                f"use a {SIMULATED_PREFIX} model")
        key_var, _, _, vendor = VENDORS[api]
        if not environ.get(key_var):
            raise MarathonError(f"--model {t.model}: agent {t.agent} calls the {vendor} API: set "
                                f"{key_var} (or use a {SIMULATED_PREFIX} model, a simulation)")
        upstreams[t.model] = _vendor_base_url(api, environ)
    return upstreams


class ModelServices:
    """The scripted model server (when a model is simulated) and the metering proxy of one
    driver session, with the proxy's socket directory. Start with :meth:`start`, end with
    :meth:`stop` (idempotent)."""

    def __init__(self, proxy: MeteringProxy, scripted, socket_dir: Path):
        self.proxy = proxy
        """The metering proxy."""
        self.scripted = scripted
        """The scripted model server, or ``None`` when no model is simulated."""
        self.socket_dir = socket_dir
        """Host directory holding only the proxy's Unix socket (bind-mounted into containers)."""

    @classmethod
    def start(cls, nonce: str, run_dir: Path, marathon: str, upstreams: Mapping[str, str],
              apis: set[str], environ: Mapping[str, str] = os.environ) -> "ModelServices":
        """Start the services for a run.

        Args:
            nonce: the run directory's nonce (names the socket directory).
            run_dir: the run directory (the proxy appends its usage log there, :data:`USAGE_LOG`).
            marathon: marathon name or path, for the scripted model's policies.
            upstreams: model -> upstream, from :func:`model_upstreams`.
            apis: the vendor APIs (``anthropic``, ``openai``) of the real models' agents.
            environ: the environment holding the vendor keys.

        Raises:
            MarathonError: a server cannot listen.
        """
        from benchmark.scripted import ScriptedConfig, ScriptedServer

        prefix = socket_dir_prefix(nonce)
        for stale in HOST_TMP.glob(f"{prefix}*"):  # left by a SIGKILLed session of the run
            shutil.rmtree(stale, ignore_errors=True)
        socket_dir = Path(tempfile.mkdtemp(prefix=prefix, dir=HOST_TMP))
        socket_dir.chmod(0o755)
        scripted = None
        try:
            simulated = None
            if any(u == SIMULATION for u in upstreams.values()):
                scripted = ScriptedServer(ScriptedConfig(marathon=marathon)).start()
                simulated = Upstream(base_url=scripted.url, api_key="scripted-" + secrets.token_hex(8))
            vendor = {api: Upstream(base_url=_vendor_base_url(api, environ),
                                    api_key=environ[VENDORS[api][0]]) for api in apis}
            proxy = MeteringProxy(ProxyConfig(
                unix_socket=socket_dir / PROXY_SOCKET, container_url=PROXY_URL,
                anthropic=vendor.get("anthropic"), openai=vendor.get("openai"),
                simulated=simulated, usage_log=run_dir / USAGE_LOG)).start()
        except BaseException:
            if scripted is not None:
                scripted.stop()
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise
        return cls(proxy, scripted, socket_dir)

    def open_trial(self, keys: TrialKeys) -> ModelEndpoint:
        """A fresh per-trial token registered with the proxy, as the trial's endpoint."""
        return self.proxy.open_trial(keys)

    def stop(self) -> None:
        """Stop the proxy and the scripted server; remove the socket directory."""
        self.proxy.stop()
        if self.scripted is not None:
            self.scripted.stop()
        shutil.rmtree(self.socket_dir, ignore_errors=True)
