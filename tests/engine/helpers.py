"""Helpers for driving an Agent like the relay does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

FRAME = 640  # 20 ms of s16le at 16 kHz, what the relay sends


class Events:
    """Reads an agent's (or upstream's) events in the background and lets a test wait for one."""

    def __init__(self, source):
        self.seen: list = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(source))

    async def _read(self, source) -> None:
        async for event in source.events():
            self.seen.append(event)
            self._changed.set()

    async def wait_for(self, predicate: Callable[[object], bool], start: int = 0, within: float = 10.0):
        """The first event from index `start` on that matches, waiting up to `within` seconds."""
        async with asyncio.timeout(within):
            while True:
                for event in self.seen[start:]:
                    if predicate(event):
                        return event
                self._changed.clear()
                await self._changed.wait()

    async def finished(self, within: float = 3.0) -> None:
        await asyncio.wait_for(self._task, within)


async def feed(agent, pcm: bytes, speedup: float = 1.0) -> None:
    """Feed `pcm` in 20 ms frames at `speedup` times real time."""
    for i in range(0, len(pcm), FRAME):
        agent.feed(pcm[i : i + FRAME])
        await asyncio.sleep(0.02 / speedup)
