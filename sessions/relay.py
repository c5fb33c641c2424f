"""The relay: browser <-> upstream, in plain asyncio, with persistence and metrics.

It knows nothing of Channels: the consumer hands it a `Browser` (two send
coroutines) and an `Upstream`, and owns the task that runs `Relay.run()`.
Every final turn is written to the database the moment it arrives, before it is
forwarded, so a crash later loses nothing already said.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import numpy as np
from django.db.models import Max
from django.utils import timezone

from playground.engine import vad
from sessions import eager, outbox, recording, vadbatch
from sessions.audio import Converter, frame_bytes
from sessions.latency import Measure, ReplyClock
from sessions.models import Conversation, Turn
from sessions.upstreams.base import (
    Audio,
    Ended,
    Error,
    Interrupted,
    Join,
    Status,
    ToolCall,
    Transcript,
    Upstream,
    UpstreamError,
)
from sessions.waterfall import CallTimeline, Reply

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 2
INPUT_RATE = 16000
FRAME_MS = 20
# Agent audio goes to the browser in pieces of up to this many whole 20 ms frames, as it arrives: a
# provider's 40-128 ms chunk is one message, not two to six (each costs the server a send, and the
# page a message). Never longer than the page's start buffer (80 ms, playback-worklet.js `startMs`):
# playback waits for that much audio anyway, so a longer piece would hold back the first sound on a
# slow link. Less than a frame still waits for the next chunk, as before.
DOWNLINK_JOIN = 4
MAX_FRAME_BYTES = 64 * 1024
CONNECT_TIMEOUT = 20.0  # the offline agent loads its models on first connect
INTERNAL_MESSAGE = "Something went wrong on our side; the conversation was ended."
BYTES_PER_SECOND = INPUT_RATE * 2
LATE_SCORES = "The page's VAD scores stopped coming."
# A socket that sends more than this over FLOOD_WINDOW_S is closed (4400): 4x real time leaves room for
# a backlog after a network stall (up to about 9 s of audio at once), and 250 messages a second for
# frames as short as 4 ms. docs/protocol.md states the rule.
FLOOD_WINDOW_S = 3.0
FLOOD_BYTES_PER_S = 4 * BYTES_PER_SECOND
FLOOD_MESSAGES_PER_S = 250
# Our VAD runs behind the uplink, never in its way: on one thread for every call of the process
# (onnxruntime releases the GIL, so it uses another core instead of delaying every call's frames), in
# rounds of every call's new audio (sessions/vadbatch.py; the figures use arrival times, so a round
# delays only when they are known, not what they say).
VAD_EXECUTOR = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="uplink-vad",
                                                     initializer=vadbatch.background_thread)  # fmt: skip
VAD_ROUNDS = vadbatch.Rounds(VAD_EXECUTOR, lambda jobs: UplinkVad.turn_events_of_many(jobs),
                             min_bytes=vad.WINDOW * 2)  # fmt: skip
# Direct media (docs/protocol.md, "Recording frames"): the page sends what it records as binary
# frames whose first byte says whose audio follows.
USER_CHANNEL, AGENT_CHANNEL = 0, 1
CHANNELS = {USER_CHANNEL: "user", AGENT_CHANNEL: "agent"}
# A 20 ms frame of the agent as heard is audible above this RMS (dBFS): a WebRTC track carries
# digital silence or comfort noise far below it between replies, speech is -40 to -10 dBFS.
AUDIBLE_DBFS = -50.0
AUDIBLE_RMS = 32768 * 10 ** (AUDIBLE_DBFS / 20)
# Audible agent frames closer together than this are one stretch (the pauses between words of a
# reply); after a longer silence the next audible frame starts a new stretch (sessions/latency.py).
AGENT_GAP_S = 0.3
TRANSPORTS = ("livekit", "retell")
# Shown with a sandbox's `join` (unless the client says something itself): the room is not real.
SANDBOX_LIVEKIT_NOTE = (
    "This LiveKit room comes from the provider's sandbox, and no LiveKit media server runs here: "
    "the LiveKit transport needs the real service."
)


@dataclass
class Browser:
    send_json: Callable[[dict], Awaitable[None]]
    send_bytes: Callable[[bytes], Awaitable[None]]


# Direct media's recording frames go here: (channel "user"|"agent", 16 kHz s16le PCM, arrival time).
# sessions/recording.Recording is one; relayed calls feed it through its user/agent_sent/clear.
Recorder = Callable[[str, bytes, float], None]


class TokenBucket:
    """Allows audio at a little over real time with a burst; a flood runs it dry."""

    def __init__(self, rate: float, burst: float, clock=time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.stamp = burst, clock()

    def take(self, amount: float) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True


class FloodMeter:
    """What a socket received over the last `window` seconds, to tell a flood from a burst.

    Below the limits the token bucket above drops the excess (a `flood` warning); over them the
    consumer closes the socket, because Daphne queues every received message without bound and a
    flood outruns any per-frame handling. Holds at most about `window * messages_per_s` entries."""

    def __init__(self, window=FLOOD_WINDOW_S, bytes_per_s=FLOOD_BYTES_PER_S,
                 messages_per_s=FLOOD_MESSAGES_PER_S, clock=time.monotonic):  # fmt: skip
        self.window, self.clock = window, clock
        self.max_bytes, self.max_messages = bytes_per_s * window, messages_per_s * window
        self._log: deque = deque()  # (arrival, bytes)
        self._bytes = 0

    def add(self, nbytes: int) -> bool:
        """Count one message; True when the window now holds more than the limits allow."""
        now = self.clock()
        self._log.append((now, nbytes))
        self._bytes += nbytes
        while self._log[0][0] < now - self.window:
            self._bytes -= self._log.popleft()[1]
        return self._bytes > self.max_bytes or len(self._log) > self.max_messages


@dataclass
class Timeline:
    """When each moment of the user's input stream reached us, to time replies from the
    real end of speech that an upstream reports as an offset."""

    offsets: deque = field(default_factory=lambda: deque(maxlen=6000))  # (end offset ms, arrival time)
    total_ms: float = 0.0

    def add(self, nbytes: int, now: float) -> None:
        self.total_ms += nbytes / BYTES_PER_SECOND * 1000
        self.offsets.append((self.total_ms, now))

    def arrival(self, offset_ms: float) -> float | None:
        if not self.offsets:
            return None
        i = bisect.bisect_left(self.offsets, offset_ms, key=lambda item: item[0])
        return self.offsets[min(i, len(self.offsets) - 1)][1]


class UplinkVad:
    """Our own VAD on the user's audio, for every provider: its ends time every reply the same way
    (sessions/latency.py); its starts clear the browser for upstreams that send no barge-in signal."""

    # audio kept to place an end precisely: more than hangover + tail, and a round grown under load
    RECENT_BYTES = 2 * BYTES_PER_SECOND
    # silero's probability fades over 2-3 windows after the voice stops, up to 6 in noise: a tail
    # this long holds the voice's end (bench/turn_accuracy.py: mean error 65 ms with 8, 50 with 12)
    TAIL_WINDOWS = 12
    TAIL_DB = -25.0  # 10 ms blocks this far below the loudest of the tail are not speech,
    FLOOR_FACTOR = 2.0  # nor those within 6 dB of the noise floor

    # The page's own scores (`vad` messages, docs/protocol.md): at most this many windows a message,
    # and audio that waits longer than this for its scores goes to our model instead (a page whose
    # scoring stopped must not leave the call without barge-in)
    MAX_SCORES = 32
    LAG_WINDOWS = 32  # about 1 s

    def __init__(self):
        self.vad = vad.Vad()  # the process's one model; this call keeps only silero's state
        self.turns = vad.TurnDetector(window_ms=self.vad.window_ms, start_windows=4, hangover_ms=300)
        self._recent = bytearray()
        self._total = 0  # bytes of audio seen
        self.scored = 0  # windows the page scored (a call whose page scores its own audio)
        self._known = 0  # bytes at the head of the model's next audio that _recent holds already

    @staticmethod
    def turn_events_of_many(items: list[tuple[UplinkVad, bytes]]) -> list[list]:
        """For each call, the user's turn starts and ends (vad.TurnEvent) in its new audio, every
        call's windows run as one batch (VAD_ROUNDS); an end's `end_ms` is where the voice
        stopped (see `_voice_end_ms`)."""
        for uplink, pcm in items:
            uplink._remember(pcm[uplink._known :])
            uplink._known = 0
        probs = vad.process_many([(uplink.vad, pcm) for uplink, pcm in items])
        return [uplink._events(p) for (uplink, _), p in zip(items, probs, strict=True)]

    def take_scores(self, message: dict) -> list:
        """The page's silero scores for its next windows of the audio it sent (`parse_scores`): the
        turn starts and ends they make, as `turn_events_of_many` gives ours. ValueError if the
        message is not the next scores of audio that arrived."""
        scores = parse_scores(message, self.scored, self._total // (vad.WINDOW * 2), self.MAX_SCORES)
        self.scored += len(scores)
        return self._events(scores)

    def hear(self, pcm: bytes) -> bool:
        """Audio of a call whose page scores it: kept to place ends; False once audio has waited
        LAG_WINDOWS for its scores."""
        self._remember(pcm)
        return self._total // (vad.WINDOW * 2) - self.scored <= self.LAG_WINDOWS

    def unscored(self) -> bytes:
        """For our model, when it takes over from the page: the audio from the first window without
        a score (what of it is still kept; the detector's clock skips what is not)."""
        start = self.scored * vad.WINDOW * 2
        first = self._total - len(self._recent)
        if start < first:
            skipped = -(-(first - start) // (vad.WINDOW * 2))
            self.turns.position_ms += skipped * self.vad.window_ms
            start += skipped * vad.WINDOW * 2
        self._known = self._total - start
        return bytes(self._recent[start - first :])

    def _remember(self, pcm: bytes) -> None:
        self._recent += pcm
        self._total += len(pcm)
        del self._recent[: max(0, len(self._recent) - self.RECENT_BYTES)]

    def _events(self, probs: list[float]) -> list:
        events = []
        for prob in probs:
            event = self.turns.update(prob)
            if event is not None and event.kind == "end":
                event = replace(event, end_ms=self._voice_end_ms(event.end_ms))
            if event is not None:
                events.append(event)
        return events

    def _voice_end_ms(self, vad_end_ms: float) -> float:
        """The VAD's last voiced window ends up to ~100 ms after the voice (the model's probability
        fades); the last 10 ms block of its final windows within TAIL_DB of their loudest is the end.
        It only ever moves the end earlier, and not at all where noise is as loud as the tail."""
        end = round(vad_end_ms * 32)  # byte offsets in the stream
        start = end - round(self.TAIL_WINDOWS * self.vad.window_ms * 32)
        first = self._total - len(self._recent)
        if start < first or end > self._total:
            return vad_end_ms
        rms = _block_rms(self._recent[start - first :])  # 10 ms blocks from the tail to now
        tail = rms[: (end - start) // 320]
        if not len(tail):
            return vad_end_ms
        # The hangover after the end is in `rms` too: its quietest blocks are the room's noise.
        floor = np.percentile(rms, 20) * self.FLOOR_FACTOR
        loud = np.nonzero(tail >= max(tail.max() * 10 ** (self.TAIL_DB / 20), floor))[0]
        return (start + (loud[-1] + 1) * 320) / 32 if len(loud) else vad_end_ms

    def close(self) -> None:
        self.vad.close()


def parse_scores(message: dict, expected: int, heard: int, most: int) -> list[float]:
    """A `vad` message's scores, checked: `from` must be `expected` (the next window without a
    score), `scores` 1 to `most` probabilities, none for a window whose audio (`heard` windows so
    far) has not arrived."""
    first, scores = message.get("from"), message.get("scores")
    if type(first) is not int or first != expected:
        raise ValueError(f"'from' must be {expected}, the next window without a score (got {first!r}).")
    if not isinstance(scores, list) or not 1 <= len(scores) <= most:
        raise ValueError(f"'scores' must be a list of 1 to {most} probabilities.")
    if not all(type(p) in (int, float) and 0 <= p <= 1 for p in scores):  # NaN fails the comparison
        raise ValueError("Each score must be a number from 0 to 1.")
    if first + len(scores) > heard:
        raise ValueError(f"Scores for windows up to {first + len(scores)}, but audio for {heard} arrived.")
    return [float(p) for p in scores]


def _block_rms(pcm: bytes | bytearray) -> np.ndarray:
    """RMS of each whole 10 ms block of s16le 16 kHz audio."""
    samples = np.frombuffer(bytes(pcm[: len(pcm) // 320 * 320]), dtype="<i2").astype(np.float32)
    return np.sqrt((samples.reshape(-1, 160) ** 2).mean(axis=1)) if len(samples) else samples


class Relay:
    def __init__(
        self,
        conversation_id,
        upstream: Upstream,
        browser: Browser,
        *,
        provider: str,
        playback_rate: int = 24000,
        close_timeout: float = 2.0,
        on_end: Callable[[int], Awaitable[None]] | None = None,
        sandbox: bool = False,
        record: bool = False,
        credentials: dict | None = None,
        page_vad: bool = False,
    ):
        self.conversation_id = conversation_id
        self.upstream = upstream
        self.browser = browser
        self.provider = provider
        self.playback_rate = playback_rate
        self.close_timeout = close_timeout
        self.on_end = on_end
        self.sandbox = sandbox  # the upstream is a vendor's sandbox, not the real service
        self.credentials = credentials or {}  # the user's own provider token, for the queued save
        self.ready = False
        self.ended = False
        self._inbox: asyncio.Queue = asyncio.Queue(maxsize=100)  # about 2 s of 20 ms frames
        # Uplink frames are written at once when nothing is ahead of them (feed_audio); a write that
        # waits continues in `_sending` while later input queues in `_inbox` behind it.
        self._sending: asyncio.Task | None = None
        self._send_name = f"relay-send-{conversation_id}"  # formatted once: a UUID per frame cost 1 %
        self._writer_busy = False
        self._convert: Converter | None = None  # browser audio to the upstream's input rate
        self._bucket = TokenBucket(rate=BYTES_PER_SECOND * 1.5, burst=BYTES_PER_SECOND * 2)
        self._timeline = Timeline()
        self._out: Converter | None = None
        self._t0 = time.monotonic()
        self._sequence = 0
        self._ids: dict[str, str | None] = {"user": None, "agent": None}
        self._counter = 0
        self._pending: dict[str, Transcript] = {}
        self._clock = ReplyClock()  # per-turn reply latency from our own VAD (sessions/latency.py)
        self._measured: Measure | None = None  # a reply's figures, for the agent turn stored next
        self._awaiting: tuple[int, Measure, str] | None = None  # (sequence, measure, id): stored first
        self._waterfall = CallTimeline(rate=playback_rate)  # per-reply waterfall, turn-taking timeline
        self._reply_started: float | None = None
        self._last_warning: dict[str, float] = {}
        self._stop_reason: str | None = None
        self.metrics = {"latencies_ms": [], "frames_in": 0, "frames_out": 0, "dropped_frames": 0}
        if upstream.capabilities.direct_media:
            self.metrics["agent_frames_in"] = 0
        self._vad: UplinkVad | None = None
        self._vad_events: asyncio.Queue = asyncio.Queue()  # turn events (or a failure) from VAD_ROUNDS
        # The page scores its own audio with silero (docs/protocol.md, `vad`): our model runs for this
        # call only if its scores go wrong or stop. Either way the audio reaches our VAD on arrival,
        # not behind the upstream's writes, so it is there before the scores that follow it.
        self._page_vad = self._vad_on_arrival = page_vad
        self.metrics["vad"] = "page" if page_vad else "server"
        self._audible_until = 0.0  # when the agent audio sent so far ends playing in the browser
        self._muted = False  # after our own barge-in: drop the old reply's audio until the next turn
        self._cut_short = False
        self._last_agent: tuple[int, dict] | None = None  # (sequence, message) of the last agent turn
        self._turn_lock = asyncio.Lock()
        self.capabilities = upstream.capabilities  # declared by every client (sessions/upstreams/base.py)
        self._failure: Exception | None = None  # what ended the writer, for run() to report
        self.direct = self.capabilities.direct_media
        self.transport: str | None = None  # the direct transport, once `join` was sent
        self.recorder: Recorder | None = None  # direct media: gets every recording frame (see Recorder)
        self._agent_bucket = TokenBucket(rate=BYTES_PER_SECOND * 1.5, burst=BYTES_PER_SECOND * 2)
        self._agent_heard_until = 0.0  # direct media: the stretch of audible agent audio ends here
        self.record = record  # keep the call's audio (sessions/recording.py; settings.RECORDING)
        self._recording: recording.Handle | None = None
        self.recording: recording.Recording | None = None  # relayed calls feed it; direct ones via recorder
        self._stretch = [0.0, 0.0]  # the agent audio playing: when it started, seconds of it sent
        self._heard: tuple[int, int] | None = None  # (played, sent) ms of the reply a clear cut short
        # Presenter mode (sessions/audience.py): gets every message and audio frame sent to the
        # browser, to mirror to an audience. None, the usual case, costs the call nothing.
        self.mirror: Callable[[dict | bytes], None] | None = None

    # ---- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, announce `ready`, pump upstream events until the upstream ends.

        The outcome follows the contract in sessions/upstreams/base.py: an `UpstreamError` (from
        connect, the writer or the reader) fails the call with its own code; any other exception
        is a bug, reported to the browser only as `internal`."""
        writer = listener = None
        status, reason = Conversation.Status.FAILED, "internal error"
        try:
            self._sequence = await self._last_sequence()
            await self._connect()
            self._vad = await asyncio.get_running_loop().run_in_executor(VAD_EXECUTOR, UplinkVad)
            VAD_ROUNDS.add(self._vad, self._vad_events.put_nowait)
            await self._mark_active()
            await self._start_recording()
            await self._announce()
            writer = asyncio.create_task(self._write_upstream(), name=f"relay-writer-{self.conversation_id}")
            listener = asyncio.create_task(self._listen(), name=f"relay-vad-{self.conversation_id}")
            status, reason = await self._pump()
            if self._failure is not None:
                if status == Conversation.Status.FAILED:  # the reader ended because the writer failed
                    raise self._failure
                # A send that failed as the call was ending anyway (a stop, an `Ended`): not a failure.
                log.warning("relay %s: a send failed as the call ended", self.conversation_id,
                            exc_info=self._failure)  # fmt: skip
        except Exception as exc:  # the writer's failure first: closing the upstream for it ended the reader
            status, reason = await self._failed(self._failure or exc)
        except asyncio.CancelledError:
            status, reason = Conversation.Status.ENDED, self._stop_reason or "browser disconnected"
            raise
        finally:
            await _cancel(writer)
            await _cancel(self._sending)
            await _cancel(listener)
            await self._finish(status, reason)

    async def _connect(self) -> None:
        try:
            await asyncio.wait_for(self.upstream.connect(), CONNECT_TIMEOUT)
        except TimeoutError:
            message = f"The provider did not answer within {CONNECT_TIMEOUT:g} s."
            raise UpstreamError(message, code=f"{self.provider}.timeout") from None

    async def _failed(self, exc: Exception) -> tuple[str, str]:
        """Tell the browser why the call failed: the client's own code and message for an
        UpstreamError; for anything else (a bug) only `internal`, with the traceback in the log."""
        if isinstance(exc, UpstreamError):
            await self.error(exc.code, exc.message, fatal=True)
            return Conversation.Status.FAILED, exc.message
        log.error("relay %s: the %s client crashed", self.conversation_id, self.provider, exc_info=exc)
        await self.error("internal", INTERNAL_MESSAGE, fatal=True)
        return Conversation.Status.FAILED, "internal error"

    async def stop(self, reason: str) -> None:
        """End the conversation: close the upstream (bounded); `run()` then finishes."""
        self._stop_reason = self._stop_reason or reason
        await self._close_upstream()

    async def _pump(self) -> tuple[str, str]:
        async for event in self.upstream.events():
            outcome = await self._handle(event)
            if outcome:
                return outcome
        if self._stop_reason:
            return Conversation.Status.ENDED, self._stop_reason
        return Conversation.Status.FAILED, "the provider closed the connection"

    async def _finish(self, status: str, reason: str) -> None:
        if self.ended:
            return
        self.ended = True
        await self._close_upstream()
        if self._recording is not None:
            await recording.finish(self._recording)
        if self._vad:  # in its thread, after any round still in it
            VAD_ROUNDS.remove(self._vad)
            await asyncio.get_running_loop().run_in_executor(VAD_EXECUTOR, self._vad.close)
        await self._store_pending()
        await self._mark_ended(status, reason)
        await self._send({"type": "ended", "reason": reason})
        await self._queue_save()
        if self.on_end:
            await self.on_end(1000 if status == Conversation.Status.ENDED else 4500)

    async def _queue_save(self) -> None:
        """Providers with a save-transcript API get the finished conversation queued for saving;
        the outbox worker delivers it (sessions/outbox.py), retrying as long as it may help."""
        if not self.capabilities.saves_transcript or not self.ready:
            return
        try:
            await outbox.aenqueue(self.conversation_id, credentials=self.credentials)
        except Exception:  # the call is over all the same; the owner can ask for a save again
            log.exception("queueing the transcript save of %s", self.conversation_id)

    async def _close_upstream(self) -> None:
        try:
            await asyncio.wait_for(self.upstream.close(), self.close_timeout)
        except (TimeoutError, UpstreamError) as exc:
            log.warning("closing upstream of %s: %r", self.conversation_id, exc)
        except Exception:  # a bug in the client's close(): the call ends all the same
            log.exception("closing upstream of %s", self.conversation_id)

    # ---- browser -> upstream ---------------------------------------------------------

    async def feed_audio(self, pcm: bytes) -> None:
        """A binary frame from the browser, already checked for shape by the consumer."""
        if not self.ready:
            await self.warn("not_ready", "Audio arrived before the server said ready; it was dropped.")
            return
        if self._vad_on_arrival and not self._hear(pcm):  # the page scored every frame it sent
            await self._page_vad_failed("vad_late", LATE_SCORES)
        if not self._bucket.take(len(pcm)):
            self.metrics["dropped_frames"] += 1
            await self.warn("flood", "Audio is arriving faster than real time; frames were dropped.")
            return
        if self._writer_busy or not self._inbox.empty() or (self._sending and not self._sending.done()):
            try:
                self._inbox.put_nowait(("audio", pcm))
            except asyncio.QueueFull:
                self.metrics["dropped_frames"] += 1
                await self.warn("upstream_slow", "The provider is not keeping up; audio was dropped.")
                return
        else:  # nothing ahead of it: written now, without the writer task's queue hop
            self._sending = eager.start(self._write_now(pcm), name=self._send_name)
        self.metrics["frames_in"] += 1
        now = time.monotonic()
        self._input_started(pcm, now)
        self._timeline.add(len(pcm), now)
        if self.recording is not None:
            self.recording.user(pcm, now)

    def _input_started(self, pcm: bytes, now: float) -> None:
        """Where the user's input stream begins on the call's clock: vendors give user turns'
        start_ms as offsets into that stream; this puts them on the recording's timeline."""
        if "input_offset_ms" not in self.metrics:
            self.metrics["input_offset_ms"] = max(0, self._offset_ms(now) - round(len(pcm) / 32))

    async def feed_recording(self, channel: int, pcm: bytes) -> None:
        """Direct media: a recording-only frame the page tagged with `channel`, already checked for
        shape by the consumer. The user's goes to our VAD and Timeline (never to the vendor, which
        has it over WebRTC); the agent's marks when replies became audible. Both go to `recorder`."""
        if not self.ready:
            await self.warn("not_ready", "Audio arrived before the server said ready; it was dropped.")
            return
        bucket = self._bucket if channel == USER_CHANNEL else self._agent_bucket
        if not bucket.take(len(pcm)):
            self.metrics["dropped_frames"] += 1
            await self.warn("flood", "Audio is arriving faster than real time; frames were dropped.")
            return
        now = time.monotonic()
        if self.recorder is not None:
            self.recorder(CHANNELS[channel], pcm, now)
        if channel == AGENT_CHANNEL:
            self.metrics["agent_frames_in"] += 1
            await self._on_agent_heard(pcm, now)
            return
        self.metrics["frames_in"] += 1
        self._input_started(pcm, now)
        self._timeline.add(len(pcm), now)
        if not self._hear(pcm):  # for our VAD only
            await self._page_vad_failed("vad_late", LATE_SCORES)

    async def _on_agent_heard(self, pcm: bytes, now: float) -> None:
        """The agent as the page heard it: its first audible frame after a silence starts a stretch,
        which times the reply as "first agent audio sent" does for relayed calls."""
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        if not len(samples) or np.sqrt((samples**2).mean()) < AUDIBLE_RMS:
            return
        measure = None
        if now > self._agent_heard_until:
            if self._reply_started is None:
                self._reply_started = now
            measure = self._clock.agent_audio(now, self.upstream.last_timings)
        self._agent_heard_until = now + AGENT_GAP_S
        if measure is not None:
            await self._on_measured(measure)

    async def feed_forward(self, source: str, message: dict) -> None:
        """Direct media: a vendor message the page forwarded, for the client to parse (its
        `forward()`, called from the writer task so a slow client never blocks the socket)."""
        if not self.direct:
            await self.error("forward_unsupported", "This call's media is relayed: nothing to forward.")
            return
        if self.transport is None or source != self.transport:
            joined = self.transport or "joined"
            message = f"Forwarded messages must come from this call's {joined} transport (got {source!r})."
            await self.error("bad_forward", message)
            return
        try:
            self._inbox.put_nowait(("forward", message))
        except asyncio.QueueFull:
            await self.warn("upstream_slow", "The provider is not keeping up; a forwarded message was lost.")

    async def feed_text(self, text: str) -> None:
        if not self.capabilities.accepts_text:
            await self.error("text_unsupported", "This provider does not take typed turns.")
            return
        self._clock.text(time.monotonic())
        self._reply_started = None
        await self._inbox.put(("text", text))

    async def playback(self, report: dict) -> None:
        for key in ("played_ms", "buffered_ms", "underruns"):
            value = report.get(key)
            if isinstance(value, int | float) and value >= 0:
                self.metrics[f"playback_{key}"] = value
        edges = report.get("edges")
        if isinstance(edges, list) and not self.direct:
            edges = [e for e in edges if isinstance(e, dict)]
            for reply in self._waterfall.edges(edges, time.monotonic()):
                await self._reply_changed(reply)

    async def _write_upstream(self) -> None:
        """Browser input queued behind a write still under way, to the upstream, in order. Whatever
        a send raises ends the call: it is kept for run() to report, and closing the upstream ends
        the reader."""
        try:
            while True:
                kind, payload = await self._inbox.get()
                self._writer_busy = True
                if self._sending is not None:  # a frame written at once went first; its errors are its own
                    await asyncio.wait([self._sending])
                if self._failure is not None:
                    return
                if kind == "text":
                    await self.upstream.send_text(payload)
                elif kind == "forward":
                    await self.upstream.forward(payload)
                else:
                    await self._write_audio(payload)
                self._writer_busy = False
        except Exception as exc:
            self._failure = exc
            await self._close_upstream()

    async def _write_now(self, pcm: bytes) -> None:
        """One uplink frame with nothing queued ahead of it (feed_audio): a failure as in the writer."""
        if self._failure is not None:
            return
        try:
            await self._write_audio(pcm)
        except Exception as exc:
            self._failure = exc
            await self._close_upstream()

    async def _write_audio(self, pcm: bytes) -> None:
        if self._convert is None:
            self._convert = Converter(INPUT_RATE, getattr(self.upstream, "input_rate", INPUT_RATE), FRAME_MS)
        for frame in self._convert.push(pcm):
            await self.upstream.send_audio(frame)
        if not self._vad_on_arrival:
            VAD_ROUNDS.feed(self._vad, pcm)

    def _hear(self, pcm: bytes) -> bool:
        """The user's audio as it arrives, for our VAD: the page's scores for it follow, or our model
        scores it (_listen). False once the page's scores are LAG_WINDOWS late. Not a coroutine: it
        runs for every frame."""
        if not self._page_vad:
            VAD_ROUNDS.feed(self._vad, pcm)
            return True
        return self._vad.hear(pcm)

    async def vad_scores(self, message: dict) -> None:
        """A `vad` message: the page's silero scores for its next windows, which act as our model's
        would (turn starts and ends, barge-in, reply latency)."""
        if not self.ready:
            await self.warn("not_ready", "Scores arrived before the server said ready; they were dropped.")
            return
        if not self._page_vad:
            await self.warn("vad_ignored", "This call's VAD is the server's (ready.vad): scores are ignored.")
            return
        try:
            events = self._vad.take_scores(message)
        except ValueError as exc:
            await self._page_vad_failed("bad_vad", str(exc))
            return
        if events:
            await self._on_user_vad(events)

    async def _page_vad_failed(self, code: str, message: str) -> None:
        """Our model takes over from the first window without a score; the turn under way goes on."""
        self._page_vad = False
        self.metrics.update(vad="server", vad_fallback=code)
        VAD_ROUNDS.feed(self._vad, self._vad.unscored())
        await self.error(code, f"{message} The server's own VAD scores this call from here.")

    async def _listen(self) -> None:
        """Our VAD over the uplink audio, behind the writer (see VAD_EXECUTOR). A failure here is a
        bug that costs latency figures and our barge-in, not the call: logged, and the VAD stops."""
        try:
            while True:
                events = await self._vad_events.get()  # only when a turn starts or ends
                if isinstance(events, Exception):
                    raise events
                await self._on_user_vad(events)
        except Exception:
            VAD_ROUNDS.remove(self._vad)
            log.exception("relay %s: our VAD failed; no latency figures from here", self.conversation_id)

    # ---- upstream -> browser ---------------------------------------------------------

    async def _handle(self, event) -> tuple[str, str] | None:
        match event:
            case Audio():
                await self._on_audio(event)
            case Transcript():
                await self._on_transcript(event)
            case Status(state=state):
                if state == "listening":
                    await self._flush_audio()
                await self._send({"type": "status", "state": state})
            case Interrupted():
                if self._out:
                    self._out.reset()
                self._cleared(time.monotonic())
                self._audible_until = 0.0  # the browser flushes: the next agent audio starts afresh
                await self._send({"type": "clear"})
            case ToolCall():
                await self._on_tool_call(event)
            case Error(code=code, message=message):  # recoverable by the contract: the call goes on
                await self.error(code, message)
            case Ended(reason=reason):
                return Conversation.Status.ENDED, self._stop_reason or reason
            case Join():
                await self._on_join(event)
        return None

    async def _on_join(self, event: Join) -> None:
        """Direct media: the owner's page joins the vendor's call with these short-lived credentials.
        The socket is the owner's alone (the consumer refuses anyone else with 4403). The token is
        never logged, nor stored."""
        if not self.direct or event.transport not in TRANSPORTS:  # a bug in the client: the call ends
            raise RuntimeError(f"a {event.transport!r} join from a client that declared no direct media")
        self.transport = event.transport
        message = {"type": "join", "transport": event.transport, "url": event.url, "token": event.token,
                   "call_id": event.call_id}  # fmt: skip
        note = event.note or (SANDBOX_LIVEKIT_NOTE if self.sandbox and event.transport == "livekit" else "")
        if note:
            message["note"] = note
        await self._send(message)

    async def _on_user_vad(self, events: list) -> None:
        for event in events:
            if event.kind == "start":
                self._clock.speech_started(time.monotonic())
                self._waterfall.user_started(self._timeline.arrival(event.start_ms) or time.monotonic())
                if not self.capabilities.barge_in_signal:
                    await self._interrupt_locally()
            elif event.kind == "end":
                await self._on_speech_end(event)

    async def _on_speech_end(self, event) -> None:
        """Our VAD is sure the user stopped: the end is when the last voiced audio reached us (the
        decision came a hangover later)."""
        now = time.monotonic()
        end = self._timeline.arrival(event.end_ms) or now - event.hangover_ms / 1000
        self._waterfall.user_ended(end)
        if not self.capabilities.user_transcripts:
            # No user transcript will mark the turn (Aivoco): the end of the user's speech does,
            # so the next reply plays after a barge-in.
            self._muted = False
            if self._reply_started is not None and self._reply_started < end:
                self._reply_started = None
        measure = self._clock.speech_ended(end)
        if measure is not None:
            await self._on_measured(measure)

    async def _interrupt_locally(self) -> None:
        """The user talks over the agent: flush the browser now, drop the rest of that reply."""
        if time.monotonic() >= self._audible_until:
            return
        self._cleared(time.monotonic())
        self._audible_until = 0.0
        self._muted = True
        if self._out:
            self._out.reset()
        await self._send({"type": "clear"})
        async with self._turn_lock:  # decide against a turn stored completely, or the next one
            if self._reply_started is None and self._last_agent:
                await self._mark_last_agent_interrupted()  # its text came before the user cut in
            else:
                self._cut_short = True

    async def _mark_last_agent_interrupted(self) -> None:
        sequence, message = self._last_agent
        self._last_agent = None
        turn = Turn.objects.filter(conversation_id=self.conversation_id, sequence=sequence)
        # An agent turn's data is otherwise empty: the heard part is all of it.
        await turn.aupdate(interrupted=True, data=self._heard_data(message["text"]))
        await self._send({**message, "interrupted": True})

    def _cleared(self, now: float) -> None:
        """The browser drops the agent audio it has not played yet: the recording drops it too, and
        how much of the reply was heard is kept for its turn (Turn.data["heard"]); the waterfall
        notes the flush."""
        self._waterfall.flushed(now)
        if self.recording is not None and not self.direct:
            self.recording.clear(now)
        self._heard = None  # unless something was still playing, no reply was cut short
        if now < self._audible_until:
            started, sent = self._stretch
            self._heard = (round(min(now - started, sent) * 1000), round(sent * 1000))

    def _heard_data(self, text: str) -> dict:
        """For an interrupted agent turn: the part heard, estimated from the share of its audio that
        played before the clear (sessions/recording.heard_part)."""
        if self._heard is None:
            return {}
        (played, sent), self._heard = self._heard, None
        return {"heard": recording.heard_part(text, played, sent), "played_ms": played, "audio_ms": sent}

    async def _on_audio(self, event: Audio) -> None:
        if self._muted:
            return
        if len(event.pcm) % 2 or not 4000 <= event.rate <= 192000:
            await self.warn("bad_upstream_audio", "The provider sent malformed audio; it was skipped.")
            return
        if self._reply_started is None:
            self._reply_started = time.monotonic()
        if self._out is None or self._out.in_rate != event.rate:
            await self._flush_audio()
            self._out = Converter(event.rate, self.playback_rate, FRAME_MS, join=DOWNLINK_JOIN)
        for frame in self._out.push(event.pcm):
            await self._send_audio(frame)

    async def _flush_audio(self) -> None:
        if self._out:
            for frame in self._out.flush():
                await self._send_audio(frame)

    async def _send_audio(self, frame: bytes) -> None:
        self.metrics["frames_out"] += 1
        now = time.monotonic()
        measure = None
        stretch = now >= self._audible_until
        if stretch:  # the browser had nothing of ours left to play: a reply starts
            measure = self._clock.agent_audio(now, self.upstream.last_timings)
            self._stretch = [now, 0.0]
        seconds = len(frame) / 2 / self.playback_rate
        self._stretch[1] += seconds
        self._audible_until = max(self._audible_until, now) + seconds
        if self.recording is not None:
            self.recording.agent_sent(frame, now)
        self._waterfall.audio_sent(len(frame) // 2, now, stretch, self._audible_until)
        try:
            await self.browser.send_bytes(frame)
        except Exception as exc:  # the browser went away; the consumer's disconnect ends us
            log.debug("send to browser failed: %r", exc)
        if self.mirror is not None:
            self.mirror(frame)
        if measure is not None:  # after the frame: storing the figure must not delay the audio
            await self._on_measured(measure)

    async def _on_transcript(self, event: Transcript) -> None:
        ident = event.id or self._current_id(event.role)
        message = {
            "type": "transcript",
            "role": event.role,
            "text": event.text,
            "final": event.final,
            "id": ident,
            "interrupted": event.interrupted,
        }
        if not event.final:
            self._pending[event.role] = event
            await self._send(message)
            return
        self._pending.pop(event.role, None)
        self._ids[event.role] = None
        if event.role == "user":
            self._on_user_final(event)
            self._muted = False  # a new turn: the next reply may play
        else:
            await self._flush_audio()
        async with self._turn_lock:
            if event.role == "agent" and self._cut_short:
                event, self._cut_short = replace(event, interrupted=True), False
                message["interrupted"] = True
            await self._store_turn(event, ident)  # stored before it is shown: nothing said is lost
            if event.role == "agent":
                self._last_agent = None if event.interrupted else (self._sequence, message)
            await self._send(message)

    def _on_user_final(self, event: Transcript) -> None:
        """The vendor's final user transcript: kept beside our figure, with where the vendor says
        speech ended (an offset into our input stream) mapped to when that audio reached us."""
        vendor_end = self._timeline.arrival(event.end_ms) if event.end_ms is not None else None
        self._clock.user_final(time.monotonic(), vendor_end)
        self._waterfall.user_words(time.monotonic(), event.text)
        self._reply_started = None

    async def _on_measured(self, measure: Measure) -> None:
        """A reply's latency is known: shown now, stored with its agent turn (now, if that turn
        was stored first; else when it is)."""
        # Published before anything here waits: an agent turn stored meanwhile (the transcript
        # handler, under the turn lock) takes it. Set only after the awaits below, a turn stored
        # during them found neither this figure nor an open measure (it is complete), and the
        # figure went to the next turn instead (tests/test_waterfall.py under load).
        self._measured = measure
        latency = measure.latency_ms
        self.metrics["latencies_ms"].append(latency)
        await self._send({"type": "metrics", "latency_ms": latency, "latency_from": measure.source})
        previous = self._waterfall.replies[-1] if self._waterfall.replies else None
        reply = self._waterfall.measured(measure)
        if previous is not None and previous is not reply:  # its duration is known now
            await self._reply_changed(previous)
        async with self._turn_lock:
            if self._awaiting is None or self._awaiting[1] is not measure:
                return  # kept for the agent turn to come, or already taken by one stored meanwhile
            if self._measured is measure:
                self._measured = None
            (sequence, _, ident), self._awaiting = self._awaiting, None
            self._waterfall.stored(measure, sequence, ident)
            turn = Turn.objects.filter(conversation_id=self.conversation_id, sequence=sequence)
            await turn.aupdate(latency_ms=latency, timings=self._waterfall.timings(reply, self._t0))
        await self._send(self._waterfall.message(reply, self._t0))

    async def _reply_changed(self, reply: Reply) -> None:
        """A reply's waterfall gained a step (played at the page, its duration): stored and shown."""
        if reply.sequence is None:
            return
        turn = Turn.objects.filter(conversation_id=self.conversation_id, sequence=reply.sequence)
        await turn.aupdate(timings=self._waterfall.timings(reply, self._t0))
        await self._send(self._waterfall.message(reply, self._t0))

    def _current_id(self, role: str) -> str:
        if not self._ids[role]:
            self._counter += 1
            self._ids[role] = f"{role[0]}{self._counter}"
        return self._ids[role]

    async def _on_tool_call(self, event: ToolCall) -> None:
        data = {"id": event.id, "name": event.name, "arguments": event.arguments, "result": event.result}
        await self._create_turn(role=Turn.Role.TOOL, text=event.name, data=data)
        await self._send({"type": "tool_call", **data})

    # ---- persistence -----------------------------------------------------------------

    def _offset_ms(self, when: float | None = None) -> int:
        return round(((when or time.monotonic()) - self._t0) * 1000)

    async def _store_turn(self, event: Transcript, ident: str, final: bool = True) -> None:
        fields = {"role": event.role, "text": event.text, "final": final, "interrupted": event.interrupted}
        if event.role == "agent" and event.interrupted:
            fields["data"] = self._heard_data(event.text)
        fields["provider_ids"] = {"id": event.id} if event.id else {}
        if event.role == "user":
            fields["start_ms"], fields["end_ms"] = event.start_ms, event.end_ms
        else:
            fields["start_ms"] = self._offset_ms(self._reply_started) if self._reply_started else None
            fields["end_ms"] = self._offset_ms()
            self._reply_started = None
            if self._measured is not None and final:
                measure, self._measured = self._measured, None
                fields["latency_ms"] = measure.latency_ms
                fields["timings"] = self._waterfall.timings(self._waterfall.measured(measure), self._t0)
        await self._create_turn(**fields)
        if "timings" in fields:  # shown once its turn is there: the page puts the chip on it
            reply = self._waterfall.stored(measure, self._sequence, ident)
            await self._send(self._waterfall.message(reply, self._t0))
        if event.role == "agent" and final and "timings" not in fields and not event.interrupted:
            measure = self._clock.awaiting()  # its audio, or its figure, is still to come
            self._awaiting = (self._sequence, measure, ident) if measure is not None else None

    async def _create_turn(self, **fields) -> None:
        self._sequence += 1
        await Turn.objects.acreate(conversation_id=self.conversation_id, sequence=self._sequence, **fields)

    async def _store_pending(self) -> None:
        """Partial text of a turn the upstream never finished (it died mid-sentence) is kept too."""
        for event in list(self._pending.values()):
            if event.text.strip():
                await self._store_turn(event, event.id, final=False)
        self._pending.clear()

    async def _last_sequence(self) -> int:
        result = await Turn.objects.filter(conversation_id=self.conversation_id).aaggregate(m=Max("sequence"))
        return result["m"] or 0

    async def _mark_active(self) -> None:
        self._t0 = time.monotonic()
        await Conversation.objects.filter(id=self.conversation_id).aupdate(
            status=Conversation.Status.ACTIVE, started_at=timezone.now(), provider_refs=self._refs()
        )

    async def _start_recording(self) -> None:
        if not self.record:
            return
        self._recording = await recording.start(self.conversation_id, self._t0, self.playback_rate)
        if self._recording is not None:
            self.recording = self._recording.recording
            self.recorder = self.recorder or self.recording  # direct media: the page's tagged frames

    async def _mark_ended(self, status: str, reason: str) -> None:
        latencies = sorted(self.metrics["latencies_ms"])
        if latencies:
            self.metrics["latency_p50_ms"] = latencies[len(latencies) // 2]
        await self._store_waterfall()
        await Conversation.objects.filter(id=self.conversation_id).aupdate(
            status=status,
            ended_at=timezone.now(),
            end_reason=reason[:200],
            metrics=self.metrics,
            provider_refs=self._refs(),
        )

    def turn_taking_now(self) -> dict:
        """The call's turn-taking figures so far (sessions/turntaking.py), e.g. for a live view."""
        return self._waterfall.turn_taking(self._t0, time.monotonic())

    async def _store_waterfall(self) -> None:
        """At the end: each reply's final waterfall (its duration is known now), and the turn-taking
        figures with the timeline they come from (sessions/turntaking.py)."""
        self._waterfall.finish()
        for reply in self._waterfall.replies:
            if reply.sequence is not None:
                turn = Turn.objects.filter(conversation_id=self.conversation_id, sequence=reply.sequence)
                await turn.aupdate(timings=self._waterfall.timings(reply, self._t0))
        now = time.monotonic()
        self.metrics["timeline"] = self._waterfall.turn_taking_input(self._t0, now)
        self.metrics["turn_taking"] = self._waterfall.turn_taking(self._t0, now)

    def _refs(self) -> dict:
        """The provider's own ids for this call (connection data, call ids), for review and re-saving."""
        return dict(self.upstream.refs or {})

    async def _announce(self) -> None:
        self.ready = True
        await self._send(
            {
                "type": "ready",
                "protocol": PROTOCOL_VERSION,
                "input_rate": INPUT_RATE,
                "output_rate": self.playback_rate,
                "frame_ms": FRAME_MS,
                "frame_bytes": frame_bytes(INPUT_RATE, FRAME_MS),
                "provider": self.provider,
                "conversation": str(self.conversation_id),
                "accepts_text": self.capabilities.accepts_text,
                "user_transcripts": self.capabilities.user_transcripts,
                "media": "direct" if self.direct else "relayed",
                "vad": self.metrics["vad"],
            }
        )

    # ---- messages to the browser -----------------------------------------------------

    async def error(self, code: str, message: str, fatal: bool = False) -> None:
        await self._send({"type": "error", "code": code, "message": message, "fatal": fatal})

    async def warn(self, code: str, message: str) -> None:
        """An error event at most once a second per code, so a flood does not become one too."""
        now = time.monotonic()
        if now - self._last_warning.get(code, -10.0) >= 1.0:
            self._last_warning[code] = now
            await self.error(code, message)

    async def _send(self, message: dict) -> None:
        try:
            await self.browser.send_json(message)
        except Exception as exc:  # the browser went away; its disconnect ends the relay
            log.debug("send to browser failed: %r", exc)
        if self.mirror is not None:
            self.mirror(message)


async def _cancel(task: asyncio.Task | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
