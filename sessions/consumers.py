"""The conversation WebSocket (docs/protocol.md). Thin: checks, then hands over to the relay."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable
from urllib.parse import parse_qs

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.sessions import InstanceSessionWrapper
from django.conf import settings

from sessions import limits
from sessions.audience import Mirror
from sessions.liveness import liveness
from sessions.models import Conversation
from sessions.relay import (
    CHANNELS,
    FLOOD_BYTES_PER_S,
    MAX_FRAME_BYTES,
    TRANSPORTS,
    Browser,
    FloodMeter,
    Relay,
)
from sessions.upstreams import registry
from sessions.upstreams.base import Session

log = logging.getLogger(__name__)

# Close codes (4xxx: ours; see docs/protocol.md).
NOT_LOGGED_IN, FORBIDDEN, NOT_FOUND, CONFLICT, GONE, UNAVAILABLE = 4401, 4403, 4404, 4409, 4410, 4503
TOO_MANY_CALLS = 4429
PROTOCOL_ERROR = 4400
FLOOD_REASON = "closed: audio arrived far faster than real time"
# Received messages queued for this socket and not yet handled: 10 s of 20 ms frames. A flood is
# read off the network faster than a consumer handles frames, so it shows here first (see dispatch).
FLOOD_BACKLOG = 500
LIVE = (Conversation.Status.CONNECTING, Conversation.Status.ACTIVE)
# Direct media: forwarded vendor messages (docs/protocol.md). Flow's data channel sends a few
# messages a second (partial transcripts); Retell's `update` carries the whole transcript so far.
FORWARD_MAX_BYTES = 64 * 1024
FORWARDS_PER_SECOND = 50


class ConversationConsumer(AsyncWebsocketConsumer):
    # No channel layer: a call's socket and its upstream live in one process and nothing is sent
    # to it from elsewhere. Without one, Channels does not keep a receive loop (with Redis: a
    # blocking pop on its own connection) running per call beside the audio.
    channel_layer_alias = "no-layer-for-calls"
    relay: Relay | None = None
    task: asyncio.Task | None = None
    text_turns: limits.TurnRate | None = None
    forwards: limits.TurnRate | None = None
    closer: asyncio.Task | None = None  # ends a flooding call (_close_flood)
    close_code: int | None = None  # overrides the close code the relay asks for (4400 after a flood)
    mirror: Mirror | None = None  # presenter mode: what this socket gets, for the audience
    closing = False  # a close was sent: ASGI allows one (uvicorn raises on a second; Daphne ignores it)

    async def __call__(self, scope, receive, send):
        self._receive = receive  # Daphne's per-connection queue.get: see _discard_backlog
        self._flood = FloodMeter()
        self.flooded = False
        # Frames skip the session middleware's wrapper around `send`: it reads the session (two
        # lazy-object lookups) on every message but only ever saves on an accept or an HTTP response.
        wrapper = getattr(send, "__self__", None)
        self._send_frame = wrapper.real_send if isinstance(wrapper, InstanceSessionWrapper) else send
        if get_channel_layer(self.channel_layer_alias) is not None:
            return await super().__call__(scope, receive, send)
        # Without a channel layer there is one source of messages: Channels' loop
        # (await_many_dispatch) would still start a task and an asyncio.wait for each frame, about
        # a tenth of a worker's time at 20 calls (README "Capacity"); a plain loop does the same.
        self.scope, self.channel_layer, self.base_send = scope, None, send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass

    async def connect(self):
        # Accept first: a close code can only reach the browser on an open socket.
        await self.accept()
        liveness.attach_to_daphne()  # under `runserver` Daphne loads after our AppConfig
        self.worker_id = await liveness.enlist(self, self._shut_down)
        code = await self._claim()
        if code:
            await self.close(code)
            return
        try:
            session = await self._session()
            upstream = registry.load(self.conversation.provider)(session)
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
            sandbox=bool(session.config.get("sandbox")),
            record=settings.RECORDING,
            credentials=await self._user_credentials(),  # the outbox saves with the user's own token
            page_vad=self._query().get("vad") == ["page"],  # the page scores its audio (docs/protocol.md)
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
        # A conditional update is the lock: it succeeds for one socket only, across processes. It
        # records this process as the call's owner, for the liveness sweep (sessions/liveness.py).
        claimed = await Conversation.objects.filter(
            id=conversation.id, status=Conversation.Status.CREATED
        ).aupdate(status=Conversation.Status.CONNECTING, worker_id=self.worker_id)
        if not claimed:
            return await self._lost_claim(conversation.id)
        self.conversation = conversation
        return await self._live_call_limit(user)

    async def _live_call_limit(self, user) -> int:
        """After the claim: 0, or TOO_MANY_CALLS (claim undone) when the user has too many live calls."""
        reason = await limits.over_live_call_limit(user.pk, self.conversation.id)
        if not reason:
            return 0
        await self.send_json({"type": "error", "code": "too_many_calls", "message": reason, "fatal": True})
        return TOO_MANY_CALLS

    async def _lost_claim(self, conversation_id) -> int:
        # Read the status again: the one read before the update predates the socket that won.
        now = Conversation.objects.filter(id=conversation_id).values_list("status", flat=True)
        status = await now.afirst()
        return CONFLICT if status in LIVE else GONE

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
        """A provider token the login kept in the user's server-side session, under the key the
        provider's registry entry names (Liku: auth_liku.py)."""
        session = self.scope.get("session")
        key = registry.get(self.conversation.provider).user_token_key
        token = await session.aget(key) if key and session is not None else None
        return {"user_token": token} if token else {}

    async def _release(self, reason: str) -> None:
        await Conversation.objects.filter(id=self.conversation.id).aupdate(
            status=Conversation.Status.FAILED, end_reason=reason[:200]
        )

    async def disconnect(self, code):
        try:
            await self._end_relay("browser disconnected")
            if self.closer is not None:
                await self.closer
            await self._present(False)  # after the relay's end: viewers get `ended` too
        finally:
            await liveness.release(self)

    async def _end_relay(self, reason: str) -> None:
        """Stop the relay (bounded) and await its task."""
        if self.task is None:
            return
        if not self.task.done():
            await self.relay.stop(reason)
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

    async def _shut_down(self, reason: str) -> None:
        """This process is shutting down (SIGTERM): `ended` with the reason, then close 1000.
        (Not 1001 "going away": Autobahn, under Daphne, sends only 1000 and 3000-4999.)"""
        await self._end_relay(reason)
        if self.closer is not None:
            await self.closer

    async def dispatch(self, message):
        if message["type"] == "websocket.receive":
            if self.flooded:  # closing: drop the queued flood at once, not frame by frame
                self._discard_backlog()
                return
            # Measured at the handler a flood arrives only as fast as frames are handled (about 200 a
            # second when the same event loop spends the rest parsing the flood), so the backlog
            # waiting in the server's queue counts too.
            size = len(message.get("bytes") or message.get("text") or "")
            if self._flood.add(size) or self._backlog() > FLOOD_BACKLOG:
                self._on_flood()
                return
            # Channels closes stale database connections before every message, through a hop to a
            # worker thread; at 50 audio frames a second per call that hop was most of the relay's
            # cost (bench/relay_overhead.py), and at 15 `vad` messages a second it was a fifth of a
            # worker's time. The call's messages reach the database only through the relay's async
            # ORM calls, as its upstream's events do: straight to the handlers, without Channels'
            # websocket_receive and its hop. Connecting and disconnecting still go through Channels.
            if self.relay is not None and not self.relay.ended:
                if (data := message.get("bytes")) is not None:
                    await self._receive_audio(data)
                elif (text := message.get("text")) is not None:
                    await self._receive_message(text)
            return None
        return await super().dispatch(message)

    def _on_flood(self) -> None:
        self.flooded = True
        self._discard_backlog()
        self.closer = asyncio.create_task(self._close_flood(), name="flood-close")

    async def _close_flood(self) -> None:
        """`error` flood (fatal), end the call (its turns are stored as they came), close 4400."""
        limit = FLOOD_BYTES_PER_S // 1000
        await self.send_json({"type": "error", "code": "flood", "fatal": True,
                              "message": f"Audio arrived far faster than real time (over {limit} kB/s, "
                                         "sustained); the server closed the call."})  # fmt: skip
        self.close_code = PROTOCOL_ERROR
        await self._end_relay(FLOOD_REASON)  # the relay's end sends `ended` and closes (_ended)
        await self.close(PROTOCOL_ERROR)  # in case it had ended already (a second close is skipped)

    @functools.cached_property
    def _queue(self) -> asyncio.Queue | None:
        """Daphne's (and Channels' test communicator's) queue of this socket's incoming messages
        (looked up once: it was per frame)."""
        queue = getattr(self._receive, "__self__", None)
        return queue if isinstance(queue, asyncio.Queue) else None

    def _backlog(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def _discard_backlog(self) -> None:
        """Daphne queues each message a socket receives in an unbounded asyncio.Queue (ASGI has no
        back-pressure). Once a flooding socket is being closed, the frames queued behind are dropped
        in one go; a queued disconnect stays. Under another server, frames are dropped one by one."""
        queue = self._queue
        if queue is None:
            return
        kept = []
        while not queue.empty():
            message = queue.get_nowait()
            if message["type"] != "websocket.receive":
                kept.append(message)
        for message in kept:
            queue.put_nowait(message)

    async def _receive_audio(self, data: bytes) -> None:
        if self.relay.direct:
            await self._receive_recording(data)
            return
        if len(data) % 2 or len(data) > MAX_FRAME_BYTES or not data:
            await self.relay.warn(
                "bad_frame",
                f"Audio frames must be 16-bit PCM: an even number of bytes up to {MAX_FRAME_BYTES} "
                f"(got {len(data)}). The frame was dropped.",
            )
            return
        await self.relay.feed_audio(data)

    async def _receive_recording(self, data: bytes) -> None:
        """Direct media: one channel byte (0 the microphone, 1 the agent as heard), then PCM."""
        if not data or data[0] not in CHANNELS:
            await self.relay.warn(
                "bad_channel",
                "Direct calls send recording frames that start with a channel byte: 0 for the "
                f"microphone, 1 for the agent as heard (got {data[0] if data else 'an empty frame'}). "
                "The frame was dropped.",
            )
            return
        pcm = data[1:]
        if len(pcm) % 2 or len(pcm) > MAX_FRAME_BYTES or not pcm:
            await self.relay.warn(
                "bad_frame",
                f"After its channel byte a recording frame must be 16-bit PCM: an even number of bytes up to "
                f"{MAX_FRAME_BYTES} (got {len(pcm)}). The frame was dropped.",
            )
            return
        await self.relay.feed_recording(data[0], pcm)

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
            await self.relay.playback(message)
        elif kind == "vad":
            await self.relay.vad_scores(message)
        elif kind == "forward":
            await self._receive_forward(message, len(text))
        elif kind == "present" and isinstance(message.get("on"), bool):
            await self._present(message["on"])
            await self.send_json({"type": "presenting", "on": message["on"]})
        else:
            await self.relay.error("unknown_type", f"Unknown message type {kind!r}.")

    def _query(self) -> dict[str, list[str]]:
        return parse_qs(self.scope.get("query_string", b"").decode("latin-1"))

    async def _receive_text(self, text) -> None:
        if not isinstance(text, str) or not text.strip() or len(text) > 2000:
            await self.relay.error("bad_text", "A text turn needs 'text': 1 to 2000 characters.")
            return
        if not self._text_turn_allowed():
            await self.relay.warn("too_many_turns", limits.text_turn_refusal())
            return
        await self.relay.feed_text(text.strip())

    async def _receive_forward(self, message: dict, size: int) -> None:
        source, body = message.get("source"), message.get("message")
        if source not in TRANSPORTS or not isinstance(body, dict):
            why = "A forward needs 'source' (livekit or retell) and 'message', a JSON object."
            await self.relay.error("bad_forward", why)
            return
        if size > FORWARD_MAX_BYTES:
            why = f"A forwarded message may be at most {FORWARD_MAX_BYTES} bytes (got {size}): dropped."
            await self.relay.error("forward_too_large", why)
            return
        if self.forwards is None:
            self.forwards = limits.TurnRate(FORWARDS_PER_SECOND)
        if not self.forwards.allow():
            await self.relay.warn("too_many_forwards", f"At most {FORWARDS_PER_SECOND} forwarded messages a "
                                                       "second; this one was dropped.")  # fmt: skip
            return
        await self.relay.feed_forward(source, body)

    async def _present(self, on: bool) -> None:
        """Presenter mode on or off (sessions/audience.py): the relay mirrors what it sends here."""
        if on and self.mirror is None:
            self.mirror = self.relay.mirror = Mirror(self.conversation.id)
        elif not on and self.mirror is not None:
            mirror, self.mirror = self.mirror, None
            if self.relay is not None:
                self.relay.mirror = None
            await mirror.aclose()

    def _text_turn_allowed(self) -> bool:
        """At most TEXT_TURNS_PER_SECOND typed turns per connection; the rest are dropped, not stored."""
        if self.text_turns is None:
            self.text_turns = limits.TurnRate(settings.TEXT_TURNS_PER_SECOND)
        return self.text_turns.allow()

    def _send_bytes(self, data: bytes) -> Awaitable[None]:
        """The server's send of one audio frame, for the relay to await (a plain function: one
        coroutine less per frame)."""
        return self._send_frame({"type": "websocket.send", "bytes": data})

    async def send_json(self, message: dict) -> None:
        await self._send_frame({"type": "websocket.send", "text": json.dumps(message)})

    async def _ended(self, code: int) -> None:
        await self.close(self.close_code or code)

    async def close(self, code=None, reason=None):
        if not self.closing:
            self.closing = True
            await super().close(code, reason)
