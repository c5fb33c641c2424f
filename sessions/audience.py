"""Presenter mode: a read-only live view of a call for an audience, through a signed link.

The owner's talk page asks for a link (sessions/audience_views.py) and turns presenter mode on
over its own socket (`present`, docs/protocol.md). From then on the relay hands every message it
sends the talker to a `Mirror` (Relay.mirror), which keeps only what an audience may see (the
allow-list below: never `join`, whose room token is the owner's alone, nor errors, which may
quote a vendor) and publishes it to the conversation's channel-layer group. Viewers are
`AudienceConsumer`s in that group: in this process with the in-memory layer, in any process of
the deployment with Redis. Nobody watching, or presenter mode off, costs the call nothing: the
relay's `mirror` is None.

Agent audio goes to a second group that only viewers who asked for it (`?audio=1`) join, in
batches of up to MAX_AUDIO_BATCH frames, so a call with no listener sends no audio to Redis at
the rate of its frames.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.core import signing

from sessions.models import Conversation, Turn
from sessions.waterfall import steps

log = logging.getLogger(__name__)

SALT = "voice-playground.audience"
# Close codes of the audience socket (docs/protocol.md, "The audience socket").
BAD_LINK, EXPIRED_LINK, NO_CALL = 4403, 4410, 4404
# What reaches viewers: message type -> the fields they get (None: every field). Anything else
# the relay sends (join, error, a type added later) is dropped until it is listed here.
MIRRORED: dict[str, frozenset[str] | None] = {
    "transcript": frozenset({"type", "role", "text", "final", "id", "interrupted"}),
    "status": frozenset({"type", "state"}),
    "clear": frozenset({"type"}),
    "tool_call": frozenset({"type", "id", "name", "arguments", "result"}),
    "metrics": None,  # figures only: latency, waterfall and turn-taking measures
    "waterfall": frozenset(
        {
            "type",
            "id",
            "sequence",
            "latency_ms",
            "latency_from",
            "user_final",
            "first_audio",
            "played",
            "reply",
        }
    ),  # a reply's latency steps (sessions/waterfall.py)
    "ended": frozenset({"type", "reason"}),
}
QUEUE_SIZE = 500  # about 10 s of audio frames: a stalled layer drops what is older, never slows the call
MAX_AUDIO_BATCH = 5  # 100 ms of 20 ms frames per group message
CLOSE_TIMEOUT = 2.0
_END = object()  # queued by aclose(): everything before it is sent, then the publisher returns
READ_ONLY = "This is a read-only live view: viewers cannot control the call."


# ---- links -------------------------------------------------------------------------------------


def make_token(conversation_id, key: str | None = None) -> str:
    """A signed, timestamped token naming the conversation (checked by `read_token`)."""
    signer = signing.TimestampSigner(key=key, salt=SALT)
    return signer.sign(uuid.UUID(str(conversation_id)).hex)


def read_token(token: str, max_age: float | None = None) -> uuid.UUID:
    """The conversation a token names. Raises signing.SignatureExpired when it is older than
    `max_age` (default AUDIENCE_LINK_TTL) and signing.BadSignature when it was not ours."""
    signer = signing.TimestampSigner(salt=SALT)
    value = signer.unsign(token, max_age=settings.AUDIENCE_LINK_TTL if max_age is None else max_age)
    try:
        return uuid.UUID(hex=value)
    except ValueError:
        raise signing.BadSignature("not a conversation id") from None


def token_age(token: str) -> float:
    """Seconds since the (valid) token was signed."""
    stamp = token.rsplit(signing.TimestampSigner().sep, 2)[-2]
    return time.time() - signing.b62_decode(stamp)


def group(conversation_id, audio: bool = False) -> str:
    """The channel-layer group of a conversation's viewers (ASCII, well under 100 characters)."""
    return f"audience.{uuid.UUID(str(conversation_id)).hex}{'.audio' if audio else ''}"


def for_viewers(message: dict) -> dict | None:
    """What viewers may see of a message to the talker, or None for nothing."""
    fields = MIRRORED.get(message.get("type"), ...)
    if fields is ...:
        return None
    return dict(message) if fields is None else {k: v for k, v in message.items() if k in fields}


# ---- the talker's side -------------------------------------------------------------------------


