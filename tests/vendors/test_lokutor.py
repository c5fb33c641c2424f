"""Lokutor: our client against its sandbox (and scripted peers) over loopback, the sandbox against a
plain `websockets` client, and the whole product over a real Daphne."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time

import numpy as np
import pytest
import websockets
from asgiref.sync import sync_to_async

from playground.sandbox import lokutor as sandbox
from sessions.models import Conversation, Topic
from sessions.sandbox_scripts import topic_scripts
from sessions.upstreams.base import Error, Interrupted, Status, ToolCall, Transcript
from sessions.upstreams.lokutor import Fatal, Generation, LokutorUpstream, Malformed, endpoint, parse_text
from tests.browser_double import BrowserPeer, whole_frames
from tests.engine.speech import silence
from tests.peers import EchoPeer, finish, serving, stream
from tests.vendors.helpers import astored, press_start, server_key, start, talk_over_daphne

FRAME = 640  # 20 ms at 16 kHz, what the browser sends
SECRET = "lk-secret-9f8e7d"
DEPLOYMENT = "lokutor-test-deployment-secret"  # what the sandbox's key derives from
SANDBOX_KEY = sandbox.api_key(DEPLOYMENT)
LONG_GREETING = ("Hello and welcome. I am going to keep talking for quite a while, so that you have "
                 "plenty of time to interrupt me whenever you like, at any moment at all.")  # fmt: skip


# ---- fixtures and helpers ---------------------------------------------------------------------


class Browser(BrowserPeer):
    """The browser double that also keeps one ordered log of JSON messages and audio frames."""

    def __init__(self):
        super().__init__()
        self.log: list = []

    async def _json(self, message: dict) -> None:
        self.log.append(message)
        await super()._json(message)

    async def _bytes(self, data: bytes) -> None:
        self.log.append(data)
        await super()._bytes(data)

    def texts(self) -> str:
        return json.dumps(self.messages)


def make_conversation(topic=None, **fields) -> Conversation:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get_or_create(username="lokutor-tester")[0]
    topic = topic or Topic.objects.create(title="Host", slug="host", persona="You are a host.",
                                          greeting="Hello, how can I help?",
                                          phrases=["I would like to book a table"],
                                          faq=[{"question": "book a table", "answer": "For how many people?",
                                                "keywords": ["book"]}])  # fmt: skip
    fields = {"voice": "F1", "language": "en", "status": "connecting", **fields}
    return Conversation.objects.create(user=user, provider="lokutor", topic=topic, **fields)


def final(role):
    def find(browser):
        return [m for m in browser.of_type("transcript") if m["role"] == role and m["final"]]

    return find


def tone(seconds: float, amplitude: int, rate: int = 44100) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()


def peak(frames: list[bytes]) -> int:
    if not frames:
        return 0
    return int(np.abs(np.frombuffer(b"".join(frames), dtype="<i2").astype(np.int32)).max())


def make_app(**options):
    """A fresh Lokutor sandbox of the test deployment, acting out our topics."""
    return sandbox.make_app(DEPLOYMENT, scripts=topic_scripts, **options)


def client_config(base: str) -> dict:
    return sandbox.client_config(base, DEPLOYMENT)


def peer_config(peer) -> dict:
    """Our client's settings for a scripted Lokutor peer."""
    return {"url": peer.url, "api_key": SECRET}


def sandbox_url(base: str, key: str = SANDBOX_KEY) -> str:
    return f"{client_config(base)['url']}/ws/agent?api_key={key}"


