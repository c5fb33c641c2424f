"""How closely our uplink VAD (sessions/relay.py `UplinkVad`) places a user's turn: where it starts
and ends, against the voice's own bounds, for flite speech said into rooms of known noise (white
noise and hum, tests/engine/speech.py). Used by tests/test_uplink_vad.py and bench/turn_accuracy.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from playground.engine import vad
from sessions.relay import UplinkVad
from sessions.vadbatch import TICK_S
from tests.engine.speech import Speech, audible, mix, noise, silence

LEAD_MS, TAIL_MS = 1000, 1500  # the room before and after the voice
ROUND_BYTES = round(TICK_S * vad.RATE) * 2  # a call's audio in one round of the relay's VAD


@dataclass
class Placed:
    text: str
    level: float
    turns: list[tuple[str, float, float]]  # (kind, start_ms, end_ms) as UplinkVad gave them
    voice: tuple[float, float]  # where the voice starts and ends, in ms
    windows: tuple[int, int] = (0, 0)  # the VAD's windows, and how many of them ran the model

    @property
    def errors(self) -> tuple[float, float] | None:
        """(start, end) error in ms (positive: late), or None unless it was exactly one turn."""
        if [kind for kind, *_ in self.turns] != ["start", "end"]:
            return None
        return self.turns[0][1] - self.voice[0], self.turns[1][2] - self.voice[1]


def place(speech: Speech, text: str, level: float, seed: int, tail_windows: int | None = None,
          floor_gate: bool = True, voice_gate: bool = True) -> Placed:  # fmt: skip
    """`text` said into a room whose noise is at `level` (0: digital silence), through a fresh
    UplinkVad (looking `tail_windows` back for the voice's end, if given; with silero's floor and
    voice gates or without) in the relay's 40 ms rounds."""
    voice = speech.pcm(text)
    length = len(voice) // 32 + LEAD_MS + TAIL_MS
    room = noise(length, level=level, seed=seed) if level else silence(length)
    audio = mix(room, voice, at=LEAD_MS * 16)
    first, end = audible(voice)
    vad = UplinkVad()
    if tail_windows is not None:
        vad.TAIL_WINDOWS = tail_windows
    vad.vad.floor_gate, vad.vad.voice_gate = floor_gate, voice_gate
    turns = []
    for at in range(0, len(audio), ROUND_BYTES):
        turns += UplinkVad.turn_events_of_many([(vad, audio[at : at + ROUND_BYTES])])[0]
    vad.close()
    return Placed(text, level, [(e.kind, e.start_ms, e.end_ms) for e in turns],
                  (LEAD_MS + first / 16, LEAD_MS + end / 16), (vad.vad.windows, vad.vad.runs))  # fmt: skip
