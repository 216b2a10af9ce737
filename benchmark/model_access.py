"""Model access for a run: where each model's calls go, checked before anything starts, and the
services that serve model agents while the run's driver session lives.

Every model call of a trial goes from the CLI in its container, through the in-container
forwarder (:data:`benchmark.sandbox.PROXY_URL`), to the trial's own Unix socket of the run's
:class:`~benchmark.proxy.MeteringProxy` (in a per-trial host directory bind-mounted into that
container alone), and from there upstream, by the model's route
(:func:`benchmark.providers.resolve`):

- a model whose name starts with ``scripted/`` goes to the run's
  :class:`~benchmark.scripted.ScriptedServer` on the host's loopback: a **simulation** that
  demonstrates the pipeline and the arms' control loops, not any real model's behaviour;
- ``PROVIDER/MODEL`` goes to a provider the experiment declares (``[providers.NAME]``);
- any other model goes to the built-in provider of its agent's protocol (Anthropic or OpenAI)
  with the key from the driver's environment. Keys stay in the driver process: containers get
  a per-trial token only, valid on their own socket only.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from benchmark.agents import Agent, get_agent
from benchmark.providers import Provider, Route, resolve
from benchmark.proxy import MeteringProxy, ModelEndpoint, ProxyConfig, Upstream
from benchmark.records import TrialKeys
from benchmark.rundir import HOST_TMP, host_tmp_prefix
from benchmark.sandbox import PROXY_SOCKET, PROXY_URL

#: What :func:`model_upstreams` says of a simulated model.
SIMULATION = "scripted model server (simulation)"
#: File name of the proxy's usage log in the run directory (JSON Lines, one row per request).
USAGE_LOG = "proxy-usage.jsonl"


def socket_dir_prefix(nonce: str) -> str:
    """Name prefix of a run's proxy socket directories in ``/tmp``:
    ``marathon-<run nonce>-proxy-`` (short, so the socket path stays under the 108-byte limit;
    the nonce is the run directory's, :mod:`benchmark.rundir`, so it never names another
    run's directory, even one with the same run id)."""
    return f"{host_tmp_prefix(nonce)}proxy-"


def trial_route(keys: TrialKeys, agent: Agent, providers: Mapping[str, Provider],
                environ: Mapping[str, str] = os.environ) -> Route:
    """The route of a model agent's trial (see :func:`benchmark.providers.resolve`).

    Raises:
        MarathonError: as :func:`~benchmark.providers.resolve`.
    """
    return resolve(keys.model, keys.agent, getattr(agent, "protocol", None), providers, environ)


def model_upstreams(trials: list[TrialKeys], agents: Mapping[str, Agent],
                    environ: Mapping[str, str] = os.environ,
                    providers: Mapping[str, Provider] | None = None) -> dict[str, str]:
    """Where the calls of each model of the run go: :data:`SIMULATION` or a provider's base URL
    (``NAME: URL`` for a declared provider).

    Args:
        trials: the planned trials.
        agents: agent name -> an instance (for ``uses_model`` and its protocol).
        environ: the environment holding the keys.
        providers: the experiment's declared providers.

    Returns:
        model -> upstream, for the trials of agents that use a model (empty when none does).

    Raises:
        MarathonError: an unknown ``scripted/`` policy or provider, an agent that does not
            speak its provider's protocol, or a key that is not in the environment (one line
            naming the model, agent or provider, and variable).
    """
    upstreams: dict[str, str] = {}
    for t in trials:
        agent = agents[t.agent]
        if not agent.uses_model:
            continue
        route = trial_route(t, agent, providers or {}, environ)
        if route.simulated:
            upstreams[t.model] = SIMULATION
        elif route.provider in ("anthropic", "openai"):
            upstreams[t.model] = route.base_url
        else:
            upstreams[t.model] = f"{route.provider}: {route.base_url}"
    return upstreams


class ModelServices:
    """The scripted model server (when a model is simulated) and the metering proxy of one
    driver session, with the session's socket directory (one subdirectory per open trial).
    Start with :meth:`start`, end with :meth:`stop` (idempotent)."""

    def __init__(self, proxy: MeteringProxy, scripted, socket_dir: Path,
                 providers: Mapping[str, Provider], environ: Mapping[str, str]):
        self.proxy = proxy
        """The metering proxy."""
        self.scripted = scripted
        """The scripted model server, or ``None`` when no model is simulated."""
        self.socket_dir = socket_dir
        """Host directory holding one directory per open trial, each holding only that trial's
        socket (bind-mounted into that trial's container alone)."""
        self.providers = dict(providers)
        """The experiment's declared providers."""
        self.environ = environ

    @classmethod
    def start(cls, nonce: str, run_dir: Path, marathon: str | Mapping[str, str | Path],
              trials: list[TrialKeys],
              providers: Mapping[str, Provider] | None = None,
              environ: Mapping[str, str] = os.environ) -> "ModelServices":
        """Start the services for the trials of a run that use a model.

        Args:
            nonce: the run directory's nonce (names the socket directory).
            run_dir: the run directory (the proxy appends its usage log there, :data:`USAGE_LOG`).
            marathon: marathon name or path, for the scripted model's policies; or marathon
                name -> name or path (a run of several: the policies serve those its
                simulated trials play).
            trials: the trials to serve (those of agents that use no model are skipped).
            providers: the experiment's declared providers.
            environ: the environment holding the keys.

        Raises:
            MarathonError: a route cannot be resolved (see :func:`model_upstreams`), or a server
                cannot listen.
        """
        from benchmark.scripted import ScriptedConfig, ScriptedServer

        providers = providers or {}
        routes = [trial_route(t, a, providers, environ) for t in trials
                  if (a := get_agent(t.agent)).uses_model]
        prefix = socket_dir_prefix(nonce)
        for stale in HOST_TMP.glob(f"{prefix}*"):  # left by a SIGKILLed session of the run
            shutil.rmtree(stale, ignore_errors=True)
        socket_dir = Path(tempfile.mkdtemp(prefix=prefix, dir=HOST_TMP))
        socket_dir.chmod(0o755)
        scripted = None
        try:
            upstreams: dict[str, Upstream] = {}
            if any(r.simulated for r in routes):
                if isinstance(marathon, Mapping):
                    played = {t.marathon for t in trials if t.model.startswith("scripted/")}
                    marathon = [str(p) for n, p in marathon.items() if n in played] or [
                        str(p) for p in marathon.values()]
                scripted = ScriptedServer(ScriptedConfig(marathon=marathon)).start()
                upstreams["scripted"] = Upstream(base_url=scripted.url,
                                                 api_key="scripted-" + secrets.token_hex(8))
            for r in routes:
                if not r.simulated:
                    key = environ[r.key_env] if r.key_env else None
                    upstreams[r.provider] = Upstream(base_url=r.base_url, api_key=key)
            proxy = MeteringProxy(ProxyConfig(container_url=PROXY_URL, upstreams=upstreams,
                                              usage_log=run_dir / USAGE_LOG)).start()
        except BaseException:
            if scripted is not None:
                scripted.stop()
            shutil.rmtree(socket_dir, ignore_errors=True)
            raise
        return cls(proxy, scripted, socket_dir, providers, environ)

    def open_trial(self, keys: TrialKeys) -> ModelEndpoint:
        """Open a trial's access: a fresh token, valid only on the trial's own socket, in a new
        directory under :attr:`socket_dir` (the endpoint's ``socket_dir``, to mount into the
        trial's container), for the trial's protocol, provider and model only. For an agent
        that uses no model (a trial opened for its arm's self-checks) no model request is ever
        forwarded.

        Raises:
            MarathonError: the route cannot be resolved, or the socket cannot be opened.
        """
        agent = get_agent(keys.agent)
        route = trial_route(keys, agent, self.providers, self.environ) if agent.uses_model else None
        trial_dir = Path(tempfile.mkdtemp(prefix="t-", dir=self.socket_dir))
        trial_dir.chmod(0o755)
        try:
            if route is None:  # a channel for self-checks only: no model may be named
                return self.proxy.open_trial(keys, models=[], socket=trial_dir / PROXY_SOCKET)
            return self.proxy.open_trial(keys, protocol=route.protocol, upstream=route.provider,
                                         models=[route.upstream_model],
                                         socket=trial_dir / PROXY_SOCKET)
        except BaseException:
            shutil.rmtree(trial_dir, ignore_errors=True)
            raise

    def close_trial(self, endpoint: ModelEndpoint) -> None:
        """End a trial's access: its token is refused from now on, its socket closed and its
        directory removed (idempotent)."""
        self.proxy.unregister(endpoint.token.get_secret_value())
        if endpoint.socket_dir is not None:
            shutil.rmtree(endpoint.socket_dir, ignore_errors=True)

    def stop(self) -> None:
        """Stop the proxy and the scripted server; remove the socket directories."""
        self.proxy.stop()
        if self.scripted is not None:
            self.scripted.stop()
        shutil.rmtree(self.socket_dir, ignore_errors=True)

