"""Speechmatics Flow: our client against its sandbox (and scripted Flow peers) over loopback, the
sandbox's refusals against a plain `websockets` client, the LiveKit exchange, the whole product over
a real Daphne, and the sandbox checked by the vendor's own JavaScript client under Node."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async
from livekit.api import TokenVerifier

from playground.engine.script import Script
from playground.sandbox import flow as sandbox
from sessions.models import Conversation, Topic
from sessions.sandbox_scripts import topic_scripts
from sessions.upstreams.base import (
    Ended,
    Error,
    Interrupted,
    Join,
    Session,
    Status,
    Transcript,
    UpstreamError,
)
from sessions.upstreams.flow import (
    Ack,
    ConversationEnded,
    Fatal,
    FlowUpstream,
    Malformed,
    ToolInvoke,
    close_codes,
    endpoint,
    livekit_endpoint,
    parse_text,
    start_message,
)
from tests.browser_double import BrowserPeer
from tests.engine.speech import silence
from tests.peers import EchoPeer, finish, serving, stream
from tests.server import free_port
from tests.vendors.helpers import astored, press_start, server_key, start, talk_over_daphne

ROOT = Path(__file__).resolve().parents[2]
FRAME = 640  # 20 ms at 16 kHz
DEPLOYMENT = "flow-test-deployment-secret"
KEY = sandbox.api_key(DEPLOYMENT)
PEER_KEY = "sm-peer-key-77aa"
TEMPLATE = "flow-test-host"
LONG_GREETING = ("Hello and welcome. I am going to keep talking for quite a while, so that you have "
                 "plenty of time to interrupt me whenever you like, at any moment at all.")  # fmt: skip


# ---- fixtures and helpers ---------------------------------------------------------------------


class Browser(BrowserPeer):
    def texts(self) -> str:
        return json.dumps(self.messages)


def make_topic(slug="host", greeting="Hello, how can I help?", **flow) -> Topic:
    options = {"flow": {"template_id": f"{TEMPLATE}-{slug}", **flow}}
    return Topic.objects.create(title=f"Host {slug}", slug=slug, persona="You are a host.", greeting=greeting,
                                phrases=["I would like to book a table", "what are your opening hours"],
                                faq=[{"question": "opening hours", "answer": "We open at noon.",
                                      "keywords": ["open", "hours", "opening"]}],
                                provider_options=options)  # fmt: skip


def make_conversation(topic=None, **fields) -> Conversation:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get_or_create(username="flow-tester")[0]
    topic = topic or make_topic()
    fields = {"voice": "default", "language": "en", "status": "connecting", **fields}
    return Conversation.objects.create(user=user, provider="flow", topic=topic, **fields)


def make_app(**variants):
    return sandbox.make_app(DEPLOYMENT, scripts=topic_scripts, **variants)


def client_config(base: str, **extra) -> dict:
    return {**sandbox.client_config(base, DEPLOYMENT), **extra}


def peer_config(peer, **extra) -> dict:
    return {"url": peer.url, "api_key": PEER_KEY, **extra}


def final(role):
    def find(browser):
        return [m for m in browser.of_type("transcript") if m["role"] == role and m["final"]]

    return find


def session(options: dict, config: dict) -> Session:
    script = Script(slug="s", title="S", persona="You are a host.", greeting="Hello.")
    return Session("c1", topic=script, voice="default", language="en", options=options, config=config)


async def started(ws) -> dict:
    """A scripted Flow peer's opening: read StartConversation, answer ConversationStarted."""
    start_conversation = json.loads(await ws.recv())
    await ws.send(json.dumps({"message": "ConversationStarted", "id": "conv-1", "asr_session_id": "a-1",
                              "language_pack_info": {"word_delimiter": " "}}))  # fmt: skip
    return start_conversation


def jmsg(kind: str, **fields) -> str:
    return json.dumps({"message": kind, **fields})


def sandbox_ws(base: str, key: str = KEY, **kwargs):
    headers = {"Authorization": f"Bearer {key}"}
    return websockets.connect(client_config(base)["url"], additional_headers=headers, **kwargs)


def start_body(template=f"{TEMPLATE}-host", **extra) -> dict:
    return {"message": "StartConversation", "conversation_config": {"template_id": template,
            "template_variables": {"timezone": "Europe/London"}}, **extra}  # fmt: skip


async def until_message(ws, kind: str, timeout: float = 10) -> dict:
    """Read (skipping audio and other messages) until a `kind` message; it is returned."""
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.recv()
            if isinstance(message, str) and json.loads(message)["message"] == kind:
                return json.loads(message)


