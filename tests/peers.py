"""Loopback peers that speak a provider's protocol, for tests. They fake the outside world only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time

import uvicorn
import websockets

FRAME = 640  # 20 ms of 16 kHz s16le: what the browser sends


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


async def realtime(send, pcm: bytes) -> None:
    """PCM in 20 ms frames at real-time pace, as a browser's microphone sends it."""
    t0 = time.monotonic()
    for n, i in enumerate(range(0, len(pcm) - FRAME + 1, FRAME)):
        await send(pcm[i : i + FRAME])
        await asyncio.sleep(max(0.0, t0 + (n + 1) * 0.02 - time.monotonic()))


async def stream(relay, pcm: bytes) -> None:
    """Feed a relay as the consumer does when a browser talks."""
    await realtime(relay.feed_audio, pcm)


async def finish(relay, task, timeout: float = 10) -> None:
    await relay.stop("test over")
    await asyncio.wait_for(task, timeout)


@contextlib.asynccontextmanager
async def serving(app):
    """An ASGI `app` (a sandbox) on 127.0.0.1 port 0 in this process; yields its http base URL."""
    # A call still winding down when the test ends (its agent closing, a socket's close handshake)
    # gets 5 s, then uvicorn cancels it: a loaded machine must not fail the test in teardown.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="critical", lifespan="off", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


class ThreadedPeer:
    """A WebSocket peer on a thread and event loop of its own, for tests whose own thread is busy
    (a browser driven synchronously, a blocking client): subclasses write `handler(ws)`."""

    def __init__(self, port: int):
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._serve(),))

    async def handler(self, ws) -> None:
        raise NotImplementedError

    async def _serve(self) -> None:
        self.stop = asyncio.Event()
        async with websockets.serve(self.handler, "127.0.0.1", self.port):
            self.started.set()
            await self.stop.wait()

    def __enter__(self):
        self.thread.start()
        assert self.started.wait(10)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)
