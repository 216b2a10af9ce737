"""Build the harness's Docker images locally: base, scorer and agent.

- ``marathon-base``: a minimal Debian bookworm root file system made by ``debootstrap`` from the
  host's configured Debian mirror and imported (no container registry is needed), with python3,
  pytest, pytest-timeout, git and libfaketime (gates run a product with its wall clock moved,
  :func:`marathon_product.shifted_clock`).
- ``marathon-scorer``: the base plus the scorer's pytest config and launcher, and ``/scorer``
  (mode 0700: the product uid cannot enter it), where the gates and reports are mounted.
- ``marathon-agent``: the base plus Node, npm and socat, the ``marathon-check`` command
  (self-checks, see ``docs/arms.md``), a non-root ``agent`` user and ``/workspace``.
- ``marathon-agent-<NAME>``: for each declared agent (``agents/NAME.toml``), the agent image
  (or the image of the agent it ``extends``) plus its pinned apt, npm and PyPI packages and the
  files shipped beside its TOML, and the TOML itself (:func:`build_agent_image`).

A marathon that declares a ``[runtime]`` (:class:`~benchmark.marathon.RuntimeSpec`: Debian
packages, an exact Node.js) gets its own scorer and agent images, derived from the plain ones:
``marathon-scorer-runtime`` and ``marathon-agent-runtime`` (recipe ``runtime.Dockerfile``). A
marathon without one uses the plain images.

Every tag is ``<name>:<recipe hash>``: the first 12 hex digits of a SHA-256 over the recipe
(Dockerfile text, files, pinned versions, the runtime declaration, and the parent's tag). An
image whose tag exists is not rebuilt, so an unchanged recipe costs nothing.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import docker.errors
from pydantic import BaseModel

from benchmark.docker_env import client
from benchmark.errors import MarathonError
from benchmark.marathon import RuntimeSpec

if TYPE_CHECKING:
    from benchmark.agents.spec import AgentSpec

RECIPES = Path(__file__).parent / "images"

#: Debian suite of the base image.
DEBIAN_SUITE = "bookworm"
#: Packages of the base image (besides debootstrap's minbase set). ``libfaketime`` (an
#: ``LD_PRELOAD`` library, no daemon) lets a gate run the product with its wall clock moved.
BASE_PACKAGES = ("python3", "python3-pytest", "python3-pytest-timeout", "git",
                 "ca-certificates", "procps", "libfaketime")
#: Where a declared agent's packages and TOML go in its derived image.
AGENT_PREFIX = "/opt/marathon/agents"

Log = Callable[[str], None]


class ImageSet(BaseModel):
    """Tags and image ids of the harness images a run or validation uses, as recorded in a run's
    manifest."""

    base: str
    """Tag of the base image, ``marathon-base:<hash>``."""
    scorer: str
    """Tag of the scorer image the checks run in: ``marathon-scorer:<hash>``, or
    ``marathon-scorer-runtime:<hash>`` for a marathon with a runtime."""
    agent: str | None = None
    """Tag of the agent image trials of Python agents (``oracle``, ``nop``) run in
    (``marathon-agent`` or ``marathon-agent-runtime``), the parent of every declared agent's
    image; ``None`` when it was not requested."""
    agents: dict[str, str] = {}
    """Declared agent name -> tag of its derived image (``marathon-agent-<name>:<hash>``)."""
    runtime: RuntimeSpec | None = None
    """The marathon's ``[runtime]`` declaration the scorer and agent images were derived with;
    ``None``: the plain images."""
    derived_from: dict[str, str] = {}
    """Derived image tag -> tag of the plain image it was built on (empty without a runtime)."""
    ids: dict[str, str] = {}
    """Docker image id (``sha256:...``) per tag."""

    def for_agent(self, name: str) -> str:
        """The image trials of agent ``name`` run in: its derived image, else the agent image.

        Raises:
            MarathonError: no agent image was built.
        """
        tag = self.agents.get(name) or self.agent
        if tag is None:
            raise MarathonError(f"no agent image was built for agent {name!r}")
        return tag


def _hash(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:12]


def debian_mirror() -> str:
    """The Debian mirror to bootstrap from: ``MARATHON_DEBIAN_MIRROR``, else the host's apt config.

    Reads ``/etc/apt/sources.list`` (one-line format) and ``/etc/apt/sources.list.d/*.sources``
    (deb822 format) and returns the first URI that serves the main Debian suite.

    Raises:
        MarathonError: no mirror is configured.
    """
    if os.environ.get("MARATHON_DEBIAN_MIRROR"):
        return os.environ["MARATHON_DEBIAN_MIRROR"]
    apt = Path("/etc/apt")
    for src in sorted(apt.glob("sources.list.d/*.sources")):
        for stanza in src.read_text(errors="replace").split("\n\n"):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
            if "deb" in fields.get("Types", "").split() and DEBIAN_SUITE in fields.get("Suites", "").split():
                return fields["URIs"].split()[0]
    lst = apt / "sources.list"
    if lst.exists():
        for line in lst.read_text(errors="replace").splitlines():
            m = re.match(rf"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+{DEBIAN_SUITE}\s", line)
            if m:
                return m.group(1)
    raise MarathonError(
        f"no Debian {DEBIAN_SUITE} mirror in /etc/apt/sources.list(.d): set MARATHON_DEBIAN_MIRROR"
    )


def _exists(tag: str) -> bool:
    try:
        client().images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _image_id(tag: str) -> str:
    return client().images.get(tag).id


def build_base(log: Log = print) -> str:
    """Bootstrap and import the base image unless its tag exists; return the tag.

    Takes about a minute (debootstrap) the first time. Needs root and ``debootstrap`` on the
    host, and the Debian mirror reachable.

    Raises:
        MarathonError: debootstrap is missing or fails, or the import fails.
    """
    tag = f"marathon-base:{_hash('base', DEBIAN_SUITE, 'minbase', *BASE_PACKAGES)}"
    if _exists(tag):
        return tag
    if not shutil.which("debootstrap"):
        raise MarathonError("debootstrap not found: run `make setup` (installs it on Debian hosts)")
    mirror = debian_mirror()
    log(f"bootstrapping {tag} (debootstrap {DEBIAN_SUITE}, about a minute)")
    with tempfile.TemporaryDirectory(prefix="marathon-rootfs-") as rootfs:
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             DEBIAN_SUITE, rootfs, mirror],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise MarathonError(f"debootstrap failed (exit {proc.returncode}): {tail[0]}")
        log(f"importing {tag}")
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        repo, version = tag.split(":")
        client().api.import_image_from_stream(tar.stdout, repository=repo, tag=version)
        if tar.wait() != 0:
            raise MarathonError(f"packing the root file system of {tag} failed")
    return tag


def host_ca_bundle() -> bytes:
    """The build host's CA bundle (PEM), for build steps that reach a registry over TLS.

    Hosts behind a TLS-inspecting proxy trust an extra CA; the image's own bundle does not.
    The bundle is used during the build only and does not enter the recipe hash.

    Raises:
        MarathonError: no bundle at ``/etc/ssl/certs/ca-certificates.crt`` or ``SSL_CERT_FILE``.
    """
    path = Path(os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")
    if not path.is_file():
        raise MarathonError(f"no CA bundle at {path}: set SSL_CERT_FILE to the host's PEM bundle")
    return path.read_bytes()


def _recipe(name: str, recipe: str, files: dict[str, bytes], parent: str,
            **params: str) -> tuple[str, str]:
    """``(tag, Dockerfile text)`` of an image recipe: the tag hashes the name, the parent tag,
    the filled-in Dockerfile and the files copied into the image."""
    text = (RECIPES / recipe).read_text().format(base=parent, **params)
    return f"{name}:{_hash(name, parent, text, *sorted(files), *files.values())}", text


def _build_dockerfile(name: str, recipe: str, files: dict[str, bytes], parent: str,
                      log: Log, network: bool = False, build_files: dict[str, bytes] | None = None,
                      **params: str) -> str:
    tag, text = _recipe(name, recipe, files, parent, **params)
    if _exists(tag):
        return tag
    return _build_text(tag, text, files, log, network=network, build_files=build_files)


def _build_text(tag: str, text: str, files: dict[str, bytes], log: Log, network: bool = True,
                build_files: dict[str, bytes] | None = None,
                modes: dict[str, int] | None = None) -> str:
    """Build ``tag`` from a Dockerfile text and a context of in-memory files."""
    log(f"building {tag}")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for fname, data in {"Dockerfile": text.encode(), **files, **(build_files or {})}.items():
            info = tarfile.TarInfo(fname)
            info.size = len(data)
            info.mode = (modes or {}).get(fname, 0o644)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    try:
        for chunk in client().api.build(
            fileobj=buf, custom_context=True, tag=tag, rm=True, forcerm=True, decode=True,
            network_mode="host" if network else "none",
        ):
            if "error" in chunk:
                raise MarathonError(f"building {tag} failed: {chunk['error'].strip()}")
            line = chunk.get("stream", "").strip()
            if line.startswith("Step "):
                log(f"  {line}")
    except docker.errors.APIError as e:
        raise MarathonError(f"building {tag} failed: {e.explanation or e}") from None
    return tag


def _runtime_recipe(parent: str, runtime: RuntimeSpec, user: str, workdir: str) -> dict:
    """Arguments of :func:`_recipe` / :func:`_build_dockerfile` for a runtime image on ``parent``."""
    apt_step = "true"
    if runtime.apt:
        apt_step = ("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
                    f"--no-install-recommends {' '.join(sorted(runtime.apt))} "
                    "&& rm -rf /var/lib/apt/lists/*")
    node_step = "true"
    if runtime.node is not None:
        node_step = (f"python3 /tmp/marathon-build/install_node.py {runtime.node} "
                     "/tmp/marathon-build/build-ca.crt && node --version")
    return {"name": f"{parent.split(':')[0]}-runtime", "recipe": "runtime.Dockerfile",
            "files": {"install_node.py": (RECIPES / "install_node.py").read_bytes()},
            "parent": parent, "apt_step": apt_step, "node_step": node_step,
            "user": user, "workdir": workdir}


def runtime_tag(parent: str, runtime: RuntimeSpec, user: str = "1000:1000", workdir: str = "/") -> str:
    """The tag :func:`build_runtime` gives the image derived from ``parent`` with ``runtime``
    (``user`` and ``workdir``: the parent's), without building anything."""
    return _recipe(**_runtime_recipe(parent, runtime, user, workdir))[0]


def build_runtime(parent: str, runtime: RuntimeSpec, log: Log = print) -> str:
    """Derive an image from ``parent`` (a scorer or agent tag) with a marathon's runtime.

    The derived tag is ``<parent name>-runtime:<hash>``, the hash over the parent tag, the
    recipe (``runtime.Dockerfile`` filled with the sorted packages and the Node.js version) and
    ``install_node.py``; the parent's user and working directory are kept. Built with host
    networking (apt and the npm registry); a few minutes the first time, nothing afterwards.

    Raises:
        MarathonError: the build failed (unknown package or Node.js version, registry
            unreachable); the message names the image and the failing step.
    """
    config = client().images.get(parent).attrs.get("Config") or {}
    return _build_dockerfile(
        **_runtime_recipe(parent, runtime, config.get("User") or "root", config.get("WorkingDir") or "/"),
        log=log, network=True, build_files={"build-ca.crt": host_ca_bundle()},
    )


def agent_recipe(spec: "AgentSpec", parent: str) -> tuple[str, str, dict[str, bytes], dict[str, int]]:
    """``(tag, Dockerfile, files, file modes)`` of a declared agent's image on ``parent``, without building.

    The tag is ``marathon-agent-<name>:<hash>``, the hash over the parent tag, the Dockerfile
    (made from ``[install]``) and the files copied in: the shipped files (with their mode) and
    the agent's TOML (at ``/opt/marathon/agents/<name>.toml``), so any change to the TOML or a
    shipped file gives a new tag. Unchanged install steps come from Docker's build cache.
    """
    inst, home = spec.install, f"{AGENT_PREFIX}/{spec.name}"
    lines = [f"# Agent {spec.name} {spec.version}, declared in agents/{spec.name}.toml",
             f"FROM {parent}", "USER root", "COPY build-ca.crt /tmp/build-ca.crt"]
    apt = list(inst.apt) + (["python3-venv"] if inst.pip and "python3-venv" not in inst.apt else [])
    if apt:
        lines.append("RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
                     f"--no-install-recommends {' '.join(apt)} && rm -rf /var/lib/apt/lists/*")
    path = []
    if inst.npm:
        lines.append(f"RUN npm install --prefix {home}/npm --no-fund --no-audit --cafile=/tmp/build-ca.crt "
                     f"{' '.join(inst.npm)} && npm cache clean --force")
        path.append(f"{home}/npm/node_modules/.bin")
    if inst.pip:
        lines.append(f"RUN python3 -m venv {home}/venv && {home}/venv/bin/pip install --no-cache-dir "
                     f"--disable-pip-version-check --cert /tmp/build-ca.crt {' '.join(inst.pip)}")
        path.append(f"{home}/venv/bin")
    files: dict[str, bytes] = {}
    modes: dict[str, int] = {}
    for i, (dest, src) in enumerate(sorted(spec.shipped().items())):
        name = f"shipped/{i}-{src.name}"
        files[name] = src.read_bytes()
        modes[name] = src.stat().st_mode & 0o755 | 0o644
        lines.append(f"COPY --chown=1000:1000 {name} {dest}")
    files[f"{spec.name}.toml"] = spec.source.read_bytes()
    lines.append(f"COPY {spec.name}.toml {AGENT_PREFIX}/{spec.name}.toml")
    lines.append("RUN rm -f /tmp/build-ca.crt")
    if path:
        lines.append(f"ENV PATH={':'.join(path)}:$PATH")
    lines.append("USER 1000:1000")
    text = "\n".join(lines) + "\n"
    mode_text = "".join(f"{k}={v:o};" for k, v in sorted(modes.items()))
    tag = f"marathon-agent-{spec.name}:{_hash('agent', spec.name, parent, text, mode_text, *sorted(files), *[files[k] for k in sorted(files)])}"
    return tag, text, files, modes


def build_agent_image(spec: "AgentSpec", parent: str, log: Log = print) -> str:
    """Derive the image of declared agent ``spec`` from ``parent`` (the agent image, or the
    image of the agent it extends) unless its tag exists; return the tag (:func:`agent_recipe`).

    Built with host networking (the package registries); the build host's CA bundle is used for
    the downloads and removed afterwards.

    Raises:
        MarathonError: the build failed (unknown package or version, registry unreachable);
            the message names the image and the failing step.
    """
    tag, text, files, modes = agent_recipe(spec, parent)
    if _exists(tag):
        return tag
    return _build_text(tag, text, files, log, build_files={"build-ca.crt": host_ca_bundle()},
                       modes=modes)


def build_images(agent: bool = True, log: Log = print, runtime: RuntimeSpec | None = None,
                 agents: list[str] | None = None) -> ImageSet:
    """Build (or find) every harness image a marathon needs and return their tags and ids.

    Args:
        agent: also build the agent image and the declared agents' images (needs the package
            registries; a few minutes the first time).
        log: receives one line per build step.
        agents: the declared agents whose images to build (names or TOML paths); ``None``: every
            agent in ``agents/``. Agents written in Python need none.
        runtime: the marathon's ``[runtime]``; when given (and not empty), the returned scorer
            and agent tags are the images derived with it (:func:`build_runtime`), and
            ``derived_from`` maps them to the plain ones; the declared agents' images are then
            derived from the runtime's agent image (runtime + agent packages). ``None``: the
            plain images.

    Raises:
        MarathonError: a build failed, or an agent's TOML is invalid; the message names the
            image and the failing step, or the file and the field.
    """
    from benchmark.agents.spec import declared_names, lineage, load_agent_spec

    base = build_base(log)
    scorer = _build_dockerfile(
        "marathon-scorer", "scorer.Dockerfile",
        {name: (RECIPES / name).read_bytes() for name in ("pytest.ini", "marathon_parallel.py", "marathon_claim.py",
                                                         "marathon_product.py")},
        base, log,
    )
    agent_tag = None
    if agent:
        agent_tag = _build_dockerfile(
            "marathon-agent", "agent.Dockerfile",
            {"marathon_check.py": (RECIPES / "marathon_check.py").read_bytes()}, base, log,
            network=True,
        )
    runtime_derived: dict[str, str] = {}
    if runtime is not None and not runtime.empty:
        for plain in (scorer, agent_tag):
            if plain:
                runtime_derived[build_runtime(plain, runtime, log)] = plain
        scorer = next(t for t, p in runtime_derived.items() if p == scorer)
        agent_tag = next((t for t, p in runtime_derived.items() if p == agent_tag), None)
    else:
        runtime = None
    derived: dict[str, str] = {}
    if agent_tag is not None:  # declared agents on the (runtime's) agent image
        for name in declared_names() if agents is None else agents:
            parent = agent_tag
            for spec in lineage(load_agent_spec(name)):
                if spec.name not in derived:
                    derived[spec.name] = build_agent_image(spec, parent, log)
                parent = derived[spec.name]
    tags = [t for t in (base, scorer, agent_tag, *runtime_derived.values(), *derived.values()) if t]
    return ImageSet(base=base, scorer=scorer, agent=agent_tag, agents=derived, runtime=runtime,
                    derived_from=runtime_derived, ids={t: _image_id(t) for t in tags})