# ---- the client against its sandbox ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_a_spoken_sentence_gets_audio_and_transcripts_and_is_stored(speech):
    """Happy path at the docs' rates: 44.1 kHz up, 44.1 kHz down, the sandbox's agent answers."""
    conversation = await sync_to_async(make_conversation)()
    async with serving(make_app()) as base:
        relay, browser, task = start(conversation, LokutorUpstream, client_config(base), browser=Browser())
        ready = await browser.message("ready", timeout=20)
        assert relay.upstream.input_rate == 44100 and ready["output_rate"] == 24000
        greeting = (await browser.wait_for(final("agent"), timeout=15))[0]
        assert greeting["text"] == "Hello, how can I help?"
        await stream(relay, silence(300) + speech.pcm("I would like to book a table") + silence(1000))
        user = (await browser.wait_for(final("user"), timeout=10))[0]
        assert "book a table" in user["text"]
        answer = (await browser.wait_for(lambda b: final("agent")(b)[1:], timeout=10))[0]
        assert answer["text"] == "For how many people?"
        assert browser.audio_ms > 1000 and all(whole_frames(len(f)) for f in browser.audio)
        assert [m["state"] for m in browser.of_type("status")][:3] == ["listening", "thinking", "speaking"]
        await finish(relay, task)
    turns = await astored(conversation)
    assert turns == [("agent", "Hello, how can I help?", True, False), ("user", user["text"], True, False),
                     ("agent", "For how many people?", True, False)]  # fmt: skip
    assert (await Conversation.objects.aget(id=conversation.id)).status == "ended"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_barge_in_clears_the_browser_at_once_and_the_old_reply_stays_silent(speech):
    talker = await Topic.objects.acreate(title="Talker", slug="talk", persona="Talk.", greeting=LONG_GREETING)
    conversation = await sync_to_async(make_conversation)(topic=talker)
    async with serving(make_app()) as base:
        relay, browser, task = start(conversation, LokutorUpstream, client_config(base), browser=Browser())
        await browser.message("ready", timeout=20)
        await browser.message("status", state="speaking", timeout=10)
        await browser.wait_for(lambda b: b.audio_ms > 500)  # half a second of greeting has played
        spoken = asyncio.create_task(stream(relay, speech.pcm("Sorry, could you repeat that please")
                                            + silence(1000)))  # fmt: skip
        began = time.monotonic()
        await browser.message("clear", timeout=3)
        assert time.monotonic() - began < 1.2  # flite's lead-in silence, the VAD, two resamplers
        await spoken
        cut = (await browser.wait_for(final("agent"), timeout=5))[0]
        assert cut["interrupted"] and LONG_GREETING.startswith(cut["text"]) and cut["text"] != LONG_GREETING
        await browser.wait_for(final("user"), timeout=10)
        await browser.message("status", state="thinking", timeout=10)
        await finish(relay, task)
    log = browser.log
    at_clear = log.index({"type": "clear"})
    after = log[at_clear:]
    next_reply = next(i for i, m in enumerate(after) if m == {"type": "status", "state": "thinking"})
    assert not [m for m in after[:next_reply] if isinstance(m, bytes)]  # nothing of the cut reply played
    turns = await astored(conversation)
    assert turns[0][0] == "agent" and turns[0][3] is True  # stored as interrupted


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_a_wrong_api_key_is_a_clear_permanent_error_without_the_key():
    conversation = await sync_to_async(make_conversation)()
    async with serving(make_app()) as base:
        wrong_key = {**client_config(base), "api_key": SECRET}
        _relay, browser, task = start(conversation, LokutorUpstream, wrong_key, browser=Browser())
        await asyncio.wait_for(task, 10)
    error = browser.of_type("error")[0]
    assert error["fatal"] and "refused the API key (HTTP 401)" in error["message"]
    assert error["code"] == "lokutor.auth"
    assert SECRET not in browser.texts() and not browser.of_type("ready")
    assert (await Conversation.objects.aget(id=conversation.id)).status == "failed"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_audio_sent_as_json_with_generations_plays_too():
    """The SDK's other carriage: base64 `audio` messages carrying their generation."""
    conversation = await sync_to_async(make_conversation)()
    async with serving(make_app(audio="json")) as base:
        relay, browser, task = start(conversation, LokutorUpstream, client_config(base), browser=Browser())
        await browser.wait_for(final("agent"), timeout=20)
        await browser.message("status", state="listening")
        assert browser.audio_ms > 800  # the greeting, over a second at 24 kHz
        await finish(relay, task)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_the_sdk_rates_variant_announces_16k_input():
    conversation = await sync_to_async(make_conversation)()

    async def script(peer, ws):
        async for message in ws:
            peer.received.append(message)

    async with EchoPeer(script) as peer:
        relay, browser, task = start(
            conversation, LokutorUpstream, peer_config(peer), options={"rates": True}, browser=Browser()
        )
        await browser.message("ready")
        assert relay.upstream.input_rate == 16000
        await relay.feed_audio(bytes(FRAME) * 5)
        await browser.wait_for(lambda b: any(isinstance(m, bytes) for m in peer.received))
        config = [json.loads(m) for m in peer.received if isinstance(m, str)]
        assert config == [{"type": "prompt", "data": "You are a host."}, {"type": "voice", "data": "F1"},
                          {"type": "language", "data": "en"},
                          {"type": "rates", "playback": 44100, "input": 16000}]  # fmt: skip
        assert {len(m) for m in peer.received if isinstance(m, bytes)} == {FRAME}
        await finish(relay, task)


