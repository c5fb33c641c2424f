"""The recording: one stereo 16 kHz WAV per call, the user left and the agent as played right.

Tones sent at known moments must land at the matching offsets; agent audio sent ahead of playback
and then cleared (barge-in) must not be in the file; a call whose server is killed leaves a
readable WAV of what was recorded so far."""

import asyncio
import io
import os
import signal
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from sessions.models import Conversation, Turn
from sessions.recording import RATE, Recording, heard_part
from sessions.relay import AGENT_CHANNEL, USER_CHANNEL, Browser, Relay
from sessions.upstreams.base import Session
from sessions.upstreams.echo import EchoUpstream
from tests.browser_double import BrowserPeer
from tests.peers import EchoPeer, finish, realtime, say
from tests.server import call, start_server
from tests.test_direct import DirectVendor

FRAME_S = 0.02
SAMPLE_MS = 1000 / RATE


def tone(seconds: float, rate: int = RATE, freq: float = 440.0, amplitude: int = 8000) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def silence(seconds: float, rate: int = RATE) -> bytes:
    return b"\x00\x00" * round(seconds * rate)


def read_wav(data: bytes) -> tuple[wave.Wave_read, np.ndarray]:
    """The WAV's parameters and its samples as (frames, 2)."""
    reader = wave.open(io.BytesIO(data), "rb")
    frames = reader.readframes(reader.getnframes())
    samples = np.frombuffer(frames, dtype="<i2").reshape(-1, reader.getnchannels())
    return reader, samples


def loud(channel: np.ndarray, threshold: int = 1500) -> tuple[float, float] | None:
    """(first, last) moment in ms where the channel is loud: a tone's onset and end."""
    where = np.nonzero(np.abs(channel.astype(np.int32)) > threshold)[0]
    return (where[0] * SAMPLE_MS, where[-1] * SAMPLE_MS) if len(where) else None


def test_a_recording_aligns_both_channels_and_drops_what_a_clear_cut(tmp_path):
    """On an explicit clock: the user's tone at 1.00-1.30 s, 2 s of agent tone sent at once at
    1.50 s (faster than real time, as the relay sends), cleared at 2.00 s, the call closed at 3 s."""
    t0 = 5000.0
    path = tmp_path / "call.wav"
    with open(path, "w+b") as file:
        recording = Recording(file, t0, agent_rate=24000)
        user = silence(1.0) + tone(0.3) + silence(1.7)
        agent = tone(2.0, rate=24000)
        for n in range(150):  # 20 ms user frames, each arriving as it ends
            now = t0 + (n + 1) * FRAME_S
            recording.user(user[n * 640 : (n + 1) * 640], now)
            if n + 1 == 75:  # 1.50 s
                for i in range(0, len(agent), 960):
                    recording.agent_sent(agent[i : i + 960], now)
            if n + 1 == 100:  # 2.00 s: the user cut in
                recording.clear(now)
            if n + 1 == 125:  # while the call goes on, the file is already a WAV of the past
                reader, samples = read_wav(path.read_bytes())
                assert 1.4 <= reader.getnframes() / RATE <= 2.5
        recording.close(t0 + 3.0)
    reader, samples = read_wav(path.read_bytes())
    assert (reader.getnchannels(), reader.getframerate(), reader.getsampwidth()) == (2, 16000, 2)
    assert reader.getnframes() == 3 * RATE and path.stat().st_size == 44 + 3 * RATE * 4
    start, end = loud(samples[:, 0])
    assert abs(start - 1000) <= 2 and abs(end - 1300) <= 2
    start, end = loud(samples[:, 1])
    assert abs(start - 1500) <= 5  # the resampler's delay is a few samples
    assert abs(end - 2000) <= 5  # the 1.5 s still queued at the clear is not there


