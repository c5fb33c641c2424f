"""Aivoco: our Socket.IO client against its sandbox (and scripted Socket.IO peers) over loopback,
the sandbox checked with python-socketio's own client, and the whole path over a real Daphne."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re

import numpy as np
import pytest
import socketio

from playground.engine.script import Script
from playground.sandbox import aivoco as aivoco_sandbox
from sessions import functions
from sessions.models import Conversation, Topic
from sessions.sandbox_scripts import topic_scripts
from sessions.upstreams import aivoco
from sessions.upstreams.aivoco import AivocoUpstream
from tests.engine.speech import silence
from tests.peers import finish, serving
from tests.peers import stream as talk
from tests.server import call
from tests.vendors.helpers import astored, start

FRAME = 640  # 20 ms at 16 kHz, what the browser sends
BAD_KEY = "aivoco-wrong-key-5521"
DEPLOYMENT = "aivoco-test-deployment-secret"  # what the sandbox's keys derive from
KEY = aivoco_sandbox.api_key(DEPLOYMENT)
POOR_KEY = aivoco_sandbox.poor_key(DEPLOYMENT)
OPEN_ANSWER = (
    "We open every day at eight in the morning and close at six in the evening. On Sundays we "
    "close a little earlier, at four in the afternoon, so please come early."
)


# ---- fixtures and helpers (the `speech` fixture is tests/conftest.py's) ---------------


@pytest.fixture
def cafe(db):
    """A topic the sandbox finds by its persona (the system_message), with both demo functions."""
    return Topic.objects.create(
        title="Harbour cafe",
        slug="harbour-cafe",
        persona="You are Rita, the host of the Harbour cafe.",
        greeting="Hello!",
        phrases=["is there parking", "what time do you open", "sorry could you repeat that"],
        faq=[
            {
                "question": "Is there parking",
                "keywords": ["parking", "park"],
                "answer": "Yes, there is free parking right behind the cafe.",
            },
            {"question": "What time do you open", "keywords": ["open", "hours"], "answer": OPEN_ANSWER},
        ],
        provider_options={"aivoco": {"functions": ["check_availability", "current_time"]}},
    )


@pytest.fixture
def conversation(user, cafe):
    return Conversation.objects.create(
        user=user, provider="aivoco", topic=cafe, voice="female", language="en", status="connecting"
    )


def client_config(url: str) -> dict:
    return aivoco_sandbox.client_config(url, DEPLOYMENT)


@contextlib.asynccontextmanager
async def sandbox(**variants):
    """A fresh sandbox (its own credit balances) on loopback: (base URL, the sandbox)."""
    app = aivoco_sandbox.make_app(DEPLOYMENT, scripts=topic_scripts, **variants)
    async with serving(app) as url:
        yield url, app.state


class Proxy:
    """A TCP proxy on loopback whose `kill()` aborts every connection: the network dies."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task] = set()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.kill()
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _accept(self, reader, writer):
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._copy(src, dst))
            self.tasks.add(task)

    async def _copy(self, src, dst):
        with contextlib.suppress(OSError, ConnectionError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()

    def kill(self) -> None:
        for writer in self.writers:
            writer.transport.abort()


class ScriptedAivoco:
    """A Socket.IO peer speaking Aivoco's protocol that acts out a scenario after session_ready.

    For what the sandbox never does on purpose: malformed messages, calls of unknown functions.
    """

    def __init__(self, script):
        self.script = script
        self.received: list[tuple[str, object]] = []
        self.sio = socketio.AsyncServer(async_mode="asgi")
        self.sio.on("*", self._record)
        self.sio.on("start_call", self._start)
        self.tasks: list = []
        self.app = socketio.ASGIApp(self.sio)

    async def _record(self, event, sid, data=None):
        self.received.append((event, data))

    async def _start(self, sid, data):
        self.received.append(("start_call", data))
        await self.sio.emit("auth_success", {"credits": 10}, to=sid)
        await self.sio.emit(
            "session_ready",
            {
                "message": "ok",
                "credits_available": 10,
                "cost_per_minute": 1,
                "functions_loaded": len(data["custom_functions"]),
            },
            to=sid,
        )
        self.tasks.append(asyncio.ensure_future(self.script(self, sid)))

    def of(self, event: str) -> list:
        return [data for name, data in self.received if name == event]

    async def close(self):
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def tone(ms: int, rate: int = 24000) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()


# ---- pure protocol functions ------------------------------------------------------------------


def test_socketio_target_handles_bare_hosts_and_mounted_paths():
    assert aivoco.socketio_target("wss://sts.aivoco.on.cloud.vispark.in") == (
        "https://sts.aivoco.on.cloud.vispark.in",
        "/socket.io",
    )
    assert aivoco.socketio_target("http://127.0.0.1:8000/sandbox/aivoco") == (
        "http://127.0.0.1:8000",
        "/sandbox/aivoco/socket.io",
    )
    assert aivoco.socketio_target("") == (
        "https://sts.aivoco.on.cloud.vispark.in",
        "/socket.io",
    )  # the seed's


def test_audio_payload_measures_the_samples():
    quiet = aivoco.audio_payload(bytes(640))
    assert quiet["has_audio"] is False and quiet["max_amplitude"] == 0
    loud = aivoco.audio_payload(np.array([0, -16384, 1000], dtype="<i2").tobytes())
    assert loud["has_audio"] is True and loud["max_amplitude"] == 0.5
    assert base64.b64decode(loud["audio_data"]) == np.array([0, -16384, 1000], dtype="<i2").tobytes()


def test_voice_spelling_follows_the_seed_and_the_others_are_a_setting():
    assert aivoco.voice_choice("male") == "male" and aivoco.voice_choice("female") == "female"
    assert aivoco.voice_choice("male", "demo") == "Boy" and aivoco.voice_choice("female", "cli") == "alloy"


def test_session_ended_and_error_events_are_worded():
    stopped = {"reason": "stopped_by_user", "total_credits_used": 0.5, "remaining_credits": 9}
    assert aivoco.ended_event(stopped).reason == "Aivoco says the call was stopped (used 0.5, 9 left)."
    demo_stop = aivoco.ended_event({"message": "Call stopped by user"})
    assert demo_stop.reason == "Aivoco says the call was stopped."
    assert aivoco.ended_event({"reason": "idle_timeout"}).reason == "Aivoco ended the call: idle timeout."
    assert aivoco.ended_event(None).reason == "Aivoco ended the call."
    for kind in ("insufficient_credits", "invalid_api_key", "rate_limit_exceeded"):
        error = aivoco.error_event({"type": kind, "message": "x"})
        assert error.code == f"aivoco.{kind}" and error.message.endswith("(Aivoco said: x)")
    untyped = aivoco.error_event({"type": "cosmic_rays", "message": "bit flip"})
    assert untyped.code == "aivoco.error" and "cosmic_rays: bit flip" in untyped.message


def test_function_definitions_use_the_flat_parameter_list():
    (defn,) = aivoco.function_defs(["check_availability", "no_such_function"])
    assert defn["name"] == "check_availability"
    assert {"name": "party_size", "type": "number", "description": "Number of people", "required": True} in (
        defn["parameters"]
    )


def test_demo_functions_fail_softly():
    assert functions.call("launch_rockets", {}) == {
        "error": "unknown function 'launch_rockets'",
        "status": "failed",
    }
    bad = functions.call("check_availability", {"date": "today", "time": "19:00", "party_size": "lots"})
    assert bad["status"] == "failed" and "party_size" in bad["error"]
    assert functions.call("current_time", {}, allowed={"check_availability"})["status"] == "failed"
    ok = functions.call("check_availability", {"date": "tomorrow", "time": "7 pm", "party_size": 2})
    assert ok["time"] == "19:00" and ok["party_size"] == 2 and isinstance(ok["available"], bool)


# ---- the sandbox, checked with python-socketio's own client ------------------------------------


class Listener:
    """python-socketio's AsyncClient, recording every event in order."""

    def __init__(self):
        self.sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        self.events: list[tuple[str, object]] = []
        self.changed = asyncio.Event()
        self.sio.on("*", self._record)

    async def _record(self, event, data=None):
        self.events.append((event, data))
        self.changed.set()

    async def wait(self, event: str, timeout: float = 10.0):
        async with asyncio.timeout(timeout):
            while True:
                for name, data in self.events:
                    if name == event:
                        return data
                self.changed.clear()
                await self.changed.wait()

    def names(self) -> list[str]:
        return [name for name, _ in self.events if name != "audio_response"]


def start_call(key=KEY, functions_=(), voice="female", system_message="You are a helpful AI assistant."):
    return {
        "auth_key": key,
        "system_message": system_message,
        "voice_choice": voice,
        "custom_functions": aivoco.function_defs(functions_),
    }


@contextlib.asynccontextmanager
async def listener(url):
    client = Listener()
    await client.sio.connect(url, transports=["websocket"])
    try:
        yield client
    finally:
        await client.sio.disconnect()


async def test_sandbox_refuses_an_unknown_key_with_auth_failed_only():
    async with sandbox() as (url, _), listener(url) as client:
        await client.sio.emit("start_call", start_call(key=BAD_KEY))
        failed = await client.wait("auth_failed")
        await asyncio.sleep(0.3)
    assert failed == {"message": "Invalid API key", "credits": 0}
    assert client.names() == ["auth_failed"]


async def until(condition, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_sandbox_reports_session_ready_and_ignores_audio_sent_before_it():
    # python-socketio handles each event in its own task, so under load audio emitted "before"
    # session_ready may be handled after it: the sandbox holds session_ready until the audio
    # has been handled, which makes "before" certain instead of likely.
    async with sandbox() as (url, box), listener(url) as client:
        box.start_gate = asyncio.Event()
        for _ in range(3):  # the microphone opened before the call was even started
            await client.sio.emit("audio_data", aivoco.audio_payload(tone(20, 16000)))
        await client.sio.emit("start_call", start_call(functions_=["current_time", "check_availability"]))
        await client.wait("auth_success")
        for _ in range(7):  # ... and while it is starting
            await client.sio.emit("audio_data", aivoco.audio_payload(tone(20, 16000)))
        await until(lambda: box.stats.dropped == 10)
        box.start_gate.set()
        ready = await client.wait("session_ready")
        assert client.names()[:2] == ["auth_success", "session_ready"]
        assert ready["functions_loaded"] == 2 and ready["cost_per_minute"] > 0
        assert ready["credits_available"] > 0 and ready["message"]
        assert box.stats.dropped == 10 and box.stats.chunks == 0
        await client.sio.emit("audio_data", aivoco.audio_payload(tone(20, 16000)))  # now it is taken
        await until(lambda: box.stats.chunks == 1)
        assert box.stats.dropped == 10


async def test_sandbox_rejects_a_malformed_start_call():
    async with sandbox() as (url, _), listener(url) as client:
        await client.sio.emit("start_call", {**start_call(), "voice_choice": "en-us+f3"})
        assert "voice_choice" in (await client.wait("error"))["message"]
        client.events.clear()
        bad_function = {"name": "x", "description": "", "parameters": [{"name": "a", "type": "banana"}]}
        await client.sio.emit("start_call", {**start_call(), "custom_functions": [bad_function]})
        assert "custom_functions" in (await client.wait("error"))["message"]
        assert "session_ready" not in client.names()


@pytest.mark.parametrize("kind", ["integer", "int", "bool"])
def test_sandbox_accepts_every_parameter_type_spelling(kind):
    """The seed is silent on parameter types: the sandbox takes them all, so it cannot hide our
    client's guess."""
    function = {"name": "x", "description": "", "parameters": [{"name": "a", "type": kind, "required": True}]}
    assert aivoco_sandbox.start_problem({"voice_choice": "male", "custom_functions": [function]}) == ""


@pytest.mark.parametrize("voice", ["Girl", "Boy", "alloy", "MALE", "Female", None])
async def test_sandbox_takes_the_seeds_voices_only_unless_a_variant_says_so(voice):
    """The seed says 'female' or 'male' and always sends one; the Demo's and CLI's spellings, other
    cases and a missing voice_choice are refused, unless the `voices="any"` variant accepts them."""
    payload = start_call(voice=voice)
    if voice is None:
        del payload["voice_choice"]
    async with sandbox() as (url, box), listener(url) as client:
        await client.sio.emit("start_call", payload)
        refused = await client.wait("error")
        await asyncio.sleep(0.2)
        assert "voice_choice" in refused["message"] and "'female' or 'male'" in refused["message"]
        assert "type" not in refused  # not one of the seed's typed errors
        assert client.names() == ["error"] and not box.calls
    async with sandbox(voices="any") as (url, _), listener(url) as client:
        await client.sio.emit("start_call", payload)
        await client.wait("session_ready")
        assert client.names() == ["auth_success", "session_ready"]


@pytest.mark.parametrize("voice", ["female", "male"])
async def test_sandbox_takes_the_seeds_voices(voice):
    async with sandbox() as (url, _), listener(url) as client:
        await client.sio.emit("start_call", start_call(voice=voice))
        await client.wait("session_ready")
        assert client.names() == ["auth_success", "session_ready"]


async def test_sandbox_speaks_the_topics_default_language():
    """The seed has no language parameter: a topic's persona brings the topic's language with it."""
    spanish = Script("cafe", "Cafe", "Eres Rita.", "Hola", "es", faq=(), fallback="Perdone.")
    found = await aivoco_sandbox.script_for(lambda: [(spanish, {})], "Eres Rita.")
    assert (found.language, found.fallback) == ("es", "Perdone.")
    assert aivoco_sandbox.espeak_voice("female", "es") == "es+f3"
    assert aivoco_sandbox.espeak_voice("male", "es") == "es"
    generic = await aivoco_sandbox.script_for(lambda: [(spanish, {})], "You are someone else.")
    assert generic.language == "en" and aivoco_sandbox.espeak_voice("female", "en") == "en-us+f3"


async def test_sandbox_rate_limits_start_calls_with_the_typed_error():
    async with sandbox(calls_per_minute=1) as (url, box), listener(url) as client:
        await client.sio.emit("start_call", start_call())
        await client.wait("session_ready")
        await client.sio.emit("stop_call")
        await client.wait("session_ended")
        client.events.clear()
        await client.sio.emit("start_call", start_call())
        error = await client.wait("error")
        await asyncio.sleep(0.2)
    assert error["type"] == "rate_limit_exceeded" and "Rate limit exceeded" in error["message"]
    assert client.names() == ["error"] and not box.calls


@pytest.mark.parametrize("key,kind", [(BAD_KEY, "invalid_api_key"), ("drained", "insufficient_credits")])
async def test_sandbox_variant_sends_the_typed_error_after_auth_failed(key, kind):
    async with sandbox(typed_start_errors=True) as (url, box), listener(url) as client:
        if key == "drained":
            key = POOR_KEY
            box.accounts[POOR_KEY].credits = 0
        await client.sio.emit("start_call", start_call(key=key))
        error = await client.wait("error")
    assert client.names() == ["auth_failed", "error"] and error["type"] == kind and error["message"]


@pytest.mark.parametrize("kind", list(aivoco_sandbox.ERROR_TYPES))
async def test_sandbox_sends_each_typed_error_mid_call_and_releases_the_call(kind):
    async with sandbox() as (url, box), listener(url) as client:
        await client.sio.emit("start_call", start_call())
        await client.wait("session_ready")
        assert await box.send_error(kind) == 1
        error = await client.wait("error")
        assert error == {"type": kind, "message": aivoco_sandbox.ERROR_TYPES[kind]} and not box.calls


@pytest.mark.slow
async def test_sandbox_function_round_trip(speech):
    async with sandbox() as (url, box), listener(url) as client:
        await client.sio.emit("start_call", start_call(functions_=["current_time"]))
        await client.wait("session_ready")
        pcm = silence(300) + speech.pcm("what time is it") + silence(1200)
        for i in range(0, len(pcm), FRAME):
            await client.sio.emit("audio_data", aivoco.audio_payload(pcm[i : i + FRAME]))
            await asyncio.sleep(0.02)
        called = await client.wait("function_called")
        assert called["function_name"] == "current_time" and called["arguments"] == {}
        await client.sio.emit(
            "function_response", {"call_id": "nope", "function_name": "current_time", "result": {}}
        )
        assert "unknown call_id" in (await client.wait("function_error"))["error"]
        await client.sio.emit(
            "function_response",
            {"call_id": called["call_id"], "function_name": "current_time", "result": {"time": "14:05"}},
        )
        assert (await client.wait("function_result")) == {
            "function_name": "current_time",
            "result": {"time": "14:05"},
        }
        assert (await client.wait("function_response_sent"))["admin_units_deducted"] > 0
        assert (await client.wait("text_response")) == {"text": "It is 2:05 pm now."}
        assert client.names().index("function_response_sent") < client.names().index("text_response")
        assert len([d for n, d in client.events if n == "audio_response"]) > 10
        assert box.stats.flag_mismatches == 0  # our audio_payload told the truth about every chunk


async def test_sandbox_stop_call_ends_the_session_and_the_socket_can_start_again():
    async with sandbox() as (url, _), listener(url) as client:
        await client.sio.emit("start_call", start_call())
        await client.wait("session_ready")
        await asyncio.sleep(0.3)
        await client.sio.emit("stop_call")
        ended = await client.wait("session_ended")
        assert ended["reason"] == "stopped_by_user" and ended["message"] == "Call stopped by user"
        assert ended["total_credits_used"] > 0 and ended["remaining_credits"] < 100_000
        client.events.clear()
        await client.sio.emit("start_call", start_call())
        assert (await client.wait("auth_success"))["credits"] == ended["remaining_credits"]


# ---- our client through the relay, against the sandbox ----------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
@pytest.mark.slow
async def test_happy_path_agent_audio_and_transcript_are_stored(conversation, speech):
    async with sandbox() as (url, box):
        relay, browser, task = start(conversation, AivocoUpstream, client_config(url))
        ready = await browser.message("ready", timeout=15)
        assert ready["user_transcripts"] is False and ready["accepts_text"] is False
        await talk(relay, silence(300) + speech.pcm("is there parking") + silence(800))
        final = await browser.message("transcript", role="agent", final=True, timeout=10)
        assert "free parking" in final["text"]
        assert sum(map(len, browser.audio)) > 24000 * 2  # more than a second of agent speech at 24 kHz
        assert browser.of_type("transcript") == [final]  # nothing is invented for the user
        await browser.message("metrics")  # latency measured from the end of the user's speech
        await finish(relay, task)
        assert box.stats.voiced > 0 and box.stats.flag_mismatches == 0
    fields = ("role", "final", "text", "latency_ms")
    ((role, is_final, text, latency_ms),) = await astored(conversation, fields)
    assert (role, is_final) == ("agent", True)
    assert "free parking" in text and latency_ms > 0
    conv = await Conversation.objects.aget(id=conversation.id)
    assert (conv.status, conv.end_reason) == ("ended", "test over")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
@pytest.mark.parametrize("typed", [False, True])
async def test_bad_credentials_are_a_clear_permanent_error_without_the_key(conversation, typed):
    """Also when the service follows auth_failed with `error {type: "invalid_api_key"}`: one error."""
    async with sandbox(typed_start_errors=typed) as (url, _):
        _relay, browser, task = start(conversation, AivocoUpstream, {"url": url, "api_key": BAD_KEY})
        await asyncio.wait_for(task, 10)
    (error,) = browser.of_type("error")
    assert error["code"] == "aivoco.auth_failed"
    assert (
        error["fatal"] and "refused the API key" in error["message"] and "AIVOCO_API_KEY" in error["message"]
    )
    assert BAD_KEY not in json.dumps(browser.messages)
    assert browser.of_type("ready") == []
    assert (await Conversation.objects.aget(id=conversation.id)).status == "failed"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_running_out_of_credits_ends_the_call_with_a_clear_reason(conversation):
    async with sandbox() as (url, _):
        relay, browser, task = start(conversation, AivocoUpstream, {"url": url, "api_key": POOR_KEY})
        await browser.message("ready", timeout=15)
        for _ in range(150):  # the user keeps the microphone open
            if task.done():
                break
            await relay.feed_audio(silence(20))
            await asyncio.sleep(0.02)
        await asyncio.wait_for(task, 5)
    (ended,) = browser.of_type("ended")
    assert ended["reason"].startswith("Aivoco ended the call: the account ran out of credits (used 0.03")
    conv = await Conversation.objects.aget(id=conversation.id)
    assert (conv.status, conv.end_reason) == ("ended", ended["reason"])


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
@pytest.mark.parametrize("kind", list(aivoco_sandbox.ERROR_TYPES))
async def test_each_typed_error_mid_call_ends_the_call_with_its_own_code(conversation, kind):
    """The seed's client ends the call on every `error`: each type reaches the page as its own
    fatal `aivoco.<type>`, and the conversation is failed with the worded message."""
    async with sandbox() as (url, box):
        relay, browser, task = start(conversation, AivocoUpstream, client_config(url))
        await browser.message("ready", timeout=15)
        await relay.feed_audio(silence(20))
        assert await box.send_error(kind) == 1
        await asyncio.wait_for(task, 5)
    (error,) = browser.of_type("error")
    assert error["code"] == f"aivoco.{kind}" and error["fatal"] is True
    assert error["message"].startswith(aivoco.ERROR_MESSAGES[kind])
    assert f"Aivoco said: {aivoco_sandbox.ERROR_TYPES[kind]}" in error["message"]
    assert browser.of_type("ended") and browser.closed_with == 4500
    conv = await Conversation.objects.aget(id=conversation.id)
    assert (conv.status, conv.end_reason) == ("failed", error["message"])


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_a_rate_limited_start_is_a_clear_fatal_error(conversation):
    async with sandbox(calls_per_minute=1) as (url, _):
        async with listener(url) as other:  # another call with the same key this minute
            await other.sio.emit("start_call", start_call())
            await other.wait("session_ready")
        _relay, browser, task = start(conversation, AivocoUpstream, client_config(url))
        await asyncio.wait_for(task, 10)
    (error,) = browser.of_type("error")
    assert error["code"] == "aivoco.rate_limit_exceeded" and error["fatal"] is True
    assert "Wait a minute" in error["message"] and "at most 1 calls a minute" in error["message"]
    assert browser.of_type("ready") == []
    assert (await Conversation.objects.aget(id=conversation.id)).status == "failed"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
@pytest.mark.parametrize(
    "reason,worded",
    [
        ("stopped_by_user", "Aivoco says the call was stopped (used "),
        ("insufficient_admin_units", "Aivoco ended the call: the account ran out of function-call units"),
        ("maintenance_window", "Aivoco ended the call: maintenance window (used "),
    ],
)
async def test_the_service_ending_the_session_is_a_worded_end_reason(conversation, reason, worded):
    async with sandbox() as (url, box):
        relay, browser, task = start(conversation, AivocoUpstream, client_config(url))
        await browser.message("ready", timeout=15)
        await relay.feed_audio(silence(20))
        assert await box.end_sessions(reason) == 1
        await asyncio.wait_for(task, 5)
    (ended,) = browser.of_type("ended")
    assert ended["reason"].startswith(worded) and ended["reason"].endswith(" left).")
    assert not browser.of_type("error") and browser.closed_with == 1000
    conv = await Conversation.objects.aget(id=conversation.id)
    assert (conv.status, conv.end_reason) == ("ended", ended["reason"])


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
@pytest.mark.slow
async def test_function_round_trip_is_stored_and_shown(conversation, speech):
    async with sandbox() as (url, _):
        relay, browser, task = start(conversation, AivocoUpstream, client_config(url))
        await browser.message("ready", timeout=15)
        await talk(relay, silence(300) + speech.pcm("I would like to book a table for two") + silence(800))
        call = await browser.message("tool_call", timeout=10)
        assert call["name"] == "check_availability"
        assert call["arguments"]["party_size"] == 2 and set(call["arguments"]) == {
            "date",
            "time",
            "party_size",
        }
        assert isinstance(call["result"]["available"], bool)
        final = await browser.message("transcript", role="agent", final=True, timeout=10)
        assert "table for 2" in final["text"]
        await finish(relay, task)
    turns = await astored(conversation, ("role", "data"))
    assert [role for role, _ in turns] == ["tool", "agent"]
    tool = turns[0][1]
    assert tool["result"] == call["result"] and tool["id"] == call["id"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
@pytest.mark.slow
async def test_upstream_dying_mid_turn_is_an_error_and_keeps_what_was_stored(conversation, speech):
    async with sandbox() as (url, _), Proxy(int(url.rsplit(":", 1)[1])) as proxy:
        relay, browser, task = start(
            conversation, AivocoUpstream, client_config(f"http://127.0.0.1:{proxy.port}")
        )
        await browser.message("ready", timeout=15)
        await talk(relay, silence(300) + speech.pcm("I would like to book a table for two") + silence(1000))
        await browser.message("tool_call", timeout=10)
        heard = browser.audio_ms
        await browser.wait_for(lambda b: b.audio_ms > heard + 200, timeout=10)  # the reply is being spoken
        proxy.kill()
        await asyncio.wait_for(task, 5)
    error = browser.of_type("error")[-1]
    assert error["fatal"] and "dropped" in error["message"] and error["code"] == "aivoco.closed"
    assert browser.of_type("ended")
    assert await astored(conversation, ("role",)) == [("tool",)]  # the call made before the drop is kept
    assert (await Conversation.objects.aget(id=conversation.id)).status == "failed"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
@pytest.mark.slow
async def test_barge_in_clears_the_browser_and_the_next_reply_plays(conversation, speech):
    async with sandbox() as (url, _):
        relay, browser, task = start(conversation, AivocoUpstream, client_config(url))
        await browser.message("ready", timeout=15)
        await talk(relay, silence(300) + speech.pcm("what time do you open") + silence(600))
        await browser.wait_for(lambda b: b.audio_ms > 1000, timeout=10)  # a second of the long answer played
        await talk(relay, speech.pcm("sorry could you repeat that") + silence(800))
        await browser.message("clear", timeout=1)
        # Who notices first is a race (the sandbox's VAD or the relay's): either way the turn is marked.
        cut = await browser.message("transcript", role="agent", final=True, interrupted=True, timeout=5)
        assert (
            cut["interrupted"] is True and OPEN_ANSWER.startswith(cut["text"]) and cut["text"] != OPEN_ANSWER
        )
        heard = browser.audio_ms
        await browser.wait_for(lambda b: b.audio_ms > heard + 500, timeout=10)  # the next reply is heard
        await finish(relay, task)
    turns = await astored(conversation, ("role", "interrupted"))
    assert turns[0] == ("agent", True)
    assert not [m for m in browser.of_type("transcript") if m["id"] != cut["id"] and m["interrupted"]]


# ---- our client against scripted peers: what the sandbox never does on purpose --------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_malformed_messages_are_clear_errors_and_the_call_goes_on(conversation):
    async def script(peer, sid):
        await peer.sio.emit("audio_response", {"audio_data": "@@ not base64 @@"}, to=sid)
        await peer.sio.emit("text_response", ["not", "an", "object"], to=sid)
        await peer.sio.emit("audio_response", {"audio_data": base64.b64encode(tone(300)).decode()}, to=sid)
        await peer.sio.emit("text_response", {"text": "Still here."}, to=sid)

    peer = ScriptedAivoco(script)
    async with serving(peer.app) as url:
        relay, browser, task = start(conversation, AivocoUpstream, {"url": url, "api_key": KEY})
        final = await browser.message("transcript", role="agent", final=True)
        errors = browser.of_type("error")
        assert [e["code"] for e in errors] == ["aivoco.bad_message", "aivoco.bad_message"]
        assert "audio_response audio_data is not base64" in errors[0]["message"]
        assert not any(e["fatal"] for e in errors)
        assert final["text"] == "Still here." and sum(map(len, browser.audio)) >= 24000 * 2 * 0.28
        await finish(relay, task)
        await peer.close()
    assert peer.of("stop_call") == [None]  # close() ended the call properly
    conv = await Conversation.objects.aget(id=conversation.id)
    assert conv.status == "ended"
    assert await astored(conversation, ("text",)) == [("Still here.",)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_unknown_functions_and_bad_arguments_get_failed_results(conversation):
    async def script(peer, sid):
        calls = [
            ("c1", "launch_rockets", {}),
            ("c2", "check_availability", {"date": "today", "time": "19:00", "party_size": "lots"}),
            ("c3", "current_time", {}),
        ]
        for call_id, name, arguments in calls:
            await peer.sio.emit(
                "function_called", {"function_name": name, "arguments": arguments, "call_id": call_id}, to=sid
            )

    peer = ScriptedAivoco(script)
    async with serving(peer.app) as url:
        relay, browser, task = start(conversation, AivocoUpstream, {"url": url, "api_key": KEY})
        await browser.wait_for(lambda b: len(b.of_type("tool_call")) == 3)
        await browser.wait_for(lambda b: len(peer.of("function_response")) == 3)
        await finish(relay, task)
        await peer.close()
    (start_payload,) = peer.of("start_call")
    assert [f["name"] for f in start_payload["custom_functions"]] == ["check_availability", "current_time"]
    assert start_payload["voice_choice"] == "female" and start_payload["system_message"].startswith(
        "You are Rita"
    )
    responses = {r["call_id"]: r for r in peer.of("function_response")}
    assert responses["c1"]["result"] == {"error": "unknown function 'launch_rockets'", "status": "failed"}
    assert (
        responses["c2"]["result"]["status"] == "failed" and "party_size" in responses["c2"]["result"]["error"]
    )
    assert "time" in responses["c3"]["result"] and responses["c3"]["function_name"] == "current_time"
    turns = await astored(conversation, ("role", "data"))
    assert [(role, data["id"]) for role, data in turns] == [("tool", "c1"), ("tool", "c2"), ("tool", "c3")]
    assert turns[0][1]["result"]["status"] == "failed"
    assert [m["result"] for m in browser.of_type("tool_call")] == [
        responses[c]["result"] for c in ("c1", "c2", "c3")
    ]


# ---- end to end: pick, talk and the conversation page over a real Daphne ----------------------


async def browser_talk(server, pcm: bytes) -> tuple[dict, list[dict], int]:
    """What the talk page does: open the socket, stream the microphone in real time, stop."""
    conv = server.conversation(provider="aivoco", voice="female")

    def answered(c):  # a final agent text after the function call
        kinds = [(m["type"], m.get("final")) for m in c.seen]
        called = ("tool_call", None)
        return called in kinds and ("transcript", True) in kinds[kinds.index(called) :]

    async with call(server, conv["ws_path"]) as c:
        await c.until(lambda c: c.of("ready"), 30)
        await c.say(pcm)
        await c.until(answered)
        await c.stop()
    return conv, c.seen, c.audio


@pytest.mark.slow
def test_end_to_end_over_daphne_with_the_mounted_sandbox(server, speech):
    pick = server.client().get("/talk/").text
    offered = re.search(r'mode-(\w+)">\s*<label>\s*<input type="radio" name="provider" value="aivoco"', pick)
    assert offered and offered[1] == "sandbox"  # offered on the pick page, running against its sandbox
    pcm = silence(1000) + speech.pcm("I would like to book a table for two") + silence(1500)
    conv, seen, audio = asyncio.run(browser_talk(server, pcm))
    ready = next(m for m in seen if m["type"] == "ready")
    assert ready["provider"] == "aivoco" and ready["user_transcripts"] is False
    (call,) = [m for m in seen if m["type"] == "tool_call"]
    assert call["name"] == "check_availability" and "available" in call["result"]
    agent = [m for m in seen if m["type"] == "transcript" and m["role"] == "agent" and m["final"]]
    assert "table for 2" in agent[-1]["text"]
    assert not [m for m in seen if m["type"] == "transcript" and m["role"] == "user"]
    assert audio > 24000 * 2
    assert seen[-1] == {"type": "ended", "reason": "stopped by the user"}
    page = server.client().get(f"/history/{conv['id']}/").text
    assert "check_availability" in page and "table for 2" in page
    code = "from django.conf import settings; from playground.sandbox import aivoco; " \
           "print(aivoco.api_key(settings.SECRET_KEY))"  # fmt: skip
    key = server.manage("shell", "-c", code).strip().splitlines()[-1]
    assert key not in page and key not in json.dumps(seen)
