"""Presenter mode (issue 11.5): a signed, expiring live-view link; the audience follows the call
read-only, on another Daphne process over Redis; nothing secret reaches viewers."""

import asyncio
import contextlib
import json
import socket
import time
import uuid
from urllib.parse import urlsplit

import pytest
import websockets
from django.core import signing
from django.test import Client
from django.urls import reverse

from sessions import audience
from sessions.models import Conversation
from tests.engine.speech import silence
from tests.peers import ThreadedPeer
from tests.server import Call, call, free_port, start_server

REDIS_URL = "redis://127.0.0.1:6379/0"
ROOM_TOKEN = "eyJ-room-token-for-the-owner-only"
SENTENCE = "I would like to book a table for two"


# ---- in process: links, the allow-list, the pages ---------------------------------------------


def test_a_link_names_its_conversation_and_is_refused_when_tampered_or_expired(settings):
    conversation_id = "7b0d8f3e-2a51-4c4b-9a8e-0d9e4f1c2b3a"
    token = audience.make_token(conversation_id)
    assert str(audience.read_token(token)) == conversation_id
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(signing.BadSignature):
        audience.read_token(tampered)
    with pytest.raises(signing.BadSignature):
        audience.read_token(audience.make_token(conversation_id, key="another deployment's key"))
    with pytest.raises(signing.SignatureExpired):
        audience.read_token(expired_token(conversation_id, settings.SECRET_KEY, settings.AUDIENCE_LINK_TTL))


def expired_token(conversation_id, key: str, ttl: int = 3600) -> str:
    """A link signed with the deployment's key, `ttl` (AUDIENCE_LINK_TTL) plus a minute ago."""

    class Earlier(signing.TimestampSigner):
        def timestamp(self):
            return signing.b62_encode(int(time.time()) - ttl - 60)

    return Earlier(key=key, salt=audience.SALT).sign(uuid.UUID(str(conversation_id)).hex)


def test_viewers_get_only_what_the_allow_list_names():
    join = {"type": "join", "transport": "livekit", "url": "wss://x", "token": ROOM_TOKEN, "call_id": "r"}
    assert audience.for_viewers(join) is None
    assert audience.for_viewers({"type": "error", "code": "liku.auth", "message": "token=abc"}) is None
    assert audience.for_viewers({"type": "ready", "provider": "liku"}) is None
    assert audience.for_viewers({"type": "something_new", "x": 1}) is None  # listed before it is mirrored
    transcript = {"type": "transcript", "role": "agent", "text": "Hi", "final": True, "id": "a1",
                  "interrupted": False, "token": "leak"}  # fmt: skip
    assert audience.for_viewers(transcript) == {k: v for k, v in transcript.items() if k != "token"}
    metrics = {"type": "metrics", "latency_ms": 420, "latency_from": "vad"}
    assert audience.for_viewers(metrics) == metrics
    waterfall = {"type": "waterfall", "id": "a3", "sequence": 7, "latency_ms": 640, "latency_from": "vad",
                 "user_final": 120, "first_audio": 640, "played": 730, "reply": 2100}  # fmt: skip
    assert audience.for_viewers(waterfall) == waterfall  # the talker's latency chips, for the audience too


async def test_the_mirror_publishes_in_order_batches_audio_and_sends_what_is_queued_when_closed():
    from channels.layers import InMemoryChannelLayer

    layer = InMemoryChannelLayer()
    conversation_id = uuid.uuid4()
    text, sound = await layer.new_channel(), await layer.new_channel()
    await layer.group_add(audience.group(conversation_id), text)
    await layer.group_add(audience.group(conversation_id, audio=True), sound)
    mirror = audience.Mirror(conversation_id, layer=layer)
    frames = [bytes([i]) * 960 for i in range(7)]
    mirror({"type": "join", "token": ROOM_TOKEN, "url": "wss://x", "transport": "livekit"})
    for frame in frames[:3]:
        mirror(frame)
    mirror({"type": "status", "state": "speaking"})
    for frame in frames[3:]:
        mirror(frame)
    mirror({"type": "ended", "reason": "stopped by the user"})
    await mirror.aclose()
    said = [json.loads((await layer.receive(text))["text"]) for _ in range(2)]
    heard = [(await layer.receive(sound))["bytes"] for _ in range(2)]
    assert said == [
        {"type": "status", "state": "speaking"},
        {"type": "ended", "reason": "stopped by the user"},
    ]
    assert heard == [b"".join(frames[:3]), b"".join(frames[3:])]  # batched, never across a message
    assert mirror.task.done()


