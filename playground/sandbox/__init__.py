"""Sandboxes: emulators of each vendor's protocol, backed by the offline agent.

Every module `playground/sandbox/<vendor>.py` has the same shape:

* ``make_app(secret: str, *, scripts=None, **faults) -> SandboxApp``: a fresh sandbox as an
  ASGI application speaking the vendor's protocol (HTTP and WebSocket or Socket.IO). Its
  credentials are derived from `secret` (see `derive`); `scripts` is the site's catalogue of
  topics (see `find_script`); the keyword arguments choose the vendor's variants (Lokutor's
  error and audio carriage, Aivoco's cost per minute, ...). The app's ``state`` attribute is the
  sandbox's explicit state object: what it holds (chats, tokens, balances, counters) and the
  fault controls tests use (``await app.state.outage()``, ``app.state.save_outage()``, ...).
* ``client_config(base_url: str, secret: str) -> dict``: the provider settings (URLs and the
  sandbox credentials of the deployment whose secret it is) with which our client talks to it.

A sandbox reads no settings and imports nothing from `sessions/` (it may use the offline engine,
`playground.engine`), so a vendor's client and its sandbox share no code: each is written from
the vendor's documents, and one misreading cannot hide in both. State is bounded: expired or
surplus entries are pruned, and a closed connection releases what it held.

`SandboxRouter` serves them under ``/sandbox/<vendor>/`` on our own server, building each app
once with the deployment's SECRET_KEY; ``python -m playground.sandbox <vendor> --port N`` runs
one alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import importlib
import logging
from collections.abc import Callable, Iterable

from asgiref.sync import sync_to_async

log = logging.getLogger(__name__)

# (engine Script, the topic's provider_options) for every active topic; supplied by the site.
# Called with no argument: each topic in its default language; with a language code: each topic
# in that language where it has it (a script's `language` says which it got).
Scripts = Callable[..., Iterable[tuple[object, dict]]]


def derive(secret: str, label: str) -> str:
    """A sandbox credential of this deployment: HMAC-SHA256 of its secret and a per-vendor label.

    Nothing in the source opens a sandbox, and a deployment's saved transcripts stay its own;
    processes sharing a SECRET_KEY share the credentials."""
    if not secret:
        raise ValueError("a sandbox needs a secret to derive its credentials from")
    return hmac.new(secret.encode(), f"playground-sandbox:{label}".encode(), hashlib.sha256).hexdigest()[:32]


async def find_script(scripts: Scripts | None, match: Callable[[object, dict], bool], language: str = ""):
    """The first of the site's scripts (a database read, off the event loop) that `match`es, or None;
    in `language` when given and the topic has it."""
    if scripts is None:
        return None
    try:
        pairs = await sync_to_async(lambda: list(scripts(language) if language else scripts()))()
    except Exception as exc:  # no database (run alone, not set up): the sandbox's generic script will do
        log.info("sandbox: no topic lookup (%r)", exc)
        return None
    return next((script for script, options in pairs if match(script, options)), None)


class SandboxApp:
    """A sandbox's ASGI app together with its state object (`state`)."""

    def __init__(self, asgi, state):
        self.asgi, self.state = asgi, state

    async def __call__(self, scope, receive, send):
        await self.asgi(scope, receive, send)


def load(module: str):
    return importlib.import_module(module)


class SandboxRouter:
    """Serves `/sandbox/<vendor>/…` from the vendor's sandbox; passes everything else on.

    `sandboxes`: vendor -> dotted module path (the registry's `Provider.sandbox`); `secret`: the
    deployment's SECRET_KEY, from which every sandbox derives its credentials; `scripts`: the
    site's topics. A sandbox request whose Host is not in ALLOWED_HOSTS is refused as Django
    refuses its own pages (HTTP 400; a WebSocket handshake is denied)."""

    def __init__(self, app, sandboxes: dict[str, str], secret: str, *, scripts: Scripts | None = None,
                 enabled: bool = True):  # fmt: skip
        self.app = app
        self.sandboxes = dict(sandboxes) if enabled else {}
        self.secret, self.scripts = secret, scripts
        self._apps: dict[str, object] = {}

    async def __call__(self, scope, receive, send):
        vendor = self._vendor(scope)
        if vendor is None:
            return await self.app(scope, receive, send)
        if not host_allowed(scope):
            return await refuse(scope, receive, send)
        prefix = f"/sandbox/{vendor}"
        inner = {**scope, "path": scope["path"][len(prefix) :] or "/",
                 "root_path": scope.get("root_path", "") + prefix}  # fmt: skip
        return await self._apps[vendor](inner, receive, send)

    def _vendor(self, scope) -> str | None:
        if scope["type"] not in ("http", "websocket"):
            return None
        parts = scope["path"].split("/", 3)
        if len(parts) < 3 or parts[1] != "sandbox" or parts[2] not in self.sandboxes:
            return None
        vendor = parts[2]
        if vendor not in self._apps:
            try:
                module = load(self.sandboxes[vendor])
            except ImportError:
                return None  # not built yet: Django answers 404
            self._apps[vendor] = module.make_app(self.secret, scripts=self.scripts)
        return vendor


def host_allowed(scope) -> bool:
    """Django's own check of the Host header against ALLOWED_HOSTS (HttpRequest.get_host)."""
    from django.conf import settings
    from django.http.request import split_domain_port, validate_host

    headers = dict(scope.get("headers") or [])
    host = headers.get(b"host", b"").decode("latin-1")
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, allowed)


async def refuse(scope, receive, send) -> None:
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1008})  # before accept: the handshake fails (403)
        return
    body = b"<h1>Bad Request (400)</h1>"
    headers = [(b"content-type", b"text/html"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def cancel(task: asyncio.Task | None) -> None:
    """Cancel a sandbox's task and wait for it; whatever it raised on the way out is its own end."""
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
