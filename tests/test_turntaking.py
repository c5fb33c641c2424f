"""Turn-taking figures and the per-reply waterfall, as plain functions and state, with hand-computed
figures. (The same figures over a real Daphne: tests/test_waterfall.py.)"""

from sessions import turntaking
from sessions.latency import ReplyClock
from sessions.waterfall import CallTimeline, percentile, percentiles, steps, summary

# A 20 s call, every moment in ms from its start:
#   agent greets 0-2000 (played out); user speaks 2500-4000; agent replies 4600-7000 (played out);
#   user cuts in at 6500, the page goes silent at 6800 (cleared), user speaks to 8000 and says 5 words;
#   agent replies 8500-9000 (played out); user coughs 8800-9100 while the agent speaks (no barge-in:
#   the agent's stretch ended by itself); agent starts 12000 while the user speaks 11500-12500
#   (the agent interrupts), plays out at 13000; user says "uh" 13500-13700 over nothing;
#   agent 13600-16000 cut at 14200 by the user starting 14000, who then says one word; silence to 20000.
TIMELINE = {
    "end_ms": 20000,
    "user": [[2500, 4000], [6500, 8000], [8800, 9100], [11500, 12500], [14000, 14400]],
    "agent": [
        [0, 2000, "drained"],
        [4600, 6800, "cleared"],
        [8500, 9000, "drained"],
        [12000, 13000, "drained"],
        [13600, 14200, "cleared"],
    ],
    "words": [[4200, 7], [8100, 5], [14500, 1]],
}


def test_talk_over_is_the_overlap_of_both_sides():
    # 6500-6800 (300) + 8800-9000 (200) + 12000-12500 (500) + 14000-14200 (200)
    assert turntaking.talk_over_ms(TIMELINE["user"], TIMELINE["agent"]) == 1200


def test_interruptions_by_each_side():
    cuts = turntaking.user_interruptions(TIMELINE["user"], TIMELINE["agent"])
    assert [start for start, _ in cuts] == [6500, 8800, 14000]
    assert turntaking.agent_interruptions(TIMELINE["user"], TIMELINE["agent"]) == 1  # at 12000


def test_dead_air_is_silence_of_three_seconds_or_more():
    # gaps: 2000-2500, 4000-4600, 6800(8000)-8500, 9100-11500 (2400: not), 14400-20000 (5600)
    assert turntaking.dead_air(TIMELINE["user"], TIMELINE["agent"], 20000) == [5600]
    assert turntaking.dead_air([[0, 100]], [], 100) == []
    assert turntaking.dead_air([], [], 3000) == [3000]  # nobody said anything for exactly 3 s


def test_barge_ins_time_from_the_user_starting_to_the_page_going_silent():
    cuts = turntaking.barge_ins(TIMELINE)
    assert cuts == [{"at_ms": 6500, "ms": 300, "words": 5}, {"at_ms": 14000, "ms": 200, "words": 1}]


def test_figures_as_stored():
    figures = turntaking.figures(TIMELINE)
    assert figures == {
        "agent_source": "ear",
        "user_turns": 5,
        "agent_turns": 5,
        "user_interruptions": 3,
        "agent_interruptions": 1,
        "talk_over_ms": 1200,
        "dead_air_count": 1,
        "dead_air_ms": 5600,
        "barge_ins": 2,
        "barge_in_ms": [300, 200],
        "false_barge_ins": 1,  # the second: one word
    }
    shown = dict(turntaking.rows(figures))
    assert shown["Talk-over"] == "1200 ms"
    assert shown["Barge-in time (user starts → page silent)"] == "300 ms, 200 ms"


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))
    assert percentiles(values) == {"n": 100, "p50": 50, "p90": 90, "p99": 99}
    assert percentile([700], 99) == 700 and percentile([], 50) is None
    assert percentile([1, 2, 3, 4], 50) == 2


def test_v1_and_v2_timings_give_the_waterfall():
    v1 = {"v": 1, "from": "vad", "speech_end_ms": 3000, "user_final_ms": 3200, "first_audio_ms": 3640}
    assert steps(v1) == {"user_final": 200, "first_audio": 640}
    v2 = {**v1, "v": 2, "played_ms": 3730, "reply_ms": 2100}
    assert steps(v2) == {"user_final": 200, "first_audio": 640, "played": 730, "reply": 2100}
    assert steps({}) == {}
    assert summary([steps(v1), steps(v2)])["played"] == {"n": 1, "p50": 730, "p90": 730, "p99": 730}


def _sent(timeline: CallTimeline, start: float, seconds: float, audible_until: float = 0.0) -> None:
    """`seconds` of 20 ms frames sent at real time from `start` (24 kHz: 480 samples a frame)."""
    for n in range(round(seconds / 0.02)):
        now = start + n * 0.02
        new = n == 0 and now >= audible_until
        timeline.audio_sent(480, now, new, now + 0.02)


