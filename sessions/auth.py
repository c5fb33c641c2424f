"""`Authorization: Token <key>` for scripts, over HTTP and on the WebSocket handshake."""

from __future__ import annotations

from channels.db import database_sync_to_async
from django.utils import timezone

from sessions.models import ApiToken


def token_from_header(value: str) -> str:
    scheme, _, key = value.partition(" ")
    return key.strip() if scheme.lower() == "token" else ""


def user_for_token(key: str):
    """The active user owning `key`, or None."""
    if not key:
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=ApiToken.hash(key)).first()
    if token is None or not token.user.is_active:
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user


class TokenAuthMiddleware:
    """Sets scope["user"] from a token header; leaves cookie sessions to AuthMiddlewareStack."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        headers = dict(scope.get("headers", []))
        key = token_from_header(headers.get(b"authorization", b"").decode("latin-1"))
        if key:
            user = await database_sync_to_async(user_for_token)(key)
            if user is not None:
                scope = {**scope, "user": user}
        return await self.app(scope, receive, send)
