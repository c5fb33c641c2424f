"""The conversation WebSocket through the real ASGI stack (auth, origin check, routing)."""

import asyncio
import contextlib
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from playground.asgi import application
from sessions.models import ApiToken, Conversation, Turn
from tests.browser_double import whole_frames
from tests.peers import EchoPeer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_thread_connections")]

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
HOST = (b"host", b"127.0.0.1:8000")  # the Origin check compares the two (sessions/origin.py)
FRAME = b"\x01\x00" * 320


@pytest.fixture
def echo_settings(settings):
    def point_at(url):
        settings.PROVIDERS = {**settings.PROVIDERS, "echo": {"url": url}}

    return point_at


@sync_to_async
def make_conversation(user, topic, provider="echo", **fields):
    return Conversation.objects.create(user=user, provider=provider, topic=topic, voice="default",
                                       language="en", **fields)  # fmt: skip


@sync_to_async
def login(client, user):
    client.force_login(user)


def socket(conversation_id, client=None, headers=(), query=""):
    headers = [ORIGIN, HOST, *headers]
    if client is not None:
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    return WebsocketCommunicator(application, f"/ws/conversations/{conversation_id}/{query}", headers=headers)


async def close_code(ws) -> int:
    connected, _ = await ws.connect()
    assert connected  # we accept first so that the close code reaches the browser
    while True:
        message = await ws.receive_output(5)
        if message["type"] == "websocket.close":
            return message["code"]


async def next_json(ws, kind, timeout=5):
    while True:
        raw = await ws.receive_from(timeout)
        if isinstance(raw, str) and (message := json.loads(raw))["type"] == kind:
            return message


async def next_audio(ws, timeout=5) -> int:
    while True:
        raw = await ws.receive_from(timeout)
        if isinstance(raw, bytes):
            return len(raw)


@contextlib.asynccontextmanager
async def live(client, user, conv, echo_settings, query=""):
    """The owner's browser on a call whose provider is a loopback echo peer; yields (socket, ready)."""
    await login(client, user)
    async with EchoPeer() as peer:
        echo_settings(peer.url)
        ws = socket(conv.id, client, query=query)
        assert (await ws.connect())[0]
        yield ws, await next_json(ws, "ready")


async def test_anonymous_is_refused_4401(user, topic):
    conv = await make_conversation(user, topic)
    assert await close_code(socket(conv.id)) == 4401


async def test_another_users_conversation_is_refused_4403(client, user, other_user, topic):
    conv = await make_conversation(other_user, topic)
    await login(client, user)
    assert await close_code(socket(conv.id, client)) == 4403


async def test_unknown_conversation_is_4404(client, user, topic):
    await login(client, user)
    assert await close_code(socket("00000000-0000-0000-0000-000000000000", client)) == 4404


async def test_ended_conversation_is_4410(client, user, topic):
    conv = await make_conversation(user, topic, status="ended")
    await login(client, user)
    assert await close_code(socket(conv.id, client)) == 4410


async def test_foreign_origin_is_rejected(client, user, topic):
    conv = await make_conversation(user, topic)
    await login(client, user)
    ws = WebsocketCommunicator(application, f"/ws/conversations/{conv.id}/",
                               headers=[(b"origin", b"http://evil.example"), HOST])  # fmt: skip
    connected, _ = await ws.connect()
    assert not connected


async def test_owner_talks_and_only_one_connection_is_live(client, user, topic, echo_settings):
    conv = await make_conversation(user, topic)
    async with live(client, user, conv, echo_settings) as (ws, ready):
        assert ready["output_rate"] == 24000
        assert await close_code(socket(conv.id, client)) == 4409
        for _ in range(5):
            await ws.send_to(bytes_data=FRAME)
        audio = await ws.receive_from(5)
        assert isinstance(audio, bytes) and whole_frames(len(audio))
        await ws.send_to(text_data=json.dumps({"type": "stop"}))
        ended = await next_json(ws, "ended")
        assert ended["reason"] == "stopped by the user"
        await ws.wait(2)
    await conv.arefresh_from_db()
    assert conv.status == "ended"


@pytest.mark.parametrize(
    "frame,code",
    [
        ({"bytes_data": b"\x01\x02\x03"}, "bad_frame"),
        ({"bytes_data": b"\x00" * (64 * 1024 + 2)}, "bad_frame"),
        ({"text_data": "[1, 2]"}, "bad_json"),
        ({"text_data": "not json at all"}, "bad_json"),
        ({"text_data": '{"type": "dance"}'}, "unknown_type"),
        ({"text_data": '{"type": "text", "text": ""}'}, "bad_text"),
    ],
)
async def test_bad_input_gets_a_clear_error_and_the_call_goes_on(
    client, user, topic, echo_settings, frame, code
):
    conv = await make_conversation(user, topic)
    await Turn.objects.acreate(conversation=conv, sequence=1, role="user", text="said before")
    async with live(client, user, conv, echo_settings) as (ws, _):
        await ws.send_to(**frame)
        error = await next_json(ws, "error")
        assert error["code"] == code and error["message"]
        for _ in range(5):  # still working (the resampler holds back its first few ms)
            await ws.send_to(bytes_data=FRAME)
        assert whole_frames(await next_audio(ws))
        await ws.disconnect()
    assert await Turn.objects.filter(conversation=conv).acount() == 1  # nothing stored is lost


@pytest.mark.parametrize("query, vad", [("", "server"), ("?vad=page", "page"), ("?vad=other", "server")])
async def test_a_page_scoring_its_audio_says_so_in_the_url(client, user, topic, echo_settings, query, vad):
    """`?vad=page`: the page sends `vad` scores for its audio, and `ready.vad` says they are used."""
    conv = await make_conversation(user, topic)
    async with live(client, user, conv, echo_settings, query) as (ws, ready):
        assert ready["vad"] == vad
        await ws.send_to(bytes_data=FRAME * 2)
        await ws.send_to(text_data=json.dumps({"type": "vad", "from": 0, "scores": [0.25]}))
        if vad == "server":
            assert (await next_json(ws, "error"))["code"] == "vad_ignored"
        await ws.send_to(text_data=json.dumps({"type": "vad", "from": 5, "scores": [0.25]}))
        if vad == "page":  # the first was taken; the second is not the next window's
            assert (await next_json(ws, "error"))["code"] == "bad_vad"
        await ws.disconnect()


async def test_disconnect_leaves_no_task_behind(client, user, topic, echo_settings):
    conv = await make_conversation(user, topic)
    async with live(client, user, conv, echo_settings) as (ws, _):
        await ws.send_to(bytes_data=FRAME)
        await ws.disconnect()
        await asyncio.sleep(0.1)
    leftovers = [t for t in asyncio.all_tasks() if t.get_name().startswith("relay")]
    assert leftovers == []
    conv = await Conversation.objects.aget(id=conv.id)
    assert (conv.status, conv.end_reason) == ("ended", "browser disconnected")


async def test_scripts_connect_with_a_token(user, topic, echo_settings):
    conv = await make_conversation(user, topic)
    key = await sync_to_async(ApiToken.issue)(user)
    async with EchoPeer() as peer:
        echo_settings(peer.url)
        ws = socket(conv.id, headers=[(b"authorization", f"Token {key}".encode())])
        await ws.connect()
        assert (await next_json(ws, "ready"))["conversation"] == str(conv.id)
        await ws.disconnect()
    bad = socket((await make_conversation(user, topic)).id, headers=[(b"authorization", b"Token wrong")])
    assert await close_code(bad) == 4401