# ---- the client against scripted Lokutor peers ---------------------------------------------------


def msg(kind: str, data=None, **extra) -> str:
    return json.dumps({"type": kind, **({"data": data} if data is not None else {}), **extra})


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_upstream_dying_mid_turn_is_an_error_and_keeps_what_was_said():
    conversation = await sync_to_async(make_conversation)()

    async def script(peer, ws):
        await ws.send(msg("transcript", "where do I park", role="user"))
        await ws.send(msg("status", "thinking", generation=1))
        await ws.send(msg("status", "speaking", generation=1))
        await ws.send(tone(0.2, 3000))
        await asyncio.sleep(0.1)
        ws.transport.abort()  # no close frame: the connection just dies

    async with EchoPeer(script) as peer:
        _relay, browser, task = start(conversation, LokutorUpstream, peer_config(peer), browser=Browser())
        await asyncio.wait_for(task, 5)
    error = browser.of_type("error")[-1]
    assert error["fatal"] and "Lokutor dropped the connection (code 1006" in error["message"]
    assert error["code"] == "lokutor.closed"
    assert browser.audio and browser.of_type("ended") and SECRET not in browser.texts()
    assert await astored(conversation) == [("user", "where do I park", True, False)]
    assert (await Conversation.objects.aget(id=conversation.id)).status == "failed"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_interrupted_clears_at_once_and_late_audio_of_the_old_generation_is_dropped():
    conversation = await sync_to_async(make_conversation)()

    async def script(peer, ws):
        await ws.send(msg("status", "thinking", generation=1))
        await ws.send(msg("status", "speaking", generation=1))
        await ws.send(tone(0.2, 1000))  # quiet: the reply that is cut
        await ws.send(msg("status", "interrupted"))
        await ws.send(tone(0.5, 20000))  # loud and late, binary: still generation 1
        await ws.send(msg("audio", base64.b64encode(tone(0.5, 20000)).decode(), generation=1))
        await ws.send(msg("transcript", "We open at", role="agent"))
        await ws.send(msg("transcript", "what time", role="user"))
        await ws.send(msg("status", "thinking", generation=2))
        await ws.send(msg("audio", base64.b64encode(tone(0.1, 20000)).decode(), generation=1))  # older still
        await ws.send(msg("status", "speaking", generation=2))
        await ws.send(tone(0.3, 1000))  # the new reply plays
        await ws.send(msg("transcript", "At noon.", role="agent"))
        await ws.send(msg("status", "listening"))
        await ws.wait_closed()

    async with EchoPeer(script) as peer:
        relay, browser, task = start(conversation, LokutorUpstream, peer_config(peer), browser=Browser())
        await browser.message("status", state="listening")
        await finish(relay, task)
    log = browser.log
    at_clear = log.index({"type": "clear"})
    assert not [m for m in log[at_clear:log.index({"type": "status", "state": "thinking"}, at_clear)]
                if isinstance(m, bytes)]  # fmt: skip
    assert peak(browser.audio) < 1500  # none of the loud late audio reached the browser
    assert 0.35 <= sum(map(len, browser.audio)) / 48000 <= 0.55  # 0.2 s (less what clear dropped) + 0.3 s
    turns = await astored(conversation)
    assert turns == [("agent", "We open at", True, True), ("user", "what time", True, False),
                     ("agent", "At noon.", True, False)]  # fmt: skip


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_malformed_messages_are_clear_errors_and_the_call_goes_on():
    conversation = await sync_to_async(make_conversation)()

    async def script(peer, ws):
        for bad in ["not json", "[1, 2]", msg("transcript", role="user"), msg("audio", "!!not base64!!")]:
            await ws.send(bad)
        await ws.send(b"\x01\x02\x03")
        await ws.send(msg("visemes", [{"v": 1, "c": "a", "t": 0.1}]))  # not asked for, not an error
        await ws.send(msg("transcript", "still here", role="user"))
        await ws.wait_closed()

    async with EchoPeer(script) as peer:
        relay, browser, task = start(conversation, LokutorUpstream, peer_config(peer), browser=Browser())
        await browser.wait_for(final("user"))
        errors = browser.of_type("error")
        assert [e["code"] for e in errors] == ["lokutor.malformed"] * 5
        assert not any(e["fatal"] for e in errors)
        assert "not JSON" in errors[0]["message"] and "even count" in errors[4]["message"]
        assert not task.done()
        await finish(relay, task)
    assert await astored(conversation) == [("user", "still here", True, False)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_errors_as_string_and_as_object_fatal_codes_end_the_call():
    """The seed's string errors and the SDK's object errors, validation ones included, are reported
    and the call goes on; the SDK's auth errors end it."""
    conversation = await sync_to_async(make_conversation)()

    async def script(peer, ws):
        await ws.send(msg("transcript", "hello", role="user"))
        await ws.send(msg("error", f"LLM timeout for api_key={SECRET}"))  # the seed's form
        await ws.send(msg("error", {"code": "agent.provider_error", "message": "TTS hiccup"}))
        await ws.send(msg("error", {"code": "validation.invalid_voice", "message": "Invalid voice 'F9'"}))
        await asyncio.sleep(0.2)
        await ws.send(msg("error", {"code": "auth.time_limited", "message": "Session time limit reached"}))
        await ws.wait_closed()

    async with EchoPeer(script) as peer:
        _relay, browser, task = start(conversation, LokutorUpstream, peer_config(peer), browser=Browser())
        await asyncio.wait_for(task, 5)
    errors = [(e["code"], e["message"], e["fatal"]) for e in browser.of_type("error")]
    assert errors == [("lokutor.error", "Lokutor: LLM timeout for api_key=***", False),
                      ("lokutor.agent.provider_error", "Lokutor: TTS hiccup", False),
                      ("lokutor.validation.invalid_voice", "Lokutor: Invalid voice 'F9'", False),
                      ("lokutor.auth.time_limited", "Lokutor: Session time limit reached", True)]  # fmt: skip
    assert browser.of_type("ended")[0]["reason"] == "Lokutor: Session time limit reached"
    assert await astored(conversation) == [("user", "hello", True, False)]
    assert (await Conversation.objects.aget(id=conversation.id)).status == "failed"


@pytest.mark.parametrize("message, expected", [
    ({"type": "status", "data": "thinking", "generation": 3}, [Generation(3), Status("thinking")]),
    ({"type": "status", "data": "interrupted"}, [Interrupted()]),
    ({"type": "status", "data": "prompt_set"}, []),
    ({"type": "transcript", "data": "Hi", "role": "assistant"}, [Transcript("agent", "Hi", True)]),
    ({"type": "error", "data": "boom"}, [Error("lokutor.error", "Lokutor: boom")]),
    ({"type": "error", "data": {"code": "validation.invalid_voice", "message": "bad voice"}},
     [Error("lokutor.validation.invalid_voice", "Lokutor: bad voice")]),
    ({"type": "error", "data": {"code": "auth.rate_limited", "message": "slow down"}},
     [Fatal("lokutor.auth.rate_limited", "Lokutor: slow down")]),
    ({"type": "error", "data": {"code": "internal.cancelled", "message": "gone"}},
     [Fatal("lokutor.internal.cancelled", "Lokutor: gone")]),
    ({"type": "tool_call", "name": "book", "arguments": '{"people": 2}'},
     [ToolCall("", "book", {"people": 2})]),
    ({"type": "visemes", "data": []}, []),
])  # fmt: skip
def test_text_messages_to_events(message, expected):
    assert parse_text(json.dumps(message)) == expected


@pytest.mark.parametrize("text", ["nope", "[1]", '{"data": 1}', '{"type": "status", "data": [1]}',
                                  '{"type": "transcript", "data": 5}', '{"type": "error", "data": ""}',
                                  '{"type": "audio", "data": "AAE"}'])  # fmt: skip
def test_malformed_text_messages_are_refused(text):
    with pytest.raises(Malformed):
        parse_text(text)


def test_the_endpoint_defaults_to_the_real_service():
    assert endpoint("") == "wss://api.lokutor.com/ws/agent"
    assert endpoint("https://eu.lokutor.example/") == "wss://eu.lokutor.example/ws/agent"
    assert endpoint("ws://127.0.0.1:9/sandbox/lokutor") == "ws://127.0.0.1:9/sandbox/lokutor/ws/agent"


# ---- the sandbox against a client we did not write ----------------------------------------------


async def test_sandbox_refuses_a_bad_or_missing_key_at_the_handshake():
    async with serving(make_app()) as base:
        for key, code in [("wrong", "auth.invalid_key"), ("", "auth.missing_key")]:
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(sandbox_url(base, key))
            assert refused.value.response.status_code == 401
            assert json.loads(refused.value.response.body)["error"]["code"] == code


async def recv_json(ws, timeout: float = 5.0) -> dict:
    while True:
        message = await asyncio.wait_for(ws.recv(), timeout)
        if isinstance(message, str):
            return json.loads(message)


async def test_sandbox_answers_bad_voices_languages_and_messages_with_validation_errors():
    async with serving(make_app(errors="object")) as base, websockets.connect(sandbox_url(base)) as ws:
        await ws.send(msg("voice", "F9"))
        assert (await recv_json(ws))["data"]["code"] == "validation.invalid_voice"
        await ws.send(msg("language", "xx"))
        assert (await recv_json(ws))["data"]["code"] == "validation.invalid_language"
        await ws.send(msg("rates", playback=44100, input=12345))
        assert (await recv_json(ws))["data"]["code"] == "validation.invalid_request_format"
        await ws.send("{nope")
        assert (await recv_json(ws))["data"]["code"] == "validation.invalid_request_format"
        await ws.send(msg("voice", "M3"))  # the socket stays open and good values pass quietly
        with pytest.raises(TimeoutError):
            await recv_json(ws, timeout=0.2)
    async with serving(make_app()) as base, websockets.connect(sandbox_url(base)) as ws:  # the seed's form
        await ws.send(msg("voice", "Bella"))
        assert await recv_json(ws) == {"type": "error", "data": "Invalid voice 'Bella': use F1-F5 or M1-M5."}


@pytest.mark.slow
async def test_sandbox_counts_generations_and_interrupts_on_barge_in(speech):
    """Plain websockets at the SDK's 16 kHz: greeting is generation 1; talking over it gives
    `interrupted` at once, no more of its audio, and the next reply a higher generation."""
    async with serving(make_app()) as base, websockets.connect(sandbox_url(base)) as ws:
        for message in [msg("prompt", "You are a helpful assistant."), msg("voice", "M1"),
                        msg("language", "en"), msg("rates", playback=44100, input=16000)]:  # fmt: skip
            await ws.send(message)
        log: list = []

        async def read():
            async for message in ws:
                log.append(message if isinstance(message, bytes) else json.loads(message))

        reader = asyncio.create_task(read())
        try:
            async with asyncio.timeout(10):
                while {"type": "status", "data": "speaking", "generation": 1} not in log:
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.4)
            pcm, began = silence(200) + speech.pcm("Sorry, could you repeat that") + silence(1000), None
            for i in range(0, len(pcm), FRAME):
                await ws.send(pcm[i : i + FRAME])
                await asyncio.sleep(0.02)
                if began is None and {"type": "status", "data": "interrupted"} in log:
                    began = i / 32000  # seconds of input sent when the interruption came
            async with asyncio.timeout(10):
                while not any(isinstance(m, dict) and m.get("generation", 0) > 1 for m in log):
                    await asyncio.sleep(0.05)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    assert began is not None and began < 0.2 + 1.0  # speech starts ~0.3 s in; the VAD needs ~0.1 s
    events = [m for m in log if isinstance(m, dict)]
    statuses = [(m["data"], m.get("generation")) for m in events if m["type"] == "status"]
    assert statuses[:3] == [("listening", None), ("thinking", 1), ("speaking", 1)]
    cut = log.index({"type": "status", "data": "interrupted"})
    later = log[cut:]
    nxt = next(i for i, m in enumerate(later) if isinstance(m, dict) and m.get("data") == "thinking")
    assert later[nxt]["generation"] == 2
    assert not [m for m in later[:nxt] if isinstance(m, bytes)]  # the cut greeting sent nothing more
    assert sum(len(m) for m in log[:cut] if isinstance(m, bytes)) > 44100 * 2 * 0.3  # at 44.1 kHz
    roles = [m["role"] for m in log if isinstance(m, dict) and m["type"] == "transcript"]
    assert roles[:2] == ["agent", "user"]  # the heard part of the greeting, then the user