def test_a_reply_is_dated_at_the_ear_from_the_pages_edges():
    """The reply's first sample is 24000 (after a 1 s greeting); the page reports it started playing
    at that sample 10 ms before its report arrived at 10.110 s: played 10.100 s, 0.6 s after our end
    of speech (9.5 s); its duration is what was sent for it (2 s)."""
    clock, timeline = ReplyClock(), CallTimeline(rate=24000)
    _sent(timeline, 5.0, 1.0)  # the greeting: no user turn, no measure
    timeline.edges([{"kind": "start", "sample": 0, "ago_ms": 0}], 5.08)
    timeline.edges([{"kind": "stop", "how": "drained", "sample": 24000, "ago_ms": 0}], 6.08)
    clock.speech_started(8.0)
    clock.speech_ended(9.5)
    timeline.user_started(8.0)
    timeline.user_ended(9.5)
    measure = clock.agent_audio(10.0)
    _sent(timeline, 10.0, 2.0)
    reply = timeline.measured(measure)
    assert reply.first_sample == 24000
    timeline.stored(measure, 4, "a3")
    settled = timeline.edges([{"kind": "start", "sample": 24000, "ago_ms": 10}], 10.110)
    assert settled == [reply]
    timeline.finish()
    timings = timeline.timings(reply, t0=5.0)
    assert timings["v"] == 2
    assert steps(timings) == {"first_audio": 500, "played": 600, "reply": 2000}
    message = timeline.message(reply, t0=5.0)
    assert message["id"] == "a3" and message["latency_ms"] == 500 and message["played"] == 600


def test_a_reply_that_began_while_the_page_still_played_is_dated_by_its_position():
    """The page never stopped between two stretches: the second's first sample (48000) played 2 s
    of samples after the stretch the page started at sample 0 at 1.1 s."""
    clock, timeline = ReplyClock(), CallTimeline(rate=24000)
    _sent(timeline, 1.0, 1.0)
    timeline.edges([{"kind": "start", "sample": 0, "ago_ms": 0}], 1.1)
    _sent(timeline, 2.0, 1.0, audible_until=9.0)  # not a new stretch for the server either
    clock.speech_started(2.5)
    clock.speech_ended(2.9)
    measure = clock.agent_audio(3.0)
    _sent(timeline, 3.0, 1.0)
    reply = timeline.measured(measure)
    assert reply.first_sample == 48000
    settled = timeline.edges([{"kind": "stop", "how": "drained", "sample": 72000, "ago_ms": 0}], 4.1)
    assert settled == [reply] and abs(reply.played - 3.1) < 1e-9


def test_the_ear_stretches_feed_the_turn_taking_figures():
    timeline = CallTimeline(rate=24000)
    _sent(timeline, 0.0, 3.0)
    timeline.edges([{"kind": "start", "sample": 0, "ago_ms": 0}], 0.1)
    timeline.user_started(1.0)
    timeline.flushed(1.2)
    timeline.edges([{"kind": "stop", "how": "cleared", "sample": 30000, "ago_ms": 0}], 1.35)
    timeline.user_ended(2.0)
    timeline.user_words(2.4, "wait a moment")
    data = timeline.turn_taking_input(t0=0.0, now=6.0)
    assert data["agent_source"] == "ear"
    assert data["agent"] == [[100, 1350, "cleared"]]
    figures = turntaking.figures(data)
    assert figures["barge_in_ms"] == [350] and figures["false_barge_ins"] == 0
    assert figures["talk_over_ms"] == 350 and figures["dead_air_count"] == 1  # 2.0-6.0 s


def test_without_playback_reports_the_servers_own_estimate_is_used():
    timeline = CallTimeline(rate=24000)
    _sent(timeline, 0.0, 3.0)
    timeline.user_started(1.0)
    timeline.flushed(1.2)
    data = timeline.turn_taking_input(t0=0.0, now=4.0)
    assert data["agent_source"] == "server" and data["agent"] == [[0, 1200, "cleared"]]
    assert turntaking.figures(data)["barge_in_ms"] == [200]


def test_edges_that_make_no_sense_are_ignored():
    timeline = CallTimeline(rate=24000)
    bad = [
        {"kind": "start", "sample": -1, "ago_ms": 0},
        {"kind": "start", "sample": True, "ago_ms": 0},
        {"kind": "start", "sample": 5, "ago_ms": "x"},
        {"kind": "start", "sample": 5, "ago_ms": 1e9},
    ]
    assert timeline.edges(bad, 1.0) == [] and timeline.ear_agent == []


def test_each_step_is_rounded_from_the_end_of_speech_so_it_matches_the_latency_shown():
    """Rounded from the call start, 1000.6 ms and 1619.4 ms would give a 618 ms step for a 619 ms
    (618.8) latency; the stored moments keep the step equal to the figure."""
    clock, timeline = ReplyClock(), CallTimeline(rate=24000)
    clock.speech_started(0.5)
    clock.speech_ended(1.0006)
    measure = clock.agent_audio(1.6194)
    _sent(timeline, 1.6194, 0.2)
    timings = timeline.timings(timeline.measured(measure), t0=0.0)
    assert measure.latency_ms == 619 and steps(timings)["first_audio"] == 619