@pytest.mark.django_db
def test_the_share_link_is_for_the_owner_of_a_live_call_and_comes_with_a_qr_code(
    alice, user, other_user, topic
):
    conv = Conversation.objects.create(
        user=user, provider="local", topic=topic, voice="en-us+f3", language="en"
    )
    response = alice.post(reverse("share", args=[conv.id]))
    assert response.status_code == 200
    link = response.json()
    assert urlsplit(link["url"]).path.startswith("/watch/")
    assert link["qr"].startswith("data:image/svg+xml")  # drawn on the server, no CDN
    assert link["expires_in"] == 3600
    stranger = Client()
    stranger.force_login(other_user)
    assert stranger.post(reverse("share", args=[conv.id])).status_code == 404
    conv.status = Conversation.Status.ENDED
    conv.save()
    assert alice.post(reverse("share", args=[conv.id])).status_code == 410


@pytest.mark.django_db
def test_the_watch_page_needs_a_valid_link_not_a_login(client, user, topic, settings):
    conv = Conversation.objects.create(
        user=user, provider="local", topic=topic, voice="en-us+f3", language="en"
    )
    token = audience.make_token(conv.id)
    page = client.get(reverse("watch", args=[token]))  # not logged in
    assert page.status_code == 200
    html = page.content.decode()
    assert f"/ws/audience/{token}/" in html and "Restaurant booking" in html
    assert "Voice: American English, female" in html and "en-us+f3" not in html
    assert client.get(reverse("watch", args=[token[:-2] + "xx"])).status_code == 403
    expired = client.get(
        reverse("watch", args=[expired_token(conv.id, settings.SECRET_KEY, settings.AUDIENCE_LINK_TTL)])
    )
    assert expired.status_code == 410
    assert "has expired" in expired.content.decode()


# ---- two Daphne processes over Redis -----------------------------------------------------------


def redis_running() -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", 6379), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
    return False


class VendorPeer(ThreadedPeer):
    """The echo provider's peer acting out a direct vendor: when the talker types, it sends a `join`
    (with its room token) and one exchange of transcripts."""

    def __init__(self):
        super().__init__(free_port())

    async def handler(self, ws):
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in ws:
                if isinstance(message, str) and "text" in json.loads(message):
                    await self._act(ws)

    async def _act(self, ws):
        join = {"transport": "livekit", "url": "ws://127.0.0.1:9/", "token": ROOM_TOKEN, "call_id": "room-1"}
        await ws.send(json.dumps({"join": join}))
        await ws.send(
            json.dumps({"transcript": {"role": "user", "text": "Is the terrace open?", "final": True}})
        )
        await ws.send(
            json.dumps({"transcript": {"role": "agent", "text": "Until ten tonight.", "final": True}})
        )


@pytest.fixture(scope="module")
def deployment():
    """Two Daphne processes of one deployment (one database, one SECRET_KEY) over Redis."""
    if not redis_running():
        pytest.skip("needs Redis on 127.0.0.1:6379 (bin/test starts it)")
    with VendorPeer() as peer:
        env = {"REDIS_URL": REDIS_URL, "ECHO_URL": f"ws://127.0.0.1:{peer.port}/?direct_media=1"}
        first = start_server(env)
        talker_server = next(first)
        second = start_server(env, share_with=talker_server)
        try:
            yield talker_server, next(second)
        finally:
            second.close()
            first.close()


