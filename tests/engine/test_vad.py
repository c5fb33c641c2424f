"""Voice activity detection and end-of-turn decisions."""

import pytest

from playground.engine.vad import TurnDetector, Vad

from .speech import noise, silence, trimmed


@pytest.fixture
def vad():
    detector = Vad()
    yield detector
    detector.close()


def turn_events(vad: Vad, pcm: bytes, frame: int = 640, **options):
    turns = TurnDetector(window_ms=vad.window_ms, **options)
    events = []
    for i in range(0, len(pcm), frame):  # relay-sized frames: the VAD buffers to its own window
        events += [e for p in vad.process(pcm[i : i + frame]) if (e := turns.update(p))]
    return events


def test_silence_and_noise_are_not_speech(vad):
    """Hum and hiss (fans, mains) must never start a turn or interrupt the agent."""
    audio = silence(500) + noise(2000, level=0.02) + noise(2000, level=0.08, seed=1) + silence(500)
    assert turn_events(vad, audio) == []


def test_speech_starts_a_turn_that_ends_after_the_hangover(vad, speech):
    pcm = speech.pcm("I would like to book a table for two")
    audio = silence(1000) + pcm + silence(1500)
    events = turn_events(vad, audio, hangover_ms=400)
    assert [e.kind for e in events] == ["start", "end"]
    start, end = events
    speech_ms = len(pcm) / 32
    assert 900 <= start.start_ms <= 1300
    assert abs(end.end_ms - (1000 + speech_ms)) < 300  # flite leaves a little silence at the end
    assert 400 <= end.hangover_ms < 400 + 2 * vad.window_ms


def test_a_pause_shorter_than_the_hangover_keeps_the_turn_open(vad, speech):
    first, second = trimmed(speech.pcm("my name is john smith")), trimmed(speech.pcm("tomorrow evening"))
    audio = silence(500) + first + silence(250) + second
    events = turn_events(vad, audio + silence(1000), hangover_ms=400)
    assert [e.kind for e in events] == ["start", "end"]


def test_feed_accepts_any_length(vad, speech):
    """Odd-sized chunks give the same decisions as relay frames."""
    audio = silence(600) + speech.pcm("can I pay by card") + silence(800)
    assert [e.kind for e in turn_events(vad, audio, frame=777)] == ["start", "end"]
