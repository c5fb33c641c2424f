"""A/B comparison: the same utterances played into several providers, one conversation each.

A run (`CompareRun`) talks to each provider in turn through the real relay: it is a WebSocket
client of a running Daphne of this project, speaking the browser protocol (docs/protocol.md)
exactly as the talk page does. Its microphone sends 20 ms frames at real time all the time
(silence between utterances, as a real microphone does, so the server's VAD hears each end of
speech); each utterance is spoken once the agent's previous reply has finished playing, and
playback is simulated at real time (so `playback` reports carry what a browser would have
played). Per utterance and provider it stores what came back (`CompareItem`): the provider's
transcript of the utterance, the reply, the reply's latency waterfall and a clip of the reply.

Providers run one after another, never at once, so that one provider's load does not colour
another's latency. Which service a provider talks to is the registry's business: its sandbox
offline, the real service when its credentials are set.

The Daphne is either given (`server_url`) or started here on a loopback port, with the
sandboxes mounted on it, and stopped when the run ends (`own_server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import websockets
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import close_old_connections
from django.utils import timezone

from sessions import waterfall
from sessions.audio import Resampler
from sessions.forms import PickForm
from sessions.models import ApiToken, CompareItem, CompareRun, Conversation, Topic, Turn
from sessions.upstreams import registry

RATE = 16000
FRAME = 640  # 20 ms at 16 kHz s16le: what the talk page sends
FRAME_S = 0.02
CLIP_SECONDS = 6  # a reply's clip: enough to hear its voice and start, small enough to keep
QUIET_S = 1.0  # no agent audio for this long, nothing left to play: the reply has ended
NO_TEXT_QUIET_S = 2.5  # the same for a reply whose final transcript never came
REPLY_TIMEOUT_S = 30.0  # an utterance gets no answer after this long: recorded as unanswered
GREETING_WAIT_S = 6.0  # a provider that has not begun a greeting by then has none
READY_TIMEOUT_S = 30.0
LEAD_IN_MS = 400  # silence before each utterance, as a person draws breath
MAX_UTTERANCES = 40  # a run of 40 utterances x 5 providers lasts about half an hour
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
STALE_S = 120  # a running run whose process has not written for this long has died


class CompareError(Exception):
    """What stops a comparison from starting or running (one error type for this module)."""


# ---- input audio ---------------------------------------------------------------------------


def pcm_from_wav(data: bytes) -> bytes:
    """A WAV file of any rate, channel count and integer sample width as 16 kHz mono s16le,
    resampled with the project's resampler."""
    try:
        with wave.open(io.BytesIO(data)) as wav:
            rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
            frames = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise CompareError(f"not a PCM WAV file ({exc})") from None
    samples = _samples(frames, width).reshape(-1, channels).mean(axis=1)
    resampler = Resampler(rate, RATE)
    pcm = np.clip(np.rint(samples * 32767), -32768, 32767).astype("<i2").tobytes()
    out = resampler.process(pcm) + resampler.flush()
    if len(out) < FRAME:
        raise CompareError("the WAV file holds no audio")
    return out


def _samples(frames: bytes, width: int) -> np.ndarray:
    """Integer PCM of 1 to 4 bytes a sample as floats in [-1, 1]."""
    if width == 1:
        return (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128) / 128
    if width == 2:
        return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768
    if width == 3:
        raw = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3)
        ints = raw[:, 0].astype(np.int32) | raw[:, 1].astype(np.int32) << 8 | raw[:, 2].astype(np.int32) << 16
        return (np.where(ints & 0x800000, ints - 0x1000000, ints)).astype(np.float32) / 8388608
    if width == 4:
        return np.frombuffer(frames, dtype="<i4").astype(np.float32) / 2147483648
    raise CompareError(f"unsupported sample width: {width} bytes")


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return out.getvalue()


def trimmed(pcm: bytes, threshold: int = 300) -> bytes:
    """`pcm` without leading and trailing silence: the end of the utterance is its last sound."""
    samples = np.frombuffer(pcm, dtype="<i2")
    loud = np.nonzero(np.abs(samples.astype(np.int32)) > threshold)[0]
    if not len(loud):
        return pcm
    return samples[loud[0] : loud[-1] + 1].tobytes()


