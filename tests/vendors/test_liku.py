"""Liku: our client (sessions/upstreams/liku.py) through the relay against the Liku sandbox on
loopback, the sandbox checked with plain httpx + websockets, the Liku login, and end to end."""

import asyncio
import json
import re
import time

import httpx
import pytest
import uvicorn
import websockets
from asgiref.sync import sync_to_async

from playground.sandbox import liku as sandbox
from sessions import outbox
from sessions.models import Conversation, Topic, TranscriptSave
from sessions.sandbox_scripts import topic_scripts
from sessions.upstreams import liku
from sessions.upstreams.base import Error, SaveRequest, Transcript, UpstreamError
from sessions.upstreams.liku import LikuUpstream
from tests.engine.speech import silence
from tests.peers import finish, stream
from tests.server import call, free_port
from tests.vendors.helpers import astored, start

FRAME = 640  # 20 ms at 16 kHz
SECRET = "liku-test-deployment-secret"
PASSWORD = sandbox.password(SECRET)
SENTENCE = "I would like to book a table"
LONG_GREETING = ("Welcome to the Bella Vista booking line. I can book a table for you, change a booking, "
                 "or tell you about our set menu and our opening hours.")  # fmt: skip


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def variants():
    """The sandbox's variants (make_app keywords); a test overrides this fixture to pick others."""
    return {}


@pytest.fixture
def box(variants):
    """A fresh Liku sandbox (its state: `box.state`), acting out our topics."""
    return sandbox.make_app(SECRET, scripts=topic_scripts, **variants)


@pytest.fixture
async def base_url(box):
    """The Liku sandbox served by uvicorn on 127.0.0.1:<free port>, in this event loop (uvicorn's
    websockets-sansio can send a close frame without a status, Liku's 1005)."""
    server = uvicorn.Server(uvicorn.Config(box, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                                           ws="websockets-sansio", timeout_graceful_shutdown=1))  # fmt: skip
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await asyncio.wait_for(task, 5)


@pytest.fixture
def liku_topic(db):
    return Topic.objects.create(
        title="Liku booking", slug="liku-booking", persona="Host.", greeting="Hello, how can I help?",
        phrases=[SENTENCE], provider_options={"liku": {"topic_id": "77", "face_id": "1", "liku_id": "33"}},
        faq=[{"question": "book a table", "answer": "For how many people?", "keywords": ["book", "table"]}],
    )  # fmt: skip


@pytest.fixture
def conversation(user, liku_topic):
    return Conversation.objects.create(user=user, provider="liku", topic=liku_topic, voice="default",
                                       language="en", status="connecting")  # fmt: skip


def client_config(base_url, **extra):
    return {**sandbox.client_config(base_url, SECRET), "sandbox": True, "reconnect_delay": 0.05, **extra}


def finals(browser, role):
    return [m for m in browser.of_type("transcript") if m["role"] == role and m["final"]]


async def deliver(settings, base_url) -> dict:
    """The outbox worker's round (sessions/outbox.py), with this sandbox as the configured Liku."""
    settings.PROVIDERS = {**settings.PROVIDERS, "liku": {**sandbox.client_config(base_url, SECRET)}}
    return await outbox.drain("test-worker")


@sync_to_async
def saves(conversation):
    return list(TranscriptSave.objects.filter(conversation=conversation).values("status", "last_error",
                                                                               "response"))  # fmt: skip


# ---- the sandbox, checked with clients we did not write --------------------------------------


async def login(http, base_url, password=PASSWORD):
    return await http.post(f"{base_url}/api/liku/authentication/",
                           json={"email": sandbox.EMAIL, "password": password})  # fmt: skip


async def test_sandbox_rest_is_strict(base_url):
    async with httpx.AsyncClient() as http:
        wrong = await login(http, base_url, password="nope")
        assert wrong.status_code == 400 and "non_field_errors" in wrong.json()
        token = (await login(http, base_url)).json()["token_key"]
        assert re.fullmatch(r"[0-9a-f]{40}", token)
        init = f"{base_url}/api/init-websocket"
        no_topic = await http.get(init, params={"token": token})
        assert no_topic.status_code == 400 and "topic_id" in no_topic.json()["detail"]
        bad_token = await http.get(init, params={"token": "0" * 40, "topic_id": "77"})
        assert bad_token.status_code in (401, 403) and bad_token.json()["detail"]
        data = await http.get(init, params={"token": token, "topic_id": "77", "language": "ko"})
        assert data.status_code == 200 and data.headers["content-type"].startswith("text/plain")
        save = f"{base_url}/api/save-transcript"
        body = {"connection_data": data.text, "topic_id": "77", "conversation_id": "c1"}
        assert (await http.post(save, json=body)).status_code in (401, 403)
        assert (await http.post(save, json=body, headers={"Authorization": "Token x"})).status_code in (
            401,
            403,
        )
        missing = await http.post(save, json={"topic_id": "77"}, headers={"Authorization": f"Token {token}"})
        assert missing.status_code == 400 and "connection_data" in missing.json()
        ok = await http.post(save, json=body, headers={"Authorization": f"Token {token}"})
        assert ok.status_code == 200 and ok.json()["conversation_id"] == "c1"
        mine = await http.get(f"{base_url}/api/_sandbox/saved", headers={"Authorization": f"Token {token}"})
        assert [s["conversation_id"] for s in mine.json()] == ["c1"]
        assert (await http.get(f"{base_url}/api/_sandbox/saved")).status_code == 401


