"""How closely our uplink VAD places the user's turns, at each model rate and tail length: the
start and end of each turn against the voice's own bounds, for flite speech said into rooms of
white noise and hum at several levels (tests/turns.py). The relay runs the model at 8 kHz and looks
12 windows back for the voice's end (sessions/relay.py `UplinkVad`); this prints why.

Run:  .venv/bin/python bench/turn_accuracy.py [--seeds 2]
The model's CPU at each rate: bench/vad.py --rate 16000 8000.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

from tests.engine.speech import Speech  # noqa: E402
from tests.turns import place  # noqa: E402

SAID = ["I would like to book a table for two", "What time do you open", "Yes", "No thanks",
        "Please cancel my order number four five six", "Stop", "Hello there",
        "Can you tell me about the weather tomorrow in Paris", "I need help with my account please",
        "Thank you very much", "Could you repeat that", "Seven", "Okay", "Right", "I am not sure",
        "How much does it cost to ship a parcel to Berlin"]  # fmt: skip
LEVELS = [0.0, 0.003, 0.01, 0.02, 0.03]  # digital silence to a noisy room (-30 dBFS)
CONFIGS = [(16000, 8), (16000, 12), (8000, 8), (8000, 12)]  # (model rate, tail windows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=2, help="rooms per noise level")
    args = parser.parse_args()
    speech = Speech(Path(tempfile.mkdtemp(prefix="turns-")))
    cases = [(text, level, k + 100 * s) for s in range(max(1, min(args.seeds, 10)))
             for level in LEVELS for k, text in enumerate(SAID)]  # fmt: skip
    print(f"{len(cases)} utterances: {len(SAID)} sentences x {len(LEVELS)} noise levels x {args.seeds} rooms")
    print(f"{'model rate, tail':22}{'not 1 turn':>11}{'start |err|':>13}{'p90':>7}{'end |err|':>11}{'p90':>7}"
          f"{'end, silence':>14}")  # fmt: skip
    for rate, tail in CONFIGS:
        placed = [place(speech, text, level, seed, rate=rate, tail_windows=tail)
                  for text, level, seed in cases]  # fmt: skip
        good = [p for p in placed if p.errors is not None]
        starts = np.abs([p.errors[0] for p in good])
        ends = np.abs([p.errors[1] for p in good])
        quiet = np.abs([p.errors[1] for p in good if p.level == 0])
        print(f"{rate // 1000:>3} kHz, {tail:2d} windows    {len(placed) - len(good):>8}"
              f"{starts.mean():10.1f} ms{np.percentile(starts, 90):5.0f}{ends.mean():8.1f} ms"
              f"{np.percentile(ends, 90):5.0f}{quiet.mean():11.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