# ---- pure parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize("message, expected", [
    ({"message": "AudioAdded", "seq_no": 7}, [Ack(7)]),
    ({"message": "AddPartialTranscript", "metadata": {"transcript": "<sb>Hello</sb> there",
                                                      "start_time": 1.0, "end_time": 1.5}},
     [Transcript("user", "Hello there", False, start_ms=1000, end_ms=1500)]),
    ({"message": "AddTranscript", "metadata": {"transcript": "<sb>Hi.</sb>"}},
     [Transcript("user", "Hi.", True)]),
    ({"message": "AddTranscript", "metadata": {"transcript": "<sb></sb>"}}, []),
    ({"message": "ResponseStarted", "content": "We open at noon.", "start_time": 2.0},
     [Status("speaking"), Transcript("agent", "We open at noon.", False)]),
    ({"message": "ResponseCompleted", "content": "We open at noon.", "start_time": 2.0, "end_time": 3.0},
     [Transcript("agent", "We open at noon.", True), Status("listening")]),
    ({"message": "ResponseInterrupted", "content": "We open", "start_time": 2.0, "end_time": 2.4},
     [Interrupted(), Transcript("agent", "We open", True, interrupted=True), Status("listening")]),
    ({"message": "ToolInvoke", "id": "t1", "type": "function",
      "function": {"name": "current_time", "arguments": {}}}, [ToolInvoke("t1", "current_time", {})]),
    ({"message": "Info", "type": "concurrent_session_usage", "reason": "2 of 3 sessions in use"},
     [Error("flow.info", "Flow: 2 of 3 sessions in use (concurrent_session_usage)")]),
    ({"message": "Warning", "type": "idle_timeout", "reason": "No audio"},
     [Error("flow.warning", "Flow warning: No audio (idle_timeout)")]),
    ({"message": "Error", "type": "quota_exceeded", "reason": "Too many sessions"},
     [Fatal("quota_exceeded", "Too many sessions")]),
    ({"message": "ConversationEnding"}, []),
    ({"message": "ConversationEnded"}, [ConversationEnded()]),
    ({"message": "Debug", "content": "llm said"}, []),
])  # fmt: skip
def test_flow_messages_to_events(message, expected):
    assert parse_text(json.dumps(message)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1]",
        jmsg("AudioAdded", seq_no="1"),
        jmsg("AddTranscript", metadata={}),
        jmsg("ToolInvoke", function={}),
    ],
)
def test_malformed_flow_messages_are_refused(text):
    with pytest.raises(Malformed):
        parse_text(text)


def test_urls_start_message_and_close_code_setting():
    assert endpoint("") == "wss://flow.api.speechmatics.com/v1/flow"
    assert endpoint("https://flow.example.test") == "wss://flow.example.test/v1/flow"
    assert livekit_endpoint("") == "https://flow.api.speechmatics.com/v1/flow/livekit"
    assert (
        livekit_endpoint("ws://127.0.0.1:9/sandbox/flow/v1/flow")
        == "http://127.0.0.1:9/sandbox/flow/v1/flow/livekit"
    )
    options = {"template_id": "t1", "template_variables": {"persona": "Sofia"}, "tools": ["current_time"]}
    message = start_message(session(options, {}), "Europe/Paris")
    variables = {"timezone": "Europe/Paris", "persona": "Sofia"}
    assert message["conversation_config"] == {"template_id": "t1", "template_variables": variables}
    assert message["audio_format"] == {"type": "raw", "encoding": "pcm_s16le", "sample_rate": 16000}
    assert message["tools"][0]["function"]["name"] == "current_time"
    assert "audio_format" not in start_message(session(options, {}), "UTC", audio=False)
    assert close_codes("4001=bad_key, 4999=custom")[4999] == "custom"
    assert close_codes("")[1008] == "policy_violation"  # the Realtime API's table by default


