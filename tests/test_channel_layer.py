"""The channel layer the settings chose carries a group message from one process to another."""

import os
import uuid

from channels.layers import get_channel_layer
from django.conf import settings


def test_layer_backend_follows_redis_url():
    backend = settings.CHANNEL_LAYERS["default"]["BACKEND"]
    if os.environ.get("REDIS_URL"):
        assert backend == "channels_redis.core.RedisChannelLayer"
    else:
        assert backend == "channels.layers.InMemoryChannelLayer"


async def test_group_message_round_trip():
    layer = get_channel_layer()
    group = f"test-{uuid.uuid4().hex}"
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    try:
        await layer.group_send(group, {"type": "turn.stored", "text": "hello over the layer"})
        message = await layer.receive(channel)
    finally:
        await layer.group_discard(group, channel)
    assert message == {"type": "turn.stored", "text": "hello over the layer"}
