"""How closely our uplink VAD places the user's turns, for each length of the tail it looks back
over for the voice's end: the start and end of each turn against the voice's own bounds, for flite
speech said into rooms of white noise and hum at several levels (tests/turns.py). The relay looks
12 windows back (sessions/relay.py `UplinkVad.TAIL_WINDOWS`); this prints why. Then the same at
12 windows for each margin of silero's floor gate (playground/engine/vad.py `FLOOR_DB`; 0: no
gate), with the share of windows that ran the model; and at the default margin without the voice
gate (`VOICE_DB`, `MAX_SKIPS`), which skips the model inside words.

Run:  .venv/bin/python bench/turn_accuracy.py [--seeds 2] [--tails 8 12 16] [--floor-db 0 2 6]
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

from playground.engine import vad  # noqa: E402
from tests.engine.speech import Speech  # noqa: E402
from tests.turns import place  # noqa: E402

SAID = ["I would like to book a table for two", "What time do you open", "Yes", "No thanks",
        "Please cancel my order number four five six", "Stop", "Hello there",
        "Can you tell me about the weather tomorrow in Paris", "I need help with my account please",
        "Thank you very much", "Could you repeat that", "Seven", "Okay", "Right", "I am not sure",
        "How much does it cost to ship a parcel to Berlin"]  # fmt: skip
LEVELS = [0.0, 0.003, 0.01, 0.02, 0.03]  # digital silence to a noisy room (-30 dBFS)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=2, help="rooms per noise level")
    parser.add_argument("--tails", type=int, nargs="+", default=[8, 12, 16], help="windows looked back")
    parser.add_argument("--floor-db", type=float, nargs="+", default=[0, 2, 6], help="floor gate margins")
    args = parser.parse_args()
    speech = Speech(Path(tempfile.mkdtemp(prefix="turns-")))
    cases = [(text, level, k + 100 * s) for s in range(max(1, min(args.seeds, 10)))
             for level in LEVELS for k, text in enumerate(SAID)]  # fmt: skip
    print(f"{len(cases)} utterances: {len(SAID)} sentences x {len(LEVELS)} noise levels x {args.seeds} rooms")
    print(f"{'':24}{'not 1 turn':>11}{'start |err|':>13}{'p90':>7}{'end |err|':>11}{'p90':>7}"
          f"{'end, silence':>14}{'model runs':>12}")  # fmt: skip
    for tail in args.tails:
        report(f"tail {tail:2d} windows ({tail * 32} ms)", speech, cases, tail, vad.FLOOR_DB)
    for margin in args.floor_db:
        report(f"floor gate {f'+{margin:g} dB' if margin > 0 else 'off':8}", speech, cases, 12, margin)
    report("no voice gate", speech, cases, 12, vad.FLOOR_DB, voice_gate=False)


def report(label: str, speech: Speech, cases: list, tail: int, margin: float, voice_gate: bool = True):
    default, vad.FLOOR_DB = vad.FLOOR_DB, margin
    try:
        placed = [place(speech, text, level, seed, tail_windows=max(1, min(tail, 24)), floor_gate=margin > 0,
                        voice_gate=voice_gate) for text, level, seed in cases]  # fmt: skip
    finally:
        vad.FLOOR_DB = default
    good = [p for p in placed if p.errors is not None]
    starts = np.abs([p.errors[0] for p in good])
    ends = np.abs([p.errors[1] for p in good])
    quiet = np.abs([p.errors[1] for p in good if p.level == 0])
    runs = sum(p.windows[1] for p in placed) / max(1, sum(p.windows[0] for p in placed))
    print(f"{label:24}{len(placed) - len(good):>9}{starts.mean():11.1f} ms{np.percentile(starts, 90):5.0f}"
          f"{ends.mean():8.1f} ms{np.percentile(ends, 90):5.0f}{quiet.mean():11.1f} ms"
          f"{runs:11.0%}")  # fmt: skip


if __name__ == "__main__":
    main()