# ---- languages -----------------------------------------------------------------------------------

SEED_LANGUAGES = ("en", "es", "fr", "pt", "ko")  # what the docs and the SDK list
ENGINE_ONLY = ("de", "it", "ja", "zh")  # the open-source engine's extras, not the hosted agent's


def test_the_pick_page_offers_exactly_the_languages_lokutor_lists():
    from playground.views import provider_catalogue
    from sessions.upstreams import registry

    assert registry.get("lokutor").languages == SEED_LANGUAGES
    row = next(row for row in provider_catalogue() if row["key"] == "lokutor")
    assert [code for code, _name in row["languages"]] == list(SEED_LANGUAGES)
    assert ("ko", "Korean") in row["languages"]
    assert set(row["voicesByLanguage"]) == set(SEED_LANGUAGES)


async def test_sandbox_refuses_the_engines_extra_languages_and_keeps_english():
    async with serving(make_app()) as base, websockets.connect(sandbox_url(base)) as ws:
        for code in ENGINE_ONLY:
            await ws.send(msg("language", code))
            assert await recv_json(ws) == {
                "type": "error",
                "data": f"Unsupported language '{code}': use en, es, fr, pt, ko.",
            }
        for code in SEED_LANGUAGES:  # accepted quietly
            await ws.send(msg("language", code))
        with pytest.raises(TimeoutError):
            await recv_json(ws, timeout=0.3)
    async with serving(make_app(errors="object")) as base, websockets.connect(sandbox_url(base)) as ws:
        await ws.send(msg("language", "de"))
        refused = {"code": "validation.invalid_language",
                   "message": "Unsupported language 'de': use en, es, fr, pt, ko."}  # fmt: skip
        assert (await recv_json(ws))["data"] == refused


