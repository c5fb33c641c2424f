"""Latency of the offline agent: end of user speech -> first agent audio.

Feeds flite speech (16 kHz, 20 ms frames) into an Agent in real time, the way
the relay does, and measures for each utterance the wall time from the frame
that holds the last voiced sample of the speech to the first Audio event of
the reply. Prints each turn, then the medians, with the agent's own breakdown:

  hangover     stream time from the VAD's last voiced window to the end-of-turn decision
  stt_final    end-of-turn decision -> final transcript
  responder    final transcript -> first reply text
  tts_first    first reply text -> first audio chunk emitted

Run:  .venv/bin/python bench/agent_latency.py [--hangover-ms 500] [--utterances 8] [--sessions 1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playground.engine.agent import Agent  # noqa: E402
from playground.engine.demo import RESTAURANT, SENTENCES  # noqa: E402
from playground.engine.events import Audio, Transcript  # noqa: E402
from playground.engine.text import word_error_rate  # noqa: E402
from tests.engine.speech import Speech, silence, trimmed  # noqa: E402

FRAME = 640  # 20 ms at 16 kHz s16le


class Clock:
    """Feeds frames on an absolute 20 ms schedule so sleeps do not drift."""

    def __init__(self, agent: Agent):
        self.agent, self.t0, self.frames = agent, time.monotonic(), 0

    async def feed(self, pcm: bytes) -> float:
        """Feed `pcm` in real time; return the wall time at which its last frame was fed."""
        at = time.monotonic()
        for i in range(0, len(pcm), FRAME):
            self.agent.feed(pcm[i : i + FRAME])
            at = time.monotonic()
            self.frames += 1
            await asyncio.sleep(max(0.0, self.t0 + self.frames * 0.02 - time.monotonic()))
        return at


async def one_turn(agent: Agent, clock: Clock, events: asyncio.Queue, pcm: bytes) -> tuple[float, str]:
    await clock.feed(silence(600))
    speech_end = await clock.feed(trimmed(pcm))  # the last frame holds the last voiced sample
    first_audio, user_text, done = None, "", False
    while first_audio is None:  # keep the microphone "open" with silence until the reply starts
        await clock.feed(silence(20))
        while not events.empty():
            event = events.get_nowait()
            if isinstance(event, Transcript) and event.role == "user" and event.final:
                user_text = event.text
            elif isinstance(event, Audio) and user_text and first_audio is None:
                first_audio = time.monotonic()
            done = done or _agent_final(event)
        if time.monotonic() - speech_end > 5:
            raise RuntimeError("no reply within 5 s")
    while not done:  # let the reply finish (unpaced) before the next question
        done = _agent_final(await events.get())
    return (first_audio - speech_end) * 1000, user_text


def _agent_final(event) -> bool:
    return isinstance(event, Transcript) and event.role == "agent" and event.final


async def run_session(index: int, samples, args) -> list[tuple[float, dict]]:
    agent = Agent(
        RESTAURANT,
        greet=False,
        hangover_ms=args.hangover_ms,
        speed=0,
        llm={"base_url": args.llm_url, "model": args.llm_model} if args.llm_url else None,
    )
    await agent.start()
    events: asyncio.Queue = asyncio.Queue()

    async def pump():
        async for event in agent.events():
            events.put_nowait(event)

    reader = asyncio.create_task(pump())
    clock = Clock(agent)
    await clock.feed(silence(20 * index * 7))  # stagger sessions so their turns do not end in lockstep
    rows = []
    try:
        for n in range(args.utterances):
            sentence, pcm = samples[(n + index) % len(samples)]
            latency, heard = await one_turn(agent, clock, events, pcm)
            rows.append((latency, agent.last_timings))
            t = agent.last_timings
            print(
                f"s{index} {n + 1:2d}  {latency:6.0f} ms  hangover {t['hangover_ms']:5.0f}"
                f"  stt_final {t['stt_final_ms']:5.1f}  responder {t['responder_ms']:5.1f}"
                f"  tts_first {t['tts_first_chunk_ms']:5.1f}"
                f"  wer {word_error_rate(sentence, heard):.2f}  {heard!r}"
            )
    finally:
        await agent.close()
        await reader
    return rows


async def main(args) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-speech-") as directory:
        speech = Speech(Path(directory))
        samples = [(s, speech.pcm(s)) for s in SENTENCES]
    results = await asyncio.gather(*(run_session(i, samples, args) for i in range(args.sessions)))
    rows = [row for rows in results for row in rows]
    med = statistics.median
    print(
        f"\nmedian over {len(rows)} utterances, {args.sessions} concurrent session(s),"
        f" hangover setting {args.hangover_ms:.0f} ms:"
    )
    print(
        f"  end of user speech -> first agent audio: {med(r[0] for r in rows):.0f} ms"
        f"  (max {max(r[0] for r in rows):.0f} ms)"
    )
    for key in ("hangover_ms", "stt_final_ms", "responder_ms", "tts_first_chunk_ms"):
        print(f"  {key:<20} {med(r[1][key] for r in rows):7.1f} ms")
    rest = med(r[0] - r[1]["speech_end_to_audio_ms"] for r in rows)
    print(f"  {'vad lag (rest)':<20} {rest:7.1f} ms   (speech end -> VAD's last voiced window + jitter)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hangover-ms", type=float, default=500.0)
    parser.add_argument("--utterances", type=int, default=8, help="per session")
    parser.add_argument("--sessions", type=int, default=1, help="concurrent conversations")
    parser.add_argument("--llm-url", default="", help="OpenAI-compatible base URL (default: FAQ responder)")
    parser.add_argument("--llm-model", default="")
    asyncio.run(main(parser.parse_args()))
