"""The built-in offline voice agent: VAD -> speech to text -> responder -> text to speech.

Use::

    agent = Agent(script, voice="en-us+f3")
    await agent.start()              # loads models, speaks the greeting
    agent.feed(pcm16k)               # s16le mono 16 kHz, any length, from the event loop
    await agent.send_text("hello")   # a typed user turn
    async for event in agent.events(): ...
    await agent.close()

Events are the engine's own dataclasses (`playground.engine.events`); the engine imports
nothing from `sessions/`, whose local upstream translates them.

Output pacing (a decision): audio is emitted at real time, at most `lead_ms`
ahead of the wall clock. The engine therefore knows, at any instant, roughly
how much of its reply the listener has heard, which is what barge-in reports
as the interrupted turn's text (whole clauses heard, plus the share of the
current clause's words proportional to its audio played). The relay and the
browser keep small buffers and need no pacing of their own; an interruption
costs at most `lead_ms` of already-sent audio, which the browser's `clear`
flushes.

End of turn (a decision): a turn ends after `hangover_ms` (default 500) of
silence after the last voiced VAD window. The hangover is nearly all of the
reply latency: bench/agent_latency.py measures end of speech -> first agent
audio at ~610 ms median with 500 ms (~510 ms with 400 ms), of which STT final
is ~5 ms (decoded while the user talks), the FAQ responder <1 ms and the first
espeak-ng clause ~20-35 ms. 500 ms stays inside the 700 ms budget and rides
over most mid-sentence pauses; a shorter value cuts slow speakers off.
A user who starts talking again while the agent is still thinking cancels that
reply, so a premature end of turn costs a lost half-sentence, not a talk-over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from . import stt, tts, vad
from .events import AgentEvent, Audio, Failure, Interrupted, Status, Transcript
from .responder import LLMConfig, Responder
from .script import Script
from .text import spoken_prefix

log = logging.getLogger(__name__)
BYTES_PER_MS = 32  # s16le mono at 16 kHz
PREROLL_MS = 250  # audio kept before the detected start: the VAD needs ~100 ms to be sure
CLOSE_TIMEOUT = 2.0


@dataclass
class _Played:
    """What one agent turn has put on the wire, to estimate what the listener heard."""

    speed: float
    lead_s: float
    t0: float | None = None
    emitted_s: float = 0.0
    clauses: list[tuple[str, float, float]] = field(default_factory=list)  # (text, start_s, duration_s)

    def heard_s(self) -> float:
        if self.t0 is None:
            return 0.0
        if self.speed <= 0:  # unpaced (tests, benchmarks): everything emitted counts as heard
            return self.emitted_s
        return min(self.emitted_s, (time.monotonic() - self.t0) * self.speed)

    def heard_text(self) -> str:
        heard, out = self.heard_s(), []
        for text, start, duration in self.clauses:
            if heard >= start + duration:
                out.append(text)
            elif heard > start:
                out.append(spoken_prefix(text, (heard - start) / duration))
        return " ".join(t for t in out if t)


class Agent:
    """One conversation with the offline agent. Not thread-safe: use from one event loop."""

    def __init__(
        self,
        script: Script,
        *,
        voice: str = "",
        language: str = "",
        llm: LLMConfig | dict | None = None,
        hangover_ms: float = 500.0,
        start_threshold: float = 0.5,
        start_windows: int = 3,
        min_speech_ms: float = 200.0,
        lead_ms: float = 200.0,
        speed: float = 1.0,
        chunk_ms: float = 40.0,
        partial_every: float = 0.3,
        words_per_minute: int = 175,
        greet: bool = True,
        responder=None,
    ):
        self.script = script
        self.language = language or script.language or "en"
        self.voice = tts.resolve_voice(self.language, voice)
        llm = LLMConfig.from_dict(llm) if isinstance(llm, dict) or llm is None else llm
        # Any object with Responder's reply(history) and aclose() (the Aivoco sandbox's calls functions).
        self.responder = responder if responder is not None else Responder(script, llm)
        # Hysteresis: a turn starts at `start_threshold` and stays voiced down to 0.15 below it.
        self.turns = vad.TurnDetector(
            start_threshold=start_threshold,
            end_threshold=max(0.15, start_threshold - 0.15),
            start_windows=start_windows,
            hangover_ms=hangover_ms,
            min_speech_ms=min_speech_ms,
        )
        self.speed, self.lead_s, self.chunk_ms = speed, lead_ms / 1000, chunk_ms
        self.partial_every, self.wpm, self.greet = partial_every, words_per_minute, greet
        self.last_timings: dict[str, float] = {}
        self.timings: list[dict[str, float]] = []
        self.history: list[dict] = []
        self._queue: asyncio.Queue[AgentEvent | None] = asyncio.Queue()
        self._vad: vad.Vad | None = None
        self._rec: stt.Recognizer | None = None
        self._utt: stt.Utterance | None = None
        self._utt_id = ""
        self._recent = bytearray()  # input audio not yet trimmed; starts at byte _recent_at of the stream
        self._recent_at = 0
        self._pushed_to = 0  # stream byte up to which the current utterance has audio
        self._reply: asyncio.Task | None = None
        self._played: _Played | None = None
        self._reply_id = ""
        self._tasks: set[asyncio.Task] = set()
        self._seq = 0
        self._closed = False

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the VAD and the topic's recogniser (in the STT executor) and speak the greeting."""
        loop = asyncio.get_running_loop()
        self._vad = await loop.run_in_executor(stt.EXECUTOR, vad.Vad)
        self.turns.window_ms = self._vad.window_ms
        self._rec = await loop.run_in_executor(stt.EXECUTOR, stt.Recognizer, self.script)
        self._put(Status("listening"))
        if self.greet and self.script.greeting:
            self._start_reply(self._speak_reply(_once(self.script.greeting), {}))

    async def close(self) -> None:
        """Cancel and await every task (bounded), release models, end `events()`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if self._utt is not None:
            tasks.append(asyncio.ensure_future(self._utt.cancel()))
            self._utt = None
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.responder.aclose(), CLOSE_TIMEOUT)
        if self._vad is not None:
            self._vad.close()
        self._queue.put_nowait(None)

    async def events(self) -> AsyncIterator[AgentEvent]:
        """Every event in order; ends after `close()`. One reader only."""
        while (event := await self._queue.get()) is not None:
            yield event

    # ---- input -----------------------------------------------------------------------------

    def feed(self, pcm: bytes) -> None:
        """Run the VAD over new input audio and act on turn starts and ends (cheap: ~0.4 ms per 32 ms)."""
        if self._closed or self._vad is None:
            return
        self._recent += pcm
        for prob in self._vad.process(pcm):
            event = self.turns.update(prob)
            position = int(self.turns.position_ms * BYTES_PER_MS)
            if event is not None and event.kind == "start":
                self._on_speech_start(event)
            elif self._utt is not None:
                self._push(position)
            if event is not None and event.kind in ("end", "discard"):
                self._on_turn_end(event)
        self._trim_recent()

    def _push(self, to_byte: int) -> None:
        start = max(self._pushed_to, self._recent_at) - self._recent_at
        self._utt.push(bytes(self._recent[start : to_byte - self._recent_at]))
        self._pushed_to = to_byte

    def _trim_recent(self) -> None:
        keep_from = int((self.turns.position_ms - PREROLL_MS) * BYTES_PER_MS)
        if self._utt is not None:
            keep_from = min(keep_from, self._pushed_to)
        drop = max(0, keep_from - self._recent_at)
        if drop:
            del self._recent[:drop]
            self._recent_at += drop

    def _on_speech_start(self, event: vad.TurnEvent) -> None:
        self._barge_in()
        self._utt_id = self._next_id("u")
        utt_id = self._utt_id
        self._utt = stt.Utterance(
            self._rec, lambda text: self._put(Transcript("user", text, False, utt_id)), self.partial_every
        )
        self._pushed_to = max(self._recent_at, int((event.start_ms - PREROLL_MS) * BYTES_PER_MS))
        self._push(int(self.turns.position_ms * BYTES_PER_MS))

    def _on_turn_end(self, event: vad.TurnEvent) -> None:
        utt, self._utt = self._utt, None
        if event.kind == "discard":
            self._own(asyncio.ensure_future(utt.cancel()))
            return
        clock = {"end_of_turn": time.monotonic(), "hangover_ms": event.hangover_ms}
        self._start_reply(self._answer_speech(utt, self._utt_id, event, clock))

    async def send_text(self, text: str) -> None:
        """A typed user turn: answered exactly like a spoken one."""
        text = text.strip()
        if not text or self._closed:
            return
        self._barge_in()
        self._put(Transcript("user", text, True, self._next_id("u")))
        self._put(Status("thinking"))
        self._start_reply(self._answer(text, {"end_of_turn": time.monotonic(), "stt_final_ms": 0.0}))

    def say(self, pieces: AsyncIterator[str]) -> None:
        """Speak `pieces` now as an agent turn of its own (a vendor's opening line, a reminder), as
        the greeting is spoken; a reply still running is cancelled first (the newer one supersedes it)."""
        if self._closed:
            return
        if self._reply is not None and not self._reply.done():
            self._reply.cancel()
        self._start_reply(self._speak_reply(pieces, {}))

    # ---- replies ---------------------------------------------------------------------------

    def _start_reply(self, coro) -> None:
        self._reply = self._own(asyncio.ensure_future(coro))

    def _barge_in(self) -> None:
        """Stop the current reply now; if any of it was played, say so and report what was heard."""
        reply, self._reply = self._reply, None
        if reply is None or reply.done():
            return
        reply.cancel()
        played = self._played
        self._played = None
        if played is not None and played.t0 is not None:
            heard = played.heard_text()
            self._put(Interrupted())
            self._put(Transcript("agent", heard, True, self._reply_id, interrupted=True))
            self.history.append({"role": "assistant", "content": heard})
        self._put(Status("listening"))

    async def _answer_speech(
        self, utt: stt.Utterance, utt_id: str, event: vad.TurnEvent, clock: dict
    ) -> None:
        self._put(Status("thinking"))
        try:
            text = (await utt.finish()).strip()
        except Exception as exc:  # a failed decode must not end the conversation
            log.exception("speech recognition failed")
            self._put(Failure("stt", str(exc)))
            text = ""
        clock["stt_final_ms"] = (time.monotonic() - clock["end_of_turn"]) * 1000
        if not text:
            self._put(Status("listening"))
            return
        self._put(Transcript("user", text, True, utt_id, round(event.start_ms), round(event.end_ms)))
        await self._answer(text, clock)

    async def _answer(self, text: str, clock: dict) -> None:
        self.history.append({"role": "user", "content": text})
        clock.setdefault("answer_at", time.monotonic())
        await self._speak_reply(self.responder.reply(list(self.history)), clock)

    async def _speak_reply(self, pieces: AsyncIterator[str], clock: dict) -> None:
        """Speak text pieces clause by clause, paced at real time; record the turn's timings."""
        self._reply_id = self._next_id("a")
        played = self._played = _Played(self.speed, self.lead_s)
        said: list[str] = []
        try:
            async with contextlib.aclosing(tts.speak(_timed(pieces, clock), self.voice, self.wpm)) as speech:
                async for clause, pcm, rate in speech:
                    said.append(clause)
                    self._put(Transcript("agent", " ".join(said), False, self._reply_id))
                    await self._play(played, clause, pcm, rate, clock)
            # Barge-in still counts while the tail plays; nothing said (an empty opening line) plays nothing.
            if played.t0 is not None:
                await self._sleep_until(played, played.emitted_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # report, and keep listening
            log.exception("reply failed")
            self._put(Failure("reply", str(exc)))
        self._played = None
        if said:
            self._put(Transcript("agent", " ".join(said), True, self._reply_id))
            self.history.append({"role": "assistant", "content": " ".join(said)})
        self._put(Status("listening"))

    async def _play(self, played: _Played, clause: str, pcm: bytes, rate: int, clock: dict) -> None:
        if played.t0 is None:
            self._put(Status("speaking"))
            played.t0 = time.monotonic()
            clock["first_audio"] = played.t0
            self._record(clock)
        duration = len(pcm) / 2 / rate
        played.clauses.append((clause, played.emitted_s, duration))
        for piece in _pieces(pcm, max(2, int(rate * self.chunk_ms / 1000) * 2)):
            await self._sleep_until(played, played.emitted_s - self.lead_s)
            self._put(Audio(piece, rate))
            played.emitted_s += len(piece) / 2 / rate

    async def _sleep_until(self, played: _Played, audio_s: float) -> None:
        if self.speed <= 0:
            return
        delay = played.t0 + audio_s / self.speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def _record(self, clock: dict) -> None:
        if "end_of_turn" not in clock or "first_audio" not in clock:
            return
        end = clock["end_of_turn"]
        timings = {
            "hangover_ms": clock.get("hangover_ms", 0.0),
            "stt_final_ms": clock.get("stt_final_ms", 0.0),
            "responder_ms": (clock.get("first_text", end) - clock.get("answer_at", end)) * 1000,
            "tts_first_chunk_ms": (clock["first_audio"] - clock.get("first_text", end)) * 1000,
            "turn_end_to_audio_ms": (clock["first_audio"] - end) * 1000,
        }
        timings["speech_end_to_audio_ms"] = timings["hangover_ms"] + timings["turn_end_to_audio_ms"]
        self.last_timings = {k: round(v, 1) for k, v in timings.items()}
        self.timings.append(self.last_timings)

    # ---- plumbing --------------------------------------------------------------------------

    def _own(self, task: asyncio.Task) -> asyncio.Task:
        """Every task the agent starts is tracked here so that close() cancels and awaits it."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _put(self, event: AgentEvent) -> None:
        if not self._closed:
            self._queue.put_nowait(event)

    def _next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}{self._seq}"


async def _once(text: str) -> AsyncIterator[str]:
    yield text


def _pieces(pcm: bytes, step: int) -> list[bytes]:
    """`pcm` cut into `step`-byte pieces; a short remainder joins the last piece (no 2 ms packets)."""
    pieces = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    if len(pieces) > 1 and len(pieces[-1]) < step // 2:
        pieces[-2] += pieces.pop()
    return pieces


async def _timed(pieces: AsyncIterator[str], clock: dict) -> AsyncIterator[str]:
    async with contextlib.aclosing(pieces):
        async for piece in pieces:
            clock.setdefault("first_text", time.monotonic())
            yield piece
