"""The model APIs the proxy meters, and which path belongs to which."""

from __future__ import annotations

from typing import Literal

#: Which API a metered path belongs to.
Api = Literal["anthropic", "openai"]
METERED_PATHS: dict[str, Api] = {"/v1/messages": "anthropic", "/v1/responses": "openai"}