# ---- the client against its sandbox ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_a_spoken_call_gets_audio_transcripts_and_acks_both_ways(speech):
    """Greeting, a spoken question, the FAQ answer; every frame acknowledged, both ways."""
    conversation = await sync_to_async(make_conversation)()
    box = make_app()
    async with serving(box) as base:
        relay, browser, task = start(conversation, FlowUpstream, client_config(base), browser=Browser())
        await browser.message("ready", timeout=20)
        greeting = (await browser.wait_for(final("agent"), timeout=15))[0]
        assert greeting["text"] == "Hello, how can I help?"
        await stream(relay, silence(300) + speech.pcm("what are your opening hours") + silence(1000))
        user = (await browser.wait_for(final("user"), timeout=10))[0]
        assert "opening hours" in user["text"]
        answer = (await browser.wait_for(lambda b: final("agent")(b)[1:], timeout=10))[0]
        assert answer["text"] == "We open at noon."
        flow_call = next(iter(box.state.calls))
        client = relay.upstream
        assert client._sent == flow_call.frames_in and client._acked == client._sent  # AudioAdded for each
        assert 0 < client._received == flow_call.frames_out and flow_call.acked_out == flow_call.frames_out
        assert browser.audio_ms > 1000
        await finish(relay, task)
    assert not box.state.calls  # the sandbox released the call: AudioEnded matched, ConversationEnded came
    assert not browser.of_type("error"), browser.of_type("error")
    turns = await astored(conversation)
    assert turns == [("agent", "Hello, how can I help?", True, False), ("user", user["text"], True, False),
                     ("agent", "We open at noon.", True, False)]  # fmt: skip
    stored = await Conversation.objects.aget(id=conversation.id)
    assert stored.status == "ended" and KEY not in browser.texts()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_a_typed_turn_is_add_input_and_runs_a_tool_whose_result_is_spoken():
    topic = await sync_to_async(make_topic)(tools=["check_availability", "current_time"])
    conversation = await sync_to_async(make_conversation)(topic=topic)
    async with serving(make_app()) as base:
        relay, browser, task = start(conversation, FlowUpstream, client_config(base), browser=Browser())
        await browser.wait_for(final("agent"), timeout=20)
        await relay.feed_text("what time is it")
        tool = await browser.message("tool_call", timeout=10)
        answer = (await browser.wait_for(lambda b: final("agent")(b)[1:], timeout=10))[0]
        await finish(relay, task)
    assert tool["name"] == "current_time" and re.fullmatch(r"\d\d:\d\d", tool["result"]["time"])
    assert answer["text"].startswith("It is ")
    turns = await astored(conversation, ("role", "text"))
    assert turns[1:] == [("user", "what time is it"), ("tool", "current_time"), ("agent", answer["text"])]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_a_quiet_tool_answers_no_response_required_and_the_agent_stays_silent():
    topic = await sync_to_async(make_topic)(tools=["current_time"], quiet_tools=["current_time"])
    conversation = await sync_to_async(make_conversation)(topic=topic)
    async with serving(make_app()) as base:
        relay, browser, task = start(conversation, FlowUpstream, client_config(base), browser=Browser())
        await browser.wait_for(final("agent"), timeout=20)
        await relay.feed_text("what time is it")
        await browser.message("tool_call", timeout=10)
        await asyncio.sleep(1.5)
        await finish(relay, task)
    assert [t[0] for t in await astored(conversation, ("role",))] == ["agent", "user", "tool"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_the_client_stops_at_512_unacknowledged_frames():
    """A sandbox that withholds AudioAdded: the client sends 512 frames, then waits."""
    topic = await sync_to_async(make_topic)()
    options = topic.options_for("flow")
    box = make_app(acks=False)
    async with serving(box) as base:
        client = FlowUpstream(session(options, client_config(base, ack_timeout=2)))
        await client.connect()
        sending = asyncio.create_task(_send_frames(client, 600))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(sending), 1.0)
        assert not sending.done() and client._sent == 512
        assert next(iter(box.state.calls)).frames_in == 512  # what the service got: no more
        with pytest.raises(UpstreamError) as stalled:
            await sending
        assert stalled.value.code == "flow.stalled" and client._sent == 512
        await client.close()


async def _send_frames(client, count: int) -> None:
    for _ in range(count):
        await client.send_audio(bytes(FRAME))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_barge_in_is_response_interrupted_clears_and_stores_the_spoken_part(speech):
    talker = await sync_to_async(make_topic)(slug="talker", greeting=LONG_GREETING)
    conversation = await sync_to_async(make_conversation)(topic=talker)
    async with serving(make_app()) as base:
        relay, browser, task = start(conversation, FlowUpstream, client_config(base), browser=Browser())
        await browser.message("status", state="speaking", timeout=20)
        await browser.wait_for(lambda b: b.audio_ms > 500)
        spoken = asyncio.create_task(stream(relay, speech.pcm("Sorry, could you repeat that please")
                                            + silence(1000)))  # fmt: skip
        began = time.monotonic()
        await browser.message("clear", timeout=3)
        assert time.monotonic() - began < 1.5
        await spoken
        cut = (await browser.wait_for(final("agent"), timeout=5))[0]
        await finish(relay, task)
    assert cut["interrupted"] and LONG_GREETING.startswith(cut["text"]) and cut["text"] != LONG_GREETING
    turns = await astored(conversation)
    assert turns[0] == ("agent", cut["text"], True, True)


# ---- the client against scripted Flow peers ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_info_and_warning_are_shown_and_the_call_goes_on():
    conversation = await sync_to_async(make_conversation)()

    async def script(peer, ws):
        peer.received.append(await started(ws))
        await ws.send(jmsg("Info", type="concurrent_session_usage", reason="2 of 3 sessions in use"))
        await ws.send(jmsg("Warning", type="high_llm_latency", reason=f"slow LLM, key {PEER_KEY}"))
        await ws.send("not json")
        await ws.send(jmsg("AddTranscript", metadata={"transcript": "<sb>still here</sb>"}))
        await ws.wait_closed()

    async with EchoPeer(script) as peer:
        relay, browser, task = start(conversation, FlowUpstream, peer_config(peer), browser=Browser())
        await browser.wait_for(final("user"))
        assert not task.done()
        await finish(relay, task)
    errors = [(e["code"], e["message"], e["fatal"]) for e in browser.of_type("error")]
    assert errors[:2] == [
        ("flow.info", "Flow: 2 of 3 sessions in use (concurrent_session_usage)", False),
        ("flow.warning", "Flow warning: slow LLM, key *** (high_llm_latency)", False),
    ]
    assert errors[2][0] == "flow.malformed" and not errors[2][2]
    start_conversation = peer.received[0]
    assert start_conversation["message"] == "StartConversation"
    assert start_conversation["conversation_config"]["template_id"] == f"{TEMPLATE}-host"
    assert "timezone" in start_conversation["conversation_config"]["template_variables"]
    assert await astored(conversation) == [("user", "still here", True, False)]
    assert (await Conversation.objects.aget(id=conversation.id)).status == "ended"


