"""The waterfall of each reply, and the call's timeline for the turn-taking figures.

Every step is measured from the end of the user's speech as it reached our server (our own VAD;
sessions/latency.py), on the server's clock:

- ``user_final``: the vendor's final transcript of the user's words arrived (where it sends one);
- ``first_audio``: the first agent audio of the reply was sent to the page (`Turn.latency_ms`);
- ``played``: the page played that first sample, at the ear, from its playback reports;
- ``reply``: how long the reply's audio is (sent for it, up to the next reply or the call's end).

How the page's report becomes a server time: the page's playback worklet counts every sample of
agent audio it was given (also those it later dropped at a `clear`), so a sample's index in the
page's stream is its index in what the server sent. When playback starts or stops, the page reports
the index of the first sample played (or the first not played) and how long ago that reached the
ear (`ago_ms`, from the audio clock and its output latency). The server dates it `arrival - ago`.
On loopback the report's own transit is well under a millisecond; over a network it makes
``played`` later by the one-way delay of the report (about half the round trip).

Turn.timings v2 adds ``played_ms`` and ``reply_ms`` to v1 (moments as ms offsets from the call
start); readers take both versions (`steps()`).

`CallTimeline` is plain state, fed by the relay and testable without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sessions import turntaking
from sessions.latency import Measure

TIMINGS_VERSION = 2
MAX_STRETCHES = 2000  # per call and side: an hour of lively talk; older ones drop off the figures
STEPS = [
    ("user_final", "Transcript of your words"),
    ("first_audio", "First agent audio at the server"),
    ("played", "First agent audio played"),
    ("reply", "Reply duration"),
]


def steps(timings: dict | None) -> dict:
    """The waterfall of one reply from stored Turn.timings (v1 or v2): ms from the end of the user's
    speech for each moment known, and the reply's duration."""
    t = timings or {}
    end = t.get("speech_end_ms")
    if end is None:
        return {}
    out = {}
    for key in ("user_final", "first_audio", "played"):
        if t.get(f"{key}_ms") is not None:
            out[key] = t[f"{key}_ms"] - end
    if t.get("reply_ms") is not None:
        out["reply"] = t["reply_ms"]
    return out


