"""ASGI entry point: Django for HTTP, Channels for the conversation WebSockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")
django_asgi = get_asgi_application()  # set up Django before importing consumers (they import models)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from playground.sandbox import SandboxRouter  # noqa: E402
from sessions.auth import TokenAuthMiddleware  # noqa: E402
from sessions.liveness import liveness  # noqa: E402
from sessions.routing import websocket_urlpatterns  # noqa: E402

browser_sockets = AllowedHostsOriginValidator(
    AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns)))
)
# Under Daphne (`daphne` or `runserver`, which imports it before us): heartbeat and sweep from
# startup, end live calls on SIGTERM (sessions/liveness.py).
liveness.attach_to_daphne()
# The sandboxes come first: their clients are servers (ours or a test's), which send no Origin.
application = ProtocolTypeRouter(
    {
        "http": SandboxRouter(django_asgi, settings.SANDBOXES_ENABLED),
        "websocket": SandboxRouter(browser_sockets, settings.SANDBOXES_ENABLED),
    }
)