def spoken(text: str, language: str) -> bytes:
    """`text` as speech, 16 kHz mono s16le. English is spoken by flite where installed (the offline
    recogniser, pocketsphinx, decodes its voice well), other languages by espeak-ng."""
    with tempfile.TemporaryDirectory(prefix="compare-") as tmp:
        path = Path(tmp) / "say.wav"
        if language == "en" and shutil.which("flite"):
            argv = ["flite", "-voice", "kal16", "-t", text, "-o", str(path)]
        elif shutil.which("espeak-ng"):
            argv = ["espeak-ng", "-v", language, "-w", str(path), text]
        else:
            raise CompareError("speaking a script needs flite or espeak-ng (apt-get install espeak-ng)")
        try:
            subprocess.run(argv, check=True, capture_output=True, timeout=60)
        except (subprocess.SubprocessError, OSError) as exc:
            raise CompareError(f"{argv[0]} could not speak {text!r}: {exc}") from None
        return pcm_from_wav(path.read_bytes())


def script_lines(topic: Topic, language: str, count: int) -> list[str]:
    """The first `count` sentences the topic expects users to say (its script's phrases)."""
    phrases = [p for p in topic.to_script(language).phrases if p.strip()]
    if not phrases:
        raise CompareError(f"the topic {topic.slug!r} has no phrases to say")
    return phrases[: max(1, min(count, MAX_UTTERANCES))]


# ---- creating a run ------------------------------------------------------------------------


def find_topic(name: str) -> Topic:
    """A topic by slug, or by the start of a slug when only one matches ("restaurant")."""
    topic = Topic.objects.filter(slug=name).first()
    if topic:
        return topic
    matches = list(Topic.objects.filter(slug__startswith=name)[:2])
    if len(matches) != 1:
        known = ", ".join(Topic.objects.values_list("slug", flat=True))
        raise CompareError(f"no single topic matches {name!r} (known: {known})")
    return matches[0]


def check_providers(keys: list[str]) -> list[str]:
    """The keys, each known and usable now (offline, sandbox or real), in order, once each."""
    keys = list(dict.fromkeys(k.strip() for k in keys if k.strip()))
    if not keys:
        raise CompareError("name at least one provider")
    for key in keys:
        if key not in registry.PROVIDERS:
            raise CompareError(f"unknown provider {key!r} (known: {', '.join(registry.PROVIDERS)})")
        mode, why = registry.mode(key)
        if mode == "unavailable":
            raise CompareError(f"{registry.label(key)} is unavailable: {why}")
    return keys


def create_run(user, topic: Topic, providers: list[str], language: str, texts=(), wavs=()) -> CompareRun:
    """A queued run: `texts` are spoken now (TTS), `wavs` are (name, bytes) of WAV files; both are
    stored as 16 kHz WAV inputs, so the run (possibly another process) only plays them."""
    providers = check_providers(providers)
    if language not in topic.languages():
        raise CompareError(f"the topic {topic.slug!r} is not written in {language!r}")
    inputs = [(text, spoken(text, language)) for text in texts]
    inputs += [(name, pcm_from_wav(data)) for name, data in wavs]
    if not inputs or len(inputs) > MAX_UTTERANCES:
        raise CompareError(f"a run needs 1 to {MAX_UTTERANCES} utterances")
    run = CompareRun.objects.create(
        created_by=user,
        topic=topic,
        language=language,
        providers=providers,
        total_steps=len(providers) * len(inputs),
    )
    utterances = []
    for n, (text, pcm) in enumerate(inputs):
        name = default_storage.save(f"compare/{run.pk}/input-{n}.wav", ContentFile(wav_bytes(pcm, RATE)))
        utterances.append({"text": text, "audio": name})
    run.utterances = utterances
    run.save(update_fields=["utterances"])
    return run


# ---- the browser stand-in ------------------------------------------------------------------


