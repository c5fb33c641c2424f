"""Direct media (browser protocol v2): the vendor's media goes between the page and the vendor, the
server keeps the control plane. A client that yields `Join` gets its credentials to the owner's page
as `join`; the vendor messages the page forwards reach the client's `forward()`; the page's tagged
recording frames (0: the microphone, 1: the agent as heard) drive our VAD and the reply latency,
and never reach `send_audio`.

The relay half runs a client of this file's own (it stands in for a vendor: Flow over LiveKit,
Retell web calls) with the browser double; the Daphne half runs the echo provider acting out a
direct vendor (`?direct_media=1`) behind a real server and a real socket.
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
import websockets

from sessions.models import Conversation, Turn
from sessions.relay import AGENT_CHANNEL, SANDBOX_LIVEKIT_NOTE, USER_CHANNEL, Relay
from sessions.upstreams.base import Capabilities, Client, Join, Session, Transcript
from tests.browser_double import BrowserPeer
from tests.engine.speech import Speech, silence, trimmed
from tests.peers import FRAME, finish
from tests.server import call, free_port, start_server
from tests.vendors.helpers import start

SENTENCE = "I would like to book a table for two"
PROVIDER_KEY = "provider-secret-key-must-not-leak"
ROOM_TOKEN = "short-lived-room-token"
TONE = (np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000) * 8000).astype("<i2").tobytes()


class DirectVendor(Client):
    """A direct-media client as Flow over LiveKit is one: connects (with its key), yields `Join`,
    and turns the data-channel messages the page forwards into events. Records what it was sent."""

    capabilities = Capabilities(direct_media=True)
    input_rate = 16000

    def __init__(self, session):
        self.key = session.config["api_key"]
        self.queue: asyncio.Queue = asyncio.Queue()
        self.forwarded: list[dict] = []
        self.sent_audio = 0

    async def connect(self) -> None:
        self.queue.put_nowait(Join("livekit", "wss://room.example.test", ROOM_TOKEN, call_id="call-1",
                                   note="A note for the user."))  # fmt: skip

    async def send_audio(self, pcm: bytes) -> None:
        self.sent_audio += 1

    async def forward(self, message: dict) -> None:
        self.forwarded.append(message)
        if message.get("message") == "AddTranscript":
            self.queue.put_nowait(Transcript("user", message["metadata"]["transcript"], True))
        elif message.get("message") == "ResponseCompleted":
            self.queue.put_nowait(Transcript("agent", message["content"], True))

    async def events(self):
        while (event := await self.queue.get()) is not None:
            yield event

    async def close(self) -> None:
        self.queue.put_nowait(None)


class RelayedVendor(DirectVendor):
    capabilities = Capabilities()

    async def connect(self) -> None:
        pass


@pytest.fixture
def conversation(user, topic):
    return Conversation.objects.create(user=user, provider="flow", topic=topic, voice="default",
                                       language="en", status="connecting")  # fmt: skip


def tagged(channel: int, pcm: bytes) -> bytes:
    return bytes([channel]) + pcm


# ---- the relay, with the browser double ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_the_owner_gets_join_forwards_reach_the_client_and_no_audio_goes_upstream(conversation):
    """`ready` says the media is direct; `join` carries the room's url and token and never the
    provider's key; a forwarded transcript is stored as a turn; recording frames never reach
    `send_audio`."""
    relay, browser, task = start(conversation, DirectVendor, {"api_key": PROVIDER_KEY}, options={})
    ready = await browser.message("ready")
    assert (ready["protocol"], ready["media"]) == (2, "direct")
    join = await browser.message("join")
    assert join == {"type": "join", "transport": "livekit", "url": "wss://room.example.test",
                    "token": ROOM_TOKEN, "call_id": "call-1", "note": "A note for the user."}  # fmt: skip
    assert ROOM_TOKEN not in repr(Join("livekit", "u", ROOM_TOKEN))  # never in a log line
    for _ in range(10):
        await relay.feed_recording(USER_CHANNEL, bytes(FRAME))
        await relay.feed_recording(AGENT_CHANNEL, bytes(FRAME))
    message = {"message": "AddTranscript", "metadata": {"transcript": "a table for two"}}
    await relay.feed_forward("livekit", message)
    await browser.message("transcript", role="user", final=True)
    client = relay.upstream
    assert client.forwarded == [message] and client.sent_audio == 0
    assert relay.metrics["frames_in"] == 10 and relay.metrics["agent_frames_in"] == 10
    await finish(relay, task)
    turns = [t async for t in Turn.objects.filter(conversation=conversation).values_list("role", "text")]
    assert turns == [("user", "a table for two")]
    assert PROVIDER_KEY not in json.dumps(browser.messages)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_forwards_are_refused_where_they_do_not_belong(conversation):
    """A relayed call takes no forwards (`forward_unsupported`); a direct one only from the transport
    it joined (`bad_forward`); the recorder hook gets every recording frame by channel."""
    relay, browser, task = start(conversation, RelayedVendor, {"api_key": PROVIDER_KEY}, options={})
    await browser.message("ready")
    await relay.feed_forward("livekit", {"message": "AddTranscript"})
    await browser.message("error", code="forward_unsupported")
    assert relay.upstream.forwarded == []
    await finish(relay, task)

    conversation.pk = None  # a second conversation for the direct client
    await conversation.asave()
    relay, browser, task = start(conversation, DirectVendor, {"api_key": PROVIDER_KEY}, options={})
    heard = []
    relay.recorder = lambda channel, pcm, at: heard.append((channel, len(pcm)))
    await browser.message("join")
    await relay.feed_forward("retell", {"event": "update"})
    error = await browser.message("error", code="bad_forward")
    assert "livekit" in error["message"]
    await relay.feed_recording(USER_CHANNEL, bytes(FRAME))
    await relay.feed_recording(AGENT_CHANNEL, bytes(FRAME))
    assert heard == [("user", FRAME), ("agent", FRAME)]
    assert relay.upstream.forwarded == []
    await finish(relay, task)


def utterance(speech: Speech) -> tuple[bytes, int]:
    spoken = trimmed(speech.pcm(SENTENCE))
    return silence(400) + spoken + silence(2000), len(silence(400)) + len(spoken)


@pytest.mark.slow
@pytest.mark.parametrize("gap_s", [0.15, 0.7])
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_the_agent_channel_times_the_reply_from_our_vad(conversation, speech, gap_s):
    """The microphone on channel 0, then the agent as heard on channel 1 `gap_s` after the speech
    ended (0.15 s: before our VAD's hangover has passed): the latency shown and stored is within
    100 ms of the gap between the last speech frame and the first audible agent frame."""
    relay, browser, task = start(conversation, DirectVendor, {"api_key": PROVIDER_KEY}, options={})
    await browser.message("join")
    pcm, end = utterance(speech)
    last_speech = (end - 1) // FRAME
    agent_from = last_speech + 1 + round(gap_s / 0.02)
    spoke_at = heard_at = 0.0
    t0 = time.monotonic()
    for n, i in enumerate(range(0, len(pcm) - FRAME + 1, FRAME)):
        await relay.feed_recording(USER_CHANNEL, pcm[i : i + FRAME])
        if n == last_speech:
            spoke_at = time.monotonic()
        agent = TONE[(n - agent_from) * FRAME :][:FRAME] if n >= agent_from else bytes(FRAME)
        if len(agent) == FRAME:
            await relay.feed_recording(AGENT_CHANNEL, agent)
            if n == agent_from:
                heard_at = time.monotonic()
        await asyncio.sleep(max(0.0, t0 + (n + 1) * 0.02 - time.monotonic()))
    metrics = await browser.message("metrics")
    gap_ms = (heard_at - spoke_at) * 1000
    print(f"latency {metrics['latency_ms']} ms, frames sent {gap_ms:.0f} ms apart")  # pytest -s
    assert metrics["latency_from"] == "vad"
    assert abs(metrics["latency_ms"] - gap_ms) <= 100
    await relay.feed_forward("livekit", {"message": "ResponseCompleted", "content": "For how many people?"})
    await browser.message("transcript", role="agent", final=True)
    await finish(relay, task)
    turn = await Turn.objects.aget(conversation=conversation, role="agent")
    assert turn.latency_ms == metrics["latency_ms"] and turn.timings["from"] == "vad"
    assert relay.upstream.sent_audio == 0


# ---- a real Daphne: the echo provider acting out a direct vendor --------------------------------


@pytest.fixture(scope="module")
def server():
    yield from start_server({"ECHO_URL": f"ws://127.0.0.1:{free_port()}/?direct_media=1"})


def echo_port(server) -> int:
    return int(server.env["ECHO_URL"].split(":")[2].split("/")[0])


class DirectPeer:
    """The echo peer as a direct vendor: sends `join` at once, records what reaches it."""

    def __init__(self):
        self.received: list = []

    async def __call__(self, ws):
        join = {"transport": "livekit", "url": "ws://127.0.0.1:9/", "token": ROOM_TOKEN, "call_id": "room-1"}
        await ws.send(json.dumps({"join": join}))
        async for message in ws:
            self.received.append(message if isinstance(message, bytes) else json.loads(message))

    def forwarded(self) -> list[dict]:
        return [m["forwarded"] for m in self.received if isinstance(m, dict) and "forwarded" in m]


def codes(c) -> set[str]:
    return {e["code"] for e in c.of("error")}


def other_user(server) -> str:
    """A second user of the server; their API token."""
    script = ("from django.contrib.auth import get_user_model; "
              "get_user_model().objects.create_user('eve', password='pw-eve-12345')")  # fmt: skip
    server.manage("shell", "-c", script)
    return server.manage("api_token", "eve").strip()


@pytest.mark.slow
def test_over_daphne_join_goes_to_the_owner_only_and_bad_input_gets_clear_errors(server):
    async def scenario():
        peer = DirectPeer()
        async with websockets.serve(peer, "127.0.0.1", echo_port(server)):
            conv = server.conversation(provider="echo", voice="default")
            async with call(server, conv["ws_path"]) as c:
                await c.until(lambda c: c.of("join"), 30)
                intruder = await intrude(server, conv["ws_path"])
                forward = {"message": "AddPartialTranscript", "metadata": {"transcript": "hello"}}
                await c.ws.send(json.dumps({"type": "forward", "source": "livekit", "message": forward}))
                for _ in range(5):
                    await c.ws.send(tagged(USER_CHANNEL, bytes(FRAME)))
                    await c.ws.send(tagged(AGENT_CHANNEL, bytes(FRAME)))
                await c.ws.send(tagged(7, bytes(FRAME)))
                await c.until(lambda c: any(e["code"] == "bad_channel" for e in c.of("error")), 10)
                await c.ws.send(bytes(FRAME))  # untagged, as a relayed call sends it
                await c.until(lambda c: any(e["code"] == "bad_frame" for e in c.of("error")), 10)
                huge = {"message": "AddTranscript", "metadata": {"transcript": "x" * 70000}}
                await c.ws.send(json.dumps({"type": "forward", "source": "livekit", "message": huge}))
                await c.ws.send(json.dumps({"type": "forward", "source": "livekit", "message": "text"}))
                await c.until(lambda c: {"forward_too_large", "bad_forward"} <= codes(c), 10)
                await asyncio.sleep(1.1)  # a fresh second for the burst below
                for n in range(60):
                    await c.ws.send(json.dumps({"type": "forward", "source": "livekit", "message": {"n": n}}))
                await c.until(lambda c: "too_many_forwards" in codes(c), 10)
                async with asyncio.timeout(10):
                    while len(peer.forwarded()) < 51:
                        await asyncio.sleep(0.05)
                await c.stop()
        return c, peer, intruder

    c, peer, intruder = asyncio.run(scenario())
    [ready] = c.of("ready")
    assert (ready["protocol"], ready["media"]) == (2, "direct")
    [join] = c.of("join")
    got = (join["transport"], join["url"], join["token"], join["call_id"])
    assert got == ("livekit", "ws://127.0.0.1:9/", ROOM_TOKEN, "room-1")
    assert intruder == (4403, [])  # refused, and nothing (no join) came before the close
    forwarded = peer.forwarded()
    assert forwarded[0] == {"message": "AddPartialTranscript", "metadata": {"transcript": "hello"}}
    assert [m["n"] for m in forwarded[1:]] == list(range(50))  # FORWARDS_PER_SECOND, the rest dropped
    assert not any(isinstance(m, bytes) for m in peer.received)  # recording frames never go upstream
    assert "sandbox-" not in json.dumps(c.seen) and server.env["SECRET_KEY"] not in json.dumps(c.seen)


async def intrude(server, ws_path: str) -> tuple[int, list]:
    """Another signed-in user opens the owner's live conversation: (close code, messages received)."""
    headers = {"Authorization": f"Token {other_user(server)}"}
    seen = []
    url = server.ws_url + ws_path
    async with websockets.connect(url, additional_headers=headers, origin=server.url) as ws:
        try:
            async for message in ws:
                seen.append(message)
        except websockets.ConnectionClosed:
            pass
    return ws.close_code, seen


def test_direct_media_origins_widen_connect_src_only_as_configured():
    """The page may connect to LiveKit's cloud by default; DIRECT_MEDIA_ORIGINS replaces that list,
    "none" empties it, and anything that is not a scheme-qualified source stops startup."""
    from django.core.exceptions import ImproperlyConfigured

    from playground.config import direct_media_origins

    assert direct_media_origins({}) == ["wss://*.livekit.cloud", "https://*.livekit.cloud"]
    assert direct_media_origins({"DIRECT_MEDIA_ORIGINS": "wss://lk.example.com, https://lk.example.com"}) == [
        "wss://lk.example.com", "https://lk.example.com"]  # fmt: skip
    assert direct_media_origins({"DIRECT_MEDIA_ORIGINS": "none"}) == []
    for bad in ["*", "lk.example.com", "wss://x; script-src *", "javascript://x"]:
        with pytest.raises(ImproperlyConfigured, match="DIRECT_MEDIA_ORIGINS"):
            direct_media_origins({"DIRECT_MEDIA_ORIGINS": bad})


class SandboxRoomVendor(DirectVendor):
    async def connect(self) -> None:  # a room from a sandbox, with nothing said about it
        self.queue.put_nowait(Join("livekit", "ws://127.0.0.1:9/", ROOM_TOKEN, call_id="sandbox-room"))


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_a_livekit_room_from_a_sandbox_says_it_needs_the_real_service(conversation):
    """Against a sandbox (the consumer passes `sandbox` from the client's config) a LiveKit join
    the client left without a note gets one: no LiveKit media server runs here."""
    browser = BrowserPeer()
    session = Session(str(conversation.id), topic=None, voice="default", language="en",
                      config={"api_key": PROVIDER_KEY, "sandbox": True})  # fmt: skip
    relay = Relay(conversation.id, SandboxRoomVendor(session), browser.browser, provider="flow",
                  on_end=browser.on_end, sandbox=True)  # fmt: skip
    task = asyncio.create_task(relay.run())
    join = await browser.message("join")
    assert join["note"] == SANDBOX_LIVEKIT_NOTE and "needs the real service" in join["note"]
    await finish(relay, task)
