"""Test speech made with flite, as 16 kHz mono s16le PCM (used by tests and bench/agent_latency.py).

flite's `kal16` voice is used because pocketsphinx decodes it well; espeak's
voice (which the agent speaks with) is too robotic for it.
"""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np


def flite_wav(text: str, path: Path, voice: str = "kal16") -> Path:
    """`text` spoken by flite, converted to 16 kHz mono s16le WAV at `path`."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(raw)], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(path)], check=True)
    raw.unlink()
    return path


def read_pcm(path: Path) -> bytes:
    with wave.open(str(path)) as wav:
        assert wav.getframerate() == 16000 and wav.getnchannels() == 1
        return wav.readframes(wav.getnframes())


def silence(ms: int) -> bytes:
    return bytes(ms * 32)


def noise(ms: int, level: float = 0.03, seed: int = 0) -> bytes:
    """White noise plus 50 Hz hum: what a fan or mains hum sounds like to a VAD."""
    n = ms * 16
    rng = np.random.default_rng(seed)
    hum = 0.5 * level * np.sin(2 * np.pi * 50 * np.arange(n) / 16000)
    samples = (rng.normal(0, level, n) + hum) * 32767
    return np.clip(samples, -32768, 32767).astype("<i2").tobytes()


class Speech:
    """Makes (and caches) flite speech as 16 kHz PCM for a test session."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._cache: dict[tuple[str, str], bytes] = {}

    def pcm(self, text: str, voice: str = "kal16") -> bytes:
        key = (text, voice)
        if key not in self._cache:
            name = "".join(c if c.isalnum() else "_" for c in text)[:60] + f"-{voice}.wav"
            self._cache[key] = read_pcm(flite_wav(text, self.directory / name, voice))
        return self._cache[key]


def audible(pcm: bytes, threshold: int = 300) -> tuple[int, int]:
    """(first, past the last) sample of `pcm` above `threshold`: where flite's speech is, inside the
    near-silence it pads it with; (0, 0) if none is."""
    loud = np.nonzero(np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32)) > threshold)[0]
    return (int(loud[0]), int(loud[-1]) + 1) if len(loud) else (0, 0)


def trimmed(pcm: bytes, threshold: int = 300) -> bytes:
    """`pcm` without the leading and trailing silence flite puts around speech."""
    first, end = audible(pcm, threshold)
    return pcm[first * 2 : end * 2]


def mix(room: bytes, voice: bytes, at: int = 8000) -> bytes:
    """`voice` said into `room` (both 16 kHz s16le), starting at sample `at`."""
    a, b = np.frombuffer(room, "<i2").astype(np.int32), np.frombuffer(voice, "<i2").astype(np.int32)
    a[at : at + len(b)] += b[: len(a) - at]
    return np.clip(a, -32768, 32767).astype("<i2").tobytes()