@dataclass
class Heard:
    """What the client saw and heard of one utterance's exchange."""

    started: float  # the utterance's first frame was sent
    speech_end: float | None = None  # its last frame was sent
    user_text: list[str] = field(default_factory=list)
    reply_text: list[str] = field(default_factory=list)
    first_audio: float | None = None
    last_audio: float | None = None
    audio_bytes: int = 0
    clip: bytearray = field(default_factory=bytearray)

    def answered(self, now: float, playing_ms: float) -> bool:
        """The reply has been heard to its end: audio came and stopped, nothing left to play."""
        if self.last_audio is None or playing_ms > 0:
            return False
        quiet = now - self.last_audio
        return quiet >= (QUIET_S if self.reply_text else NO_TEXT_QUIET_S)


class Playback:
    """The page's playback worklet, simulated: agent audio plays at real time once a start buffer
    of START_MS has arrived (or no more is coming), and each start and stop is reported as the page
    reports it (`playback` edges in docs/protocol.md), indexed in the samples the server sent."""

    START_MS = 80

    def __init__(self, rate: int):
        self.rate = rate
        self.received = 0  # samples of agent audio received
        self.position = 0  # index of the next sample to play
        self.played = 0  # samples played (those dropped at a clear are not)
        self.playing = False
        self.underruns = 0
        self.edges: list[dict] = []  # not reported yet
        self._last_arrival = 0.0

    @property
    def buffered_ms(self) -> float:
        return (self.received - self.position) * 1000 / self.rate

    def receive(self, nbytes: int, now: float) -> None:
        self.received += nbytes // 2
        self._last_arrival = now

    def clear(self) -> None:
        """Barge-in: what is buffered is dropped, but its samples keep their indexes."""
        if self.playing:
            self._edge("stop", "cleared")
        self.position = self.received

    def advance(self, ms: float, now: float) -> None:
        waiting = self.received - self.position
        if not self.playing:
            starved = now - self._last_arrival < self.START_MS / 1000  # more may be on its way
            if waiting <= 0 or (self.buffered_ms < self.START_MS and starved):
                return
            self._edge("start", "")
        step = min(round(self.rate * ms / 1000), waiting)
        self.position += step
        self.played += step
        if self.position >= self.received:
            self.underruns += 1
            self._edge("stop", "drained")

    def _edge(self, kind: str, how: str) -> None:
        self.playing = kind == "start"
        self.edges.append({"kind": kind, "how": how, "sample": self.position, "ago_ms": 0})

    def report(self) -> dict:
        out = {"type": "playback", "played_ms": round(self.played * 1000 / self.rate),
               "buffered_ms": round(self.buffered_ms), "underruns": self.underruns}  # fmt: skip
        if self.edges:
            out["edges"], self.edges = self.edges[:32], self.edges[32:]
        return out


