"""Presenter mode's cost to a call: what the relay pays per audio frame and message for the mirror
(sessions/audience.py), and how fast its task publishes to the channel layer.

The relay calls `mirror(item)` in its send path: a filter and a queue put (figure 1). The
publishing runs in a task of its own (figure 2: items per second through the in-memory layer, and
through Redis when it answers on 127.0.0.1:6379). Without presenter mode the relay's `mirror` is
None: one attribute test per send.

Run:  .venv/bin/python bench/audience_mirror.py [--frames 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")
os.environ.setdefault("DEBUG", "1")

import django

django.setup()

from channels.layers import InMemoryChannelLayer  # noqa: E402

from sessions.audience import Mirror  # noqa: E402

FRAME = b"\0" * 960  # 20 ms at 24 kHz
TRANSCRIPT = {"type": "transcript", "role": "agent", "text": "Hello, this is Bella Vista.", "final": False,
              "id": "a1", "interrupted": False}  # fmt: skip


def redis_layer():
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        return None
    from channels_redis.core import RedisChannelLayer

    return RedisChannelLayer(hosts=["redis://127.0.0.1:6379/0"])


async def run(layer, frames: int) -> tuple[float, float]:
    """(µs per relay call of the mirror, items published per second)."""
    mirror = Mirror(uuid.uuid4(), layer=layer)
    items = [FRAME if i % 5 else TRANSCRIPT for i in range(frames)]
    start = time.perf_counter()
    for item in items:
        mirror(item)
    per_call = (time.perf_counter() - start) / frames * 1e6
    start = time.perf_counter()
    await mirror.aclose()  # sends everything queued (bounded by its close timeout)
    published = (frames - mirror.queue.qsize() - mirror.dropped) / (time.perf_counter() - start)
    return per_call, published


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=450)  # under the queue's bound: nothing dropped
    args = parser.parse_args()
    layers = {"in-memory": InMemoryChannelLayer()}
    redis = redis_layer()
    if redis is not None:
        layers["redis"] = redis
    print(f"{args.frames} items (4 audio frames to 1 transcript), one call presenting, nobody watching")
    for name, layer in layers.items():
        per_call, rate = asyncio.run(run(layer, args.frames))
        print(f"  {name:9}  relay side {per_call:6.2f} µs per item   published {rate:8.0f} items/s")


if __name__ == "__main__":
    main()
