"""Speech output with espeak-ng, streamed clause by clause."""

import time

import numpy as np

from playground.engine import tts


async def test_synthesis_is_audible_22050_hz_pcm():
    pieces = [piece async for piece in tts.synthesize("We are open from noon until ten.", "en-us+f3")]
    assert {rate for _, rate in pieces} == {22050}
    samples = np.frombuffer(b"".join(p for p, _ in pieces), dtype="<i2")
    assert 1.0 < len(samples) / 22050 < 4.0
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 500  # not silence


async def test_first_clause_is_spoken_before_the_rest_of_the_reply_is_written():
    """Speech starts on clause one while the later text does not exist yet."""
    written = []

    async def slow_reply():
        for piece in ("Sure, I can book that for you. ", "What time would you like? ", "And for how many?"):
            written.append(piece)
            yield piece

    start = time.monotonic()
    out = []
    async for clause, pcm, rate in tts.speak(slow_reply(), "en-gb"):
        out.append((clause, len(written), time.monotonic() - start))
        assert rate == 22050 and len(pcm) > 22050  # each clause is at least half a second of speech
    assert [c for c, _, _ in out] == [
        "Sure, I can book that for you.",
        "What time would you like?",
        "And for how many?",
    ]
    assert out[0][1] == 1  # clause 1 was audio while only the first piece had been written
    assert out[0][2] < 0.5


def test_voices_per_language():
    for language in tts.LANGUAGES:
        voices = tts.voices_for(language)
        assert voices and all(isinstance(k, str) and label for k, label in voices)
    assert ("en-us+f3", "American English, female") in tts.voices_for("en")
    assert tts.resolve_voice("de", "en-us") == "de"  # a voice of another language falls back
    assert tts.resolve_voice("en", "en-gb+f3") == "en-gb+f3"
    assert tts.resolve_voice("en", "piper:/nowhere.onnx") == "en-us"


def test_trailing_silence_is_trimmed_to_a_short_pause():
    pcm = (np.ones(22050, dtype="<i2") * 3000).tobytes() + bytes(22050 * 2)
    assert len(tts.trim_tail(pcm)) == (22050 + int(0.12 * 22050)) * 2
