"""The provider contract (sessions/upstreams/base.py): declared capabilities, one error rule, crashes.

The relay is driven as in tests/test_relay.py: the echo upstream against a loopback EchoPeer,
the browser side collected by BrowserPeer. Where a client must misbehave in a way no real peer
can provoke, a small client class of this file's own stands in for it.
"""

import ast
import asyncio
import contextlib
import importlib
import inspect
import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import websockets
from django.urls import reverse

from sessions import outbox
from sessions import relay as relay_module
from sessions.models import Conversation, TranscriptSave
from sessions.relay import Relay
from sessions.upstreams import registry
from sessions.upstreams.base import DEFAULT_CAPABILITIES, Capabilities, Client, Session, UpstreamError, scrub
from sessions.upstreams.echo import EchoUpstream
from tests.browser_double import BrowserPeer
from tests.engine.speech import silence
from tests.peers import EchoPeer, finish, say, stream
from tests.server import ROOT, free_port, start_server

FRAME = b"\x01\x00" * 320  # 20 ms at 16 kHz
AGENT_AUDIO = b"\x00\x10" * 4800  # 0.3 s at 16 kHz


def with_db(test):
    """A test that runs the relay: real transactions, and the ORM's worker-thread connections closed."""
    return pytest.mark.django_db(transaction=True)(pytest.mark.usefixtures("close_thread_connections")(test))


@pytest.fixture
def conversation(user, topic):
    return Conversation.objects.create(
        user=user, provider="echo", topic=topic, voice="default", language="en", status="connecting"
    )


def run(conversation, upstream):
    browser = BrowserPeer()
    relay = Relay(conversation.id, upstream, browser.browser, provider="echo", on_end=browser.on_end)
    return relay, browser, asyncio.create_task(relay.run())


def start(conversation, url, **capabilities):
    """The echo upstream to `url`, declaring `capabilities` (the rest as EchoUpstream declares)."""
    config = {"url": url, "rate": 16000, "capabilities": capabilities}
    session = Session(str(conversation.id), None, "default", "en", config=config)
    return run(conversation, EchoUpstream(session))


async def conv_of(conversation) -> Conversation:
    return await Conversation.objects.aget(id=conversation.id)


# ---- 1. capabilities are declared, in one place -----------------------------------------------

DECLARED = {
    "local": Capabilities(accepts_text=True, user_transcripts=True, barge_in_signal=True),
    "liku": Capabilities(
        accepts_text=False, user_transcripts=True, barge_in_signal=False, saves_transcript=True
    ),
    "lokutor": Capabilities(accepts_text=False, user_transcripts=True, barge_in_signal=True),
    "aivoco": Capabilities(accepts_text=False, user_transcripts=False, barge_in_signal=False),
    "echo": Capabilities(accepts_text=True, user_transcripts=True, barge_in_signal=True),
    "flow": Capabilities(accepts_text=True, user_transcripts=True, barge_in_signal=True),
}


@pytest.mark.parametrize("key", sorted(DECLARED))
def test_every_client_declares_its_capabilities_on_its_class(key):
    client = registry.load(key)
    assert isinstance(client.__dict__.get("capabilities"), Capabilities)  # its own, not inherited
    assert registry.capabilities(key) == DECLARED[key]
    assert registry.hears_user(key) is DECLARED[key].user_transcripts
    if DECLARED[key].saves_transcript:
        assert callable(getattr(client, "save_transcript", None))


def test_the_defaults_are_documented_and_an_unbuilt_client_gets_them(monkeypatch):
    assert DEFAULT_CAPABILITIES.as_dict() == {
        "accepts_text": False, "user_transcripts": True, "barge_in_signal": True, "saves_transcript": False,
        "direct_media": False,
    }  # fmt: skip
    future = registry.Provider("future", "Future voice", "sessions.upstreams.future.FutureUpstream",
                               {"default": "Its voice"}, ("en",))  # fmt: skip
    monkeypatch.setitem(registry.PROVIDERS, "future", future)  # listed, its client not built yet
    assert registry.capabilities("future") == DEFAULT_CAPABILITIES
    assert not hasattr(registry, "ACCEPTS_TEXT")


@pytest.mark.django_db
@pytest.mark.parametrize("provider, box", [("local", True), ("echo", True), ("lokutor", False),
                                           ("aivoco", False)])  # fmt: skip
