"""The model APIs (protocols) the proxy meters: exactly which requests it forwards, how it
authenticates upstream, and how it shapes its own error answers.

Three protocols, the vocabulary of agents' ``protocol`` and of ``[providers.NAME]`` tables:

=====================  ==========================  ===============  =================
protocol               forwarded request           query allowed    upstream auth
=====================  ==========================  ===============  =================
``anthropic-messages`` ``POST /v1/messages``       none, ``beta=true``  ``x-api-key``
``openai-responses``   ``POST /v1/responses``      none             ``Authorization: Bearer``
``openai-chat``        ``POST /v1/chat/completions`` none           ``Authorization: Bearer``
=====================  ==========================  ===============  =================

The allow-list is exact: a request is forwarded only when its method is ``POST`` and its request
target, byte for byte, is the protocol's path followed by an allowed query. Every other request
(another path, another method, an absolute URL, and every *variant* of an allowed path:
percent-encoding, ``//``, ``/./``, ``..``, a trailing slash, other letter case, ``;params``) is
refused. :func:`normalise_path` is used only to say in the refusal whether the request was a
variant of an allowed path; it never makes a request acceptable.
"""

from __future__ import annotations

import posixpath
import re
from typing import Literal, get_args
from urllib.parse import unquote

from aiohttp import web
from pydantic import BaseModel, ConfigDict

#: A metered model API.
Protocol = Literal["anthropic-messages", "openai-responses", "openai-chat"]
#: Every protocol, in a fixed order.
PROTOCOL_NAMES: tuple[str, ...] = get_args(Protocol)


class ProtocolSpec(BaseModel):
    """What the proxy forwards for one protocol, and how."""

    model_config = ConfigDict(frozen=True)

    name: Protocol
    """The protocol's name."""
    path: str
    """The one request path that is forwarded (and metered), e.g. ``/v1/messages``."""
    queries: tuple[str, ...] = ("",)
    """The query strings allowed after the path (``""``: none). Claude Code sends
    ``?beta=true``."""
    auth: Literal["x-api-key", "bearer"]
    """How the upstream key is sent: ``x-api-key: KEY`` or ``Authorization: Bearer KEY``."""
    errors: Literal["anthropic", "openai"]
    """Shape of the proxy's own error answers (the vendor's error body)."""


#: The protocols the proxy speaks.
PROTOCOLS: dict[str, ProtocolSpec] = {
    "anthropic-messages": ProtocolSpec(name="anthropic-messages", path="/v1/messages",
                                       queries=("", "beta=true"), auth="x-api-key",
                                       errors="anthropic"),
    "openai-responses": ProtocolSpec(name="openai-responses", path="/v1/responses",
                                     auth="bearer", errors="openai"),
    "openai-chat": ProtocolSpec(name="openai-chat", path="/v1/chat/completions",
                                auth="bearer", errors="openai"),
}
#: Protocol by forwarded path.
BY_PATH: dict[str, ProtocolSpec] = {p.path: p for p in PROTOCOLS.values()}


def normalise_path(target: str) -> str:
    """The path of a request target in a canonical form, for saying what a refused request
    amounted to: query and fragment cut, ``;params`` cut from every segment, percent-encoding
    decoded (repeatedly, so double encoding too), backslashes as slashes, ``//``, ``.`` and
    ``..`` resolved, no trailing slash, lower case. An absolute URL (``http://host/p``) gives its
    path. E.g. ``//V1/./%6Dessages/;x`` -> ``/v1/messages``."""
    path = target.split("#", 1)[0].split("?", 1)[0]
    m = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*", path)
    if m:
        path = path[m.end():]
    for _ in range(4):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    path = path.replace("\\", "/")
    path = "/".join(seg.split(";", 1)[0] for seg in path.split("/"))
    path = posixpath.normpath("/" + path.lstrip("/"))
    return "/" + path.strip("/").lower() if path.strip("/") else "/"


def refusal(spec: ProtocolSpec | None, method: str, target: str) -> str | None:
    """Why the request ``method target`` (the raw request target, as received) may not be
    forwarded under protocol ``spec``, or ``None`` when it is exactly allowed.

    ``spec`` ``None`` (a trial registered without a protocol, in tests) allows the path of any
    protocol.
    """
    specs = [spec] if spec is not None else list(PROTOCOLS.values())
    path, _, query = target.partition("?")
    for s in specs:
        if target in (s.path + ("?" + q if q else "") for q in s.queries):
            if method == "POST":
                return None
            return f"method {method} not allowed on {s.path} (only POST)"
    allowed = " or ".join(f"POST {s.path}" for s in specs)
    if path in {s.path for s in specs}:
        return f"query {_show('?' + query)} not allowed on {path}"
    canonical = normalise_path(target)
    if canonical in {s.path for s in specs}:
        return f"{method} {_show(target)} is a variant of {canonical}: only exactly {allowed} is forwarded"
    return f"{method} {_show(target)} is not a metered model request (only {allowed})"


def _show(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def error_response(style: Literal["anthropic", "openai"], status: int, kind: str,
                   message: str) -> web.Response:
    """An error answer shaped like the vendor's own errors: Anthropic ``{"type": "error",
    "error": {"type", "message"}}``, OpenAI ``{"error": {"message", "type", "code"}}``."""
    if style == "anthropic":
        doc = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        doc = {"error": {"message": message, "type": kind,
                         "code": "invalid_api_key" if status == 401 else None}}
    return web.json_response(doc, status=status)