async def closed_with(url, *frames) -> int:
    async with websockets.connect(url) as ws:
        for frame in frames:
            await ws.send(frame)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    return closed.value.rcvd.code


async def test_sandbox_chat_stream_wants_valid_connection_data_first(base_url):
    url = base_url.replace("http", "ws") + "/chat-stream"
    assert await closed_with(url, b"\x00\x00" * 2048) == 4000  # audio before the connection data
    assert await closed_with(url, json.dumps({"connection_data": "made-up"})) == 4000
    assert await closed_with(url, "not json") == 4000


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_sandbox_chat_stream_confirms_then_greets_at_24khz(base_url, liku_topic):
    async with httpx.AsyncClient() as http:
        token = (await login(http, base_url)).json()["token_key"]
        data = (
            await http.get(f"{base_url}/api/init-websocket", params={"token": token, "topic_id": "77"})
        ).text
    async with websockets.connect(base_url.replace("http", "ws") + "/chat-stream") as ws:
        await ws.send(json.dumps({"connection_data": data}))
        assert json.loads(await ws.recv()) == {"type": "connection_established"}
        audio, t0 = 0, time.monotonic()
        while isinstance(message := await asyncio.wait_for(ws.recv(), 10), bytes):
            audio += len(message)
        reply = json.loads(message)
        assert reply["type"] == "assistant_transcript" and reply["text"] == "Hello, how can I help?"
        assert reply["status"] == "completed" and reply["message_id"] and reply["response_id"]
        seconds = audio / 2 / 24000
        assert 0.5 < seconds and time.monotonic() - t0 > seconds - 0.3  # paced at real time


async def init_data(http, base_url, token, topic_id="77") -> str:
    response = await http.get(f"{base_url}/api/init-websocket", params={"token": token, "topic_id": topic_id})
    return response.text


async def test_sandbox_login_and_save_want_json(base_url):
    """The guide sends Content-Type: application/json; a DRF view with the JSON parser answers
    another content type with 415."""
    async with httpx.AsyncClient() as http:
        account = json.dumps({"email": sandbox.EMAIL, "password": PASSWORD})
        url = f"{base_url}/api/liku/authentication/"
        for kind in (None, "text/plain", "application/x-www-form-urlencoded"):
            headers = {"Content-Type": kind} if kind else {}
            refused = await http.post(url, content=account, headers=headers)
            assert refused.status_code == 415 and "Unsupported media type" in refused.json()["detail"]
        json_type = {"Content-Type": "application/json; charset=utf-8"}
        token = (await http.post(url, content=account, headers=json_type)).json()["token_key"]
        data = await init_data(http, base_url, token)
        body = json.dumps({"connection_data": data, "topic_id": "77", "conversation_id": "c1"})
        save, auth = f"{base_url}/api/save-transcript", {"Authorization": f"Token {token}"}
        refused = await http.post(save, content=body, headers={**auth, "Content-Type": "text/plain"})
        assert refused.status_code == 415 and refused.json() == {
            "detail": 'Unsupported media type "text/plain" in request.'}  # fmt: skip
        assert (await http.post(save, content=body, headers={**auth, "Content-Type": "application/json"})
                ).status_code == 200  # fmt: skip


async def test_sandbox_save_checks_the_conversation_and_the_connection_data(base_url):
    async with httpx.AsyncClient() as http:
        token = (await login(http, base_url)).json()["token_key"]
        auth = {"Authorization": f"Token {token}"}

        async def init():
            return await init_data(http, base_url, token)

        async def save(data, conversation_id, topic_id="77"):
            body = {"connection_data": data, "topic_id": topic_id, "conversation_id": conversation_id}
            return await http.post(f"{base_url}/api/save-transcript", json=body, headers=auth)

        first, second = await init(), await init()
        assert (await save(first, "c1")).status_code == 200  # the first save binds c1 to this chat
        assert (await save(first, "c1")).status_code == 200  # saving it again is fine
        for data, conversation_id in ((first, "c2"), (second, "c1")):  # mismatched either way
            wrong = await save(data, conversation_id)
            assert wrong.status_code == 400
            assert wrong.json() == {"conversation_id": ["Does not match the connection data."]}
        unknown = await save("bWFkZS11cA==", "c3")
        assert unknown.status_code == 400
        assert unknown.json() == {"connection_data": ["Invalid connection data."]}
        other_topic = await save(second, "c4", topic_id="78")
        assert other_topic.status_code == 400 and list(other_topic.json()) == ["topic_id"]