def test_the_talk_page_offers_typing_exactly_where_the_client_accepts_text(alice, user, topic, provider, box):
    conv = Conversation.objects.create(user=user, provider=provider, topic=topic, voice="default",
                                       language="en")  # fmt: skip
    html = alice.get(reverse("talk", args=[conv.id])).content.decode()
    assert ('id="talk-text-form"' in html) is box
    assert f'"acceptsText": {str(box).lower()}' in html


@with_db
async def test_ready_carries_the_declaration_and_text_is_refused_where_not_accepted(conversation):
    async with EchoPeer() as peer:
        relay, browser, task = start(conversation, peer.url, accepts_text=False, user_transcripts=False)
        ready = await browser.message("ready")
        assert ready["accepts_text"] is False and ready["user_transcripts"] is False
        await relay.feed_text("hello there")
        error = await browser.message("error", code="text_unsupported")
        assert not error["fatal"] and "typed" in error["message"]
        for _ in range(25):  # the call goes on
            await relay.feed_audio(FRAME)
        await browser.wait_for(lambda b: b.audio)
        assert all(isinstance(m, bytes) for m in peer.received)  # no text reached the provider
        await finish(relay, task)
    assert (await conv_of(conversation)).status == "ended"


def talk_over_agent_script(agent_audio_s: float = 4.0):
    """The agent speaks; while it does the user talks over it; then late audio of that reply."""

    async def script(peer, ws):
        async def listen():
            async for message in ws:
                peer.received.append(message)

        listener = asyncio.create_task(listen())
        await ws.send(b"\x00\x10" * int(16000 * agent_audio_s))
        await ws.send(say("agent", "We open at noon every day", final=False))
        while not any(isinstance(m, bytes) for m in peer.received):
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # the user is speaking by now
        await ws.send(b"\x00\x10" * 1600)
        await ws.send(say("agent", "We open at noon every day"))
        await ws.wait_closed()
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)

    return script


@with_db
async def test_own_vad_barge_in_stays_off_when_the_provider_sends_its_own_signal(conversation, speech):
    """The same talk-over as tests/test_relay.py's own-VAD test, with a provider that says `interrupted`
    itself: the relay must not clear the browser on its own."""
    pcm = silence(300) + speech.pcm("Sorry, could you repeat that please")
    async with EchoPeer(talk_over_agent_script()) as peer:
        relay, browser, task = start(conversation, peer.url, barge_in_signal=True)
        await browser.message("ready")
        await stream(relay, pcm)
        final = await browser.message("transcript", role="agent", final=True)
        assert browser.of_type("clear") == [] and final["interrupted"] is False
        await finish(relay, task)


def reply_after_user_speech(pcm_bytes: int):
    """The agent answers once the user's whole utterance (and a pause) has arrived."""

    async def script(peer, ws):
        received = 0
        async for message in ws:
            received += len(message)
            if received >= pcm_bytes - 3200:  # all but the last 0.1 s of the trailing silence
                await asyncio.sleep(0.2)
                await ws.send(AGENT_AUDIO)
                break
        await ws.wait_closed()

    return script


@with_db
@pytest.mark.parametrize("user_transcripts", [False, True])
async def test_own_vad_times_the_reply_with_or_without_user_transcripts(
    conversation, speech, user_transcripts
):
    """The end of speech our VAD hears starts the latency clock for every provider, whether or not
    it sends user transcripts (none comes here; tests/test_latency.py checks the figure's accuracy)."""
    pcm = silence(300) + speech.pcm("I would like to book a table") + silence(900)
    async with EchoPeer(reply_after_user_speech(len(pcm))) as peer:
        relay, browser, task = start(conversation, peer.url, barge_in_signal=False,
                                     user_transcripts=user_transcripts)  # fmt: skip
        await browser.message("ready")
        await stream(relay, pcm)
        await browser.wait_for(lambda b: b.audio_ms >= 200, timeout=10)
        await asyncio.sleep(0.2)
        metrics = browser.of_type("metrics")
        assert len(metrics) == 1 and 150 <= metrics[0]["latency_ms"] < 3000
        assert metrics[0]["latency_from"] == "vad"
        await finish(relay, task)