@pytest.mark.parametrize("kind, words", [
    ("not_authorised", "Speechmatics refused the API key; check SPEECHMATICS_API_KEY"),
    ("quota_exceeded", "The Speechmatics account has no quota left"),
    ("idle_timeout", "Flow ended the conversation after a long silence"),
    ("something_new", "Flow ended the conversation (something_new)"),
])  # fmt: skip
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_an_error_message_ends_the_call_with_a_worded_reason(kind, words):
    conversation = await sync_to_async(make_conversation)()

    async def script(peer, ws):
        await started(ws)
        await ws.send(jmsg("AddTranscript", metadata={"transcript": "hello"}))
        await asyncio.sleep(0.2)
        await ws.send(jmsg("Error", type=kind, reason="as the service says"))
        await ws.close(4005 if kind == "quota_exceeded" else 1011)

    async with EchoPeer(script) as peer:
        _relay, browser, task = start(conversation, FlowUpstream, peer_config(peer), browser=Browser())
        await asyncio.wait_for(task, 5)
    error = browser.of_type("error")[-1]
    assert error["fatal"] and error["code"] == f"flow.{kind}"
    assert error["message"].startswith(words) and error["message"].endswith(": as the service says")
    assert await astored(conversation) == [("user", "hello", True, False)]
    assert (await Conversation.objects.aget(id=conversation.id)).status == "failed"


async def test_a_send_after_an_error_message_reports_that_error_not_the_closed_socket():
    """The relay shows the writer's failure first: it must carry the service's reason."""

    async def script(peer, ws):
        await started(ws)
        await ws.recv()  # audio flows
        await ws.send(jmsg("Error", type="timelimit_exceeded", reason="Session limit reached"))
        await ws.close(4006)

    async with EchoPeer(script) as peer:
        client = FlowUpstream(session({"template_id": "t1"}, peer_config(peer)))
        await client.connect()
        await client.send_audio(bytes(FRAME))
        async with asyncio.timeout(5):  # the reader has the Error and the socket has closed
            while client.ws.state is not websockets.State.CLOSED:
                await asyncio.sleep(0.01)
        with pytest.raises(UpstreamError) as sending:  # the microphone's next frame
            await client.send_audio(bytes(FRAME))
        await client.close()
    assert sending.value.code == "flow.timelimit_exceeded"
    assert sending.value.message == "The conversation reached Flow's time limit: Session limit reached"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_an_error_before_conversation_started_fails_the_connect():
    conversation = await sync_to_async(make_conversation)()

    async def script(peer, ws):
        await ws.recv()
        await ws.send(jmsg("Error", type="config_error", reason="Unknown template_id"))
        await ws.close(1003)

    async with EchoPeer(script) as peer:
        _relay, browser, task = start(conversation, FlowUpstream, peer_config(peer), browser=Browser())
        await asyncio.wait_for(task, 5)
    error = browser.of_type("error")[-1]
    assert error["code"] == "flow.config_error" and "Unknown template_id" in error["message"]
    assert not browser.of_type("ready")