@pytest.mark.parametrize("variants", [{"conversation_ids": "server"}])
async def test_sandbox_issuing_conversation_ids_accepts_only_its_own(base_url):
    async with httpx.AsyncClient() as http:
        token = (await login(http, base_url)).json()["token_key"]
        data = await init_data(http, base_url, token)
        async with websockets.connect(base_url.replace("http", "ws") + "/chat-stream") as ws:
            await ws.send(json.dumps({"connection_data": data}))
            confirmation = json.loads(await ws.recv())
        issued = confirmation["conversation_id"]
        assert confirmation["type"] == "connection_established" and issued.startswith("conv_")

        async def save(conversation_id):
            body = {"connection_data": data, "topic_id": "77", "conversation_id": conversation_id}
            return await http.post(f"{base_url}/api/save-transcript", json=body,
                                   headers={"Authorization": f"Token {token}"})  # fmt: skip

        unknown = await save("our-own-id")
        assert unknown.status_code == 400 and unknown.json() == {"conversation_id": ["Unknown conversation."]}
        assert (await save(issued)).status_code == 200


# ---- the client through the relay -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_spoken_turn_is_answered_stored_and_saved(box, base_url, conversation, speech, settings):
    relay, browser, task = start(conversation, LikuUpstream, client_config(base_url))
    await browser.message("transcript", role="agent", final=True, timeout=15)  # the greeting
    await stream(relay, silence(300) + speech.pcm(SENTENCE) + silence(1200))
    user = await browser.message("transcript", role="user", final=True, timeout=10)
    assert "table" in user["text"]
    answer = await browser.wait_for(lambda b: len(finals(b, "agent")) >= 2 and finals(b, "agent")[1], 10)
    assert answer["text"] == "For how many people?"
    assert sum(map(len, browser.audio)) > 24000 * 2 * 1.5  # the greeting and the answer, at 24 kHz
    await finish(relay, task)
    assert await astored(conversation) == [
        ("agent", "Hello, how can I help?", True, False),
        ("user", user["text"], True, False),
        ("agent", "For how many people?", True, False),
    ]
    [save] = await saves(conversation)
    assert save["status"] == "pending" and box.state.saved == []  # queued: the outbox worker sends it
    assert await deliver(settings, base_url) == {"saved": 1}
    [save] = await saves(conversation)
    assert save["status"] == "saved" and save["response"]["conversation_id"] == str(conversation.id)
    [kept] = box.state.saved
    assert (kept["conversation_id"], kept["topic_id"]) == (str(conversation.id), "77")
    assert [(t["role"], t["text"]) for t in kept["transcript"]] == [
        ("agent", "Hello, how can I help?"), ("user", user["text"]), ("agent", "For how many people?")
    ]  # fmt: skip
    refs = (await Conversation.objects.aget(id=conversation.id)).provider_refs
    assert (refs["topic_id"], refs["conversation_id"]) == ("77", str(conversation.id))
    assert refs["connection_data"]  # kept server side for re-saving
    assert [m["text"] for m in kept["messages"]][-1] == "For how many people?"
    [chat] = box.state.chats.values()
    assert chat.frame_sizes == {4096}  # the guide's recommended chunk
    assert browser.of_type("ended")[-1]["reason"] == "test over"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