@with_db
@pytest.mark.parametrize("declared", [True, False])
async def test_the_transcript_is_saved_only_where_the_client_declares_it(conversation, declared):
    """A declared save API gets the ended call queued (the relay calls nothing itself), and the outbox
    worker delivers it through the client's class method, with no call alive."""
    async with EchoPeer() as peer:
        relay, browser, task = start(conversation, peer.url, saves_transcript=declared)
        await browser.message("ready")
        await finish(relay, task)
    saves = [s async for s in TranscriptSave.objects.filter(conversation_id=conversation.id).values()]
    if not declared:
        assert saves == []
        return
    assert [(s["status"], s["attempts"], s["requested_by_id"]) for s in saves] == [("pending", 0, None)]
    assert await outbox.drain("contract-test") == {"saved": 1}
    saved = await TranscriptSave.objects.aget(conversation_id=conversation.id)
    assert (saved.status, saved.attempts) == ("saved", 1)
    assert saved.response == {"saved": True, "rate": 16000, "turns": 0}


def test_capabilities_can_be_declared_in_the_echo_url_for_a_deployment():
    session = Session("c", None, "default", "en", config={"url": "ws://127.0.0.1:9/?x=1&user_transcripts=0"})
    upstream = EchoUpstream(session)
    assert upstream.capabilities == Capabilities(accepts_text=True, user_transcripts=False)
    assert upstream.url == "ws://127.0.0.1:9/?x=1&rate=16000"  # the peer is not told
    assert EchoUpstream.capabilities.user_transcripts is True  # the class's declaration is untouched


# ---- 2. one rule for errors --------------------------------------------------------------------


def error_script(*errors, then_audio=False):
    async def script(peer, ws):
        for error in errors:
            await ws.send(json.dumps({"error": error}))
        if then_audio:
            await ws.send(AGENT_AUDIO)
        await ws.wait_closed()

    return script


@with_db
async def test_a_recoverable_error_reaches_the_browser_with_its_code_and_the_call_goes_on(conversation):
    script = error_script({"code": "echo.hiccup", "message": "A hiccup."}, then_audio=True)
    async with EchoPeer(script) as peer:
        relay, browser, task = start(conversation, peer.url)
        error = await browser.message("error", code="echo.hiccup")
        assert error == {"type": "error", "code": "echo.hiccup", "message": "A hiccup.", "fatal": False}
        await browser.wait_for(lambda b: b.audio_ms >= 200)
        await finish(relay, task)
    assert (await conv_of(conversation)).status == "ended" and browser.closed_with == 1000


@with_db
async def test_an_error_that_ends_the_call_keeps_its_code(conversation):
    script = error_script({"code": "echo.auth", "message": "The key was refused.", "permanent": True})
    async with EchoPeer(script) as peer:
        _relay, browser, task = start(conversation, peer.url)
        await asyncio.wait_for(task, 5)
    assert browser.of_type("error") == [
        {"type": "error", "code": "echo.auth", "message": "The key was refused.", "fatal": True}
    ]
    assert browser.of_type("ended") == [{"type": "ended", "reason": "The key was refused."}]
    assert browser.closed_with == 4500
    conv = await conv_of(conversation)
    assert (conv.status, conv.end_reason) == ("failed", "The key was refused.")


@with_db
async def test_a_dropped_connection_is_the_clients_own_code(conversation):
    async def script(peer, ws):
        await asyncio.sleep(0.1)
        ws.transport.abort()

    async with EchoPeer(script) as peer:
        _relay, browser, task = start(conversation, peer.url)
        await asyncio.wait_for(task, 5)
    [error] = browser.of_type("error")
    assert error["code"] == "echo.closed" and error["fatal"]
    assert browser.closed_with == 4500


@with_db
async def test_an_unreachable_provider_is_the_clients_own_code(conversation):
    _relay, browser, task = start(conversation, "ws://127.0.0.1:9/")
    await asyncio.wait_for(task, 10)
    [error] = browser.of_type("error")
    assert error["code"] == "echo.unreachable" and error["fatal"] and not browser.of_type("ready")
    assert (await conv_of(conversation)).status == "failed"


class Silent(Client):
    """A provider that accepts the connection and never finishes the handshake."""

    input_rate = 16000
    capabilities = Capabilities()

    def __init__(self):
        self.closed = asyncio.Event()

    async def connect(self) -> None:
        await asyncio.Event().wait()

    async def send_audio(self, pcm: bytes) -> None:
        pass

    async def events(self):
        await self.closed.wait()
        return
        yield

    async def close(self) -> None:
        self.closed.set()


@with_db
async def test_a_connect_timeout_has_a_code_of_its_own(conversation, monkeypatch):
    monkeypatch.setattr(relay_module, "CONNECT_TIMEOUT", 0.3)
    _relay, browser, task = run(conversation, Silent())
    await asyncio.wait_for(task, 5)
    [error] = browser.of_type("error")
    assert error["code"] == "echo.timeout" and error["fatal"] and "0.3 s" in error["message"]
    assert browser.closed_with == 4500


