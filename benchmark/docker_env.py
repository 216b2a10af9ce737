"""The connection to the Docker engine, and the labels that mark the harness's containers."""

from __future__ import annotations

import functools

import docker
import docker.errors

from benchmark.errors import MarathonError

#: Label put on every container and network the harness creates; its value is the run id
#: (or ``scorer`` for scoring containers outside a run). Resume and clean-up find a run's
#: leftovers by it together with :data:`benchmark.rundir.NONCE_LABEL` (run ids can repeat).
LABEL = "org.marathon.run"


@functools.cache
def client() -> docker.DockerClient:
    """A Docker client for the engine named by the environment (``DOCKER_HOST`` or the socket).

    The API version is negotiated, so an older engine (20.10) works with a newer SDK.

    Raises:
        MarathonError: no engine answers; the message says how to start one.
    """
    try:
        c = docker.from_env(version="auto", timeout=120)
        c.ping()
    except docker.errors.DockerException as e:
        raise MarathonError(
            f"Docker engine not reachable ({e.__class__.__name__}): run `make setup` "
            "(Debian hosts) or start Docker and set DOCKER_HOST"
        ) from None
    return c
