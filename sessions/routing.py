from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path, re_path

from sessions.consumers import ConversationConsumer


class NoSuchSocket(AsyncWebsocketConsumer):
    """Any other WebSocket path: the handshake is refused (403), where Channels' router would raise
    and Daphne answer 500 with a traceback in the log."""

    async def connect(self):
        await self.close()


websocket_urlpatterns = [
    path("ws/conversations/<uuid:conversation_id>/", ConversationConsumer.as_asgi()),
    re_path(r"", NoSuchSocket.as_asgi()),
]