def percentile(values: list[float], p: float) -> int | None:
    """Nearest-rank percentile (P50 of [1, 2, 3, 4] is 2): a value that occurred, never a blend."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)])


def percentiles(values: list[float]) -> dict:
    return {"n": len(values), "p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99)}  # fmt: skip


def summary(all_steps: list[dict]) -> dict:
    """P50/P90/P99 of each step over replies (each a `steps()` dict)."""
    return {key: percentiles([s[key] for s in all_steps if key in s]) for key, _ in STEPS}


@dataclass
class Reply:
    measure: Measure
    first_sample: int | None  # index of its first sample in the audio sent to the page
    sequence: int | None = None  # its agent Turn, once stored
    ident: str | None = None  # that turn's transcript id on the page
    played: float | None = None  # monotonic time its first sample reached the ear
    end_sample: int | None = None


@dataclass
class CallTimeline:
    """Agent audio sent and played, our VAD's user stretches and the user's words, for one call."""

    rate: int  # samples per second of the audio sent to the page
    sent: int = 0  # samples sent so far
    replies: list[Reply] = field(default_factory=list)
    stretches: list = field(default_factory=list)  # [start time, first sample] of audible agent audio
    server_agent: list = field(default_factory=list)  # [start, end, how]: what the page should be playing
    ear_agent: list = field(default_factory=list)  # [start, end, how] from the page's reports
    user: list = field(default_factory=list)  # [start, end|None] from our VAD
    words: list = field(default_factory=list)  # [arrival, n]
    _playing: tuple[int, float] | None = None  # (sample, time) the page's current playing stretch began

    # ---- the server's side

    def audio_sent(self, samples: int, now: float, new_stretch: bool, audible_until: float) -> None:
        if new_stretch:
            self._add(self.stretches, [now, self.sent])
            self._add(self.server_agent, [now, audible_until, "sent"])
        elif self.server_agent:
            self.server_agent[-1][1] = audible_until
        self.sent += samples

    def flushed(self, now: float) -> None:
        """The page was told to drop the agent audio it holds (a barge-in)."""
        if self.server_agent and self.server_agent[-1][1] > now:
            self.server_agent[-1][1:] = [now, "cleared"]

    def measured(self, measure: Measure) -> Reply:
        """A reply's latency is known: its first sample is the start of the stretch that timed it."""
        reply = self.reply_of(measure)
        if reply is None:
            first = next((s for t, s in reversed(self.stretches) if t == measure.first_audio), None)
            reply = Reply(measure, first)
            if self.replies and self.replies[-1].end_sample is None and first is not None:
                self.replies[-1].end_sample = first
            self._add(self.replies, reply)
            self._match_played(reply)
        return reply

    def stored(self, measure: Measure, sequence: int, ident: str) -> Reply:
        reply = self.measured(measure)
        reply.sequence, reply.ident = sequence, ident
        return reply

    def reply_of(self, measure: Measure) -> Reply | None:
        return next((r for r in reversed(self.replies) if r.measure is measure), None)

    def user_started(self, at: float) -> None:
        if not self.user or self.user[-1][1] is not None:
            self._add(self.user, [at, None])

    def user_ended(self, at: float) -> None:
        if self.user and self.user[-1][1] is None:
            self.user[-1][1] = max(at, self.user[-1][0])
        else:  # an end whose start fell before the call (or was dropped): a stretch of its own
            self._add(self.user, [at, at])

    def user_words(self, at: float, text: str) -> None:
        self._add(self.words, [at, len(text.split())])

    # ---- the page's side

    def edges(self, edges: list, arrival: float) -> list[Reply]:
        """The page's playback started or stopped (docs/protocol.md, `playback`); the replies whose
        first played moment this settles."""
        settled = []
        for edge in edges[:32]:
            sample, ago = edge.get("sample"), edge.get("ago_ms")
            if not _count(sample) or not isinstance(ago, int | float) or not -5000 <= ago <= 60000:
                continue
            at = arrival - ago / 1000
            if edge.get("kind") == "start":
                settled += self._started(sample, at)
            elif edge.get("kind") == "stop":
                settled += self._stopped(sample, at, "cleared" if edge.get("how") == "cleared" else "drained")
        return settled

    def _started(self, sample: int, at: float) -> list[Reply]:
        if self._playing is not None:  # a stop went missing: close the old stretch here
            self._stopped(sample, at, "drained")
        self._playing = (sample, at)
        self._add(self.ear_agent, [at, None, "open"])
        return [r for r in self.replies if self._match_played(r)]

    def _stopped(self, sample: int, at: float, how: str) -> list[Reply]:
        if self._playing is None:
            return []
        start, began = self._playing
        self._playing = None
        self.ear_agent[-1][1:] = [max(at, self.ear_agent[-1][0]), how]
        settled = []
        for reply in self.replies:  # began while the page was already playing: dated by position
            if (
                reply.played is None
                and reply.first_sample is not None
                and start <= reply.first_sample < sample
            ):
                reply.played = began + (reply.first_sample - start) / self.rate
                settled.append(reply)
        return settled

    def _match_played(self, reply: Reply) -> bool:
        """The page's current stretch began within this reply: its first played moment."""
        if reply.played is not None or reply.first_sample is None or self._playing is None:
            return False
        start, began = self._playing
        end = reply.end_sample if reply.end_sample is not None else self.sent
        if reply.first_sample <= start < max(end, reply.first_sample + 1):
            reply.played = began
            return True
        return False

    # ---- what is stored

    def timings(self, reply: Reply, t0: float) -> dict:
        """Turn.timings v2 of a reply."""
        measure = reply.measure
        out = measure.timings(t0)
        out["v"] = TIMINGS_VERSION
        base = out.get("speech_end_ms")
        if base is not None:  # each moment rounded from the end of speech: its step equals the figure shown
            moments = {"first_audio_ms": measure.first_audio, "user_final_ms": measure.user_final,
                       "played_ms": reply.played}  # fmt: skip
            for key, when in moments.items():
                if when is not None:
                    out[key] = base + round((when - measure.speech_end) * 1000)
        end = reply.end_sample if reply.end_sample is not None else self.sent
        if reply.first_sample is not None and end > reply.first_sample:
            out["reply_ms"] = round((end - reply.first_sample) * 1000 / self.rate)
        return out

    def message(self, reply: Reply, t0: float) -> dict:
        """The `waterfall` message for the page (docs/protocol.md)."""
        # `sequence`: the stored turn, so an audience view that got the reply from its snapshot (under
        # that turn's id) counts a later update of it as the same reply (static/js/waterfall.js).
        return {"type": "waterfall", "id": reply.ident, "sequence": reply.sequence,
                "latency_ms": reply.measure.latency_ms, "latency_from": reply.measure.source,
                **steps(self.timings(reply, t0))}  # fmt: skip

    def finish(self) -> None:
        if self.replies and self.replies[-1].end_sample is None:
            self.replies[-1].end_sample = self.sent

    def turn_taking_input(self, t0: float, now: float) -> dict:
        """The timeline sessions/turntaking.py works on, in ms from the call start."""

        def ms(when):
            return round((when - t0) * 1000)

        source = "ear" if self.ear_agent else "server"
        agent = self.ear_agent or self.server_agent
        return {
            "end_ms": ms(now),
            "agent_source": source,
            "user": [[ms(s), ms(e if e is not None else now)] for s, e in self.user],
            "agent": [[ms(s), ms(min(e, now) if e is not None else now), how] for s, e, how in agent],
            "words": [[ms(at), n] for at, n in self.words],
        }

    def turn_taking(self, t0: float, now: float) -> dict:
        return turntaking.figures(self.turn_taking_input(t0, now))

    @staticmethod
    def _add(items: list, item) -> None:
        items.append(item)
        del items[:-MAX_STRETCHES]


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