@pytest.mark.parametrize(
    "errors, code", [("string", "lokutor.error"), ("object", "lokutor.validation.invalid_language")]
)
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_a_refused_language_reaches_the_browser_as_a_clear_error_and_the_call_goes_on(errors, code):
    """A conversation in German (made before Lokutor stopped offering it): the sandbox refuses the
    language in either error form, the browser is told in plain words, and the agent speaks English."""
    conversation = await sync_to_async(make_conversation)(language="de")
    async with serving(make_app(errors=errors)) as base:
        relay, browser, task = start(conversation, LokutorUpstream, client_config(base), browser=Browser())
        error = await browser.message("error", timeout=10)
        assert error == {
            "type": "error",
            "code": code,
            "fatal": False,
            "message": "Lokutor: Unsupported language 'de': use en, es, fr, pt, ko.",
        }
        greeting = (await browser.wait_for(final("agent"), timeout=20))[0]
        assert greeting["text"] == "Hello, how can I help?" and not task.done()
        await finish(relay, task)
    assert (await Conversation.objects.aget(id=conversation.id)).status == "ended"


async def test_sandbox_refuses_audio_before_the_configuration():
    """Audio before prompt, voice and language is dropped with one error; the agent starts only
    once all three came."""
    async with serving(make_app()) as base, websockets.connect(sandbox_url(base)) as ws:
        await ws.send(bytes(3528))  # 20 ms at 44.1 kHz
        refused = "Audio before configuration: send prompt, voice, language first."
        assert await recv_json(ws) == {"type": "error", "data": refused}
        await ws.send(msg("prompt", "You are a helpful assistant."))
        await ws.send(msg("voice", "F2"))
        for _ in range(10):
            await ws.send(bytes(3528))
        with pytest.raises(TimeoutError):  # no second error, and no agent: nothing at all
            await recv_json(ws, timeout=sandbox.SETTLE_S + 0.5)
        await ws.send(msg("language", "en"))
        assert await recv_json(ws, timeout=15) == {"type": "status", "data": "listening"}
    async with serving(make_app(errors="object")) as base, websockets.connect(sandbox_url(base)) as ws:
        await ws.send(msg("language", "fr"))
        await ws.send(bytes(3528))
        refused = {"code": "validation.invalid_request_format",
                   "message": "Audio before configuration: send prompt, voice first."}  # fmt: skip
        assert (await recv_json(ws))["data"] == refused