class FailsToSend(Silent):
    """Connects, then its provider refuses audio: an UpstreamError out of send_audio."""

    async def connect(self) -> None:
        pass

    async def send_audio(self, pcm: bytes) -> None:
        raise UpstreamError("The provider stopped taking audio.", code="echo.send")


@with_db
async def test_an_upstream_error_while_sending_ends_the_call_with_its_code(conversation):
    relay, browser, task = run(conversation, FailsToSend())
    await browser.message("ready")
    await relay.feed_audio(FRAME)
    await asyncio.wait_for(task, 5)
    assert browser.of_type("error") == [
        {"type": "error", "code": "echo.send", "message": "The provider stopped taking audio.", "fatal": True}
    ]
    assert browser.closed_with == 4500
    assert (await conv_of(conversation)).status == "failed"


class RefusesWhileClosing(FailsToSend):
    """A provider that refuses audio once we have started closing it, and takes a while to close."""

    refusing = False

    async def send_audio(self, pcm: bytes) -> None:
        if self.refusing:
            raise UpstreamError("The provider went away.", code="echo.closed")

    async def close(self) -> None:
        self.refusing = True
        await asyncio.sleep(0.3)
        self.closed.set()


@with_db
async def test_a_send_failing_while_the_user_stops_is_no_failure(conversation):
    relay, browser, task = run(conversation, RefusesWhileClosing())
    await browser.message("ready")
    stopping = asyncio.create_task(relay.stop("stopped by the user"))
    for _ in range(10):  # the microphone still sends while the provider closes
        await relay.feed_audio(FRAME)
        await asyncio.sleep(0.02)
    await stopping
    await asyncio.wait_for(task, 5)
    assert browser.of_type("error") == []
    assert browser.of_type("ended") == [{"type": "ended", "reason": "stopped by the user"}]
    assert browser.closed_with == 1000 and (await conv_of(conversation)).status == "ended"


def literal_codes(module) -> list[str]:
    """The codes a client module writes: `code=` of UpstreamError and the first argument of Error,
    as far as they are literals (the start of an f-string counts)."""
    codes = []
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        if node.func.id == "UpstreamError":
            values = [k.value for k in node.keywords if k.arg == "code"]
        elif node.func.id == "Error" and node.args:
            values = [node.args[0]]
        else:
            continue
        for value in values:
            if isinstance(value, ast.JoinedStr) and isinstance(value.values[0], ast.Constant):
                value = value.values[0]
            if isinstance(value, ast.Constant):
                codes.append(value.value)
    return codes


def websocket_dials(source: str) -> list[ast.Call]:
    """Every `websockets.connect(...)` call in a module's source."""
    calls = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)]
    return [call for call in calls if isinstance(call.func, ast.Attribute) and call.func.attr == "connect"
            and isinstance(call.func.value, ast.Name) and call.func.value.id == "websockets"]  # fmt: skip


def test_every_socket_we_dial_goes_without_compression():
    """permessage-deflate on 20 ms PCM frames costs CPU on both ends per frame and saves next to
    nothing (audio barely compresses); `websockets.connect` offers it unless told not to. Every
    module of sessions/ (a new client too) is read."""
    dials, compressed = 0, []
    for path in sorted(Path(relay_module.__file__).parent.rglob("*.py")):
        for dial in websocket_dials(path.read_text()):
            dials += 1
            value = next((k.value for k in dial.keywords if k.arg == "compression"), None)
            if not (isinstance(value, ast.Constant) and value.value is None):
                compressed.append(f"{path.name}:{dial.lineno}")
    assert dials >= 6, "the scan found fewer sockets than the five clients and the A/B runner: it is broken"
    assert compressed == []


@pytest.mark.parametrize("key", ["liku", "lokutor", "aivoco", "echo", "local"])
def test_every_code_a_client_writes_is_provider_dot_reason(key):
    module = importlib.import_module(f"sessions.upstreams.{key}")
    codes = literal_codes(module)
    assert codes, "the scan found nothing: it is broken"
    assert [c for c in codes if not c.startswith(f"{key}.")] == []


def test_scrub_removes_every_secret_in_every_spelling():
    key, token = "k3y/+secret==", "f" * 40
    text = (f"failed: wss://api.example/ws?api_key=k3y%2F%2Bsecret%3D%3D&x=1 token {token} "
            f"body k3y/+secret== and https://chat/init?token=abc123&topic_id=5")  # fmt: skip
    shown = scrub(text, key, token, "")
    assert key not in shown and token not in shown and "k3y%2F%2Bsecret" not in shown
    assert "abc123" not in shown and "topic_id=5" in shown and "x=1" in shown
    assert shown.count("***") >= 4
    assert len(scrub("x" * 1000)) == 300 and scrub("plain words") == "plain words"


