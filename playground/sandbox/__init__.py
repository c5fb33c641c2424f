"""Sandboxes: emulators of each vendor's protocol, backed by the offline agent.

Each module `playground/sandbox/<vendor>.py` exposes:

* `app`: an ASGI application speaking the vendor's protocol (HTTP and WebSocket or
  Socket.IO), served by our own server under `/sandbox/<vendor>/` and startable
  alone on a loopback port (`python -m playground.sandbox <vendor> --port N`);
* `client_config(base_url) -> dict`: the provider settings (URLs and sandbox
  credentials) with which our client talks to that sandbox when the real
  service's credentials are unset.

A vendor's client and its sandbox share no protocol code: each is written from
the vendor's documents, so that one misreading cannot hide in both.
"""

from __future__ import annotations

import importlib

SANDBOXES = ("liku", "flow", "lokutor", "retell", "aivoco")


def load(vendor: str):
    return importlib.import_module(f"playground.sandbox.{vendor}")


class SandboxRouter:
    """Serves `/sandbox/<vendor>/…` from the vendor's ASGI app; passes everything else on."""

    def __init__(self, app, enabled: bool = True):
        self.app = app
        self.enabled = enabled
        self._apps: dict[str, object] = {}

    async def __call__(self, scope, receive, send):
        vendor = self._vendor(scope)
        if vendor is None:
            return await self.app(scope, receive, send)
        prefix = f"/sandbox/{vendor}"
        inner = {**scope, "path": scope["path"][len(prefix) :] or "/",
                 "root_path": scope.get("root_path", "") + prefix}  # fmt: skip
        return await self._app(vendor)(inner, receive, send)

    def _vendor(self, scope) -> str | None:
        if not self.enabled or scope["type"] not in ("http", "websocket"):
            return None
        parts = scope["path"].split("/", 3)
        if len(parts) >= 3 and parts[1] == "sandbox" and parts[2] in SANDBOXES:
            try:
                self._app(parts[2])
            except ImportError:
                return None  # not built yet: Django answers 404
            return parts[2]
        return None

    def _app(self, vendor: str):
        if vendor not in self._apps:
            self._apps[vendor] = load(vendor).app
        return self._apps[vendor]
