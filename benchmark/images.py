"""Build the harness's Docker images locally: base, scorer and agent.

- ``marathon-base``: a minimal Debian bookworm root file system made by ``debootstrap`` from the
  host's configured Debian mirror and imported (no container registry is needed), with python3,
  pytest, pytest-timeout and git.
- ``marathon-scorer``: the base plus the scorer's pytest config and launcher, and ``/scorer``
  (mode 0700: the product uid cannot enter it), where the gates and reports are mounted.
- ``marathon-agent``: the base plus Node and exact versions of the Claude Code and Codex CLIs
  from the npm registry, a non-root ``agent`` user and ``/workspace``.

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

import docker.errors
from pydantic import BaseModel

from benchmark.docker_env import client
from benchmark.errors import MarathonError
from benchmark.marathon import RuntimeSpec

RECIPES = Path(__file__).parent / "images"

#: Debian suite of the base image.
DEBIAN_SUITE = "bookworm"
#: Packages of the base image (besides debootstrap's minbase set).
BASE_PACKAGES = ("python3", "python3-pytest", "python3-pytest-timeout", "git",
                 "ca-certificates", "procps")
#: Exact agent CLI versions from the npm registry; recorded in every run's manifest.
CLAUDE_CODE_VERSION = "2.1.330"
CODEX_VERSION = "0.169.0"

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
    """Tag of the agent image trials run in (``marathon-agent`` or ``marathon-agent-runtime``);
    ``None`` when it was not requested."""
    runtime: RuntimeSpec | None = None
    """The marathon's ``[runtime]`` declaration the scorer and agent images were derived with;
    ``None``: the plain images."""
    derived_from: dict[str, str] = {}
    """Derived image tag -> tag of the plain image it was built on (empty without a runtime)."""
    ids: dict[str, str] = {}
    """Docker image id (``sha256:...``) per tag."""
    claude_code_version: str = CLAUDE_CODE_VERSION
    """Pinned ``@anthropic-ai/claude-code`` version in the agent image."""
    codex_version: str = CODEX_VERSION
    """Pinned ``@openai/codex`` version in the agent image."""


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
    log(f"building {tag}")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for fname, data in {"Dockerfile": text.encode(), **files, **(build_files or {})}.items():
            info = tarfile.TarInfo(fname)
            info.size = len(data)
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


def build_images(agent: bool = True, log: Log = print, runtime: RuntimeSpec | None = None) -> ImageSet:
    """Build (or find) every harness image a marathon needs and return their tags and ids.

    Args:
        agent: also build the agent image (needs the npm registry; a few minutes the first time).
        log: receives one line per build step.
        runtime: the marathon's ``[runtime]``; when given (and not empty), the returned scorer
            and agent tags are the images derived with it (:func:`build_runtime`), and
            ``derived_from`` maps them to the plain ones. ``None``: the plain images.

    Raises:
        MarathonError: a build failed; the message names the image and the failing step.
    """
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
            "marathon-agent", "agent.Dockerfile", {}, base, log, network=True,
            build_files={"build-ca.crt": host_ca_bundle()},
            claude_code_version=CLAUDE_CODE_VERSION, codex_version=CODEX_VERSION,
        )
    derived: dict[str, str] = {}
    if runtime is not None and not runtime.empty:
        for plain in (scorer, agent_tag):
            if plain:
                derived[build_runtime(plain, runtime, log)] = plain
        scorer = next(t for t, p in derived.items() if p == scorer)
        agent_tag = next((t for t, p in derived.items() if p == agent_tag), None)
    else:
        runtime = None
    tags = [t for t in (base, scorer, agent_tag, *derived.values()) if t]
    return ImageSet(base=base, scorer=scorer, agent=agent_tag, runtime=runtime,
                    derived_from=derived, ids={t: _image_id(t) for t in tags})