FRENCH = {"greeting": "Bonjour, ici l'hôte. Que puis-je faire pour vous ?", "persona": "Vous êtes un hôte."}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_a_french_conversation_greets_in_french_with_a_french_voice():
    """Our client sends the French persona and `language: fr`; the sandbox acts out the topic in
    French with espeak-ng's French voice (F1 is its female variant)."""
    host = await Topic.objects.acreate(title="Host", slug="host-fr", persona="You are a host.",
                                       greeting="Hello, how can I help?",
                                       translations={"fr": FRENCH})  # fmt: skip
    conversation = await sync_to_async(make_conversation)(topic=host, language="fr")
    box = make_app()
    async with serving(box) as base:
        relay, browser, task = start(conversation, LokutorUpstream, client_config(base), browser=Browser())
        greeting = (await browser.wait_for(final("agent"), timeout=20))[0]
        assert greeting["text"] == FRENCH["greeting"]
        (call,) = box.state.calls
        assert (call.language, call.agent.language, call.agent.voice) == ("fr", "fr", "fr-fr+f3")
        assert browser.audio_ms > 500 and not browser.of_type("error")
        await finish(relay, task)


async def test_sandbox_greets_a_generic_prompt_in_korean_with_the_korean_voice():
    box = make_app()
    async with serving(box) as base, websockets.connect(sandbox_url(base)) as ws:
        for kind, data in [("prompt", "You are a helpful assistant."), ("voice", "M2"), ("language", "ko")]:
            await ws.send(msg(kind, data))
        audio = 0
        async with asyncio.timeout(15):
            while True:
                message = await ws.recv()
                if isinstance(message, bytes):
                    audio += len(message)
                elif json.loads(message)["type"] == "transcript":
                    transcript = json.loads(message)
                    break
        assert transcript == {"type": "transcript", "data": sandbox.GENERIC_LINES["ko"][0], "role": "agent"}
        assert audio > 44100 * 2 * 0.5 and next(iter(box.state.calls)).agent.voice == "ko"


