"""Our uplink VAD places the user's turns where the voice is: its starts clear the browser for
barge-in, its ends start every reply's latency clock (sessions/latency.py)."""

import numpy as np
import pytest

from tests.turns import place

SAID = ["I would like to book a table for two", "What time do you open", "Yes", "No thanks",
        "Please cancel my order number four five six", "Stop", "Hello there"]  # fmt: skip
LEVELS = [0.0, 0.01, 0.03]  # digital silence, a quiet room (-40 dBFS), a noisy one (-30 dBFS)


@pytest.fixture(scope="module")
def placed(speech):
    return [place(speech, text, level, seed=k) for level in LEVELS for k, text in enumerate(SAID)]


def test_every_utterance_is_one_turn(placed):
    assert [p.text for p in placed if p.errors is None] == []


def test_turns_start_with_the_voice(placed):
    """Within a few windows of the voice (start_windows is 4: a click is not a turn)."""
    starts = [p.errors[0] for p in placed]
    assert np.mean(np.abs(starts)) <= 80, starts
    assert max(starts) <= 250, starts  # flite's "What" opens with a faint breath the VAD waits out


def test_turns_end_where_the_voice_ends(placed):
    """Where silero's probability lingers after the words (longer in noise), the end is placed back
    on the last loud audio: in silence within 80 ms ("Stop"'s faint release is cut), in rooms 70 ms
    off on average. (Looking 8 windows back, as before, gave 75 ms here: bench/turn_accuracy.py.)"""
    quiet = [p.errors[1] for p in placed if p.level == 0]
    ends = [p.errors[1] for p in placed]
    assert max(np.abs(quiet)) <= 80, quiet
    assert np.mean(np.abs(ends)) <= 70, ends


def test_in_a_steady_room_the_model_runs_only_around_the_words(placed):
    """Silero's floor gate: in a room of steady noise, once silero has heard it as silence, windows
    at the room's level skip the model. The turns above are placed with the gate on."""
    rooms = [p for p in placed if p.level > 0]
    share = sum(p.windows[1] for p in rooms) / sum(p.windows[0] for p in rooms)
    assert share <= 0.6, share  # 1 s of room, the words, 1.5 s of room: 100 % without the gate


def test_inside_the_words_the_model_runs_less_and_the_turns_are_placed_as_without_that(speech, placed):
    """Silero's voice gate: once it is sure of a voice, windows as loud skip the model for a few
    windows at a time. Turns end where the words go quiet, where the model runs, and the end is
    placed by level: each turn starts and ends within a window of where it does with every window
    above the room scored."""
    quiet = [p for p in placed if p.level < 0.03]  # in the noisy room the words are too close to it
    ungated = [place(speech, p.text, p.level, seed=SAID.index(p.text), voice_gate=False) for p in quiet]
    for gated, every in zip(quiet, ungated, strict=True):
        assert np.allclose(gated.errors, every.errors, atol=32), (gated.text, gated.errors, every.errors)
    runs = [sum(p.windows[1] for p in group) for group in (quiet, ungated)]
    assert runs[0] <= 0.85 * runs[1], runs
