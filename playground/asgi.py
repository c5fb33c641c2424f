"""ASGI entry point: Django for HTTP, Channels for the conversation WebSockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")
django_asgi = get_asgi_application()  # set up Django before importing consumers (they import models)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from playground.sandbox import SandboxRouter  # noqa: E402
from sessions.auth import TokenAuthMiddleware  # noqa: E402
from sessions.liveness import liveness  # noqa: E402
from sessions.origin import OriginValidator  # noqa: E402
from sessions.routing import websocket_urlpatterns  # noqa: E402
from sessions.sandbox_scripts import topic_scripts  # noqa: E402
from sessions.upstreams.registry import PROVIDERS  # noqa: E402

browser_sockets = OriginValidator(
    AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns)))
)
# Under Daphne (`daphne` or `runserver`, which imports it before us): heartbeat and sweep from
# startup, end live calls on SIGTERM (sessions/liveness.py).
liveness.attach_to_daphne()
# The sandboxes come first: their clients are servers (ours or a test's), which send no Origin.
# One router for both protocols, so a sandbox's HTTP and WebSocket routes share one state.
application = SandboxRouter(
    ProtocolTypeRouter({"http": django_asgi, "websocket": browser_sockets}),
    {p.key: p.sandbox for p in PROVIDERS.values() if p.sandbox},
    settings.SECRET_KEY,
    scripts=topic_scripts,
    enabled=settings.SANDBOXES_ENABLED,
)
