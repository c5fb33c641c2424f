"""The conversation WebSocket (docs/protocol.md). Thin: checks, then hands over to the relay."""

from __future__ import annotations

import asyncio
import json
import logging

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from sessions import limits
from sessions.models import Conversation
from sessions.relay import MAX_FRAME_BYTES, Browser, Relay
from sessions.upstreams import registry
from sessions.upstreams.base import Session

log = logging.getLogger(__name__)

# Close codes (4xxx: ours; see docs/protocol.md).
NOT_LOGGED_IN, FORBIDDEN, NOT_FOUND, CONFLICT, GONE, UNAVAILABLE = 4401, 4403, 4404, 4409, 4410, 4503
TOO_MANY_CALLS = 4429
LIVE = (Conversation.Status.CONNECTING, Conversation.Status.ACTIVE)


class ConversationConsumer(AsyncWebsocketConsumer):
    # No channel layer: a call's socket and its upstream live in one process and nothing is sent
    # to it from elsewhere. Without one, Channels does not keep a receive loop (with Redis: a
    # blocking pop on its own connection) running per call beside the audio.
    channel_layer_alias = "no-layer-for-calls"
    relay: Relay | None = None
    task: asyncio.Task | None = None
    text_turns: limits.TurnRate | None = None

    async def connect(self):
        # Accept first: a close code can only reach the browser on an open socket.
        await self.accept()
        code = await self._claim()
        if code:
            await self.close(code)
            return
        try:
            upstream = registry.load(self.conversation.provider)(await self._session())
        except Exception as exc:
            log.exception("cannot build upstream for %s", self.conversation.id)
            await self._release(f"provider unavailable: {exc}")
            await self.send_json({"type": "error", "code": "unavailable", "message": str(exc), "fatal": True})
            await self.close(UNAVAILABLE)
            return
        browser = Browser(send_json=self.send_json, send_bytes=self._send_bytes)
        self.relay = Relay(
            self.conversation.id,
            upstream,
            browser,
            provider=self.conversation.provider,
            playback_rate=settings.PLAYBACK_RATE,
            close_timeout=settings.UPSTREAM_CLOSE_TIMEOUT,
            on_end=self._ended,
        )
        self.task = asyncio.create_task(self.relay.run(), name=f"relay-{self.conversation.id}")

    async def _claim(self) -> int:
        """0 if this socket may drive the conversation, else the close code."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return NOT_LOGGED_IN
        conversation_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        conversation = await Conversation.objects.select_related("topic").filter(id=conversation_id).afirst()
        if conversation is None:
            return NOT_FOUND
        if conversation.user_id != user.pk:
            return FORBIDDEN
        # A conditional update is the lock: it succeeds for one socket only, across processes.
        claimed = await Conversation.objects.filter(
            id=conversation.id, status=Conversation.Status.CREATED
        ).aupdate(status=Conversation.Status.CONNECTING)
        if not claimed:
            return CONFLICT if conversation.status in LIVE else GONE
        self.conversation = conversation
        return await self._live_call_limit(user)

    async def _live_call_limit(self, user) -> int:
        """After the claim: 0, or TOO_MANY_CALLS (claim undone) when the user has too many live calls."""
        reason = await limits.over_live_call_limit(user.pk, self.conversation.id)
        if not reason:
            return 0
        await self.send_json({"type": "error", "code": "too_many_calls", "message": reason, "fatal": True})
        return TOO_MANY_CALLS

    async def _session(self) -> Session:
        conv = self.conversation
        return Session(
            conversation_id=str(conv.id),
            topic=conv.topic.to_script(conv.language),
            voice=conv.voice,
            language=conv.language,
            options=conv.topic.options_for(conv.provider),
            config={**registry.upstream_config(conv.provider), **await self._user_credentials()},
        )

    async def _user_credentials(self) -> dict:
        """A provider token the login kept in the user's server-side session (Liku: auth_liku.py)."""
        session = self.scope.get("session")
        key = f"{self.conversation.provider}_token"
        token = await session.aget(key) if session is not None else None
        return {"user_token": token} if token else {}

    async def _release(self, reason: str) -> None:
        await Conversation.objects.filter(id=self.conversation.id).aupdate(
            status=Conversation.Status.FAILED, end_reason=reason[:200]
        )

    async def disconnect(self, code):
        if self.task is None:
            return
        if not self.task.done():
            await self.relay.stop("browser disconnected")
            try:
                await asyncio.wait_for(asyncio.shield(self.task), settings.UPSTREAM_CLOSE_TIMEOUT + 1)
            except TimeoutError:
                self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("relay of %s failed", self.conversation.id)

    async def dispatch(self, message):
        # Channels closes stale database connections before every message, through a hop to a
        # worker thread; at 50 audio frames a second per call that hop was most of the relay's
        # cost (bench/relay_overhead.py). Audio frames touch no database: straight to the handler.
        if message["type"] == "websocket.receive" and message.get("bytes") is not None:
            return await self.websocket_receive(message)
        return await super().dispatch(message)

    async def receive(self, text_data=None, bytes_data=None):
        if self.relay is None or self.relay.ended:
            return
        if bytes_data is not None:
            await self._receive_audio(bytes_data)
        else:
            await self._receive_message(text_data)

    async def _receive_audio(self, data: bytes) -> None:
        if len(data) % 2 or len(data) > MAX_FRAME_BYTES or not data:
            await self.relay.warn(
                "bad_frame",
                f"Audio frames must be 16-bit PCM: an even number of bytes up to {MAX_FRAME_BYTES} "
                f"(got {len(data)}). The frame was dropped.",
            )
            return
        await self.relay.feed_audio(data)

    async def _receive_message(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            await self.relay.error("bad_json", "Messages must be JSON objects with a 'type'.")
            return
        kind = message.get("type")
        if kind == "stop":
            await self.relay.stop("stopped by the user")
        elif kind == "text":
            await self._receive_text(message.get("text"))
        elif kind == "playback":
            self.relay.playback(message)
        else:
            await self.relay.error("unknown_type", f"Unknown message type {kind!r}.")

    async def _receive_text(self, text) -> None:
        if not isinstance(text, str) or not text.strip() or len(text) > 2000:
            await self.relay.error("bad_text", "A text turn needs 'text': 1 to 2000 characters.")
            return
        if not self._text_turn_allowed():
            await self.relay.warn("too_many_turns", limits.text_turn_refusal())
            return
        await self.relay.feed_text(text.strip())

    def _text_turn_allowed(self) -> bool:
        """At most TEXT_TURNS_PER_SECOND typed turns per connection; the rest are dropped, not stored."""
        if self.text_turns is None:
            self.text_turns = limits.TurnRate(settings.TEXT_TURNS_PER_SECOND)
        return self.text_turns.allow()

    async def _send_bytes(self, data: bytes) -> None:
        await self.send(bytes_data=data)

    async def send_json(self, message: dict) -> None:
        await self.send(text_data=json.dumps(message))

    async def _ended(self, code: int) -> None:
        await self.close(code)
