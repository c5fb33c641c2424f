"""PCM helpers: streaming resampling (soxr) and re-chunking into exact frames.

All audio inside the server is s16le mono. One `Converter` per direction per
conversation keeps the resampler state, so streamed output equals one-shot
output and no clicks appear at chunk borders.
"""

from __future__ import annotations

import numpy as np

# The engine's resampler is the one of the whole project (the relay's converters use it here).
from playground.engine.resample import Resampler, to_float, to_pcm  # noqa: F401

BYTES_PER_SAMPLE = 2


def frame_bytes(rate: int, ms: int = 20) -> int:
    return rate * ms // 1000 * BYTES_PER_SAMPLE


class Rechunker:
    """Cuts a byte stream into frames of exactly `size` bytes; with `join`, into pieces of up to
    `join` whole frames each (what is less than a frame waits for the next push either way)."""

    def __init__(self, size: int, join: int = 1):
        self.size = size
        self.most = size * join  # bytes a piece may hold
        self._buffer = bytearray()

    def push(self, data: bytes) -> list[bytes]:
        size = len(data)
        if not self._buffer and isinstance(data, bytes) and size <= self.most and not size % self.size:
            return [data] if size else []  # the usual case: whole frames, passed on without a copy
        self._buffer += data
        whole = len(self._buffer) - len(self._buffer) % self.size
        pieces = [bytes(self._buffer[i : min(i + self.most, whole)]) for i in range(0, whole, self.most)]
        del self._buffer[:whole]
        return pieces

    def flush(self, pad: bool = True) -> bytes:
        """The remainder, padded with silence to a whole frame when `pad`."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        if rest and pad:
            rest += b"\x00" * (self.size - len(rest))
        return rest

    def reset(self) -> None:
        self._buffer.clear()

    @property
    def pending(self) -> int:
        return len(self._buffer)


class Converter:
    """Resample then re-chunk: bytes at one rate in, exact frames (or, with `join`, pieces of up to
    `join` whole frames) at another rate out."""

    def __init__(self, in_rate: int, out_rate: int, frame_ms: int = 20, quality: str = "HQ", join: int = 1):
        self.in_rate, self.out_rate = in_rate, out_rate
        self.resampler = Resampler(in_rate, out_rate, quality)
        self.chunker = Rechunker(frame_bytes(out_rate, frame_ms), join)

    def push(self, pcm: bytes) -> list[bytes]:
        return self.chunker.push(self.resampler.process(pcm))

    def flush(self) -> list[bytes]:
        frames = self.chunker.push(self.resampler.flush())
        tail = self.chunker.flush()
        return [*frames, tail] if tail else frames

    def reset(self) -> None:
        self.resampler.reset()
        self.chunker.reset()


def level_dbfs(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    if samples.size == 0:
        return -120.0
    rms = np.sqrt(np.mean(samples**2)) / 32768.0
    return float(20 * np.log10(max(rms, 1e-6)))