@pytest.mark.parametrize("credentials,expected", [
    ({"password": "wrong-password"}, "Liku refused the login: wrong email or password."),
    ({"token": "f" * 40, "email": ""}, "Liku rejected the token (HTTP 401); log in again."),
])  # fmt: skip
async def test_bad_credentials_are_a_clear_permanent_error(base_url, conversation, credentials, expected):
    _relay, browser, task = start(conversation, LikuUpstream, client_config(base_url, **credentials))
    await asyncio.wait_for(task, 10)
    [error] = browser.of_type("error")
    assert error["message"] == expected and error["fatal"] and error["code"] == "liku.auth"
    assert browser.of_type("ready") == []
    assert "wrong-password" not in json.dumps(browser.messages) and "f" * 40 not in json.dumps(
        browser.messages
    )
    assert (await Conversation.objects.aget(id=conversation.id)).status == "failed"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_topic_without_liku_topic_id_is_refused_before_calling(box, base_url, conversation):
    _relay, browser, task = start(conversation, LikuUpstream, client_config(base_url), options={})
    await asyncio.wait_for(task, 10)
    assert "no Liku topic_id" in browser.of_type("error")[0]["message"]
    assert browser.of_type("error")[0]["code"] == "liku.config"
    assert box.state.inits == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_upstream_dying_mid_turn_ends_with_an_error_and_keeps_what_was_said(
    box, base_url, conversation, speech
):
    relay, browser, task = start(conversation, LikuUpstream, client_config(base_url, reconnect_attempts=3))
    await browser.message("transcript", role="agent", final=True, timeout=15)
    pcm = silence(200) + speech.pcm(SENTENCE)
    await stream(relay, pcm[: len(pcm) // 2])  # the user is half way through the sentence
    await box.state.outage()
    await stream(relay, pcm[len(pcm) // 2 :])
    await asyncio.wait_for(task, 10)
    notices = browser.of_type("error")
    assert notices[0]["code"] == "liku.reconnecting" and not notices[0]["fatal"]
    assert notices[-1] == {
        "type": "error",
        "code": "liku.lost",
        "fatal": True,
        "message": "Lost the connection to Liku and could not reconnect after 3 attempts.",
    }
    turns = await astored(conversation)
    assert turns[0] == ("agent", "Hello, how can I help?", True, False)
    # What the user had said when the line died is kept too, marked unfinished, if the sandbox
    # managed to send a partial transcript of it before the outage (timing decides).
    assert all(role == "user" and not final for role, _, final, _ in turns[1:]), turns
    conv = await Conversation.objects.aget(id=conversation.id)
    assert conv.status == "failed" and "could not reconnect" in conv.end_reason


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_a_dropped_socket_reconnects_and_the_conversation_goes_on(box, base_url, conversation, speech):
    relay, browser, task = start(conversation, LikuUpstream, client_config(base_url))
    await browser.message("transcript", role="agent", final=True, timeout=15)
    await box.state.drop_all()
    notice = await browser.message("error", code="liku.reconnecting")
    assert not notice["fatal"] and "1011" in notice["message"]
    await browser.wait_for(lambda b: box.state.sockets, 5)  # back on the same connection data
    await stream(relay, silence(300) + speech.pcm(SENTENCE) + silence(1200))
    answer = await browser.wait_for(lambda b: len(finals(b, "agent")) >= 2 and finals(b, "agent")[1], 10)
    assert answer["text"] == "For how many people?"
    assert len(box.state.inits) == 1 and len(browser.of_type("ready")) == 1
    await finish(relay, task)
    assert [t[0] for t in await astored(conversation)] == ["agent", "user", "agent"]  # no second greeting
    assert (await Conversation.objects.aget(id=conversation.id)).status == "ended"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_close_4000_is_reported_and_followed_by_a_fresh_init(box, base_url, conversation, settings):
    relay, browser, task = start(conversation, LikuUpstream, client_config(base_url))
    await browser.message("transcript", role="agent", final=True, timeout=15)
    await box.state.expire_all()
    notice = await browser.message("error", code="liku.connection_data")
    assert "invalid connection data (4000)" in notice["message"] and not notice["fatal"]
    # A new chat on new connection data: Liku greets again.
    await browser.wait_for(lambda b: len(finals(b, "agent")) >= 2, 15)
    assert len(box.state.inits) == 2
    await finish(relay, task)
    await deliver(settings, base_url)
    [save] = await saves(conversation)
    assert save["status"] == "saved"  # with the new connection data


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_talking_over_the_agent_clears_the_browser(base_url, user, speech):
    topic = await Topic.objects.acreate(title="Long", slug="long", persona="Host.", greeting=LONG_GREETING,
                                        provider_options={"liku": {"topic_id": "78"}})  # fmt: skip
    conversation = await Conversation.objects.acreate(
        user=user, provider="liku", topic=topic, voice="default", language="en", status="connecting"
    )
    relay, browser, task = start(conversation, LikuUpstream, client_config(base_url))
    await browser.wait_for(lambda b: b.audio_ms > 200, 15)  # the greeting is playing
    await stream(relay, speech.pcm("Sorry, could you repeat that please"))
    await browser.message("clear", timeout=5)
    greeting = await browser.message("transcript", role="agent", final=True, timeout=5)
    assert greeting["interrupted"] and len(greeting["text"]) < len(LONG_GREETING)
    turns = await astored(conversation)
    assert turns[0][0] == "agent" and turns[0][3] is True
    await finish(relay, task)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_malformed_messages_are_errors_and_the_call_goes_on(box, base_url, conversation):
    relay, browser, task = start(conversation, LikuUpstream, client_config(base_url))
    await browser.message("transcript", role="agent", final=True, timeout=15)
    await box.state.send_raw("this is not json")
    await box.state.send_raw(json.dumps({"type": "user_transcript", "message_id": "m1"}))  # no text
    await box.state.send_raw(
        json.dumps({"type": "assistant_message", "text": "Still here", "message_id": "m2"})
    )
    await browser.message("transcript", role="agent", text="Still here")
    errors = browser.of_type("error")
    assert [e["code"] for e in errors] == ["liku.bad_message", "liku.bad_message"]
    assert not any(e["fatal"] for e in errors)
    assert "not JSON" in errors[0]["message"] and "without text" in errors[1]["message"]
    await finish(relay, task)
    assert [t[1] for t in await astored(conversation)] == ["Hello, how can I help?", "Still here"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_save_api_down_leaves_the_save_pending_for_a_retry(box, base_url, conversation, settings):
    relay, browser, task = start(conversation, LikuUpstream, client_config(base_url))
    await browser.message("ready", timeout=15)
    box.state.save_outage()
    await finish(relay, task)
    assert await deliver(settings, base_url) == {"pending": 1}  # tests/test_outbox.py: the retries
    [save] = await saves(conversation)
    assert save["status"] == "pending"
    assert (
        save["last_error"] == "Liku did not save the transcript (HTTP 503: Transcript service unavailable.)."
    )
    assert box.state.saved == []


IN_PROGRESS = {"type": "user_transcript", "text": "h", "message_id": "m1", "status": "in_progress"}
CUT = {"type": "assistant_transcript", "text": "Ye", "response_id": "r1", "status": "incomplete"}


@pytest.mark.parametrize("message,expected", [
    ({"type": "user_transcript", "text": "hi", "message_id": "m1", "status": "completed"},
     Transcript("user", "hi", True, "m1")),
    (IN_PROGRESS, Transcript("user", "h", False, "m1")),
    ({"type": "assistant_transcript", "text": "Yes", "message_id": "m2", "response_id": "r1"},
     Transcript("agent", "Yes", True, "r1")),
    (CUT, Transcript("agent", "Ye", True, "r1", interrupted=True)),
    ({"type": "assistant_message", "text": "Yes", "message_id": "m3"},
     Transcript("agent", "Yes", True, "m3")),
    ({"type": "connection_established"}, None),
    ({"type": "assistant_transcript", "text": 5},
     Error("liku.bad_message", "Liku sent assistant_transcript without text.")),
])  # fmt: skip
def test_message_to_event(message, expected):
    """Finality: no status or "completed" is final; "in_progress" is partial; "incomplete" is cut short."""
    assert liku.to_event(message) == expected


# ---- fidelity to the guide (issue 8) -------------------------------------------------------------


GREETING = ("agent", "Hello, how can I help?", True, False)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
@pytest.mark.parametrize("variants", [{"confirmation": "silent"}])
async def test_a_server_silent_until_it_hears_audio_counts_as_confirmed(box, base_url, conversation):
    """The guide shows no confirmation message: silence after the connection data is a confirmation,
    and the call goes on when the server speaks only once audio comes."""
    relay, browser, task = start(conversation, LikuUpstream, client_config(base_url))
    await browser.message("ready", timeout=5)
    assert browser.of_type("transcript") == [] and browser.audio == []  # the server has said nothing yet
    await stream(relay, silence(400))
    await browser.message("transcript", role="agent", final=True, timeout=15)
    assert sum(map(len, browser.audio)) > 24000 and browser.of_type("error") == []
    await finish(relay, task)
    assert await astored(conversation) == [GREETING]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
@pytest.mark.parametrize("variants", [{"replies": "both"}, {"replies": "message"}, {"replies": "transcript"}])
async def test_a_reply_is_one_turn_whichever_forms_the_server_sends(box, base_url, conversation, variants):
    relay, browser, task = start(conversation, LikuUpstream, client_config(base_url))
    await browser.message("transcript", role="agent", final=True, timeout=15)
    await asyncio.sleep(0.3)  # an assistant_message after the assistant_transcript has come by now
    await finish(relay, task)
    assert len(finals(browser, "agent")) == 1
    assert await astored(conversation) == [GREETING]
    [chat] = box.state.chats.values()
    assert [m["role"] for m in chat.messages] == ["assistant_transcript" if variants["replies"] != "message"
                                                  else "assistant_message"]  # fmt: skip


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_forms_of_one_reply_are_linked_by_any_id_in_any_order(box, base_url, conversation):
    relay, browser, task = start(conversation, LikuUpstream, client_config(base_url))
    await browser.message("transcript", role="agent", final=True, timeout=15)
    frames = [
        {"type": "assistant_message", "text": "Twice", "message_id": "m9"},
        {"type": "assistant_transcript", "text": "Twice", "message_id": "m9", "response_id": "r9"},
        {"type": "assistant_message", "text": "Twice", "message_id": "m9", "response_id": "r9"},
        {"type": "assistant_transcript", "text": "Thr", "message_id": "m10", "response_id": "r10",
         "status": "in_progress"},
        {"type": "assistant_message", "text": "Three", "message_id": "m10"},
        {"type": "assistant_transcript", "text": "Three", "message_id": "m11", "response_id": "r10"},
        {"type": "assistant_message", "text": "Done", "message_id": "m12"},
    ]  # fmt: skip
    for frame in frames:
        await box.state.send_raw(json.dumps(frame))
    await browser.message("transcript", role="agent", final=True, text="Done")
    await finish(relay, task)
    assert [t[1] for t in await astored(conversation)] == ["Hello, how can I help?", "Twice", "Three", "Done"]
    assert [m["id"] for m in finals(browser, "agent")][1:] == ["m9", "r10", "m12"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
@pytest.mark.parametrize("code,reason", [(1000, "Liku ended the conversation"),
                                         (1005, "Liku ended the conversation (no status)")])  # fmt: skip
async def test_the_guides_normal_closures_end_the_call_without_reconnecting(box, base_url, conversation, code,
                                                                             reason, settings):  # fmt: skip
    _relay, browser, task = start(conversation, LikuUpstream, client_config(base_url))
    await browser.message("transcript", role="agent", final=True, timeout=15)
    await box.state.end_all(code)
    await asyncio.wait_for(task, 10)
    assert browser.of_type("error") == []
    assert browser.of_type("ended") == [{"type": "ended", "reason": reason}]
    assert len(box.state.inits) == 1 and not box.state.sockets  # no second connection
    conv = await Conversation.objects.aget(id=conversation.id)
    assert (conv.status, conv.end_reason) == ("ended", reason)
    await deliver(settings, base_url)
    assert [s["status"] for s in await saves(conversation)] == ["saved"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
@pytest.mark.parametrize("variants", [{"conversation_ids": "server"}])
async def test_a_conversation_id_issued_by_the_server_is_the_one_saved(box, base_url, conversation, settings):
    relay, browser, task = start(conversation, LikuUpstream, client_config(base_url))
    await browser.message("transcript", role="agent", final=True, timeout=15)
    await finish(relay, task)
    await deliver(settings, base_url)
    [chat] = box.state.chats.values()
    [save] = await saves(conversation)
    assert save["status"] == "saved" and save["response"]["conversation_id"] == chat.conversation_id
    assert chat.conversation_id.startswith("conv_")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
@pytest.mark.parametrize("variants", [{"statuses": {"partial": "partial", "final": None}}])
async def test_status_words_the_guide_does_not_show_are_tolerated(box, base_url, conversation):
    relay, browser, task = start(conversation, LikuUpstream, client_config(base_url))
    await browser.message("transcript", role="agent", final=True, timeout=15)  # no status: final
    await box.state.send_raw(json.dumps({"type": "user_transcript", "text": "ho", "message_id": "u1",
                                         "status": "transcribing"}))  # fmt: skip
    await box.state.send_raw(json.dumps({"type": "assistant_transcript", "text": "Par", "message_id": "m5",
                                         "response_id": "r5", "status": "partial"}))  # fmt: skip
    await browser.message("transcript", role="agent", final=False, text="Par")
    await finish(relay, task)
    # An unknown word is final; the partial the call ended on is kept, unfinished.
    assert await astored(conversation) == [GREETING, ("user", "ho", True, False),
                                           ("agent", "Par", False, False)]  # fmt: skip


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_a_spanish_conversation_greets_in_spanish_with_a_spanish_voice(box, base_url, user):
    topic = await Topic.objects.acreate(
        title="Reservas", slug="reservas", persona="Host.", greeting="Hello, how can I help?",
        provider_options={"liku": {"topic_id": "79"}},
        translations={"es": {"greeting": "Hola, ¿en qué puedo ayudarle?", "persona": "Anfitrión."}},
    )  # fmt: skip
    conversation = await Conversation.objects.acreate(user=user, provider="liku", topic=topic,
                                                      voice="default", language="es",
                                                      status="connecting")  # fmt: skip
    relay, browser, task = start(conversation, LikuUpstream, client_config(base_url))
    greeting = await browser.message("transcript", role="agent", final=True, timeout=15)
    assert greeting["text"] == "Hola, ¿en qué puedo ayudarle?"
    await finish(relay, task)
    assert box.state.inits[-1]["language"] == "es"
    [chat] = box.state.chats.values()
    assert chat.voice.startswith("es")  # espeak-ng's Spanish voice


def test_status_words_are_settings():
    assert liku.status_words(None, liku.PARTIAL) == liku.status_words("", liku.PARTIAL) == liku.PARTIAL
    assert liku.status_words("streaming, typing", liku.PARTIAL) == {"streaming", "typing"}
    message = {"type": "user_transcript", "text": "h", "message_id": "m1", "status": "typing"}
    assert liku.to_event(message, partial=frozenset({"typing"})) == Transcript("user", "h", False, "m1")
    assert liku.to_event(message) == Transcript("user", "h", True, "m1")  # unknown word: final
    done = {**message, "status": "completed"}
    assert liku.to_event(done, partial=frozenset({"completed"})).final  # the guide's rule wins


# ---- Liku login: per-user token, kept on the server -------------------------------------------


@pytest.fixture
def liku_login(settings, base_url):
    settings.AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend",
                                        "sessions.auth_liku.LikuBackend"]  # fmt: skip
    chat = base_url.replace("http", "ws")
    settings.PROVIDERS = {
        **settings.PROVIDERS,
        "liku": {
            "api_url": base_url,
            "chat_url": chat,
            "email": "",
            "password": "",
            "token": "",
            "login": True,
        },
    }
    return base_url


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_liku_login_keeps_the_token_server_side_and_calls_run_on_it(
    box, liku_login, liku_topic, async_client
):
    from channels.testing import WebsocketCommunicator

    from playground.asgi import application

    refused = await async_client.post("/login/", {"username": sandbox.EMAIL, "password": "wrong"})
    assert refused.status_code == 200 and "didn't match" in refused.content.decode()
    response = await async_client.post("/login/", {"username": sandbox.EMAIL, "password": PASSWORD})
    assert response.status_code == 302
    [token] = box.state.tokens
    page = (await async_client.get("/talk/")).content.decode()
    assert "sandbox@liku.test" in page and token not in page
    user = await sync_to_async(lambda: Conversation.user.field.related_model.objects.get(
        username=sandbox.EMAIL))()  # fmt: skip
    assert not user.has_usable_password()
    conv = await Conversation.objects.acreate(user=user, provider="liku", topic=liku_topic, voice="default",
                                              language="ko")  # fmt: skip
    headers = [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000"),
               (b"cookie", f"sessionid={async_client.cookies['sessionid'].value}".encode())]  # fmt: skip
    ws = WebsocketCommunicator(application, conv.ws_path, headers=headers)
    assert (await ws.connect())[0]
    seen = []
    while not any(m.get("type") == "ready" for m in seen):
        raw = await ws.receive_from(15)
        assert token not in raw
        if isinstance(raw, str):
            seen.append(json.loads(raw))
            assert seen[-1]["type"] != "error", seen[-1]
    # The user's own token opened the chat (there is no service account configured).
    assert box.state.inits == [{"email": sandbox.EMAIL, "topic_id": "77", "face_id": "1", "liku_id": "33",
                                    "language": "ko"}]  # fmt: skip
    await ws.send_to(text_data=json.dumps({"type": "stop"}))
    while (await ws.receive_output(10))["type"] != "websocket.close":
        pass


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_without_liku_login_or_service_account_the_call_says_what_to_do(base_url, conversation):
    config = {**client_config(base_url, email="", password=""), "sandbox": False}
    _relay, browser, task = start(conversation, LikuUpstream, config)
    await asyncio.wait_for(task, 10)
    assert browser.of_type("error")[0]["message"].startswith(
        "No Liku credentials: log in with your Liku account"
    )


# ---- end to end: browser protocol -> our Daphne -> Liku client -> Liku sandbox in that Daphne ----


async def talk_to_liku(server, pcm: bytes):
    conv = server.conversation(provider="liku", topic="restaurant-booking", voice="default", language="en")
    async with call(server, conv["ws_path"]) as c:
        await c.until(lambda c: c.finals("agent"), 30)  # the topic's greeting
        await c.say(pcm)
        await c.until(lambda c: len(c.finals("agent")) >= 2)
        await c.stop()
    return conv, c.seen, c.audio


@pytest.mark.slow
def test_end_to_end_over_daphne_with_the_sandbox_mounted(server, speech):
    conv, seen, audio = asyncio.run(talk_to_liku(server, silence(300) + speech.pcm(SENTENCE + " for two")
                                                 + silence(1500)))  # fmt: skip
    ready = next(m for m in seen if m["type"] == "ready")
    assert ready["provider"] == "liku" and ready["accepts_text"] is False
    user = [m for m in seen if m["type"] == "transcript" and m["role"] == "user" and m["final"]]
    agent = [m for m in seen if m["type"] == "transcript" and m["role"] == "agent" and m["final"]]
    assert agent[0]["text"].startswith("Hello, this is Bella Vista") and "table" in user[0]["text"]
    assert "how many people" in agent[-1]["text"]
    assert audio > 24000 * 2 * 2  # seconds of agent speech at the playback rate
    assert seen[-1] == {"type": "ended", "reason": "stopped by the user"}
    assert "sandbox" not in json.dumps(seen) and "token" not in json.dumps(seen).lower()
    page = server.client().get(f"/history/{conv['id']}/").text
    assert user[0]["text"] in page and "how many people" in page
    api = f"{server.url}/sandbox/liku/api"
    code = "from django.conf import settings; from playground.sandbox import liku; " \
           "print(liku.password(settings.SECRET_KEY))"  # fmt: skip
    password = server.manage("shell", "-c", code).strip().splitlines()[-1]
    assert "saved" in server.manage("savetranscripts", "--once")  # the outbox worker delivers the queued save
    account = {"email": sandbox.EMAIL, "password": password}
    login = httpx.post(f"{api}/liku/authentication/", json=account)
    token = login.json()["token_key"]
    saved = httpx.get(f"{api}/_sandbox/saved", headers={"Authorization": f"Token {token}"}).json()
    assert conv["id"] in [s["conversation_id"] for s in saved]
    status = server.manage("shell", "-c", "from sessions.models import TranscriptSave as T; "
                           f"print(T.objects.get(conversation_id='{conv['id']}').status)")  # fmt: skip
    assert status.strip().splitlines()[-1] == "saved"


# ---- saving without a call (the outbox's side: sessions/outbox.py) ---------------------------


async def chat_data(base_url) -> str:
    """Connection data of a new chat of the sandbox account (REST only, no socket)."""
    async with httpx.AsyncClient() as http:
        token = (await login(http, base_url)).json()["token_key"]
        init = await http.get(f"{base_url}/api/init-websocket", params={"token": token, "topic_id": "77"})
    return init.text


def save_request(base_url, data="", key="key-1", **config) -> SaveRequest:
    return SaveRequest("conv-1", refs={"connection_data": data, "topic_id": "77"}, options={},
                       turns=({"sequence": 0, "role": "agent", "text": "Hello"},), idempotency_key=key,
                       config={**client_config(base_url), **config})  # fmt: skip


REFUSALS = [(400, True), (403, True), (404, True), (422, True), (408, False), (429, False), (500, False),
            (503, False)]  # fmt: skip


@pytest.mark.parametrize("status,permanent", REFUSALS)
async def test_a_save_refused_with_4xx_is_permanent_and_anything_else_transient(
    box, base_url, status, permanent
):
    box.state.save_error = (status, "Not today.")
    with pytest.raises(UpstreamError) as raised:
        await LikuUpstream.save_transcript(save_request(base_url, "anything"))
    assert (raised.value.code, raised.value.permanent) == ("liku.save", permanent)
    assert raised.value.message == f"Liku did not save the transcript (HTTP {status}: Not today.)."


async def test_an_unreachable_save_api_is_transient_and_nothing_to_save_is_permanent(base_url):
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UpstreamError) as raised:
        await LikuUpstream.save_transcript(save_request(base_url, "data", chat_url=closed, token="t" * 40))
    assert (raised.value.code, raised.value.permanent) == ("liku.unreachable", False)
    with pytest.raises(UpstreamError) as raised:
        await LikuUpstream.save_transcript(save_request(base_url, ""))  # the chat never started
    assert (raised.value.code, raised.value.permanent) == ("liku.save", True)


async def test_a_save_carries_the_turns_and_its_idempotency_key_which_the_sandbox_honours(box, base_url):
    data = await chat_data(base_url)
    first = await LikuUpstream.save_transcript(save_request(base_url, data))
    again = await LikuUpstream.save_transcript(save_request(base_url, data))  # a worker that lost the answer
    assert again == first and box.state.stored == 1 and box.state.save_requests == 2
    [kept] = box.state.saved
    assert kept["idempotency_key"] == "key-1"
    assert kept["transcript"] == [{"sequence": 0, "role": "agent", "text": "Hello"}]
    await LikuUpstream.save_transcript(save_request(base_url, data, key="key-2"))  # another version
    assert box.state.stored == 2
    await LikuUpstream.save_transcript(save_request(base_url, data, key="key-3", idempotency_header="none"))
    await LikuUpstream.save_transcript(save_request(base_url, data, key="key-3", idempotency_header="none"))
    assert box.state.stored == 4  # no key sent: nothing to recognise a repeat by
