"""Retell: our LLM WebSocket against the Retell sandbox (which plays Retell), the sandbox's checks
against a deliberately bad LLM server of the test's own, create-web-call, our client through the
relay, and the whole product over a real Daphne."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter

from playground.sandbox import retell as sandbox
from sessions.models import Conversation, Topic
from sessions.retell_llm import group_name
from sessions.routing import llm_websocket_urlpatterns
from sessions.sandbox_scripts import topic_scripts
from sessions.upstreams.base import Ended, Join
from sessions.upstreams.retell import RetellUpstream
from tests.engine.speech import silence
from tests.peers import finish, serving, stream
from tests.server import call
from tests.vendors.helpers import astored, start

DEPLOYMENT = "retell-test-deployment-secret"
KEY = sandbox.api_key(DEPLOYMENT)
AGENT = "agent_test_host"
GREETING = "Hello, this is the test host. How can I help?"
OPTIONS = {"agent_id": AGENT, "functions": ["current_time", "check_availability"]}
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_thread_connections")]


# ---- fixtures and helpers ---------------------------------------------------------------------


def make_topic(**options) -> Topic:
    return Topic.objects.get_or_create(
        slug="retell-host",
        defaults={"title": "Retell host", "persona": "You are a host.", "greeting": GREETING,
                  "phrases": ["I would like to book a table", "what are your opening hours", "goodbye"],
                  "faq": [{"question": "opening hours", "answer": "We open at noon every day.",
                           "keywords": ["open", "opening", "hours"]},
                          {"question": "book a table", "answer": "For how many people?",
                           "keywords": ["book"]}],
                  "provider_options": {"retell": {**OPTIONS, **options}}},
    )[0]  # fmt: skip


def make_conversation(call_id: str = "", **options) -> Conversation:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get_or_create(username="retell-tester")[0]
    refs = {"call_id": call_id} if call_id else {}
    return Conversation.objects.create(user=user, provider="retell", topic=make_topic(**options),
                                       voice="default", language="en", status="active",
                                       provider_refs=refs)  # fmt: skip


@contextlib.asynccontextmanager
async def retell(llm_url: str | None = None, **variants):
    """Our LLM WebSocket and the Retell sandbox on loopback ports: yields (sandbox app, its base URL).
    The sandbox dials `llm_url` (default: our LLM WebSocket)."""
    async with serving(URLRouter(llm_websocket_urlpatterns)) as ours:
        url = llm_url or ours.replace("http://", "ws://") + "/llm-websocket"
        app = sandbox.make_app(DEPLOYMENT, scripts=topic_scripts, llm_url=url, **variants)
        async with serving(app) as base:
            yield app, base


async def create_call(base: str, key: str = KEY, **body) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(f"{base}/v2/create-web-call", json={"agent_id": AGENT, **body},
                               headers={"Authorization": f"Bearer {key}"} if key else {})  # fmt: skip


@contextlib.asynccontextmanager
async def web_call(app, base: str, *, ours: bool = True, **options):
    """A call created at the sandbox (and, for our LLM socket, known as a conversation's call id),
    its audio socket open: yields (sandbox Call, audio socket)."""
    await sync_to_async(make_topic)(**options)
    made = (await create_call(base)).json()
    call_id = made["call_id"]
    if ours:
        await sync_to_async(make_conversation)(call_id, **options)
    ws_url = base.replace("http://", "ws://") + f"/audio-websocket/{call_id}?sample_rate=16000"
    async with websockets.connect(ws_url, close_timeout=0.5) as audio:
        yield app.state.calls[call_id], audio


async def until(predicate, timeout: float = 10.0):
    async with asyncio.timeout(timeout):
        while not (found := predicate()):
            await asyncio.sleep(0.02)
    return found


def responses(call, number: int) -> list[dict]:
    return [m for m in call.received
            if m.get("response_type") == "response" and m.get("response_id") == number]  # fmt: skip


def text_of(call, number: int) -> str:
    return "".join(m["content"] for m in responses(call, number))


def finals(role: str):
    return lambda b: [m for m in b.of_type("transcript") if m["role"] == role and m["final"]]


def lone_sandbox():
    """A sandbox whose calls are only created here, never dialled."""
    return sandbox.make_app(DEPLOYMENT, scripts=topic_scripts, llm_url="ws://127.0.0.1:9/llm-websocket")


def violations(app) -> list[str]:
    return [v["problem"] for v in app.state.violations]


# ---- our LLM WebSocket against the sandbox ------------------------------------------------------


async def test_we_speak_first_config_then_the_greeting_as_response_zero():
    """Opening: config (auto_reconnect, call_details), then response_id 0 with the topic's greeting."""
    async with retell() as (app, base), web_call(app, base) as (call, _audio):
        await until(lambda: 0 in call.complete)
        first, begin = call.received[0], responses(call, 0)
        assert first == {"response_type": "config", "config": {"auto_reconnect": True, "call_details": True}}
        assert begin == [{"response_type": "response", "response_id": 0, "content": GREETING,
                          "content_complete": True}]  # fmt: skip
        await until(lambda: call.transcript and call.transcript[0]["content"] == GREETING)
    assert violations(app) == []


async def test_a_topic_can_let_the_user_speak_first():
    async with retell() as (app, base), web_call(app, base, user_speaks_first=True) as (call, _audio):
        await until(lambda: 0 in call.complete)
        assert text_of(call, 0) == ""
    assert violations(app) == []


async def test_a_question_is_answered_from_the_faq_streamed_and_complete():
    async with retell() as (app, base), web_call(app, base) as (call, _audio):
        await until(lambda: 0 in call.complete)
        await call.user_says("what are your opening hours")
        await until(lambda: 1 in call.complete)
        assert text_of(call, 1) == "We open at noon every day."
        assert responses(call, 1)[-1]["content_complete"] is True
        assert not any(m.get("end_call") for m in responses(call, 1))
    assert violations(app) == []


async def test_a_newer_response_id_supersedes_the_older_answer():
    """The user kept talking: id 1 is superseded by id 2, which alone is answered to completion."""
    async with retell() as (app, base), web_call(app, base) as (call, _audio):
        await until(lambda: 0 in call.complete)
        await call.user_says("what are your", keep_talking="opening hours")
        await until(lambda: 2 in call.complete)
        assert text_of(call, 2) == "We open at noon every day."
        assert 1 not in call.complete or text_of(call, 1)  # whatever of id 1 was out is discarded
    assert violations(app) == []


def slow_llm():
    """An OpenAI-compatible chat-completions server (the outside world) that streams slowly."""
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def chunks():
        for word in "We are open from noon until late every single day of the week .".split():
            yield f"data: {json.dumps({'choices': [{'delta': {'content': word + ' '}}]})}\n\n"
            await asyncio.sleep(0.3)
        yield "data: [DONE]\n\n"

    async def complete(request):
        return StreamingResponse(chunks(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", complete, methods=["POST"])])


async def test_an_answer_still_streaming_is_abandoned_when_a_newer_id_comes(settings):
    """With a slow LLM, id 1 is still streaming when the user goes on: not one more chunk of it
    follows id 2, and id 1 is never completed."""
    async with serving(slow_llm()) as llm:
        local = {**settings.PROVIDERS["local"], "llm": {"base_url": f"{llm}/v1", "model": "slow"}}
        settings.PROVIDERS = {**settings.PROVIDERS, "local": local}
        async with retell() as (app, base), web_call(app, base) as (call, _audio):
            await until(lambda: 0 in call.complete)
            await call.request("response_required")
            await until(lambda: responses(call, 1), timeout=10)  # id 1 is under way
            await call.user_says("what are your opening hours")
            await until(lambda: 2 in call.complete, timeout=20)
            first_of_2 = call.received.index(responses(call, 2)[0])
            assert 1 not in call.complete
            assert all(call.received.index(m) < first_of_2 for m in responses(call, 1))
    assert violations(app) == []


async def test_a_silence_after_the_agent_gets_one_reminder_answered():
    async with retell(reminder_s=0.5) as (app, base), web_call(app, base) as (call, _audio):
        await until(lambda: call.reminders == 1, timeout=20)
        await until(lambda: 1 in call.complete)
        sent = [m for m in call.received if m.get("response_type") == "response" and m["response_id"] == 1]
        assert "still there" in "".join(m["content"] for m in sent)
        await asyncio.sleep(1.5)
        assert call.reminders == 1  # one reminder per silence
    assert violations(app) == []


async def test_ping_pong_is_echoed_and_a_reconnect_gets_config_and_greeting_again():
    async with retell(ping_s=0.2) as (app, base), web_call(app, base) as (call, _audio):
        await until(lambda: call.pongs >= 2)
        await call.drop_llm()
        await until(lambda: call.connections == 2 and call.begins == 2 and 0 in call.complete)
        configs = [m for m in call.received if m.get("response_type") == "config"]
        assert len(configs) == 2 and len(responses(call, 0)) == 2
        pongs = call.pongs
        await until(lambda: call.pongs > pongs)  # the new connection answers pings too
    assert violations(app) == []


async def test_goodbye_ends_the_call_on_the_final_chunk_only():
    async with retell() as (app, base), web_call(app, base) as (call, audio):
        await until(lambda: 0 in call.complete)
        await call.user_says("thank you goodbye")
        await until(lambda: 1 in call.complete)
        chunks = responses(call, 1)
        assert chunks[-1]["end_call"] is True and not any(m.get("end_call") for m in chunks[:-1])
        with pytest.raises(websockets.ConnectionClosed):
            async with asyncio.timeout(20):
                while True:
                    await audio.recv()
        assert audio.close_code == 1000 and audio.close_reason == "end_call"
    assert violations(app) == []


async def test_a_tool_is_invoked_and_its_result_spoken():
    async with retell() as (app, base), web_call(app, base) as (call, _audio):
        await until(lambda: 0 in call.complete)
        await call.user_says("what time is it")
        await until(lambda: 1 in call.complete)
        invocation = next(m for m in call.received if m.get("response_type") == "tool_call_invocation")
        result = next(m for m in call.received if m.get("response_type") == "tool_call_result")
        assert invocation["name"] == "current_time" and json.loads(invocation["arguments"]) == {}
        assert result["tool_call_id"] == invocation["tool_call_id"]
        assert "time" in json.loads(result["content"])
        assert text_of(call, 1).startswith("It is ")
    assert violations(app) == []


async def test_an_unknown_call_id_is_refused_at_the_handshake():
    async with serving(URLRouter(llm_websocket_urlpatterns)) as ours:
        url = ours.replace("http://", "ws://") + "/llm-websocket/call_nobody_made"
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(url)
        assert refused.value.response.status_code == 403
        # An ended call's id is refused too.
        conversation = await sync_to_async(make_conversation)("call_over")
        await Conversation.objects.filter(id=conversation.id).aupdate(status="ended")
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(ours.replace("http://", "ws://") + "/llm-websocket/call_over")


async def test_with_allowed_ips_set_other_source_addresses_are_refused(settings):
    """RETELL_LLM_ALLOWED_IPS: even a known call id is refused from an address not listed."""
    settings.PROVIDERS = {**settings.PROVIDERS, "retell": {**settings.PROVIDERS["retell"],
                                                           "llm_allowed_ips": "100.20.5.228"}}  # fmt: skip
    async with serving(URLRouter(llm_websocket_urlpatterns)) as ours:
        await sync_to_async(make_conversation)("call_known")
        url = ours.replace("http://", "ws://") + "/llm-websocket/call_known"
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(url)
        settings.PROVIDERS["retell"]["llm_allowed_ips"] = "100.20.5.228, 127.0.0.1"
        async with websockets.connect(url) as ws:
            assert json.loads(await ws.recv())["response_type"] == "config"


async def test_frames_that_are_not_json_are_ignored():
    async with serving(URLRouter(llm_websocket_urlpatterns)) as ours:
        await sync_to_async(make_conversation)("call_direct")
        async with websockets.connect(ours.replace("http://", "ws://") + "/llm-websocket/call_direct") as ws:
            assert json.loads(await ws.recv())["response_type"] == "config"
            assert json.loads(await ws.recv())["response_id"] == 0
            await ws.send("not json")
            await ws.send(b"\x00\x01")
            await ws.send(json.dumps({"interaction_type": "ping_pong", "timestamp": 1}))
            assert json.loads(await ws.recv())["response_type"] == "ping_pong"


# ---- the sandbox's checks, against a bad LLM server of our own -----------------------------------


@contextlib.asynccontextmanager
async def bad_llm(behaviour):
    """A tiny LLM WebSocket server that runs `behaviour(ws)` per connection; yields its ws base URL."""

    async def serve(ws):
        with contextlib.suppress(websockets.ConnectionClosed):
            await behaviour(ws)

    async with websockets.serve(serve, "127.0.0.1", 0) as server:
        host, port = server.sockets[0].getsockname()[:2]
        yield f"ws://{host}:{port}/llm-websocket"


async def test_the_sandbox_records_a_missing_begin_message_and_ends_the_call():
    async def silent(ws):
        await ws.wait_closed()

    async with bad_llm(silent) as url, retell(url, begin_timeout=0.5) as (app, base):
        async with web_call(app, base, ours=False) as (_call, audio):
            seen = []
            with pytest.raises(websockets.ConnectionClosed):
                async with asyncio.timeout(10):
                    while True:
                        seen.append(await audio.recv())
            assert any('"violation"' in m and "begin message" in m for m in seen if isinstance(m, str))
            assert audio.close_code == 1011
    assert any("no begin message" in v for v in violations(app))


async def test_the_sandbox_validates_fields_ids_and_actions():
    async def sloppy(ws):
        await ws.send(json.dumps({"response_type": "response", "response_id": 0, "content": "Hi",
                                  "content_complete": True}))  # fmt: skip
        await ws.send(json.dumps({"response_type": "response", "response_id": "0", "content": 5}))
        await ws.send(json.dumps({"response_type": "response", "response_id": 7, "content": "x",
                                  "content_complete": True}))  # fmt: skip
        request = json.loads(await ws.recv())
        while request.get("interaction_type") != "response_required":
            request = json.loads(await ws.recv())
        number = request["response_id"]
        await ws.send(json.dumps({"response_type": "response", "response_id": number, "content": "Bye",
                                  "content_complete": False, "end_call": True}))  # fmt: skip
        await ws.send(json.dumps({"response_type": "response", "response_id": number, "content": "",
                                  "content_complete": True, "end_call": True,
                                  "transfer_number": "+1"}))  # fmt: skip
        await ws.send(json.dumps({"response_type": "shout"}))
        await ws.send("not json")
        await ws.wait_closed()

    async with bad_llm(sloppy) as url, retell(url) as (app, base):
        async with web_call(app, base, ours=False) as (call, audio):
            await until(lambda: 0 in call.complete)
            await call.user_says("hello there")
            await until(lambda: len(app.state.violations) >= 6)
            shown = []
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    while True:
                        message = await audio.recv()
                        if isinstance(message, str) and "violation" in message:
                            shown.append(json.loads(message)["message"])
    found = violations(app)
    expected = ["response: response_id missing or of the wrong type", "content_complete missing",
                "response_id 7, never requested", "end_call on a chunk that is not the final one",
                "mutually exclusive", "unknown response_type 'shout'", "not JSON"]  # fmt: skip
    for problem in expected:
        assert any(problem in v for v in found), (problem, found)
    assert shown and all(any(s == v for v in found) for s in shown)  # each is shown on the audio socket


async def test_the_sandbox_reconnects_a_silent_llm_server_at_most_twice():
    connections = []

    async def mute_after_begin(ws):
        connections.append(ws)
        await ws.send(json.dumps({"response_type": "config", "config": {"auto_reconnect": True}}))
        await ws.send(json.dumps({"response_type": "response", "response_id": 0, "content": "",
                                  "content_complete": True}))  # fmt: skip
        async for _ in ws:  # never answers ping_pong
            pass

    async with bad_llm(mute_after_begin) as url, retell(url, silence_s=0.5) as (app, base):
        async with web_call(app, base, ours=False) as (_call, audio):
            with pytest.raises(websockets.ConnectionClosed):
                async with asyncio.timeout(15):
                    while True:
                        await audio.recv()
            assert audio.close_code == 1011
    assert len(connections) == 3  # the first dial and two reconnects
    assert any("silent" in v for v in violations(app))


# ---- create-web-call ------------------------------------------------------------------------------


async def test_create_web_call_refuses_a_missing_key_a_bad_body_and_an_unknown_agent():
    await sync_to_async(make_topic)()
    async with serving(lone_sandbox()) as base:
        assert (await create_call(base, key="")).status_code == 401
        assert (await create_call(base, key="wrong")).status_code == 401
        assert (await create_call(base, agent_id="agent_nobody")).status_code == 404
        async with httpx.AsyncClient() as http:
            headers = {"Authorization": f"Bearer {KEY}"}
            bad = await http.post(f"{base}/v2/create-web-call", content=b"{", headers=headers)
        assert bad.status_code == 400
        made = await create_call(base)
        assert made.status_code == 201
        body = made.json()
        assert body["call_type"] == "web_call" and body["call_status"] == "registered"
        assert body["agent_id"] == AGENT and body["call_id"] and body["access_token"]
        assert (await create_call(base, agent_id="agent_sandbox")).status_code == 201  # known when run alone


async def test_the_sandbox_forgets_calls_never_joined(monkeypatch):
    await sync_to_async(make_topic)()
    monkeypatch.setattr(sandbox, "REGISTERED_TTL_S", 0)
    app = lone_sandbox()
    async with serving(app) as base:
        first = (await create_call(base)).json()["call_id"]
        second = (await create_call(base)).json()["call_id"]
    assert first not in app.state.calls and second in app.state.calls


# ---- our client through the relay -------------------------------------------------------------------


async def test_with_real_credentials_the_client_yields_a_join_without_the_provider_key():
    """A fake "real" Retell (the sandbox's create-web-call with a key): direct media, a Join."""
    conversation = await sync_to_async(make_conversation)()
    async with serving(lone_sandbox()) as base:
        config = {"api_url": base, "api_key": KEY, "sandbox": False}
        session_options = await sync_to_async(lambda: conversation.topic.options_for("retell"))()
        client = RetellUpstream(_session(conversation, session_options, config))
        assert client.capabilities.direct_media and not RetellUpstream.capabilities.direct_media
        await client.connect()
        try:
            events = client.events()
            join = await anext(events)
            assert isinstance(join, Join) and join.transport == "retell" and join.url == ""
            assert join.call_id == client.call_id and join.token
            assert KEY not in json.dumps(join.__dict__) and KEY not in json.dumps(client.refs)
            assert client.refs == {"call_id": join.call_id, "agent_id": AGENT}
            await client.forward({"event": "agent_start_talking"})
            assert (await anext(events)).state == "speaking"
            await client.forward({"event": "update", "transcript": [{"role": "agent", "content": "Hi"}]})
            await client.forward({"event": "error", "message": f"token {join.token} rejected"})
            error = await anext(events)  # an update brings no turn: the LLM socket has them
            assert error.code == "retell.sdk" and join.token not in error.message
            # What our LLM socket (any process) learns reaches the client through the call's group.
            item = {"kind": "transcript", "role": "user", "text": "Hi", "final": True, "index": 1}
            message = {"type": "retell.event", "item": item}
            await get_channel_layer().group_send(group_name(join.call_id), message)
            turn = await anext(events)
            assert (turn.role, turn.text, turn.final, turn.id) == ("user", "Hi", True, f"{join.call_id}:1")
            await client.forward({"event": "call_ended"})
            assert isinstance(await anext(events), Ended)
        finally:
            await client.close()


def _session(conversation, options, config):
    from sessions.upstreams.base import Session

    return Session(
        str(conversation.id), topic=None, voice="default", language="en", options=options, config=config
    )


@pytest.mark.slow
async def test_a_spoken_relayed_call_through_the_sandbox_stores_the_turns(speech):
    conversation = await sync_to_async(make_conversation)()
    async with retell() as (app, base):
        config = {**sandbox.client_config(base, DEPLOYMENT), "sandbox": True,
                  "llm_url": app.state.llm_url}  # fmt: skip
        relay, browser, task = start(conversation, RetellUpstream, config)
        await browser.message("ready", timeout=20)
        greeting = (await browser.wait_for(finals("agent"), timeout=20))[0]
        assert greeting["text"] == GREETING
        await stream(relay, silence(300) + speech.pcm("what are your opening hours") + silence(1500))
        user = (await browser.wait_for(finals("user"), timeout=15))[0]
        assert "opening hours" in user["text"]
        answer = (await browser.wait_for(lambda b: finals("agent")(b)[1:], timeout=15))[0]
        assert answer["text"] == "We open at noon every day."
        assert browser.audio_ms > 1000
        await finish(relay, task)
    turns = await astored(conversation)
    assert turns[0] == ("agent", GREETING, True, False)
    assert turns[1][0] == "user" and "opening hours" in turns[1][1]
    assert turns[2] == ("agent", "We open at noon every day.", True, False)
    assert violations(app) == []


@pytest.mark.slow
async def test_another_llm_servers_violations_reach_the_page_and_its_turns_come_from_the_sandbox():
    """A topic's llm_websocket_url: the sandbox dials that server; what it gets wrong is shown to the
    browser as a recoverable retell.violation, and the turns come from the sandbox's updates."""

    async def careless(ws):
        await ws.send(json.dumps({"response_type": "response", "response_id": 5, "content": "Hm.",
                                  "content_complete": True}))  # fmt: skip
        await ws.send(json.dumps({"response_type": "response", "response_id": 0, "content": "Hi there.",
                                  "content_complete": True}))  # fmt: skip
        await ws.wait_closed()

    async with bad_llm(careless) as url, retell(url) as (app, base):
        conversation = await sync_to_async(make_conversation)(llm_websocket_url=url)
        config = {**sandbox.client_config(base, DEPLOYMENT), "sandbox": True}
        relay, browser, task = start(conversation, RetellUpstream, config)
        error = await browser.message("error", timeout=20, code="retell.violation")
        assert "response_id 5, never requested" in error["message"] and error["fatal"] is False
        greeting = (await browser.wait_for(finals("agent"), timeout=20))[0]
        assert greeting["text"] == "Hi there."
        await finish(relay, task)
    assert (await astored(conversation))[0] == ("agent", "Hi there.", True, False)
    assert any("response_id 5, never requested" in v for v in violations(app))


async def test_a_reconnected_llm_socket_stores_no_turn_twice():
    """After Retell dials again, the new socket sees the whole transcript anew: the turns already
    stored are not stored again."""
    conversation = await sync_to_async(make_conversation)()
    async with retell() as (app, base):
        config = {**sandbox.client_config(base, DEPLOYMENT), "sandbox": True, "llm_url": app.state.llm_url}
        relay, browser, task = start(conversation, RetellUpstream, config)
        await browser.wait_for(finals("agent"), timeout=20)
        call = next(iter(app.state.calls.values()))
        await call.drop_llm()
        await until(lambda: call.connections == 2 and 0 in call.complete)
        await call.user_says("what are your opening hours")
        await browser.wait_for(lambda b: finals("agent")(b)[1:], timeout=15)
        await finish(relay, task)
    turns = await astored(conversation)
    assert [t[:2] for t in turns] == [("agent", GREETING), ("user", "what are your opening hours"),
                                      ("agent", "We open at noon every day.")]  # fmt: skip


# ---- the product over a real Daphne ---------------------------------------------------------------


@pytest.mark.slow
def test_over_daphne_a_spoken_retell_sandbox_call_with_the_demo_topic(server, speech):
    """The demo topic names agent_restaurant: the mounted sandbox dials our LLM WebSocket on the same
    server, which asks the demo function for a table; transcripts, audio, the tool call and the
    turns reach the page and the history."""
    conversation = server.conversation(provider="retell", voice="default")
    ws_path = f"/ws/conversations/{conversation['id']}/"

    async def talk():
        async with call(server, ws_path) as c:
            await c.until(lambda c: c.finals("agent"), 40)
            await c.say(silence(300) + speech.pcm("I would like to book a table for two") + silence(2000))
            await c.until(lambda c: c.answered(), 20)
            await c.stop()
        return c

    c = asyncio.run(talk())
    finals = c.finals()
    assert finals[0]["text"].startswith("Hello, this is Bella Vista")
    assert any(m["role"] == "user" and "table" in m["text"] for m in finals)
    assert "table" in finals[-1]["text"]
    tool = c.of("tool_call")[0]
    assert tool["name"] == "check_availability" and tool["arguments"]["party_size"] == 2
    assert c.audio > 24000 * 2 * 2  # seconds of agent speech at the browser's 24 kHz
    assert not [m for m in c.of("error") if m["code"] == "retell.violation"]
    code = "from django.conf import settings; from playground.sandbox import retell; " \
           "print(retell.api_key(settings.SECRET_KEY))"  # fmt: skip
    key = server.manage("shell", "-c", code).strip().splitlines()[-1]
    assert key not in json.dumps(c.seen)
    page = server.client().get(f"/history/{conversation['id']}/").text
    assert "Bella Vista" in page and finals[-1]["text"].split(",")[0] in page


@pytest.mark.slow
def test_over_daphne_the_llm_websocket_needs_no_origin_but_obeys_allowed_hosts(server):
    code = ("from django.contrib.auth.models import User; from sessions.models import Conversation, Topic; "
            "Conversation.objects.create(user=User.objects.get(username='demo'), provider='retell', "
            "topic=Topic.objects.get(slug='restaurant-booking'), voice='default', language='en', "
            "status='active', provider_refs={'call_id': 'call_hosttest'})")  # fmt: skip
    server.manage("shell", "-c", code)
    target, _, port = server.ws_url.split("://", 1)[1].rpartition(":")

    async def status(host: str) -> int:
        uri = f"ws://{host}:{port}/llm-websocket/call_hosttest"
        try:
            async with websockets.connect(uri, host=target, port=int(port)) as ws:  # no Origin header
                assert json.loads(await ws.recv())["response_type"] == "config"
                return 101
        except websockets.InvalidStatus as refused:
            return refused.response.status_code

    assert asyncio.run(status("127.0.0.1")) == 101
    assert asyncio.run(status("evil.example")) == 403