def test_frames_after_a_gap_go_where_they_arrived_and_the_gap_stays_silent(tmp_path):
    """The page stopped sending for 0.3 s (a stall): what came before and after is where it was
    heard, each frame whole, across the file's writes (every FLUSH_S)."""
    t0 = 100.0
    with open(tmp_path / "gap.wav", "w+b") as file:
        recording = Recording(file, t0)
        frame = tone(FRAME_S, freq=300.0)
        for n in [*range(30), *range(45, 150)]:  # 0-0.6 s, then 0.9-3.0 s: one write spans the gap
            recording.user(frame, t0 + (n + 1) * FRAME_S)
        recording.close(t0 + 3.0)
    _, samples = read_wav((tmp_path / "gap.wav").read_bytes())
    user = samples[:, 0]
    frames = user[: 3 * RATE].reshape(-1, 320)  # 20 ms frames on the file's clock
    sent = np.frombuffer(frame, dtype="<i2")
    assert all((frames[n] == sent).all() for n in [*range(30), *range(45, 150)])
    assert not frames[30:45].any()
    assert not samples[:, 1].any()


@pytest.mark.parametrize("held_s", [0.3, 0.45, 0.8])
def test_frames_held_up_and_then_delivered_at_once_go_where_they_were_said(tmp_path, held_s):
    """A stall (of the server's event loop, or of the page) holds 0.3-0.8 s of the user's frames,
    which then arrive all at once: a 1 s tone is 1 s in the file, where it was said, and so is
    what follows it."""
    t0 = 100.0
    said = silence(0.5) + tone(1.0, freq=300.0) + silence(0.5) + tone(0.5, freq=500.0) + silence(0.5)
    frames = [said[i : i + 640] for i in range(0, len(said), 640)]
    stall_from, stall_to = 40, 40 + round(held_s / FRAME_S)  # inside the first tone
    with open(tmp_path / "held.wav", "w+b") as file:
        recording = Recording(file, t0)
        for n, frame in enumerate(frames):
            arrives = (
                t0 + (max(n, stall_to) + 1) * FRAME_S
                if stall_from <= n < stall_to
                else t0 + (n + 1) * FRAME_S
            )
            recording.user(frame, arrives)
        recording.close(t0 + len(frames) * FRAME_S)
    _, samples = read_wav((tmp_path / "held.wav").read_bytes())
    user = samples[:, 0]
    assert loud(user[: round(1.8 * RATE)]) == pytest.approx((500, 1500), abs=2)
    start, end = loud(user[round(1.8 * RATE) :])
    assert (start + 1800, end + 1800) == pytest.approx((2000, 2500), abs=2)
    assert (user[: len(said) // 2] == np.frombuffer(said, dtype="<i2")).all()


def test_heard_part_takes_the_played_share_of_the_words():
    assert heard_part("one two three four five six seven eight nine ten", 600, 2000) == "one two three"
    assert heard_part("one two", 5000, 2000) == "one two"
    assert heard_part("one two", 0, 2000) == ""


# ---- a relayed call, driven against a loopback provider ---------------------------------------


@pytest.fixture
def conversation(user, topic, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    return Conversation.objects.create(
        user=user, provider="echo", topic=topic, voice="default", language="en", status="connecting"
    )


class StampedBrowser(BrowserPeer):
    """The browser double, noting when the first agent audio and the `clear` reached it."""

    first_audio: float | None = None
    cleared: float | None = None

    @property
    def browser(self) -> Browser:
        async def send_bytes(data):
            self.first_audio = self.first_audio or time.monotonic()
            await self._bytes(data)

        async def send_json(message):
            if message["type"] == "clear":
                self.cleared = self.cleared or time.monotonic()
            await self._json(message)

        return Browser(send_json=send_json, send_bytes=send_bytes)


REPLY = "one two three four five six seven eight nine ten"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_a_relayed_call_records_the_user_and_the_agent_as_played(conversation):
    """The user's tone starts 0.6 s into the call; the provider sends 2 s of reply at once 1.2 s in
    and a barge-in 0.6 s after: the file has the tone where it was said, and 0.6 s of reply."""
    go, cut = asyncio.Event(), asyncio.Event()

    async def provider(peer, ws):
        await go.wait()
        await ws.send(tone(2.0))  # 16 kHz: the relay resamples it to 24 kHz for the browser
        await cut.wait()
        await ws.send('{"interrupted": true}')
        await ws.send(say("agent", REPLY, interrupted=True))
        async for _ in ws:  # the user's audio, until the call ends
            pass

    async with EchoPeer(provider) as peer:
        browser = StampedBrowser()
        session = Session(str(conversation.id), topic=None, voice="default", language="en",
                          config={"url": peer.url, "rate": 16000})  # fmt: skip
        relay = Relay(conversation.id, EchoUpstream(session), browser.browser, provider="echo",
                      on_end=browser.on_end, record=True)  # fmt: skip
        task = asyncio.create_task(relay.run())
        await browser.wait_for(lambda b: b.of_type("ready"), 10)
        t0 = relay.recording.t0
        mic = silence(0.6) + tone(0.3, freq=300) + silence(1.9)
        said_at, first_at = None, time.monotonic()
        for n in range(len(mic) // 640):
            await relay.feed_audio(mic[n * 640 : (n + 1) * 640])
            if n == 30:  # the tone's first frame: it began a frame before it arrived
                said_at = time.monotonic() - FRAME_S
            if n == 60:
                go.set()
            if n == 90:
                cut.set()
            await asyncio.sleep(max(0.0, t0 + (n + 1) * FRAME_S - time.monotonic()))
        await browser.wait_for(lambda b: any(m.get("role") == "agent" for m in b.of_type("transcript")), 10)
        await finish(relay, task)
    conv = await Conversation.objects.aget(id=conversation.id)
    assert conv.recording.name == f"recordings/{conversation.id}.wav"
    reader, samples = read_wav(conv.recording.read())
    assert (reader.getnchannels(), reader.getframerate()) == (2, 16000)
    # User turns' offsets count from here (sessions/exports.at_ms): the first frame's start.
    assert abs(conv.metrics["input_offset_ms"] - ((first_at - t0) * 1000 - 20)) <= 20
    assert reader.getnframes() / RATE >= len(mic) / 2 / RATE  # the whole call, to the stop
    user_start, user_end = loud(samples[:, 0])
    assert abs(user_start - (said_at - t0) * 1000) <= 40
    assert 260 <= user_end - user_start <= 320
    agent_start, agent_end = loud(samples[:, 1])
    assert abs(agent_start - (browser.first_audio - t0) * 1000) <= 40
    assert abs(agent_end - (browser.cleared - t0) * 1000) <= 40  # not the 1.4 s that was never played
    assert agent_end - agent_start < 1000
    turn = await Turn.objects.aget(conversation=conv, role="agent")
    assert turn.interrupted and REPLY.startswith(turn.data["heard"]) and turn.data["heard"] != REPLY
    assert abs(turn.data["played_ms"] - (agent_end - agent_start)) <= 60
    assert turn.data["audio_ms"] >= 1900  # what was sent: the whole reply


# ---- over a real Daphne process ----------------------------------------------------------------


@pytest.fixture
def doomed_server(tmp_path):
    """A server of its own, which the test kills; its recordings go to tmp_path."""
    yield from start_server({"MEDIA_ROOT": str(tmp_path)})


@pytest.mark.slow
def test_a_killed_server_leaves_a_readable_recording_served_while_the_call_goes_on(doomed_server, tmp_path):
    server = doomed_server
    conv = server.conversation()

    async def talk():
        async with call(server, conv["ws_path"]) as c:
            await c.until(lambda c: c.of("ready"), 30)
            await c.say(silence(0.5) + tone(1.0, freq=300) + silence(1.5))
            owner = server.client()
            whole = owner.get(f"/history/{conv['id']}/recording.wav")
            head = owner.get(f"/history/{conv['id']}/recording.wav", headers={"Range": "bytes=0-43"})
            os.kill(server.process.pid, signal.SIGKILL)  # mid-call: no `ended`, no close of the file
            server.process.wait(10)
            return whole, head

    whole, head = asyncio.run(talk())
    assert whole.status_code == 200 and whole.headers["content-type"] == "audio/wav"
    assert head.status_code == 206 and head.content[:4] == b"RIFF" and len(head.content) == 44
    assert head.headers["content-range"].endswith(f"/{len(whole.content)}")
    reader, samples = read_wav(whole.content)  # served while the call went on: a WAV already
    assert reader.getnframes() / RATE >= 1.5
    path = tmp_path / "recordings" / f"{conv['id']}.wav"
    reader, samples = read_wav(path.read_bytes())  # after the kill
    assert (reader.getnchannels(), reader.getframerate()) == (2, 16000)
    assert 44 + reader.getnframes() * 4 <= path.stat().st_size  # the header never claims more
    assert reader.getnframes() / RATE >= 2.0  # all but the last second of the 3 s said
    start, end = loud(samples[:, 0])
    assert 700 <= end - start <= 1050  # the user's 1 s tone


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_a_direct_call_records_the_frames_the_page_sends(conversation):
    """Direct media: the page's microphone frames (channel 0) go left, the agent as it heard it
    (channel 1) right, each where it arrived."""
    session = Session(
        str(conversation.id), topic=None, voice="default", language="en", config={"api_key": "k"}
    )
    browser = BrowserPeer()
    relay = Relay(conversation.id, DirectVendor(session), browser.browser, provider="flow",
                  on_end=browser.on_end, record=True)  # fmt: skip
    task = asyncio.create_task(relay.run())
    await browser.wait_for(lambda b: b.of_type("join"), 10)
    t0 = relay.recording.t0
    mic = silence(0.4) + tone(0.2, freq=300) + silence(1.4)
    heard = silence(1.0) + tone(0.5) + silence(0.5)
    moments = {}
    for n in range(len(mic) // 640):
        await relay.feed_recording(USER_CHANNEL, mic[n * 640 : (n + 1) * 640])
        await relay.feed_recording(AGENT_CHANNEL, heard[n * 640 : (n + 1) * 640])
        if n in (20, 50):  # the first frame of each tone, which began a frame before it arrived
            moments[n] = (time.monotonic() - FRAME_S - t0) * 1000
        await asyncio.sleep(max(0.0, t0 + (n + 1) * FRAME_S - time.monotonic()))
    await finish(relay, task)
    conv = await Conversation.objects.aget(id=conversation.id)
    reader, samples = read_wav(conv.recording.read())
    assert reader.getnchannels() == 2 and reader.getnframes() / RATE >= 1.9
    user_start, user_end = loud(samples[:, 0])
    agent_start, agent_end = loud(samples[:, 1])
    assert abs(user_start - moments[20]) <= 40 and 180 <= user_end - user_start <= 210
    assert abs(agent_start - moments[50]) <= 40 and 480 <= agent_end - agent_start <= 510


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_a_storage_without_local_files_gets_the_recording_when_the_call_ends(conversation, settings):
    """Django's in-memory storage has no paths, as S3 has none: the recording is spooled on local
    disk and saved to the storage at the end."""
    from django.core.files.storage import default_storage

    from sessions import recording

    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    t0 = time.monotonic()
    handle = await recording.start(conversation.id, t0, 24000)
    for n in range(50):
        handle.recording.user(tone(0.02), t0 + (n + 1) * FRAME_S)
    assert not (await Conversation.objects.aget(id=conversation.id)).recording  # not there yet
    await recording.finish(handle)
    conv = await Conversation.objects.aget(id=conversation.id)
    assert conv.recording.name == f"recordings/{conversation.id}.wav"
    reader, samples = read_wav(default_storage.open(conv.recording.name).read())
    assert reader.getnframes() >= RATE and loud(samples[:, 0]) is not None
    assert not Path(handle.spool).exists()  # noqa: ASYNC240 - a test's check, not a server's work


@pytest.mark.parametrize("on", [True, False])
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_the_recording_setting_turns_it_on_and_off(client, user, topic, settings, tmp_path, on):
    """Through the consumer (the real ASGI stack), as settings.RECORDING says: with it, a call to an
    echoing provider leaves the user's tone left and its echo, as played, right."""
    from tests.test_consumer import live, make_conversation, next_audio

    settings.MEDIA_ROOT, settings.RECORDING = tmp_path, on
    settings_providers = settings.PROVIDERS
    conv = await make_conversation(user, topic)

    def point_at(url):
        settings.PROVIDERS = {**settings_providers, "echo": {"url": url}}

    async with live(client, user, conv, point_at) as (ws, _):
        pcm = tone(0.5, freq=300) + silence(0.5)
        await realtime(lambda frame: ws.send_to(bytes_data=frame), pcm)
        await next_audio(ws)
        await asyncio.sleep(0.6)  # the echo plays out
        await ws.send_to(text_data='{"type": "stop"}')
        await ws.receive_output(10)
        await ws.disconnect()
    conv = await Conversation.objects.aget(id=conv.id)
    if not on:
        assert not conv.recording and not (tmp_path / "recordings").exists()
        return
    _, samples = read_wav(conv.recording.read())
    user_start, user_end = loud(samples[:, 0])
    agent_start, agent_end = loud(samples[:, 1])
    # The echo comes back as it was sent, in real time: a late frame leaves a gap in the playout.
    assert 480 <= user_end - user_start <= 520 and 480 <= agent_end - agent_start <= 600
    assert 0 <= agent_start - user_start <= 300  # the echo, a little after


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_our_own_barge_in_cuts_the_agent_channel_and_keeps_the_heard_part(conversation, tmp_path):
    """A provider with no barge-in signal (Liku, Aivoco): our VAD hears the user talk over a 4 s
    reply and the relay clears the browser; the recording and the turn's heard part stop there."""
    from tests.engine.speech import Speech

    speech = Speech(tmp_path).pcm("Sorry, could you repeat that please")
    text = "We open at noon every day of the week except on public holidays"

    async def provider(peer, ws):
        await ws.send(tone(4.0))  # the whole reply at once
        async for message in ws:
            if isinstance(message, bytes):
                peer.received.append(message)
            if len(peer.received) == 60:  # the user has talked over it for a while
                await ws.send(say("agent", text))

    async with EchoPeer(provider) as peer:
        browser = StampedBrowser()
        config = {"url": peer.url, "rate": 16000, "capabilities": {"barge_in_signal": False}}
        session = Session(str(conversation.id), topic=None, voice="default", language="en", config=config)
        relay = Relay(conversation.id, EchoUpstream(session), browser.browser, provider="echo",
                      on_end=browser.on_end, record=True)  # fmt: skip
        task = asyncio.create_task(relay.run())
        await browser.wait_for(lambda b: b.of_type("ready"), 10)
        mic = silence(0.3) + speech + silence(1.0)
        await realtime(relay.feed_audio, mic)
        await browser.wait_for(lambda b: any(m.get("role") == "agent" for m in b.of_type("transcript")), 10)
        await finish(relay, task)
    assert browser.cleared is not None
    t0 = relay.recording.t0
    conv = await Conversation.objects.aget(id=conversation.id)
    _, samples = read_wav(conv.recording.read())
    agent_start, agent_end = loud(samples[:, 1])
    assert abs(agent_start - (browser.first_audio - t0) * 1000) <= 40
    assert abs(agent_end - (browser.cleared - t0) * 1000) <= 40 and agent_end - agent_start < 3500
    turn = await Turn.objects.aget(conversation=conv, role="agent")
    assert turn.interrupted and text.startswith(turn.data["heard"]) and turn.data["heard"] != text
    assert abs(turn.data["played_ms"] - (agent_end - agent_start)) <= 60 and turn.data["audio_ms"] >= 3900