class Mirror:
    """Publishes what the relay sends the talker to the viewers' groups.

    Called by the relay for every message and audio frame (`__call__`, synchronous and cheap: a
    filter and a queue put); a task of its own does the channel-layer sends, so neither a slow
    layer nor Redis ever sits in the call's path. `aclose()` sends what is queued (bounded), then
    cancels and awaits the task."""

    def __init__(self, conversation_id, layer=None):
        self.layer = layer or get_channel_layer()
        self.text_group = group(conversation_id)
        self.audio_group = group(conversation_id, audio=True)
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_SIZE)
        self.dropped = 0
        self.task = asyncio.create_task(self._publish(), name=f"audience-{self.text_group}")

    def __call__(self, item: dict | bytes) -> None:
        if not isinstance(item, bytes):
            item = for_viewers(item)
            if item is None:
                return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _publish(self) -> None:
        held = None  # an item taken while batching audio, sent next
        while True:
            item, held = held if held is not None else await self.queue.get(), None
            if item is _END:
                return
            if isinstance(item, bytes):
                item, held = self._batch(item)
            try:
                await self._send(item)
            except Exception:  # the layer (Redis) failed: the audience misses this, the call goes on
                log.warning("audience of %s: a group send failed", self.text_group, exc_info=True)

    def _batch(self, frame: bytes) -> tuple[bytes, object]:
        """Audio frames queued right behind `frame`, up to MAX_AUDIO_BATCH, as one; and the first
        other item met on the way (or None)."""
        frames = [frame]
        while len(frames) < MAX_AUDIO_BATCH and not self.queue.empty():
            item = self.queue.get_nowait()
            if not isinstance(item, bytes):
                return b"".join(frames), item
            frames.append(item)
        return b"".join(frames), None

    async def _send(self, item: dict | bytes) -> None:
        if isinstance(item, bytes):
            await self.layer.group_send(self.audio_group, {"type": "audience.audio", "bytes": item})
        else:
            await self.layer.group_send(self.text_group, {"type": "audience.text", "text": json.dumps(item)})

    async def aclose(self) -> None:
        """Send what is queued (the final `ended` included), for at most CLOSE_TIMEOUT s, then stop."""
        try:
            self.queue.put_nowait(_END)
            await asyncio.wait_for(asyncio.shield(self.task), CLOSE_TIMEOUT)
        except (asyncio.QueueFull, TimeoutError):
            pass
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


# ---- the viewers' side -------------------------------------------------------------------------


class AudienceConsumer(AsyncWebsocketConsumer):
    """`ws/audience/<token>/`: a viewer of a live call. Needs no login, only a valid link; refuses
    any input (an `error` `read_only`, nothing else happens)."""

    groups_joined: tuple[str, ...] = ()
    deadline = 0.0
    gone = False  # told its link expired and closed: nothing more is sent

    async def connect(self):
        await self.accept()  # first: a close code reaches the browser only on an open socket
        token = self.scope["url_route"]["kwargs"]["token"]
        try:
            conversation_id = read_token(token)
        except signing.SignatureExpired:
            return await self._refuse(EXPIRED_LINK, "link_expired", "This live view link has expired.")
        except signing.BadSignature:
            return await self._refuse(BAD_LINK, "bad_link", "This live view link is not valid.")
        conversation = await Conversation.objects.select_related("topic").filter(id=conversation_id).afirst()
        if conversation is None:
            return await self._refuse(NO_CALL, "no_call", "This conversation does not exist.")
        self.deadline = time.monotonic() + settings.AUDIENCE_LINK_TTL - token_age(token)
        listen = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("audio") == ["1"]
        audio = [group(conversation_id, audio=True)] if listen else []
        self.groups_joined = (group(conversation_id), *audio)
        for name in self.groups_joined:
            await self.channel_layer.group_add(name, self.channel_name)
        await self.send(text_data=json.dumps(await _snapshot(conversation, listen)))
        if conversation.status in (Conversation.Status.ENDED, Conversation.Status.FAILED):
            await self.send(text_data=json.dumps({"type": "ended", "reason": conversation.end_reason}))
            await self.close(1000)

    async def _refuse(self, code: int, reason: str, message: str) -> None:
        error = {"type": "error", "code": reason, "message": message, "fatal": True}
        await self.send(text_data=json.dumps(error))
        await self.close(code)

    async def disconnect(self, code):
        for name in self.groups_joined:
            await self.channel_layer.group_discard(name, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=json.dumps({"type": "error", "code": "read_only", "message": READ_ONLY}))

    async def audience_text(self, event):
        if not await self._expired():
            await self.send(text_data=event["text"])

    async def audience_audio(self, event):
        if not await self._expired():
            await self.send(bytes_data=event["bytes"])

    async def _expired(self) -> bool:
        """The link's time is up: the viewer is told so and let go (the call goes on)."""
        if self.gone or time.monotonic() < self.deadline:
            return self.gone
        self.gone = True
        await self._refuse(EXPIRED_LINK, "link_expired", "This live view link has expired.")
        return True


async def _snapshot(conversation: Conversation, listen: bool) -> dict:
    """The first message to a viewer: the call so far, from the turns stored as they came."""
    turns = Turn.objects.filter(conversation=conversation, role__in=("user", "agent")).order_by("sequence")
    said = [_said(t) async for t in turns]
    return {
        "type": "snapshot",
        "topic": conversation.topic.title,
        "provider": conversation.provider_label,
        "status": conversation.status,
        "turns": said,
        "audio": listen,
        "output_rate": settings.PLAYBACK_RATE,
    }


def _said(turn: Turn) -> dict:
    """A stored turn for the snapshot; a reply with its latency figures, as the talker's page got
    them in `waterfall` messages, so a viewer who joins late sees the same chips and P50."""
    out = {
        "role": turn.role,
        "text": turn.text,
        "id": f"stored-{turn.sequence}",
        "sequence": turn.sequence,
        "interrupted": turn.interrupted,
    }
    if turn.role == "agent" and turn.latency_ms is not None:
        latency_from = (turn.timings or {}).get("from")
        out["waterfall"] = {
            "latency_ms": turn.latency_ms,
            "latency_from": latency_from,
            **steps(turn.timings),
        }
    return out