class Browser:
    """One conversation socket, driven as the talk page drives it: a real-time microphone, a
    simulated real-time playback, and the messages read as they come."""

    def __init__(self, ws):
        self.ws = ws
        self.output_rate = 24000
        self.ready = asyncio.Event()
        self.ended: str | None = None
        self._closed = asyncio.Event()  # the server closed the socket
        self._heard_audio = asyncio.Event()  # the current turn's first agent audio came
        self.errors: list[str] = []
        # The greeting is heard as a reply to nothing: open from the start, so audio that comes
        # right after `ready` counts.
        self.turn: Heard | None = Heard(started=time.monotonic(), speech_end=time.monotonic())
        self._speech = bytearray()  # what the microphone says next; silence when empty
        self._spoken = asyncio.Event()
        self.playback = Playback(self.output_rate)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def run(self, body: Callable) -> None:
        """Run `body(self)` with the microphone and the reader going; both are stopped after."""
        reader = asyncio.create_task(self._read())
        mic = asyncio.create_task(self._microphone())
        try:
            await body(self)
        finally:
            for task in (mic, reader):
                task.cancel()
            await asyncio.gather(mic, reader, return_exceptions=True)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    self._on_audio(message)
                else:
                    self._on_message(json.loads(message))
        except websockets.ConnectionClosed:
            pass
        finally:
            self._closed.set()
            self.ready.set()  # whoever waits for `ready` must not wait for a closed socket

    def _on_message(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "ready":
            self.output_rate = int(message.get("output_rate") or 24000)
            self.playback = Playback(self.output_rate)
            self.ready.set()
        elif kind == "transcript" and message.get("final") and self.turn is not None:
            side = self.turn.user_text if message["role"] == "user" else self.turn.reply_text
            if self.turn.speech_end is not None or message["role"] == "user":
                side.append(message.get("text", ""))
        elif kind == "clear":
            self.playback.clear()
        elif kind == "error":
            self.errors.append(f"{message.get('code')}: {message.get('message')}")
        elif kind == "ended":
            self.ended = message.get("reason", "")

    def _on_audio(self, pcm: bytes) -> None:
        now = time.monotonic()
        self.playback.receive(len(pcm), now)
        turn = self.turn
        if turn is None or turn.speech_end is None:
            return  # the greeting, or agent audio over the utterance: not this reply
        if turn.first_audio is None:
            turn.first_audio = now
            self._heard_audio.set()
        turn.last_audio = now
        turn.audio_bytes += len(pcm)
        room = CLIP_SECONDS * self.output_rate * 2 - len(turn.clip)
        turn.clip += pcm[: max(0, room)]

    async def _microphone(self) -> None:
        """20 ms frames at real time for as long as the call lasts; playback advanced at the same
        pace, and reported once a second and at each start and stop, as the page reports it."""
        await self.ready.wait()  # no audio before `ready` (the server would drop it)
        t0, n = time.monotonic(), 0
        while self.ended is None and not self._closed.is_set():
            frame = bytes(self._speech[:FRAME]).ljust(FRAME, b"\0")
            was_speaking = bool(self._speech)
            del self._speech[:FRAME]
            await self.ws.send(frame)
            if was_speaking and not self._speech:
                self._spoken.set()
            self.playback.advance(FRAME_S * 1000, time.monotonic())
            n += 1
            if self.playback.edges or n % 50 == 0:  # edges at once, so the server dates them on arrival
                await self.ws.send(json.dumps(self.playback.report()))
            await asyncio.sleep(max(0.0, t0 + n * FRAME_S - time.monotonic()))

    async def say(self, pcm: bytes) -> Heard:
        """Speak `pcm` (after a breath of silence), wait for its last frame to go out."""
        self.turn = Heard(started=time.monotonic())
        self._spoken.clear()
        self._heard_audio.clear()
        self._speech += bytes(LEAD_IN_MS * 32) + pcm
        seconds = len(self._speech) / (RATE * 2)
        async with asyncio.timeout(seconds + 10):  # a closed socket stops the microphone
            await self._spoken.wait()
        self.turn.speech_end = time.monotonic()
        return self.turn

    async def until_answered(self, heard: Heard, limit_s: float) -> bool:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and self.ended is None:
            if heard.answered(time.monotonic(), self.playback.buffered_ms):
                return True
            await asyncio.sleep(0.05)
        return False

    async def greeting(self) -> None:
        """Let the agent's greeting (if it has one) play to its end before anyone speaks."""
        heard = self.turn  # the greeting's turn has been open since the socket opened
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._heard_audio.wait(), GREETING_WAIT_S)
        if heard.first_audio is not None:
            await self.until_answered(heard, REPLY_TIMEOUT_S)
        self.turn = None

    async def stop(self) -> None:
        """Press Stop and read until the server closes (bounded)."""
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.ws.send(json.dumps({"type": "stop"}))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), 15)