def share(server, conversation_id) -> str:
    """The owner presses "Share live view": the token of the signed link."""
    client = server.client()
    response = client.post(
        f"/talk/{conversation_id}/share/", headers={"X-CSRFToken": client.cookies["csrftoken"]}
    )
    assert response.status_code == 200, response.text
    return urlsplit(response.json()["url"]).path.split("/")[2]


@contextlib.asynccontextmanager
async def viewer(server, token: str, audio: bool = False):
    """An audience socket: no login, only the link (and the site's own Origin, as the page has)."""
    url = f"{server.ws_url}/ws/audience/{token}/{'?audio=1' if audio else ''}"
    async with websockets.connect(url, origin=server.url) as ws:
        yield Call(ws)


async def close_code(server, token: str) -> tuple[int, list]:
    async with viewer(server, token) as v:
        with contextlib.suppress(websockets.ConnectionClosed):
            await v.until(lambda _: False, 15)
    return v.ws.close_code, v.seen


async def present(talker: Call) -> None:
    await talker.until(lambda c: c.of("ready"), 60)
    await talker.ws.send(json.dumps({"type": "present", "on": True}))
    await talker.until(lambda c: c.of("presenting"), 10)


def said(call: Call, role: str, words: str) -> bool:
    return any(words in m["text"].lower() for m in call.finals(role))


@pytest.mark.slow
def test_a_viewer_on_another_process_follows_the_call_and_hears_the_agent(deployment, speech):
    talker_server, viewer_server = deployment
    conv = talker_server.conversation(provider="local")

    async def scenario():
        async with call(talker_server, conv["ws_path"]) as talker:
            await present(talker)
            token = share(viewer_server, conv["id"])  # signed by the other process: one key
            async with (
                viewer(viewer_server, token, audio=True) as listener,
                viewer(viewer_server, token) as quiet,
            ):
                await listener.until(lambda v: v.of("snapshot"), 15)
                await quiet.until(lambda v: v.of("snapshot"), 15)
                watching = asyncio.gather(
                    listener.until(lambda v: said(v, "user", "table") and said(v, "agent", "how many"), 90),
                    quiet.until(lambda v: said(v, "user", "table") and said(v, "agent", "how many"), 90),
                )
                await talker.say(silence(1500) + speech.pcm(SENTENCE) + silence(2500))
                await talker.until(lambda c: said(c, "agent", "how many"), 60)
                await watching
            await talker.stop()
        return talker, listener, quiet

    talker, listener, quiet = asyncio.run(scenario())
    snapshot = listener.of("snapshot")[0]
    assert snapshot["topic"] == "Restaurant booking" and snapshot["provider"] == "Built-in offline agent"
    assert listener.audio > 24000  # half a second of the agent's voice, mirrored across processes
    assert quiet.audio == 0  # only viewers who asked for it get audio
    user_text = [m["text"] for m in talker.finals("user")]
    assert [m["text"] for m in listener.finals("user")] == user_text  # the same words the talker saw
    assert {m["type"] for m in listener.seen} <= {"snapshot", *audience.MIRRORED}


