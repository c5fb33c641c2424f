"""Streaming sample-rate conversion for s16le mono (soxr): the one resampler of the project, used by
the sandboxes and, through sessions/audio.py, by the relay."""

from __future__ import annotations

import numpy as np
import soxr


def to_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def to_pcm(samples: np.ndarray) -> bytes:
    return np.clip(np.rint(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()


class Resampler:
    """A streaming resampler of s16le bytes; a no-op when the rates match."""

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ"):
        self.in_rate, self.out_rate = in_rate, out_rate
        self._stream = None
        if in_rate != out_rate:
            # float32: bit-exact however the stream is chunked (int16 output dithers per call).
            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)

    def process(self, pcm: bytes) -> bytes:
        if self._stream is None:
            return pcm
        return to_pcm(self._stream.resample_chunk(to_float(pcm)))

    def flush(self) -> bytes:
        """Drain the filter's delay line at the end of a stretch of audio; ready for more after."""
        if self._stream is None:
            return b""
        tail = to_pcm(self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
        self._stream.clear()
        return tail

    def reset(self) -> None:
        """Forget buffered audio (after barge-in nothing old may come out)."""
        if self._stream is not None:
            self._stream.clear()
