"""Resampling and re-chunking are exact: streamed output equals one-shot output."""

import numpy as np
import pytest
import soxr

from sessions.audio import Converter, Rechunker, Resampler, frame_bytes, level_dbfs


def tone(rate: int, seconds: float, freq: float = 440.0, amplitude: float = 0.5) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * amplitude * 32767).astype("<i2").tobytes()


def chunks(data: bytes, sizes):
    i, k = 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        yield data[i : i + n]
        i, k = i + n, k + 1


@pytest.mark.parametrize("src,dst", [(16000, 24000), (44100, 16000), (22050, 24000), (24000, 16000)])
def test_streamed_resampling_equals_one_shot(src, dst):
    pcm = tone(src, 1.3)
    one = Resampler(src, dst)
    expected = one.process(pcm) + one.flush()
    streamed = Resampler(src, dst)
    out = b"".join(streamed.process(c) for c in chunks(pcm, [640, 2, 4096, 882, 10])) + streamed.flush()
    assert out == expected
    # and the library's own one-shot call agrees on the length
    reference = soxr.resample(np.frombuffer(pcm, "<i2"), src, dst, quality="HQ")
    assert abs(len(out) // 2 - len(reference)) <= 2


def test_resampling_keeps_the_tone_level():
    pcm = tone(44100, 1.0, freq=1000)
    out = Resampler(44100, 16000).process(pcm)
    assert abs(level_dbfs(out[3200:]) - level_dbfs(pcm)) < 0.5


def test_same_rate_passes_bytes_through():
    pcm = tone(16000, 0.1)
    assert Resampler(16000, 16000).process(pcm) == pcm


def test_rechunker_cuts_exact_frames_and_loses_nothing():
    data = bytes(range(256)) * 40
    chunker = Rechunker(640)
    frames = [f for c in chunks(data, [3, 700, 1, 2000]) for f in chunker.push(c)]
    assert all(len(f) == 640 for f in frames)
    tail = chunker.flush(pad=False)
    assert b"".join(frames) + tail == data
    assert len(tail) < 640


def test_a_joining_rechunker_sends_whole_frames_at_most_join_at_a_time_and_loses_nothing():
    data = bytes(range(256)) * 41  # 10496 bytes: 16 frames of 640, and 256 more
    chunker = Rechunker(640, join=4)
    pieces = [p for c in chunks(data, [3, 700, 1, 2000, 5000]) for p in chunker.push(c)]
    assert all(len(p) % 640 == 0 and 640 <= len(p) <= 2560 for p in pieces), [len(p) for p in pieces]
    tail = chunker.flush(pad=False)
    assert b"".join(pieces) + tail == data
    assert len(tail) == 256
    assert [len(p) for p in chunker.push(bytes(640 * 9))] == [2560, 2560, 640]  # 9 frames: 4, 4, 1
    assert chunker.push(bytes(1280)) == [bytes(1280)]  # whole frames within the limit: as they came


def test_rechunker_pads_the_last_frame_with_silence():
    chunker = Rechunker(8)
    assert chunker.push(b"abc") == []
    assert chunker.flush() == b"abc\x00\x00\x00\x00\x00"
    assert chunker.flush() == b""


def test_converter_gives_exact_20ms_frames_for_the_duration():
    conv = Converter(22050, 24000)
    frames = [f for c in chunks(tone(22050, 2.0), [441 * 2]) for f in conv.push(c)] + conv.flush()
    assert {len(f) for f in frames} == {frame_bytes(24000)}
    assert abs(len(frames) - 100) <= 2  # 2 s of 20 ms frames
