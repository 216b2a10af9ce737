"""Install an exact Node.js from the npm registry: the official binary of ``node-linux-<arch>``.

Run during a runtime image build (``benchmark/images/runtime.Dockerfile``), standard library
only::

    python3 install_node.py VERSION CA_BUNDLE

Reads the package version's metadata from the registry, downloads its tarball, checks the
tarball against the metadata's ``dist.integrity`` (SHA-512), and writes ``package/bin/node``
to ``/usr/local/bin/node``. Exits non-zero with a one-line message on any failure.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import platform
import ssl
import sys
import tarfile
import urllib.request

REGISTRY = "https://registry.npmjs.org"
#: npm package name suffix by ``platform.machine()``.
ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}
TARGET = "/usr/local/bin/node"


def fetch(url: str, context: ssl.SSLContext) -> bytes:
    """GET ``url`` and return the body (raises on a non-200 answer)."""
    with urllib.request.urlopen(url, context=context, timeout=300) as response:
        return response.read()


def main(version: str, ca_bundle: str) -> int:
    arch = ARCH.get(platform.machine().lower())
    if arch is None:
        print(f"install_node: no Node.js package for machine {platform.machine()!r}", file=sys.stderr)
        return 1
    package = f"node-linux-{arch}"
    context = ssl.create_default_context(cafile=ca_bundle)
    meta = json.loads(fetch(f"{REGISTRY}/{package}/{version}", context))
    algorithm, _, digest = meta["dist"]["integrity"].partition("-")
    if algorithm != "sha512":
        print(f"install_node: unexpected integrity algorithm {algorithm!r}", file=sys.stderr)
        return 1
    tarball = fetch(meta["dist"]["tarball"], context)
    if base64.b64encode(hashlib.sha512(tarball).digest()).decode() != digest:
        print(f"install_node: {package}@{version} tarball does not match its integrity", file=sys.stderr)
        return 1
    with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
        binary = tar.extractfile("package/bin/node")
        with open(TARGET, "wb") as out:
            out.write(binary.read())
    os.chmod(TARGET, 0o755)
    print(f"installed {package}@{version} as {TARGET}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python3 install_node.py VERSION CA_BUNDLE", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
