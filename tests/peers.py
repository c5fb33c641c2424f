"""Loopback peers that speak a provider's protocol, for tests. They fake the outside world only."""

from __future__ import annotations

import asyncio
import contextlib
import json

import websockets


class EchoPeer:
    """A WebSocket server on 127.0.0.1:0 speaking sessions/upstreams/echo.py's protocol.

    By default it echoes audio. `script(ws)` replaces that per connection to act out a scenario.
    """

    def __init__(self, script=None):
        self.script = script
        self.received: list[bytes | str] = []
        self.connections = 0
        self.server = None

    @property
    def url(self) -> str:
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"ws://{host}:{port}/"

    async def __aenter__(self):
        self.server = await websockets.serve(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, ws):
        self.connections += 1
        if self.script:
            await self.script(self, ws)
            return
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in ws:
                self.received.append(message)
                await ws.send(message)

    async def receive_audio(self, ws, nbytes: int) -> bytes:
        """Collect at least `nbytes` of audio from the relay."""
        got = b""
        while len(got) < nbytes:
            message = await ws.recv()
            if isinstance(message, bytes):
                got += message
        return got


def say(role: str, text: str, final: bool = True, **extra) -> str:
    return json.dumps({"transcript": {"role": role, "text": text, "final": final, **extra}})


async def pace(seconds: float) -> None:
    await asyncio.sleep(seconds)
