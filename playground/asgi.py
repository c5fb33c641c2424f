"""ASGI entry point: Django for HTTP, Channels for the conversation WebSockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")
django_asgi = get_asgi_application()  # set up Django before importing consumers (they import models)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from playground.sandbox import SandboxRouter, host_allowed, refuse  # noqa: E402
from sessions.auth import TokenAuthMiddleware  # noqa: E402
from sessions.liveness import liveness  # noqa: E402
from sessions.origin import OriginValidator  # noqa: E402
from sessions.routing import llm_websocket_urlpatterns, websocket_urlpatterns  # noqa: E402
from sessions.sandbox_scripts import topic_scripts  # noqa: E402
from sessions.upstreams.registry import PROVIDERS  # noqa: E402

browser_sockets = OriginValidator(AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns))))
llm_sockets = URLRouter(llm_websocket_urlpatterns)


async def websockets(scope, receive, send):
    """Retell's LLM WebSocket is dialled by a server, which sends no Origin: only its Host is checked
    (ALLOWED_HOSTS); every other socket is a browser's and passes the Origin check."""
    if not scope["path"].startswith("/llm-websocket/"):
        return await browser_sockets(scope, receive, send)
    if not host_allowed(scope):
        return await refuse(scope, receive, send)
    return await llm_sockets(scope, receive, send)


# Under Daphne (`daphne` or `runserver`, which imports it before us): heartbeat and sweep from
# startup, end live calls on SIGTERM (sessions/liveness.py).
liveness.attach_to_daphne()
# The sandboxes come first: their clients are servers (ours or a test's), which send no Origin.
# One router for both protocols, so a sandbox's HTTP and WebSocket routes share one state.
application = SandboxRouter(
    ProtocolTypeRouter({"http": django_asgi, "websocket": websockets}),
    {p.key: p.sandbox for p in PROVIDERS.values() if p.sandbox},
    settings.SECRET_KEY,
    scripts=topic_scripts,
    enabled=settings.SANDBOXES_ENABLED,
)