async def test_a_silent_service_fails_the_connect_after_the_start_timeout(monkeypatch):
    """No ConversationStarted within the wait (10 s; shortened here): a clear timeout, no audio sent."""
    from sessions.upstreams import flow as flow_module

    monkeypatch.setattr(flow_module, "START_TIMEOUT", 0.5)

    async def script(peer, ws):
        async for message in ws:
            peer.received.append(message)

    async with EchoPeer(script) as peer:
        client = FlowUpstream(session({"template_id": "t1"}, peer_config(peer)))
        with pytest.raises(UpstreamError) as timed_out:
            await client.connect()
        await client.close()
    assert timed_out.value.code == "flow.timeout" and "within 0.5 s" in timed_out.value.message
    assert [json.loads(m)["message"] for m in peer.received] == ["StartConversation"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_a_socket_closed_without_an_error_is_worded_from_the_close_code_setting():
    conversation = await sync_to_async(make_conversation)()

    async def script(peer, ws):
        await started(ws)
        await asyncio.sleep(0.2)
        await ws.close(4999, "maintenance")

    async with EchoPeer(script) as peer:
        config = peer_config(peer, close_codes="4999=service_maintenance")
        _relay, browser, task = start(conversation, FlowUpstream, config, browser=Browser())
        await asyncio.wait_for(task, 5)
    error = browser.of_type("error")[-1]
    assert error["code"] == "flow.service_maintenance"
    assert error["message"] == ("Flow closed the connection during the conversation "
                                "(code 4999 service_maintenance: maintenance).")  # fmt: skip


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_no_audio_before_conversation_started_and_the_agent_can_end_the_call():
    conversation = await sync_to_async(make_conversation)()

    async def script(peer, ws):
        await ws.recv()
        with contextlib.suppress(TimeoutError):  # nothing may come before ConversationStarted
            peer.received.append(("early", await asyncio.wait_for(ws.recv(), 0.5)))
        await ws.send(jmsg("ConversationStarted", id="conv-1"))
        async with asyncio.timeout(5):
            while not isinstance(await ws.recv(), bytes):
                pass
        await ws.send(jmsg("AudioAdded", seq_no=1))
        await ws.send(jmsg("ResponseStarted", content="Goodbye then.", start_time=1.0))
        await ws.send(bytes(1280))
        await ws.send(jmsg("ConversationEnding"))
        await ws.send(jmsg("ResponseCompleted", content="Goodbye then.", start_time=1.0, end_time=1.1))
        await ws.send(jmsg("ConversationEnded"))
        async with asyncio.timeout(2):
            async for message in ws:
                peer.received.append(message)

    async with EchoPeer(script) as peer:
        relay, browser, task = start(conversation, FlowUpstream, peer_config(peer), browser=Browser())
        await browser.message("ready", timeout=5)
        await relay.feed_audio(bytes(FRAME) * 3)
        await asyncio.wait_for(task, 5)
    assert browser.of_type("ended")[0]["reason"] == "the agent ended the conversation"
    assert not [m for m in peer.received if isinstance(m, tuple)]  # nothing before ConversationStarted
    acks = [json.loads(m) for m in peer.received if isinstance(m, str)]
    assert {"message": "AudioReceived", "seq_no": 1, "buffering": 0.01} in acks
    assert not [m for m in acks if m["message"] == "AudioEnded"]  # the agent ended it, not us
    assert await astored(conversation) == [("agent", "Goodbye then.", True, False)]
    assert (await Conversation.objects.aget(id=conversation.id)).status == "ended"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_stop_sends_audio_ended_with_the_frames_sent_and_waits_for_conversation_ended():
    conversation = await sync_to_async(make_conversation)()

    async def script(peer, ws):
        await started(ws)
        async for message in ws:
            peer.received.append(message)
            if isinstance(message, str) and json.loads(message)["message"] == "AudioEnded":
                await asyncio.sleep(0.5)  # the service finishes its work first
                await ws.send(jmsg("AddTranscript", metadata={"transcript": "last words"}))
                await ws.send(jmsg("ConversationEnded"))
                await ws.close()

    async with EchoPeer(script) as peer:
        relay, browser, task = start(conversation, FlowUpstream, peer_config(peer), browser=Browser())
        await browser.message("ready", timeout=5)
        for _ in range(5):
            await relay.feed_audio(bytes(FRAME))
        await browser.wait_for(lambda b: sum(isinstance(m, bytes) for m in peer.received) == 5)
        await finish(relay, task)
    ended = json.loads(peer.received[-1])
    assert ended == {"message": "AudioEnded", "last_seq_no": 5}
    assert await astored(conversation) == [("user", "last words", True, False)]  # said after the stop
    assert browser.of_type("ended")[0]["reason"] == "test over"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_audio_acknowledged_after_the_service_closed_on_stop_is_no_error():
    """Stop: Flow's last agent audio comes with its close. Acknowledging audio on a socket the
    service closed as asked is the end of the call, not a failure the page should show."""
    conversation = await sync_to_async(make_conversation)()

    async def script(peer, ws):
        await started(ws)
        async for message in ws:
            if isinstance(message, str) and json.loads(message)["message"] == "AudioEnded":
                for _ in range(3):  # the end of a reply, then the end: all in one go
                    await ws.send(bytes(FRAME))
                await ws.send(jmsg("ConversationEnded"))
                await ws.close()

    async with EchoPeer(script) as peer:
        relay, browser, task = start(conversation, FlowUpstream, peer_config(peer), browser=Browser())
        await browser.message("ready", timeout=5)
        await relay.feed_audio(bytes(FRAME))
        await finish(relay, task)
    assert browser.of_type("error") == []
    assert browser.of_type("ended")[0]["reason"] == "test over"
    assert (await Conversation.objects.aget(id=conversation.id)).status == "ended"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_a_wrong_key_is_a_401_at_the_upgrade_and_a_clear_error_without_the_key():
    conversation = await sync_to_async(make_conversation)()
    async with serving(make_app()) as base:
        wrong = client_config(base, api_key=PEER_KEY)
        _relay, browser, task = start(conversation, FlowUpstream, wrong, browser=Browser())
        await asyncio.wait_for(task, 10)
    error = browser.of_type("error")[0]
    assert error["fatal"] and error["code"] == "flow.not_authorised"
    assert "refused the API key (HTTP 401)" in error["message"] and PEER_KEY not in browser.texts()


# ---- the strict sandbox against a plain websockets client ----------------------------------------


async def refused(ws, kind: str) -> tuple[str, int]:
    """The sandbox's Error of `kind` and the close code that follows it: (reason, code)."""
    error = await until_message(ws, "Error")
    assert error["type"] == kind, error
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(5):
            while True:
                await ws.recv()
    return error["reason"], ws.close_code


async def test_sandbox_refuses_a_bad_bearer_with_401_at_the_upgrade():
    async with serving(make_app()) as base:
        for key in ("wrong", ""):
            with pytest.raises(websockets.InvalidStatus) as denied:
                async with sandbox_ws(base, key=key):
                    pass
            assert denied.value.response.status_code == 401
        async with websockets.connect(f"{client_config(base)['url']}?jwt={KEY}") as ws:  # the JS client's way
            await ws.send(json.dumps(start_body(template="default")))
            assert (await until_message(ws, "ConversationStarted"))["id"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
@pytest.mark.parametrize("opening, kind, words", [
    ([jmsg("AudioEnded", last_seq_no=0)], "protocol_error", "must be StartConversation"),
    ([bytes(FRAME)], "protocol_error", "before ConversationStarted"),
    (["not json"], "protocol_error", "JSON objects"),
    ([json.dumps(start_body()), bytes(FRAME)], "protocol_error", "before ConversationStarted"),
    ([json.dumps({"message": "StartConversation", "conversation_config": {}})], "config_error",
     "template_id is required"),
    ([json.dumps(start_body(template="flow-nobody"))], "config_error", "Unknown template_id 'flow-nobody'"),
    ([json.dumps(start_body(audio_format={"type": "raw", "encoding": "mulaw", "sample_rate": 8000}))],
     "config_error", "raw PCM"),
    ([json.dumps(start_body(tools=[{"type": "function", "function": {"name": "x", "strict": True}}]))],
     "config_error", "unknown field"),
])  # fmt: skip
async def test_sandbox_refuses_order_and_configuration_violations(opening, kind, words):
    await sync_to_async(make_topic)()
    async with serving(make_app(close_codes={"config_error": 4002})) as base, sandbox_ws(base) as ws:
        for message in opening:
            await ws.send(message)
        reason, code = await refused(ws, kind)
    assert words in reason and code == (4002 if kind == "config_error" else 1003)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_sandbox_counts_acks_checks_audio_received_last_seq_no_and_a_second_start():
    await sync_to_async(make_topic)()
    async with serving(make_app()) as base:
        async with sandbox_ws(base) as ws:
            await ws.send(json.dumps(start_body()))
            await until_message(ws, "ConversationStarted")
            for _ in range(3):
                await ws.send(bytes(FRAME))
            acks = [(await until_message(ws, "AudioAdded"))["seq_no"] for _ in range(3)]
            assert acks == [1, 2, 3]
            response = await until_message(ws, "ResponseStarted")  # the greeting: text before audio
            assert response["content"] == "Hello, how can I help?"
            assert isinstance(await ws.recv(), bytes)
            await ws.send(jmsg("AudioReceived", seq_no=1, buffering=0.01))
            await ws.send(jmsg("AudioReceived", seq_no=10_000, buffering=0.01))
            reason, code = await refused(ws, "protocol_error")
            assert "AudioReceived seq_no 10000" in reason and code == 1003
        async with sandbox_ws(base) as ws:
            await ws.send(json.dumps(start_body()))
            await until_message(ws, "ConversationStarted")
            await ws.send(bytes(FRAME))
            await ws.send(jmsg("AudioEnded", last_seq_no=2))
            reason, _ = await refused(ws, "protocol_error")
            assert "last_seq_no 2, but 1" in reason
        async with sandbox_ws(base) as ws:
            await ws.send(json.dumps(start_body()))
            await until_message(ws, "ConversationStarted")
            await ws.send(json.dumps(start_body()))
            reason, _ = await refused(ws, "protocol_error")
            assert "only once" in reason
        async with sandbox_ws(base) as ws:
            await ws.send(json.dumps(start_body()))
            await until_message(ws, "ConversationStarted")
            await ws.send(bytes(FRAME))
            await ws.send(jmsg("AudioEnded", last_seq_no=1))
            await until_message(ws, "ConversationEnded")
            with pytest.raises(websockets.ConnectionClosedOK):
                await ws.recv()
            assert ws.close_code == 1000


@pytest.mark.slow
async def test_sandbox_paces_agent_audio_at_real_time():
    async with serving(make_app()) as base, sandbox_ws(base) as ws:
        await ws.send(json.dumps(start_body(template="default")))
        await until_message(ws, "ConversationStarted")
        await until_message(ws, "ResponseStarted")
        began, audio = time.monotonic(), 0
        async with asyncio.timeout(10):
            while True:
                message = await ws.recv()
                if isinstance(message, bytes):
                    audio += len(message)
                elif json.loads(message)["message"] == "ResponseCompleted":
                    break
        seconds = audio / 32000
        assert seconds > 1 and time.monotonic() - began > seconds - 0.4  # no faster than it plays


async def test_sandbox_warns_then_errors_then_closes_an_idle_conversation():
    idle = make_app(idle_timeout=0.6, idle_grace=0.6, close_codes={"idle_timeout": 4008})
    async with serving(idle) as base:
        async with sandbox_ws(base) as ws:
            await ws.send(json.dumps(start_body(template="default")))
            warning = await until_message(ws, "Warning", timeout=5)
            assert warning["type"] == "idle_timeout"
            reason, code = await refused(ws, "idle_timeout")
    assert code == 4008 and "idle" in reason


# ---- Flow over LiveKit: the exchange, and forwarded data-channel messages -------------------------


async def post_livekit(base: str, body, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient() as http:
        return await http.post(f"{base}/v1/flow/livekit", json=body, headers=headers)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_sandbox_livekit_endpoint_refuses_and_mints_a_one_room_token():
    await sync_to_async(make_topic)()
    box = make_app(token_ttl=120)
    async with serving(box) as base:
        assert (await post_livekit(base, start_body(), key=None)).status_code == 401
        assert (await post_livekit(base, start_body(), key="wrong")).status_code == 401
        assert (await post_livekit(base, ["not", "an", "object"])).status_code == 400
        no_template = {"message": "StartConversation", "conversation_config": {}}
        assert (await post_livekit(base, no_template)).status_code == 400
        assert (await post_livekit(base, start_body(template="flow-nobody"))).status_code == 400
        with_format = start_body(audio_format={"type": "raw", "encoding": "pcm_s16le", "sample_rate": 16000})
        assert (await post_livekit(base, with_format)).status_code == 400  # LiveKit controls the format
        answer = await post_livekit(base, start_body())
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"url", "token", "id"} and body["url"] == "ws://127.0.0.1:7880"
    claims = TokenVerifier(*sandbox.livekit_credentials(DEPLOYMENT)).verify(body["token"])
    ((ident, room, template),) = box.state.rooms
    assert ident == body["id"] and template == f"{TEMPLATE}-host"
    grants = claims.video
    assert grants.room == room and grants.room_join and grants.can_publish and grants.can_subscribe
    assert grants.can_publish_data and not grants.room_admin and not grants.room_create
    import jwt

    expiry = jwt.decode(body["token"], options={"verify_signature": False})["exp"]
    assert 0 < expiry - time.time() <= 121  # short-lived
    with pytest.raises(jwt.InvalidTokenError):  # signed with this deployment's LiveKit secret only
        TokenVerifier(*sandbox.livekit_credentials("another-deployment")).verify(body["token"])


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_the_livekit_transport_joins_with_the_token_and_parses_forwarded_messages():
    topic = await sync_to_async(make_topic)()
    options = topic.options_for("flow")
    box = make_app()
    async with serving(box) as base:
        client = FlowUpstream(session(options, client_config(base, transport="livekit")))
        assert client.capabilities.direct_media and not client.capabilities.accepts_text
        assert not FlowUpstream.capabilities.direct_media  # the class (the WebSocket transport) is unchanged
        await client.connect()
        events = client.events()
        join = await anext(events)
    assert isinstance(join, Join) and join.transport == "livekit" and join.url == "ws://127.0.0.1:7880"
    assert join.call_id == box.state.rooms[0][0]
    claims = TokenVerifier(*sandbox.livekit_credentials(DEPLOYMENT)).verify(join.token)
    assert claims.video.room == box.state.rooms[0][1]
    assert KEY not in json.dumps(join.__dict__)  # the provider key never goes to the page
    await client.forward({"message": "AddTranscript", "metadata": {"transcript": "<sb>hello</sb>"}})
    await client.forward(jmsg("ResponseStarted", content="Hi there."))
    await client.forward({"message": "ResponseInterrupted", "content": "Hi"})
    await client.forward({"message": "ConversationEnded"})
    got = [await anext(events) for _ in range(7)]
    assert got == [Transcript("user", "hello", True), Status("speaking"),
                   Transcript("agent", "Hi there.", False), Interrupted(),
                   Transcript("agent", "Hi", True, interrupted=True), Status("listening"),
                   Ended("the agent ended the conversation")]  # fmt: skip
    await client.close()
    assert [e async for e in events] == []


async def test_a_refused_livekit_exchange_is_a_clear_error():
    async with serving(make_app()) as base:
        options = {"template_id": "flow-nobody"}
        client = FlowUpstream(session(options, client_config(base, transport="livekit")))
        with pytest.raises(UpstreamError) as refused_:
            await client.connect()
        assert refused_.value.code == "flow.livekit" and "HTTP 400" in refused_.value.message
        assert "Unknown template_id" in refused_.value.message
        wrong = FlowUpstream(session(options, client_config(base, transport="livekit", api_key="nope")))
        with pytest.raises(UpstreamError) as denied:
            await wrong.connect()
        assert denied.value.code == "flow.not_authorised" and "nope" not in denied.value.message


async def test_the_session_id_spelling_of_the_livekit_answer_is_accepted():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    seen = {}

    async def livekit(request):
        seen.update(headers=dict(request.headers), body=await request.json())
        return JSONResponse({"url": "wss://x.livekit.test", "token": "jwt-1", "session_id": "s-9"})

    app = Starlette(routes=[Route("/v1/flow/livekit", livekit, methods=["POST"])])
    async with serving(app) as base:
        client = FlowUpstream(session({"template_id": "t1"}, {"url": base, "api_key": PEER_KEY,
                                                              "transport": "livekit"}))  # fmt: skip
        await client.connect()
        join = await anext(client.events())
        await client.close()
    assert join == Join("livekit", "wss://x.livekit.test", "jwt-1", call_id="s-9")
    assert seen["headers"]["authorization"] == f"Bearer {PEER_KEY}"
    assert seen["headers"]["content-type"] == "application/json"
    assert "audio_format" not in seen["body"] and seen["body"]["conversation_config"]["template_id"] == "t1"


# ---- the product over a real Daphne, the sandbox mounted in it ----------------------------------


@pytest.mark.slow
def test_over_daphne_a_spoken_flow_call_with_a_tool_works_and_is_stored(server, speech):
    client = server.client()
    pick = client.get("/talk/").text
    key = server_key(server, "flow")
    assert "Speechmatics Flow" in pick and key not in pick
    topic = re.search(r'<option value="(\d+)"[^>]*>Restaurant booking', pick).group(1)
    form = {"provider": "flow", "topic": topic, "voice": "default", "language": "en"}
    picked = client.post("/talk/", data=form, headers={"X-CSRFToken": client.cookies["csrftoken"]})
    assert picked.status_code == 302, picked.text
    talk_page = client.get(picked.headers["location"]).text
    assert key not in talk_page
    ws_path = press_start(client, talk_page)
    sentence = speech.pcm("I would like to book a table for two")
    seen, audio = asyncio.run(talk_over_daphne(server, ws_path, sentence))
    transcripts = [m for m in seen if m["type"] == "transcript" and m["final"]]
    assert transcripts[0]["text"].startswith("Hello, this is Bella Vista")  # found by its template id
    user = next(m for m in transcripts if m["role"] == "user")
    assert "book a table" in user["text"]
    tool = next(m for m in seen if m["type"] == "tool_call")  # the demo topic's Flow tools
    assert tool["name"] == "check_availability" and tool["arguments"]["party_size"] == 2
    assert audio > 24000 * 2 * 2
    assert not [m for m in seen if m["type"] == "error"], seen
    assert seen[-1] == {"type": "ended", "reason": "stopped by the user"}
    assert key not in json.dumps(seen)
    page = client.get(f"/history/{ws_path.split('/')[-2]}/").text
    assert user["text"] in page and "check_availability" in page


# ---- the sandbox checked by code we did not write: the vendor's JavaScript client ----------------

JS_VENDOR = ROOT / "tests" / "js-vendor"


@pytest.mark.slow
def test_the_vendors_own_flow_client_talks_to_our_sandbox_under_node():
    """@speechmatics/flow-client (pinned in tests/js-vendor, installed by bin/setup) under Node 20, with
    the `ws` package as its WebSocket, against the sandbox run alone on a loopback port."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    assert (JS_VENDOR / "node_modules" / "@speechmatics" / "flow-client").is_dir(), "run bin/setup (npm ci)"
    secret, port = "flow-node-test-secret", free_port()
    box = subprocess.Popen([sys.executable, "-m", "playground.sandbox", "flow", "--port", str(port),
                            "--secret", secret], cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_for_port(port)
        env = {**os.environ, "FLOW_SANDBOX_URL": f"http://127.0.0.1:{port}",
               "FLOW_SANDBOX_KEY": sandbox.api_key(secret)}  # fmt: skip
        result = subprocess.run([node, "--test", str(JS_VENDOR)], env=env, capture_output=True, text=True,
                                timeout=120)  # fmt: skip
    finally:
        box.terminate()
        box.wait(10)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "# pass 3" in result.stdout and "# fail 0" in result.stdout


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("the Flow sandbox did not start")


@pytest.mark.slow
def test_over_daphne_the_mounted_sandbox_refuses_a_bad_bearer(server):
    async def status(key: str) -> int:
        url = f"{server.ws_url}/sandbox/flow/v1/flow"
        try:
            async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}):
                return 101
        except websockets.InvalidStatus as refused_:
            return refused_.response.status_code

    assert asyncio.run(status("wrong")) == 403  # Daphne cannot send a denial body: a plain refusal
    assert asyncio.run(status(server_key(server, "flow"))) == 101
