"""A loopback upstream for benchmarks and fault tests: a WebSocket peer that echoes audio.

Wire protocol (ours, tiny): binary frames are s16le audio both ways, at
`rate` (query parameter, default 16000). The peer may also send JSON text frames
that become events, so a test peer can act out a provider:
`{"transcript": {"role", "text", "final", "id"?, "end_ms"?, "interrupted"?}}`,
`{"status": "speaking"}`, `{"interrupted": true}`, `{"tool_call": {...}}`,
`{"error": {"code", "message", "permanent"?}}` (permanent: the call ends, as a
raised UpstreamError; else an Error event and the call goes on), `{"ended": "reason"}`,
`{"join": {"transport", "url", "token", "call_id"?, "note"?}}` (direct media: a `Join`).
Text that is not a JSON object is skipped with an ``echo.bad_message`` error.
Typed turns go to the peer as `{"text": "..."}`; vendor messages the page forwards (direct
media) as `{"forwarded": {...}}`.

Capabilities: everything a provider may do except saving a transcript, by
default. A test acts out a provider without some of them with the URL query
(``ECHO_URL=ws://…/?user_transcripts=0&barge_in_signal=0``) or
``config["capabilities"]`` (a dict of `Capabilities` fields); these are not
sent to the peer. With ``direct_media=1`` the peer acts out a vendor whose media goes
straight to the browser: it sends a `join`, audio never reaches it, forwarded messages do.
Enabled only when ECHO_URL is set.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets

from sessions.upstreams.base import (
    Audio,
    Capabilities,
    Client,
    Ended,
    Error,
    Event,
    Interrupted,
    Join,
    SaveRequest,
    Session,
    Status,
    ToolCall,
    Transcript,
    UpstreamError,
    scrub,
)


def parse(message: str | bytes, rate: int) -> Event | None:
    """One wire message as an event; None for what carries nothing."""
    if isinstance(message, bytes):
        return Audio(message, rate)
    try:
        data = json.loads(message)
    except ValueError:
        return Error("echo.bad_message", scrub(f"echo peer sent text that is not JSON: {message[:80]!r}"))
    if not isinstance(data, dict):
        return Error("echo.bad_message", "echo peer sent JSON that is not an object")
    if "transcript" in data:
        return Transcript(**data["transcript"])
    if "status" in data:
        return Status(data["status"])
    if data.get("interrupted"):
        return Interrupted()
    if "tool_call" in data:
        return ToolCall(**data["tool_call"])
    if "error" in data:
        error = data["error"]
        if error.get("permanent"):
            raise UpstreamError(error["message"], permanent=True, code=error["code"])
        return Error(error["code"], error["message"])
    if "ended" in data:
        return Ended(str(data["ended"]))
    if "join" in data:
        return Join(**data["join"])
    return None


CAPABILITY_NAMES = frozenset(f.name for f in dataclasses.fields(Capabilities))


def peer_url(url: str, rate: int) -> tuple[str, dict[str, bool]]:
    """The URL to dial (with `rate`, without capability overrides) and the overrides it carried."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    overrides = {k: v not in ("0", "false", "no", "") for k, v in query if k in CAPABILITY_NAMES}
    kept = [(k, v) for k, v in query if k not in CAPABILITY_NAMES and k != "rate"] + [("rate", str(rate))]
    return urlunsplit(parts._replace(query=urlencode(kept))), overrides


class EchoUpstream(Client):
    capabilities = Capabilities(accepts_text=True, user_transcripts=True, barge_in_signal=True,
                                saves_transcript=False)  # fmt: skip

    def __init__(self, session: Session):
        url = session.config.get("url", "")
        self.input_rate = int(session.config.get("rate", 16000))
        self.url, overrides = peer_url(url, self.input_rate) if url else ("", {})
        overrides.update(session.config.get("capabilities") or {})
        if overrides:  # a peer acting out a provider that lacks some: this call's own declaration
            self.capabilities = dataclasses.replace(type(self).capabilities, **overrides)
        self.ws = None

    async def connect(self) -> None:
        if not self.url:
            raise UpstreamError("ECHO_URL is not set", permanent=True, code="echo.config")
        try:
            self.ws = await websockets.connect(self.url, open_timeout=5, compression=None)
        except (OSError, websockets.WebSocketException, TimeoutError) as exc:
            raise UpstreamError(scrub(f"echo peer unreachable: {exc}"), code="echo.unreachable") from exc

    async def send_audio(self, pcm: bytes) -> None:
        await self._send(pcm)

    async def send_text(self, text: str) -> None:
        await self._send(json.dumps({"text": text}))

    async def forward(self, message: dict) -> None:
        await self._send(json.dumps({"forwarded": message}))

    async def _send(self, data) -> None:
        try:
            await self.ws.send(data)
        except websockets.ConnectionClosed as exc:
            raise UpstreamError(f"echo peer went away: {exc}", code="echo.closed") from exc

    async def events(self) -> AsyncIterator[Event]:
        try:
            async for message in self.ws:
                event = parse(message, self.input_rate)
                if event is not None:
                    yield event
        except websockets.ConnectionClosedError as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
            raise UpstreamError(f"echo peer dropped the connection ({code})", code="echo.closed") from exc

    @property
    def refs(self) -> dict:
        return {"rate": self.input_rate}

    @classmethod
    async def save_transcript(cls, request: SaveRequest) -> dict:
        """Only when declared (`?saves_transcript=1`): nothing to call, the outbox records the answer."""
        return {"saved": True, "rate": (request.refs or {}).get("rate"), "turns": len(request.turns)}

    async def close(self) -> None:
        if self.ws is not None:
            await asyncio.wait_for(self.ws.close(), 2)
