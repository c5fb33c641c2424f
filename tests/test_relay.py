"""The relay between a browser and an upstream, driven without Channels against a loopback peer."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async

from sessions.models import Conversation, Turn
from sessions.relay import Relay
from sessions.upstreams.base import Session
from sessions.upstreams.echo import EchoUpstream
from tests.browser_double import BrowserPeer, whole_frames
from tests.peers import EchoPeer, finish, say

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_thread_connections")]

FRAME = b"\x01\x00" * 320  # 20 ms at 16 kHz


@pytest.fixture
def conversation(user, topic):
    return Conversation.objects.create(
        user=user, provider="echo", topic=topic, voice="default", language="en", status="connecting"
    )


def start(conversation, peer_url, rate=16000, **config):
    browser = BrowserPeer()
    session = Session(str(conversation.id), topic=None, voice="default", language="en",
                      config={"url": peer_url, "rate": rate, **config})  # fmt: skip
    relay = Relay(
        conversation.id, EchoUpstream(session), browser.browser, provider="echo", on_end=browser.on_end
    )
    task = asyncio.create_task(relay.run())
    return relay, browser, task


def stored(conversation):
    return list(Turn.objects.filter(conversation=conversation).values("role", "text", "final", "interrupted",
                                                                     "latency_ms"))  # fmt: skip


async def test_ready_then_audio_round_trip_at_playback_rate(conversation):
    async with EchoPeer() as peer:
        relay, browser, task = start(conversation, peer.url)
        ready = await browser.message("ready")
        assert (ready["protocol"], ready["input_rate"], ready["output_rate"]) == (2, 16000, 24000)
        assert ready["media"] == "relayed"
        assert ready["conversation"] == str(conversation.id) and ready["provider"] == "echo"
        for _ in range(25):  # half a second
            await relay.feed_audio(FRAME)
        await browser.wait_for(lambda b: sum(map(len, b.audio)) >= 960 * 20)
        # whole 20 ms frames at 24 kHz, 1 to 4 a message (relay.DOWNLINK_JOIN), nothing lost
        assert all(whole_frames(len(f)) for f in browser.audio), [len(f) for f in browser.audio]
        await finish(relay, task)
    conv = await Conversation.objects.aget(id=conversation.id)
    assert conv.status == "ended" and conv.end_reason == "test over"
    assert conv.provider_refs == {"rate": 16000}
    assert browser.of_type("ended") == [{"type": "ended", "reason": "test over"}]
    assert browser.closed_with == 1000


async def test_a_providers_long_chunks_reach_the_page_in_80_ms_pieces_as_they_come(conversation):
    """Agent audio is not cut into 20 ms messages: a 100 ms chunk is two messages (80 + 20 ms), what
    is less than a frame waits for the next chunk, and the page gets every byte in order."""
    chunks = [bytes([i]) * 4800 for i in (1, 2)] + [bytes([3]) * 500]  # 100, 100 and about 10 ms at 24 kHz

    async def script(peer, ws):
        for chunk in chunks:
            await ws.send(chunk)
        await ws.wait_closed()

    async with EchoPeer(script) as peer:
        relay, browser, task = start(conversation, peer.url, rate=24000)
        await browser.wait_for(lambda b: sum(map(len, b.audio)) >= 9600)
        await asyncio.sleep(0.1)  # the last 10 ms is less than a frame: it waits
        assert [len(f) for f in browser.audio] == [3840, 960, 3840, 960]
        assert b"".join(browser.audio) == b"".join(chunks[:2])
        await finish(relay, task)
    assert relay.metrics["frames_out"] == 4


async def test_audio_is_resampled_to_the_upstream_rate(conversation):
    async with EchoPeer() as peer:
        relay, browser, task = start(conversation, peer.url, rate=44100)
        await browser.message("ready")
        for _ in range(50):
            await relay.feed_audio(FRAME)
        await browser.wait_for(lambda b: len(peer.received) >= 45)
        assert {len(m) for m in peer.received} == {882 * 2}  # 20 ms frames at 44.1 kHz
        await finish(relay, task)


async def test_turns_are_stored_before_they_are_shown_and_only_our_vad_starts_the_latency_clock(conversation):
    """The provider's user transcript alone does not time the reply (it arrives late): with no speech
    our VAD heard, no latency is stored or shown; tests/test_latency.py times real speech."""

    async def script(peer, ws):
        await ws.recv()  # the first user audio frame
        await ws.send(say("user", "a table for two", end_ms=20))
        await asyncio.sleep(0.05)
        await ws.send(b"\x00\x10" * 480)
        await ws.send(say("agent", "For what time?", final=False))
        await ws.send(say("agent", "For what time?"))
        await ws.wait_closed()

    async with EchoPeer(script) as peer:
        relay, browser, task = start(conversation, peer.url)
        await browser.message("ready")
        await relay.feed_audio(FRAME)
        shown = await browser.message("transcript", role="agent", final=True)
        turns = await sync_to_async(stored)(conversation)
        assert [(t["role"], t["text"]) for t in turns] == [
            ("user", "a table for two"),
            ("agent", "For what time?"),
        ]
        assert turns[1]["latency_ms"] is None
        assert shown["id"] == browser.of_type("transcript")[1]["id"]  # partial and final share an id
        assert browser.of_type("metrics") == []
        await finish(relay, task)


async def test_upstream_dying_mid_sentence_keeps_what_was_said(conversation):
    async def script(peer, ws):
        await ws.send(say("user", "where do I park"))
        await ws.send(say("agent", "There is free parking behind", final=False))
        await asyncio.sleep(0.1)
        ws.transport.abort()  # no close frame: the connection just dies

    async with EchoPeer(script) as peer:
        _relay, browser, task = start(conversation, peer.url)
        await asyncio.wait_for(task, 5)
    error = browser.of_type("error")[-1]
    assert error["fatal"] and "dropped the connection" in error["message"]
    assert browser.of_type("ended")
    turns = await sync_to_async(stored)(conversation)
    assert [(t["role"], t["text"], t["final"]) for t in turns] == [
        ("user", "where do I park", True),
        ("agent", "There is free parking behind", False),
    ]
    conv = await Conversation.objects.aget(id=conversation.id)
    assert conv.status == "failed"
    assert browser.closed_with == 4500


async def test_interruption_clears_the_browser_and_marks_the_turn(conversation):
    async def script(peer, ws):
        await ws.send(b"\x00\x10" * 4800)
        await ws.send(json.dumps({"interrupted": True}))
        await ws.send(say("agent", "We open at", interrupted=True))
        await ws.wait_closed()

    async with EchoPeer(script) as peer:
        relay, browser, task = start(conversation, peer.url)
        await browser.message("transcript", role="agent")
        assert browser.of_type("clear") == [{"type": "clear"}]
        turns = await sync_to_async(stored)(conversation)
        assert turns[-1]["interrupted"] is True and turns[-1]["text"] == "We open at"
        await finish(relay, task)


async def test_permanent_upstream_error_ends_the_conversation(conversation):
    async def script(peer, ws):
        error = {"code": "invalid_api_key", "message": "The key was refused", "permanent": True}
        await ws.send(json.dumps({"error": error}))
        await ws.wait_closed()

    async with EchoPeer(script) as peer:
        _relay, browser, task = start(conversation, peer.url)
        await asyncio.wait_for(task, 5)
    assert browser.of_type("error")[0]["message"] == "The key was refused"
    assert browser.of_type("ended")[0]["reason"] == "The key was refused"
    assert (await Conversation.objects.aget(id=conversation.id)).status == "failed"


async def test_unreachable_upstream_is_a_clear_error(conversation):
    _relay, browser, task = start(conversation, "ws://127.0.0.1:9/")
    await asyncio.wait_for(task, 10)
    assert browser.of_type("ready") == []
    assert "unreachable" in browser.of_type("error")[0]["message"]
    assert (await Conversation.objects.aget(id=conversation.id)).status == "failed"


async def test_audio_before_ready_and_floods_get_errors(conversation):
    async with EchoPeer() as peer:
        relay, browser, task = start(conversation, peer.url)
        await relay.feed_audio(FRAME)  # before ready
        await browser.message("error", code="not_ready")
        await browser.message("ready")
        for _ in range(400):  # 8 s of audio at once: far faster than real time
            await relay.feed_audio(FRAME)
        flood = await browser.message("error", code="flood")
        assert "faster than real time" in flood["message"]
        assert relay.metrics["dropped_frames"] > 200
        await finish(relay, task)


async def test_text_turns_reach_the_upstream(conversation):
    async with EchoPeer() as peer:
        relay, browser, task = start(conversation, peer.url)
        await browser.message("ready")
        await relay.feed_text("hello there")
        await browser.wait_for(lambda b: peer.received)
        assert json.loads(peer.received[0]) == {"text": "hello there"}
        await finish(relay, task)


async def test_own_vad_barges_in_where_the_provider_sends_no_signal(conversation, tmp_path):
    """Like Liku and Aivoco: the user talks over the agent, the relay clears the browser itself."""
    from tests.engine.speech import Speech, silence

    speech = Speech(tmp_path).pcm("Sorry, could you repeat that please")

    async def script(peer, ws):
        await ws.send(b"\x00\x10" * 16000 * 4)  # four seconds of agent speech, sent at once
        await ws.send(say("agent", "We open at noon every day", final=False))
        while not any(isinstance(m, bytes) for m in peer.received):  # the user's audio is flowing
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # the user is speaking by now
        await ws.send(b"\x00\x10" * 1600)  # late audio of the old reply: must not play
        await ws.send(say("agent", "We open at noon every day"))
        await ws.wait_closed()

    async def record(peer, ws):
        async def listen():
            async for message in ws:
                peer.received.append(message)

        listener = asyncio.create_task(listen())
        await script(peer, ws)
        listener.cancel()

    async with EchoPeer(record) as peer:
        relay, browser, task = start(conversation, peer.url, capabilities={"barge_in_signal": False})
        await browser.message("ready")
        for i in range(0, len(silence(300) + speech), 640):
            await relay.feed_audio((silence(300) + speech)[i : i + 640])
            await asyncio.sleep(0.02)
        await browser.message("clear", timeout=5)
        frames_at_clear = len(browser.audio)
        final = await browser.message("transcript", role="agent", final=True)
        assert final["interrupted"] is True
        assert len(browser.audio) == frames_at_clear  # the old reply stayed silent
        turns = await sync_to_async(stored)(conversation)
        assert turns[-1]["interrupted"] is True
        await finish(relay, task)


async def test_malformed_upstream_audio_is_skipped_and_the_call_goes_on(conversation):
    async def script(peer, ws):
        await ws.send(b"\x01\x02\x03")  # odd length: not 16-bit PCM
        await ws.send(b"\x00\x10" * 4800)  # then good audio
        await ws.wait_closed()

    async with EchoPeer(script) as peer:
        relay, browser, task = start(conversation, peer.url)
        error = await browser.message("error", code="bad_upstream_audio")
        assert not error["fatal"]
        await browser.wait_for(lambda b: sum(map(len, b.audio)) >= 960 * 10)  # 200 ms of it
        await finish(relay, task)
    assert (await Conversation.objects.aget(id=conversation.id)).status == "ended"
