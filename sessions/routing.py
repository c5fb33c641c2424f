from channels.generic.websocket import AsyncWebsocketConsumer
from django.urls import path, re_path

from sessions.audience import AudienceConsumer
from sessions.consumers import ConversationConsumer
from sessions.retell_llm import RetellLLMConsumer


class NoSuchSocket(AsyncWebsocketConsumer):
    """Any other WebSocket path: the handshake is refused (403), where Channels' router would raise
    and Daphne answer 500 with a traceback in the log."""

    async def connect(self):
        await self.close()


websocket_urlpatterns = [
    path("ws/conversations/<uuid:conversation_id>/", ConversationConsumer.as_asgi()),
    re_path(r"^ws/audience/(?P<token>[A-Za-z0-9_:-]{1,200})/$", AudienceConsumer.as_asgi()),
    re_path(r"", NoSuchSocket.as_asgi()),
]

# Retell's custom-LLM WebSocket: dialled by Retell's servers (no Origin, no cookies), so it is routed
# apart from the browser sockets (playground/asgi.py); the call id is checked by the consumer.
llm_websocket_urlpatterns = [
    re_path(r"^llm-websocket/(?P<call_id>[A-Za-z0-9_.-]{1,128})/?$", RetellLLMConsumer.as_asgi()),
    re_path(r"", NoSuchSocket.as_asgi()),
]