# ---- the product over a real Daphne, the sandbox mounted in it ----------------------------------


@pytest.mark.slow
def test_over_daphne_the_pick_page_talk_page_and_stored_turns_work_for_lokutor(server, speech):
    client = server.client()
    pick = client.get("/talk/").text
    key = server_key(server, "lokutor")
    assert "Lokutor" in pick and key not in pick
    topic = re.search(r'<option value="(\d+)"[^>]*>Restaurant booking', pick).group(1)
    form = {"provider": "lokutor", "topic": topic, "voice": "F2", "language": "en"}
    picked = client.post("/talk/", data=form, headers={"X-CSRFToken": client.cookies["csrftoken"]})
    assert picked.status_code == 302, picked.text
    talk_page = client.get(picked.headers["location"])
    assert talk_page.status_code == 200 and "Lokutor" in talk_page.text
    assert key not in talk_page.text
    ws_path = press_start(client, talk_page.text)
    sentence = speech.pcm("I would like to book a table for two")
    seen, audio = asyncio.run(talk_over_daphne(server, ws_path, sentence))
    transcripts = [m for m in seen if m["type"] == "transcript" and m["final"]]
    assert transcripts[0]["text"].startswith("Hello, this is Bella Vista")  # the demo topic's greeting
    user = next(m for m in transcripts if m["role"] == "user")
    assert "book a table" in user["text"]
    assert "how many people" in transcripts[-1]["text"]  # the topic's FAQ, found by its persona
    assert audio > 24000 * 2 * 2  # more than two seconds of agent speech at the browser's 24 kHz
    assert seen[-1] == {"type": "ended", "reason": "stopped by the user"}
    assert key not in json.dumps(seen)
    page = client.get(f"/history/{ws_path.split('/')[-2]}/").text
    assert user["text"] in page and "how many people" in page and "Bella Vista" in page


@pytest.mark.slow
def test_over_daphne_the_mounted_sandbox_refuses_a_bad_key(server):
    async def connect(key):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"{server.ws_url}/sandbox/lokutor/ws/agent?api_key={key}")
        return refused.value.response.status_code

    assert asyncio.run(connect("wrong")) == 403  # Daphne cannot send a denial body: a plain refusal