@pytest.mark.slow
def test_viewers_cannot_control_the_call_and_never_see_the_room_token(deployment):
    talker_server, viewer_server = deployment
    conv = talker_server.conversation(provider="echo", voice="default")

    async def scenario():
        async with call(talker_server, conv["ws_path"]) as talker:
            await present(talker)
            token = share(talker_server, conv["id"])
            async with viewer(viewer_server, token) as v:
                await v.until(lambda v: v.of("snapshot"), 15)
                for attempt in [json.dumps({"type": "stop"}), json.dumps({"type": "text", "text": "hijack"}),
                                json.dumps({"type": "present", "on": False}), b"\0" * 640]:  # fmt: skip
                    await v.ws.send(attempt)
                await v.until(lambda v: len(v.of("error")) == 4, 15)
                # The talker's call goes on, still presented: its typed turn reaches the viewer.
                await talker.ws.send(json.dumps({"type": "text", "text": "Is the terrace open?"}))
                await v.until(lambda v: said(v, "agent", "until ten"), 30)
                await talker.until(lambda c: c.of("join") and said(c, "agent", "until ten"), 30)
                status = json.loads(
                    talker_server.manage("shell", "-c", status_code(conv["id"])).splitlines()[-1]
                )
                await talker.stop()
                await v.until(lambda v: v.of("ended"), 15)
        return talker, v, status

    talker, v, status = asyncio.run(scenario())
    assert status == "active"  # the viewer's stop did nothing
    assert [e["code"] for e in v.of("error")] == ["read_only"] * 4
    assert all("read-only" in e["message"] for e in v.of("error"))
    assert not any("hijack" in json.dumps(m) for m in talker.seen)  # the viewer's text never reached the call
    assert talker.of("join")[0]["token"] == ROOM_TOKEN  # the owner got the room...
    assert not v.of("join") and ROOM_TOKEN not in json.dumps(v.seen)  # ...the audience never
    assert said(v, "user", "terrace")


def status_code(conversation_id) -> str:
    return ("import json; from sessions.models import Conversation as C; "
            f"print(json.dumps(C.objects.get(id='{conversation_id}').status))")  # fmt: skip


@pytest.mark.slow
def test_a_viewer_without_a_valid_link_is_refused(deployment):
    talker_server, viewer_server = deployment
    conv = talker_server.conversation(provider="echo", voice="default")
    token = share(talker_server, conv["id"])
    expired = expired_token(conv["id"], talker_server.env["SECRET_KEY"])
    foreign = audience.make_token(conv["id"], key="not this deployment's key")

    async def attempts():
        return [await close_code(viewer_server, t) for t in (token[:-3] + "abc", foreign, expired)]

    (tampered, tampered_seen), (other, _), (old, old_seen) = asyncio.run(attempts())
    assert (tampered, other, old) == (audience.BAD_LINK, audience.BAD_LINK, audience.EXPIRED_LINK)
    assert tampered_seen[0]["code"] == "bad_link" and old_seen[0]["code"] == "link_expired"
    assert not any(m["type"] == "snapshot" for m in tampered_seen + old_seen)  # nothing of the call
    client = viewer_server.client()
    assert client.get(f"/watch/{expired}/").status_code == 410
    assert client.get(f"/watch/{token[:-3]}abc/").status_code == 403
    assert client.get(f"/watch/{token}/").status_code == 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_a_viewer_is_let_go_when_the_link_expires_while_watching(user, topic, settings):
    """The link's time limit holds for a viewer who joined in time: the next message after it
    brings `error` `link_expired` and close 4410, while the call's mirror goes on."""
    from channels.testing import WebsocketCommunicator

    from playground.asgi import application

    settings.AUDIENCE_LINK_TTL = 2
    conv = await Conversation.objects.acreate(user=user, topic=topic, provider="local", voice="en-us+f3",
                                              language="en", status=Conversation.Status.ACTIVE)  # fmt: skip
    headers = [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")]
    ws = WebsocketCommunicator(application, f"/ws/audience/{audience.make_token(conv.id)}/", headers=headers)
    assert (await ws.connect())[0]
    assert json.loads(await ws.receive_from(5))["type"] == "snapshot"
    mirror = audience.Mirror(conv.id)
    mirror({"type": "status", "state": "speaking"})
    assert json.loads(await ws.receive_from(5)) == {"type": "status", "state": "speaking"}
    await asyncio.sleep(2.2)
    mirror({"type": "status", "state": "listening"})
    error = json.loads(await ws.receive_from(5))
    assert (error["type"], error["code"]) == ("error", "link_expired")
    assert (await ws.receive_output(5)) == {"type": "websocket.close", "code": audience.EXPIRED_LINK}
    await mirror.aclose()
    await ws.disconnect()
