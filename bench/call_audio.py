"""What the benchmarks' simulated browsers say, and a frame header that does not change it.

A user's side of a call is words and, for about half of it, the room while the user listens to the
agent or pauses. `track("call")` is 30 s of that: flite speech in a quiet room (-50 dBFS of white
noise and hum), each turn followed by 1.5-4 s of the room. Each browser loops it from its own offset,
so the calls do not talk in step. Our uplink VAD runs on it as in a call: silero on the words and on
the room until it has heard the room as silence (playground/engine/vad.py, the floor gate).
`track("speech")` is the worst case: the words back to back, 0.2 s apart.

The benchmarks time every frame by a header in it. Written as bytes the header is a loud click in
every 20 ms, and the VAD would hear speech in every window, so each of its bytes goes in the low
byte of a sample (`quiet`): a few dozen samples of at most 255/32768, far below the room.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from tests.engine.speech import Speech, mix, noise, trimmed

SAID = ["I would like to book a table for two", "What time do you open", "Yes", "No thanks",
        "Please cancel my order number four five six", "Can you tell me about the weather tomorrow",
        "I need help with my account please", "Thank you very much", "Could you repeat that",
        "How much does it cost to ship a parcel to Berlin"]  # fmt: skip
ROOM_LEVEL = 0.003  # -50 dBFS: a quiet room through a headset
SECONDS = 30
KINDS = ("call", "speech")


def track(kind: str = "call", seed: int = 0) -> bytes:
    """SECONDS of a user's uplink (16 kHz s16le): "call" (turns and pauses) or "speech"."""
    speech = Speech(Path(tempfile.mkdtemp(prefix="call-audio-")))
    rng = np.random.default_rng(seed)
    room = noise(SECONDS * 1000, level=ROOM_LEVEL, seed=seed)
    at, end = 500 * 16, SECONDS * 16000
    while at < end:
        words = trimmed(speech.pcm(SAID[int(rng.integers(len(SAID)))]))
        room = mix(room, words, at=at)
        pause = rng.uniform(1.5, 4.0) if kind == "call" else 0.2
        at += len(words) // 2 + int(pause * 16000)
    return room


def words_share(pcm: bytes) -> float:
    """The share of 32 ms windows louder than the room by 10 dB: roughly, the time spent talking."""
    samples = np.frombuffer(pcm[: len(pcm) // 1024 * 1024], "<i2").astype(np.float32) / 32768
    power = (samples.reshape(-1, 512) ** 2).mean(axis=1)
    return float((power > 10 * (ROOM_LEVEL**2)).mean())


def chunk(pcm: bytes, offset: int, size: int) -> bytes:
    """`size` bytes of `pcm` looped, from byte `offset` (even)."""
    offset %= len(pcm)
    part = pcm[offset : offset + size]
    return part + pcm[: size - len(part)]


def quiet(data: bytes) -> bytes:
    """`data` as samples: byte i in the low byte of sample i, the high byte 0."""
    out = bytearray(2 * len(data))
    out[0::2] = data
    return bytes(out)


def loud(frame: bytes, at: int, size: int) -> bytes:
    """The `size` bytes that `quiet` put at byte `at` of `frame`."""
    return frame[at : at + 2 * size : 2]


def window_scores(pcm: bytes) -> list[float]:
    """What a talk page's VAD (static/js/vad.js) says of `pcm`: silero's score of every 32 ms window,
    from the server's copy of the same model (tests/test_browser.py checks the two agree)."""
    from playground.engine import vad

    return [round(p, 3) for p in vad.Vad(gates=False).process(pcm)]


class PageScores:
    """A simulated talk page's `vad` messages (docs/protocol.md), sent when static/js/vad.js's
    `Batcher` sends them: every 2 windows near a voice (a score of 0.35 or more in the last 16), every
    16 in a long quiet stretch, a voice's first window at once. A browser that sends the track from
    byte `start` (looped) gets the scores of the track's windows nearest to its own: the server needs
    them to be a call's, not exact."""

    NEAR, QUIET, VOICE, NEAR_VOICE = 2, 16, 0.35, 16  # vad.js: PER_MESSAGE, QUIET_MESSAGE, VOICE, NEAR_VOICE

    def __init__(self, scores: list[float], start: int):
        self.scores, self.first = scores, start // 1024
        self.sent = self.windows = self.scored = 0
        self.since_voice = self.NEAR_VOICE

    def after(self, sent: int) -> str | None:
        """The message due once `sent` more bytes went out, if one is."""
        self.sent += sent
        message = None
        while self.windows < self.sent // 1024:
            p = self.scores[(self.first + self.windows) % len(self.scores)]
            self.windows += 1
            onset = p >= self.VOICE and self.since_voice >= self.NEAR_VOICE
            self.since_voice = 0 if p >= self.VOICE else self.since_voice + 1
            size = self.NEAR if self.since_voice < self.NEAR_VOICE else self.QUIET
            if onset or self.windows - self.scored >= size:
                at, n = self.first + self.scored, len(self.scores)
                scores = [self.scores[(at + k) % n] for k in range(self.windows - self.scored)]
                message = json.dumps({"type": "vad", "from": self.scored, "scores": scores})
                self.scored = self.windows
        return message