# ---- 3. a crash inside a client is not a clean end ---------------------------------------------


def crash_log(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sessions.relay" and r.exc_info]


@with_db
async def test_a_client_crashing_in_events_fails_the_call_as_internal(conversation, caplog):
    async def script(peer, ws):
        await ws.send(say("user", "hello"))
        # The echo parser builds a Transcript from whatever keys come: an unknown one is a TypeError.
        await ws.send(json.dumps({"transcript": {"role": "agent", "text": "hi", "final": True,
                                                 "secret_detail": "sk-live-123"}}))  # fmt: skip
        await ws.wait_closed()

    async with EchoPeer(script) as peer:
        _relay, browser, task = start(conversation, peer.url)
        await asyncio.wait_for(task, 5)
    [error] = browser.of_type("error")
    assert error["code"] == "internal" and error["fatal"]
    assert error["message"] == relay_module.INTERNAL_MESSAGE
    assert browser.of_type("ended") == [{"type": "ended", "reason": "internal error"}]
    assert browser.closed_with == 4500
    shown = json.dumps(browser.messages)
    assert "TypeError" not in shown and "secret_detail" not in shown and "sk-live-123" not in shown
    conv = await conv_of(conversation)
    assert (conv.status, conv.end_reason) == ("failed", "internal error")
    [record] = crash_log(caplog)
    assert record.exc_info[0] is TypeError  # the traceback is in the log


class CrashesOnAudio(FailsToSend):
    async def send_audio(self, pcm: bytes) -> None:
        raise ValueError("index 7 out of range for buffer at 0x7f")


@with_db
async def test_a_client_crashing_in_send_audio_fails_the_call_as_internal(conversation, caplog):
    relay, browser, task = run(conversation, CrashesOnAudio())
    await browser.message("ready")
    await relay.feed_audio(FRAME)
    await asyncio.wait_for(task, 5)
    assert [(e["code"], e["fatal"]) for e in browser.of_type("error")] == [("internal", True)]
    assert "0x7f" not in json.dumps(browser.messages)
    assert browser.of_type("ended") and browser.closed_with == 4500
    assert (await conv_of(conversation)).status == "failed"
    [record] = crash_log(caplog)
    assert record.exc_info[0] is ValueError


# ---- over a real Daphne: a provider's code reaches the browser as it is ------------------------


SANDBOX_SECRET = "contract-test-sandbox-secret"  # what the lone sandbox's key derives from


@contextlib.contextmanager
def lokutor_sandbox_alone():
    """The Lokutor sandbox in its own process on a loopback port (python -m playground.sandbox)."""
    port = free_port()
    command = [sys.executable, "-m", "playground.sandbox", "lokutor", "--port", str(port),
               "--secret", SANDBOX_SECRET]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert process.poll() is None and time.monotonic() < deadline, "the sandbox did not start"
            time.sleep(0.2)
        yield f"ws://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.slow
def test_over_daphne_a_refused_key_reaches_the_browser_as_lokutor_auth():
    wrong = "wrong-lokutor-key-4711"
    with lokutor_sandbox_alone() as url:
        servers = start_server({"LOKUTOR_URL": url, "LOKUTOR_API_KEY": wrong})
        server = next(servers)
        try:
            conv = server.conversation(provider="lokutor", voice="F2", language="en")

            async def browser():
                headers = {"Authorization": f"Token {server.token}"}
                seen = []
                async with websockets.connect(server.ws_url + conv["ws_path"], additional_headers=headers,
                                              origin=server.url) as ws:  # fmt: skip
                    with contextlib.suppress(websockets.ConnectionClosedError):  # 4500 is not a clean close
                        async for message in ws:
                            seen.append(json.loads(message))
                return seen, ws.close_code

            seen, close_code = asyncio.run(asyncio.wait_for(browser(), 30))
        finally:
            servers.close()
    errors = [m for m in seen if m["type"] == "error"]
    assert [(e["code"], e["fatal"]) for e in errors] == [("lokutor.auth", True)]
    assert "refused the API key" in errors[0]["message"]
    assert seen[-1]["type"] == "ended" and close_code == 4500
    assert wrong not in json.dumps(seen)
