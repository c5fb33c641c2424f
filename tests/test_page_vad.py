"""A page that scores its own audio with silero (docs/protocol.md, `vad`): its scores act as our
model's would, and where they go wrong or stop, our model takes over without losing the call."""

import asyncio

import pytest
from asgiref.sync import sync_to_async

from sessions.models import Conversation
from sessions.relay import Relay, parse_scores
from sessions.upstreams.base import Session
from sessions.upstreams.echo import EchoUpstream
from tests.browser_double import BrowserPeer
from tests.engine.speech import silence
from tests.peers import EchoPeer, finish, say

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_thread_connections")]

WINDOW_BYTES = 1024  # one 32 ms window of 16 kHz s16le
FRAME_BYTES = 640


@pytest.fixture
def conversation(user, topic):
    return Conversation.objects.create(
        user=user, provider="echo", topic=topic, voice="default", language="en", status="connecting"
    )


def start(conversation, peer_url, page_vad=True):
    browser = BrowserPeer()
    config = {"url": peer_url, "rate": 16000, "capabilities": {"barge_in_signal": False}}
    session = Session(str(conversation.id), topic=None, voice="default", language="en", config=config)
    relay = Relay(conversation.id, EchoUpstream(session), browser.browser, provider="echo",
                  on_end=browser.on_end, page_vad=page_vad)  # fmt: skip
    return relay, browser, asyncio.create_task(relay.run())


async def agent_talks(peer, ws):
    """Four seconds of agent speech at once, and its transcript; the user's audio is read and dropped."""
    await ws.send(b"\x00\x10" * 16000 * 4)
    await ws.send(say("agent", "We open at noon every day", final=False))
    async for _ in ws:
        pass


async def talk(relay, pcm: bytes, score) -> None:
    """A page's uplink in real time: each 20 ms frame, then the scores of the windows it completed
    (`score(k)` for window k), two windows a message as talk.js sends them."""
    sent = scored = 0
    for i in range(0, len(pcm), FRAME_BYTES):
        await relay.feed_audio(pcm[i : i + FRAME_BYTES])
        sent += FRAME_BYTES
        if sent // WINDOW_BYTES - scored >= 2:
            scores = [score(scored), score(scored + 1)]
            await relay.vad_scores({"type": "vad", "from": scored, "scores": scores})
            scored += 2
        await asyncio.sleep(0.02)


async def test_the_pages_scores_barge_in_and_time_the_turn(conversation):
    """Digital silence that the page scores as a voice for a second: our model scores silence 0, so
    the barge-in (a provider without its own signal) can only come from the page's scores."""
    async with EchoPeer(agent_talks) as peer:
        relay, browser, task = start(conversation, peer.url)
        ready = await browser.message("ready")
        assert ready["vad"] == "page"
        await talk(relay, silence(2000), lambda k: 1.0 if 10 <= k < 40 else 0.0)
        await browser.message("clear", timeout=5)
        assert browser.of_type("error") == []
        await finish(relay, task)
    metrics = (await sync_to_async(Conversation.objects.get)(id=conversation.id)).metrics
    assert metrics["vad"] == "page"
    ((began, ended),) = metrics["timeline"]["user"]  # where the page said the voice was: windows 10 to 39
    assert abs(began - 320) <= 40 and abs(ended - 1280) <= 40, (began, ended)


async def test_a_call_without_page_scores_is_scored_by_our_model(conversation):
    """The same silence without the page's scores: our model hears nothing, so no barge-in."""
    async with EchoPeer(agent_talks) as peer:
        relay, browser, task = start(conversation, peer.url, page_vad=False)
        assert (await browser.message("ready"))["vad"] == "server"
        await talk(relay, silence(1500), lambda k: 1.0)
        assert browser.of_type("clear") == []
        assert {m["code"] for m in browser.of_type("error")} == {"vad_ignored"}  # the scores were not used
        await finish(relay, task)


@pytest.mark.parametrize(
    "message, error",
    [
        ({"from": 1, "scores": [0.5]}, "'from' must be 0"),
        ({"from": 0, "scores": []}, "'scores' must be a list of 1 to 32"),
        ({"from": 0, "scores": [0.1] * 33}, "'scores' must be a list of 1 to 32"),
        ({"from": 0, "scores": [1.5]}, "from 0 to 1"),
        ({"from": 0, "scores": [float("nan")]}, "from 0 to 1"),
        ({"from": 0, "scores": ["0.5"]}, "from 0 to 1"),
        ({"from": True, "scores": [0.5]}, "'from' must be 0"),
        ({"from": 0, "scores": [0.5] * 4}, "audio for 3 arrived"),
    ],
)
def test_scores_are_checked(message, error):
    with pytest.raises(ValueError, match=error):
        parse_scores(message, expected=0, heard=3, most=32)


async def test_bad_scores_get_an_error_and_our_model_scores_the_rest(conversation, speech):
    """The page's scores go wrong mid-call: it hears why, and the user's words over the agent still
    barge in, heard by our model from the first window the page had not scored."""
    words = speech.pcm("Sorry, could you repeat that please")
    async with EchoPeer(agent_talks) as peer:
        relay, browser, task = start(conversation, peer.url)
        await browser.message("ready")
        await talk(relay, silence(300), lambda k: 0.0)
        await relay.vad_scores({"type": "vad", "from": 99, "scores": [0.2]})
        error = await browser.message("error", code="bad_vad")
        assert "'from' must be" in error["message"] and "server's own VAD" in error["message"]
        await talk(relay, words, lambda k: 0.0)  # scores after the error are ignored
        await browser.message("clear", timeout=5)
        await finish(relay, task)
    metrics = (await sync_to_async(Conversation.objects.get)(id=conversation.id)).metrics
    assert (metrics["vad"], metrics["vad_fallback"]) == ("server", "bad_vad")


async def test_scores_that_stop_coming_hand_the_call_to_our_model(conversation, speech):
    """A page whose scoring stopped (its worker died): after a second of audio without scores our
    model takes over, from the first unscored window, so words already spoken still count."""
    words = speech.pcm("Sorry, could you repeat that please")
    async with EchoPeer(agent_talks) as peer:
        relay, browser, task = start(conversation, peer.url)
        await browser.message("ready")
        for i in range(0, len(silence(300) + words), FRAME_BYTES):  # no scores at all
            await relay.feed_audio((silence(300) + words)[i : i + FRAME_BYTES])
            await asyncio.sleep(0.02)
        error = await browser.message("error", code="vad_late")
        assert "stopped coming" in error["message"]
        await browser.message("clear", timeout=5)
        await finish(relay, task)
