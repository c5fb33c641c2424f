"""What recording costs a call: CPU per 20 ms frame, user and agent, file writes included.

Drives sessions/recording.Recording as a relayed call does, on a simulated clock (so it runs faster
than real time and measures only our code): the user's 20 ms frames at 16 kHz, and every 4 s a 3 s
agent reply at 24 kHz sent at once (as the relay sends, ahead of playback), half of them cut short by
a clear. Prints microseconds per frame, per second of call, and the file written.

Run:  .venv/bin/python bench/recording.py [--minutes 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from sessions.recording import Recording  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    frames = round(args.minutes * 60 / 0.02)
    rng = np.random.default_rng(1)
    user = (rng.standard_normal(320) * 2000).astype("<i2").tobytes()
    agent = (rng.standard_normal(480) * 2000).astype("<i2").tobytes()  # 20 ms at 24 kHz
    t0 = 1000.0
    user_s = agent_s = 0.0
    agent_frames = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "call.wav"
        with open(path, "w+b") as file:
            recording = Recording(file, t0, agent_rate=24000)
            for n in range(frames):
                now = t0 + (n + 1) * 0.02
                start = time.perf_counter()
                recording.user(user, now)
                user_s += time.perf_counter() - start
                if n % 200 == 0:  # every 4 s, a 3 s reply sent at once
                    start = time.perf_counter()
                    for _ in range(150):
                        recording.agent_sent(agent, now)
                    agent_s += time.perf_counter() - start
                    agent_frames += 150
                if n % 400 == 100:  # every other reply cut short 2 s in
                    recording.clear(now)
            recording.close(t0 + frames * 0.02)
        size = path.stat().st_size
    print(f"{args.minutes:g} min of call: {frames} user frames, {agent_frames} agent frames")
    print(f"user frame (placement + its share of file writes): {user_s / frames * 1e6:.1f} us")
    print(f"agent frame (placement; resampling 24 -> 16 kHz, where not in the writes): "
          f"{agent_s / agent_frames * 1e6:.1f} us")  # fmt: skip
    per_s = (user_s + agent_s) / (frames * 0.02)
    print(f"the whole call: {per_s * 1e6:.0f} us per second of call ({per_s * 100:.3f} % of a core)")
    print(f"file: {size / 1e6:.1f} MB ({size / (args.minutes * 60) / 1000:.0f} kB/s)")


if __name__ == "__main__":
    main()
