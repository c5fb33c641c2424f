"""The waterfall and turn-taking figures of a scripted call with known timings, over a real Daphne.

The echo upstream dials a peer in this process that acts out a provider without a barge-in signal
(our own VAD cuts the agent off): it answers the user's first sentence 0.3 s after the speech
reached it with a 4 s reply, and the user's second (said over that reply) with a one-word transcript.
In the talk page's place, a script streams the speech in real time and plays the agent audio as the
page's playback worklet does: after an 80 ms start buffer, reporting each start and stop
(docs/protocol.md, `playback` edges). The stored figures must match what the script observed.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import numpy as np
import pytest
import websockets

from tests.engine.speech import Speech, silence, trimmed
from tests.peers import FRAME, say
from tests.server import Call, call, free_port, start_server
from tests.stalls import Stalls

pytestmark = pytest.mark.slow

RATE = 24000  # the page's playback rate (ready.output_rate)
START_BUFFER_S = 0.08
REPLY_S = 4.0
ANSWER_AFTER_S = 0.3
CUT_IN_AFTER_S = 1.5  # the user starts speaking this long after the reply began
TOLERANCE_MS = 100
TONE = (np.sin(np.arange(int(16000 * REPLY_S)) * 2 * np.pi * 440 / 16000) * 8000).astype("<i2").tobytes()


@pytest.fixture(scope="module")
def server():
    yield from start_server({"ECHO_URL": f"ws://127.0.0.1:{free_port()}/?barge_in_signal=0"})


def echo_port(server) -> int:
    return int(re.search(r":(\d+)/", server.env["ECHO_URL"]).group(1))


def peer(first_end: int, second_end: int):
    """Answers the first sentence with a 4 s reply; the second (a barge-in) with one word."""

    async def serve(ws):
        received, answered = 0, 0
        async for message in ws:
            if not isinstance(message, bytes):
                continue
            received += len(message)
            if answered == 0 and received >= first_end:
                answered = 1
                await asyncio.sleep(ANSWER_AFTER_S)
                await ws.send(say("user", "I would like to book a table"))
                await ws.send(TONE)
                await ws.send(say("agent", "For how many people would you like the table?"))
            elif answered == 1 and received >= second_end:
                answered = 2
                await asyncio.sleep(ANSWER_AFTER_S)
                await ws.send(say("user", "Wait"))

    return serve


class Ear(Call):
    """The talk page's playback: plays agent audio after a start buffer, flushes it on `clear`, and
    reports each start and stop of playing with the sample's index in the stream."""

    def __init__(self, ws):
        super().__init__(ws)
        self.received = 0  # samples of agent audio received
        self.playing: tuple[int, float] | None = None  # (first sample, when it plays)
        self.play_end = 0.0  # when what was received has played
        self.audio_at: list[float] = []
        self.clear_at: list[float] = []
        self.stalls = Stalls()

    async def listen(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                message = await asyncio.wait_for(self.ws.recv(), min(0.01, left))
            except TimeoutError:
                message = None
            if isinstance(message, bytes):
                await self.on_audio(len(message) // 2)
            elif message is not None:
                self.seen.append(json.loads(message))
                if self.seen[-1]["type"] == "clear":
                    await self.on_clear()
            await self.tick()

    async def on_audio(self, samples: int) -> None:
        now = time.monotonic()
        self.audio_at.append(now)
        if self.playing is None:  # nothing to play until now: it plays after the start buffer
            self.playing = (self.received, now + START_BUFFER_S)
            self.play_end = now + START_BUFFER_S
            await self.edge("start", "", self.received, -START_BUFFER_S)
        self.received += samples
        self.play_end += samples / RATE

    async def tick(self) -> None:
        now = time.monotonic()
        if self.playing is not None and now >= self.play_end:
            self.playing = None
            await self.edge("stop", "drained", self.received, now - self.play_end)

    async def on_clear(self) -> None:
        now = time.monotonic()
        self.clear_at.append(now)
        if self.playing is None:
            return
        first, began = self.playing
        head = first + max(0, round((now - began) * RATE))
        self.playing = None
        await self.edge("stop", "cleared", min(head, self.received), 0.0)

    async def edge(self, kind: str, how: str, sample: int, ago_s: float) -> None:
        edge = {"kind": kind, "how": how, "sample": sample, "ago_ms": round(ago_s * 1000)}
        report = {"type": "playback", "played_ms": 0, "buffered_ms": 0, "underruns": 0, "edges": [edge]}
        await self.ws.send(json.dumps(report))

    async def speak(self, pcm: bytes, marks: dict[int, str]) -> dict[str, float]:
        """Stream `pcm` in real time; when the frames holding each byte offset in `marks` went out."""
        sent, t0 = {}, time.monotonic()
        frames = {offset // FRAME: name for offset, name in marks.items()}
        for n, i in enumerate(range(0, len(pcm) - FRAME + 1, FRAME)):
            await self.ws.send(pcm[i : i + FRAME])
            if n in frames:
                sent[frames[n]] = time.monotonic()
            await asyncio.sleep(max(0.0, t0 + (n + 1) * 0.02 - time.monotonic()))
        return sent


def onset(pcm: bytes) -> int:
    """Byte offset of the first 10 ms block within 26 dB of the loudest: where the voice becomes
    audible (flite's output starts with a breath about 55 dB down)."""
    samples = np.frombuffer(pcm[: len(pcm) // 320 * 320], dtype="<i2").astype(np.float32)
    rms = np.sqrt((samples.reshape(-1, 160) ** 2).mean(axis=1))
    return int(np.nonzero(rms >= rms.max() / 20)[0][0]) * 320


async def scripted_call(server, speech: Speech) -> tuple[dict, Ear, dict]:
    first = trimmed(speech.pcm("I would like to book a table for two"))
    second = trimmed(speech.pcm("Wait, wait, hold on a second"))
    lead = silence(400)
    gap = silence(round((ANSWER_AFTER_S + CUT_IN_AFTER_S) * 1000))
    pcm = lead + first + gap + second + silence(1000)
    first_end = len(lead) + len(first)
    second_start = first_end + len(gap)
    second_end = second_start + len(second)
    marks = {first_end - 1: "first_end", second_start + onset(second): "second_start"}
    async with websockets.serve(peer(first_end, second_end), "127.0.0.1", echo_port(server)):
        conv = server.conversation(provider="echo", voice="default")
        async with call(server, conv["ws_path"]) as ws:
            ear = Ear(ws.ws)
            await ear.until(lambda c: c.of("ready"), 30)
            async with ear.stalls:
                speaking = asyncio.create_task(ear.speak(pcm, marks))
                try:
                    await ear.listen(len(pcm) / 32000 + 3.6)  # and 3.6 s of silence after it: dead air
                    sent = await speaking
                finally:
                    speaking.cancel()
                    await asyncio.gather(speaking, return_exceptions=True)
            await ear.stop()
    return conv, ear, sent


def test_a_scripted_call_stores_the_waterfall_and_turn_taking_it_acted_out(server, speech):
    conv, ear, sent = asyncio.run(scripted_call(server, speech))
    page = server.client().get(f"/history/{conv['id']}/").text

    # The reply: its first audio came ANSWER_AFTER_S after the speech, played START_BUFFER_S later.
    first_audio = next(t for t in ear.audio_at if t >= sent["first_end"])
    observed = round((first_audio - sent["first_end"]) * 1000)
    row = re.search(r'<tr data-sequence="\d+">.*?</tr>', page, re.S).group(0)
    cells = dict(re.findall(r'<td data-step="(\w+)">(-?\d+) ms</td>', row))
    stalled = ear.stalls.near(first_audio)  # the script's stamp is late by that much at most
    print("waterfall", cells, "observed latency", observed, "script stalled", round(stalled))  # pytest -s
    assert abs(int(cells["first_audio"]) - observed) <= TOLERANCE_MS + stalled
    played_after = int(cells["played"]) - int(cells["first_audio"])
    assert START_BUFFER_S * 1000 - 5 <= played_after <= START_BUFFER_S * 1000 + TOLERANCE_MS + stalled
    assert abs(int(cells["reply"]) - REPLY_S * 1000) <= 40  # all of it was sent before the cut
    assert int(cells["user_final"]) <= int(cells["first_audio"])  # the peer sent it first

    # Live, the page got the same waterfall for the agent's turn, with the played step.
    agent = ear.finals("agent")[0]  # shown again, marked interrupted, at the barge-in
    assert all(m["id"] == agent["id"] for m in ear.finals("agent"))
    live = [m for m in ear.of("waterfall") if m["id"] == agent["id"]]
    assert live and live[-1]["played"] == int(cells["played"])

    # The barge-in: from the user starting to speak to the page going silent.
    [cleared] = ear.clear_at
    observed_cut = round((cleared - sent["second_start"]) * 1000)
    figures = dict(re.findall(r"<dt>([^<]+)</dt><dd>([^<]+)</dd>", page))
    stalled = ear.stalls.near(cleared, sent["second_start"])
    print("turn-taking", figures, "observed barge-in", observed_cut, "script stalled", round(stalled))
    barge_in = int(figures["Barge-in time (user starts → page silent)"].split()[0])
    assert abs(barge_in - observed_cut) <= TOLERANCE_MS + stalled
    assert figures["Barge-ins"] == "1"
    assert figures["Interruptions by the user"] == "1"
    assert figures["Interruptions by the agent"] == "0"
    assert figures["False barge-ins (fewer than 2 words)"] == "1"  # the user said only "Wait"
    assert abs(int(figures["Talk-over"].split()[0]) - barge_in) <= 40  # the overlap is the barge-in
    assert figures["Dead air (silences of 3 s or more)"] == "1"  # the silence before Stop
    assert int(figures["Dead air, total"].split()[0]) >= 3600