async def converse(ws_url: str, origin: str, token: str, utterances: list[bytes], on_heard) -> str:
    """One conversation: the greeting, then each utterance and its reply. `on_heard(i, heard,
    answered)` is awaited after each; it returns False to stop early (a cancelled run). Returns
    the errors the server reported, if any."""
    headers = {"Authorization": f"Token {token}"}
    async with websockets.connect(ws_url, additional_headers=headers, origin=origin, max_size=2**22,
                                  compression=None) as ws:  # fmt: skip
        browser = Browser(ws)

        async def body(b: Browser) -> None:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await b.ready.wait()
            if b.closed:
                code = ws.close_code
                raise CompareError(
                    f"the server closed the call ({code}): {'; '.join(b.errors) or 'no reason given'}"
                )
            await b.greeting()
            for i, pcm in enumerate(utterances):
                heard = await b.say(pcm)
                answered = await b.until_answered(heard, REPLY_TIMEOUT_S)
                if not await on_heard(i, heard, answered, b) or b.ended is not None:
                    break
            await b.stop()

        await browser.run(body)
        return "; ".join(browser.errors[:3])


# ---- running a stored run ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def own_server(timeout: float = 60):
    """A Daphne of this project on a loopback port, its sandboxes mounted on it, for one run;
    yields its http URL and stops it after."""
    port = free_port()
    env = {**os.environ, "SANDBOX_BASE_URL": f"http://127.0.0.1:{port}"}
    argv = [
        sys.executable,
        "-m",
        "playground.serve",
        "-b",
        "127.0.0.1",
        "-p",
        str(port),
        "-v",
        "0",
        "playground.asgi:application",
    ]
    log = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would stall Daphne
    process = subprocess.Popen(argv, cwd=settings.BASE_DIR, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        _wait_for_port(process, port, timeout, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


def _wait_for_port(process: subprocess.Popen, port: int, timeout: float, log) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-500:]
            raise CompareError(f"the comparison's server exited: {tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise CompareError("the comparison's server did not start")


def execute(run: CompareRun, server_url: str | None = None) -> CompareRun:
    """Run a queued comparison to its end against `server_url` (or a Daphne of its own)."""
    _update(run, status=CompareRun.Status.RUNNING, started_at=timezone.now())
    token = ApiToken.issue(run.created_by, name=f"comparison {run.pk}")
    try:
        with contextlib.ExitStack() as stack:
            url = (server_url or stack.enter_context(own_server())).rstrip("/")
            for provider in run.providers:
                if _cancelled(run):
                    break
                _run_provider(run, provider, url, token)
        status = CompareRun.Status.CANCELLED if _cancelled(run) else CompareRun.Status.DONE
        _finish(run, status, "")
    except BaseException as exc:  # also SIGTERM/Ctrl-C (SystemExit, KeyboardInterrupt): stored, re-raised
        _finish(run, CompareRun.Status.FAILED, str(exc) or type(exc).__name__)
        raise
    finally:
        ApiToken.objects.filter(key_hash=ApiToken.hash(token)).delete()
    run.refresh_from_db()
    return run


def _finish(run: CompareRun, status: str, error: str) -> None:
    _update(run, status=status, error=error[:2000], finished_at=timezone.now())


def _update(run: CompareRun, **fields) -> None:
    """`update()` skips auto_now: the time is set here, since it tells a live run from a dead one."""
    CompareRun.objects.filter(pk=run.pk).update(updated_at=timezone.now(), **fields)


def _cancelled(run: CompareRun) -> bool:
    return CompareRun.objects.filter(pk=run.pk, cancel_requested=True).exists()


def _new_conversation(run: CompareRun, provider: str) -> Conversation:
    """A conversation as the pick form would create it, with the provider's first voice."""
    voices = registry.get(provider).voices_for(run.language)
    data = {
        "provider": provider,
        "topic": run.topic_id,
        "voice": voices[0] if voices else "",
        "language": run.language,
    }
    form = PickForm(data)
    if not form.is_valid():
        raise CompareError(f"{registry.label(provider)}: {form.errors.as_text()}")
    return Conversation.objects.create(user=run.created_by, **form.cleaned_data)


def _run_provider(run: CompareRun, provider: str, server_url: str, token: str) -> None:
    """One conversation with `provider`: every utterance, each stored as it is answered."""
    utterances = [_read_input(u["audio"]) for u in run.utterances]
    try:
        conversation = _new_conversation(run, provider)
    except CompareError as exc:
        _store_failures(run, provider, None, str(exc), 0)
        return
    ws_url = server_url.replace("http", "ws", 1) + conversation.ws_path
    done = set()

    async def on_heard(i: int, heard: Heard, answered: bool, browser: Browser) -> bool:
        await sync_to_async(_store_heard)(
            run, provider, conversation, i, heard, answered, browser.output_rate
        )
        done.add(i)
        return not await sync_to_async(_cancelled)(run)

    try:
        errors = asyncio.run(converse(ws_url, server_url, token, utterances, on_heard))
    except (OSError, TimeoutError, websockets.WebSocketException, CompareError) as exc:
        errors = f"{type(exc).__name__}: {exc}"
    close_old_connections()
    missing = [i for i in range(len(utterances)) if i not in done]
    if missing and not _cancelled(run):
        _store_failures(run, provider, conversation, errors or "the call ended early", min(missing))
    _attach_server_timings(run, provider, conversation)


def _read_input(name: str) -> bytes:
    with default_storage.open(name, "rb") as f:
        return trimmed(pcm_from_wav(f.read()))


def _store_heard(run, provider, conversation, i: int, heard: Heard, answered: bool, rate: int) -> None:
    client = {}
    if heard.first_audio is not None:
        client["first_audio_ms"] = round((heard.first_audio - heard.speech_end) * 1000)
        client["reply_ms"] = round(heard.audio_bytes / 2 / rate * 1000)
    item = CompareItem(
        run=run,
        index=i,
        provider=provider,
        conversation=conversation,
        utterance=run.utterances[i]["text"],
        user_text=" ".join(heard.user_text).strip(),
        reply_text=" ".join(heard.reply_text).strip(),
        timings={"client": client},
        error="" if answered else f"no reply heard within {REPLY_TIMEOUT_S:.0f} s",
    )
    if heard.clip:
        item.clip.save(
            f"{run.pk}-{i}-{provider}.wav", ContentFile(wav_bytes(bytes(heard.clip), rate)), save=False
        )
    item.save()
    _update(run, done_steps=run_steps_done(run))


def run_steps_done(run: CompareRun) -> int:
    return CompareItem.objects.filter(run=run).count()


def _store_failures(run, provider, conversation, error: str, start: int) -> None:
    for i in range(start, len(run.utterances)):
        CompareItem.objects.update_or_create(
            run=run,
            index=i,
            provider=provider,
            defaults={
                "conversation": conversation,
                "utterance": run.utterances[i]["text"],
                "error": error[:300],
            },
        )
    _update(run, done_steps=run_steps_done(run))


def server_waterfall(timings: dict) -> dict:
    """A reply Turn's timings (v1 or v2) as the waterfall of sessions/waterfall.py: ms after the
    server's end of the user's speech for each moment known (`played` from the v2 playback
    reports), and the reply's duration."""
    steps = waterfall.steps(timings)
    return {"from": timings.get("from", ""), **{f"{key}_ms": value for key, value in steps.items()}}


def _attach_server_timings(run, provider: str, conversation: Conversation) -> None:
    """The server's own figures for each reply: the agent turn that carried the reply's text."""
    turns = list(
        Turn.objects.filter(conversation=conversation, role=Turn.Role.AGENT, final=True).order_by("sequence")
    )
    after = 0
    for item in CompareItem.objects.filter(run=run, provider=provider).order_by("index"):
        turn = next((t for t in turns if t.sequence > after and t.text and t.text in item.reply_text), None)
        if turn is None:
            continue
        after = turn.sequence
        item.timings = {
            **item.timings,
            "latency_ms": turn.latency_ms,
            "server": server_waterfall(turn.timings),
        }
        item.save(update_fields=["timings"])


# ---- the report ----------------------------------------------------------------------------

COLUMNS = (
    "item",
    "index",
    "utterance",
    "provider",
    "provider_label",
    "user_text",
    "reply_text",
    "latency_ms",
    "user_final_ms",
    "first_audio_ms",
    "played_ms",
    "reply_ms",
    "client_first_audio_ms",
    "client_reply_ms",
    "clip",
    "conversation",
    "error",
)


def row(item: CompareItem) -> dict:
    """One utterance as one provider answered it, flat: the report's, the page's and the exports' row."""
    server, client = item.timings.get("server", {}), item.timings.get("client", {})
    return {
        "item": item.pk,
        "index": item.index,
        "utterance": item.utterance,
        "provider": item.provider,
        "provider_label": registry.label(item.provider),
        "user_text": item.user_text,
        "reply_text": item.reply_text,
        "latency_ms": item.timings.get("latency_ms"),
        "user_final_ms": server.get("user_final_ms"),
        "first_audio_ms": server.get("first_audio_ms"),
        "played_ms": server.get("played_ms"),
        "reply_ms": server.get("reply_ms"),
        "client_first_audio_ms": client.get("first_audio_ms"),
        "client_reply_ms": client.get("reply_ms"),
        "clip": item.clip.name or "",
        "conversation": str(item.conversation_id or ""),
        "error": item.error,
    }


def rows(run: CompareRun) -> list[dict]:
    return [row(item) for item in run.items.all()]


def percentile(values: list, p: float) -> int | None:
    """The nearest-rank percentile of the figures known (sessions/waterfall.py), None when none are."""
    return waterfall.percentile([v for v in values if v is not None], p)


def summary(report_rows: list[dict], providers: list[str]) -> list[dict]:
    """Per provider: replies answered, and P50/P90/P99 of the server's latency and the client's."""
    out = []
    for key in providers:
        mine = [r for r in report_rows if r["provider"] == key]
        latency = [r["latency_ms"] for r in mine if r["latency_ms"] is not None]
        heard = [r["client_first_audio_ms"] for r in mine if r["client_first_audio_ms"] is not None]
        played = [r["played_ms"] for r in mine if r["played_ms"] is not None]
        out.append(
            {
                "provider": key,
                "provider_label": registry.label(key),
                "mode": registry.mode(key)[0],
                "utterances": len(mine),
                "answered": sum(1 for r in mine if not r["error"]),
                **{f"p{p}_ms": percentile(latency, p) for p in (50, 90, 99)},
                **{f"client_p{p}_ms": percentile(heard, p) for p in (50, 90, 99)},
                "played_p50_ms": percentile(played, 50),
            }
        )
    return out


def export_json(run: CompareRun) -> dict:
    report_rows = rows(run)
    return {
        "run": run.pk,
        "topic": run.topic.slug,
        "language": run.language,
        "providers": run.providers,
        "status": run.status,
        "created_at": run.created_at.isoformat(),
        "summary": summary(report_rows, run.providers),
        "rows": report_rows,
    }


def export_csv(run: CompareRun) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows(run))
    return out.getvalue()


def status(run: CompareRun) -> dict:
    """What the progress bar needs; a running run whose process stopped writing shows as failed."""
    state = run.status
    if state == CompareRun.Status.RUNNING and (timezone.now() - run.updated_at).total_seconds() > STALE_S:
        state = CompareRun.Status.FAILED
    if state == CompareRun.Status.QUEUED and (timezone.now() - run.created_at).total_seconds() > STALE_S:
        state = CompareRun.Status.FAILED
    return {
        "id": run.pk,
        "status": state,
        "done": run.done_steps,
        "total": run.total_steps,
        "percent": run.percent,
        "finished": state in ("done", "failed", "cancelled"),
        "error": run.error,
    }


# ---- starting a run in the background -------------------------------------------------------


def spawn(run: CompareRun) -> subprocess.Popen:
    """Run `manage.py compare --run <id>` as a child process of this server process.

    A process of its own, not a thread of the web server: a run lasts minutes of real-time
    audio, owns a Daphne and an event loop of its own, and must neither hold a web worker nor
    die with one request. The run stores its progress as it goes and stops by itself (every
    wait in it is bounded); a reaper thread collects its exit status so it leaves no zombie.
    Staff cancel it through the database (`cancel_requested`), which works from any process."""
    argv = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "compare", "--run", str(run.pk)]
    process = subprocess.Popen(
        argv,
        cwd=settings.BASE_DIR,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import threading

    threading.Thread(target=process.wait, name=f"compare-{run.pk}-reaper", daemon=True).start()
    return process
