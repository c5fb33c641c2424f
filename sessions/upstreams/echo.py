"""A loopback upstream for benchmarks and fault tests: a WebSocket peer that echoes audio.

Wire protocol (ours, tiny): binary frames are s16le audio both ways, at
`rate` (query parameter, default 16000). The peer may also send JSON text frames
that become events, so a test peer can act out a provider:
`{"transcript": {"role", "text", "final", "id"?, "end_ms"?, "interrupted"?}}`,
`{"status": "speaking"}`, `{"interrupted": true}`, `{"tool_call": {...}}`,
`{"error": {"code", "message", "permanent"}}`, `{"ended": "reason"}`.
Enabled only when ECHO_URL is set.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import websockets

from sessions.upstreams.base import (
    Audio,
    Ended,
    Error,
    Event,
    Interrupted,
    Session,
    Status,
    ToolCall,
    Transcript,
    UpstreamError,
)


def parse(message: str | bytes, rate: int) -> Event | None:
    """One wire message as an event; None for what carries nothing."""
    if isinstance(message, bytes):
        return Audio(message, rate)
    try:
        data = json.loads(message)
    except ValueError:
        raise UpstreamError(f"echo peer sent text that is not JSON: {message[:80]!r}") from None
    if not isinstance(data, dict):
        raise UpstreamError("echo peer sent JSON that is not an object")
    if "transcript" in data:
        return Transcript(**data["transcript"])
    if "status" in data:
        return Status(data["status"])
    if data.get("interrupted"):
        return Interrupted()
    if "tool_call" in data:
        return ToolCall(**data["tool_call"])
    if "error" in data:
        return Error(**data["error"])
    if "ended" in data:
        return Ended(str(data["ended"]))
    return None


class EchoUpstream:
    accepts_text = True

    def __init__(self, session: Session):
        self.url = session.config.get("url", "")
        self.input_rate = int(session.config.get("rate", 16000))
        # A peer that acts out a provider without a barge-in signal lets the relay use its own VAD.
        self.barge_in_signal = not session.config.get("relay_vad", False)
        self.ws = None

    async def connect(self) -> None:
        if not self.url:
            raise UpstreamError("ECHO_URL is not set", permanent=True)
        try:
            self.ws = await websockets.connect(f"{self.url}?rate={self.input_rate}", open_timeout=5)
        except (OSError, websockets.WebSocketException, TimeoutError) as exc:
            raise UpstreamError(f"echo peer unreachable: {exc}") from exc

    async def send_audio(self, pcm: bytes) -> None:
        await self._send(pcm)

    async def send_text(self, text: str) -> None:
        await self._send(json.dumps({"text": text}))

    async def _send(self, data) -> None:
        try:
            await self.ws.send(data)
        except websockets.ConnectionClosed as exc:
            raise UpstreamError(f"echo peer went away: {exc}") from exc

    async def events(self) -> AsyncIterator[Event]:
        try:
            async for message in self.ws:
                event = parse(message, self.input_rate)
                if event is not None:
                    yield event
        except websockets.ConnectionClosedError as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
            raise UpstreamError(f"echo peer dropped the connection ({code})") from exc

    @property
    def refs(self) -> dict:
        return {"rate": self.input_rate}

    async def close(self) -> None:
        if self.ws is not None:
            await asyncio.wait_for(self.ws.close(), 2)
