"""Reply latency, measured the same way for every provider.

The primary figure of a reply is the time from the end of the user's speech as it reached our
server to the first agent audio we sent to the browser. The end of speech comes from our own VAD
on the uplink (the arrival time of the last voiced audio, not the moment the VAD decided: its
hangover is not the provider's fault), or, for a typed turn, the arrival of the text. What a
vendor reports (when its final user transcript came, its own idea of where speech ended, its own
latency fields) is kept beside it in `Measure.timings()`, never instead of it.

The agent audio that answers is the first *audible stretch* that starts at or after the end of
speech: audio sent when the browser had nothing of the agent's left to play. A provider whose
hangover is shorter than ours starts answering before our VAD has declared the end; the stretch's
start is remembered and the figure is computed once the end is known.

`ReplyClock` is plain state, fed by the relay and testable without it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

VAD, TEXT = "vad", "text"
TIMINGS_VERSION = 1


@dataclass
class Measure:
    """One user turn and the reply to it; times are `time.monotonic()` seconds."""

    source: str = VAD  # what the end of the user's turn is measured from: our VAD, or typed text
    opened: float = 0.0  # when the turn began (our VAD's start, the text's arrival)
    speech_end: float | None = None
    first_audio: float | None = None
    user_final: float | None = None  # the vendor's final user transcript arrived
    vendor_speech_end: float | None = None  # where the vendor says speech ended, mapped to arrival
    vendor: dict = field(default_factory=dict)  # the vendor's own latency fields, as it reports them

    @property
    def done(self) -> bool:
        return self.speech_end is not None and self.first_audio is not None

    @property
    def latency_ms(self) -> int | None:
        return round((self.first_audio - self.speech_end) * 1000) if self.done else None

    def timings(self, t0: float) -> dict:
        """What Turn.timings stores: moments as ms offsets from the call start `t0` (one clock, so
        later moments such as the browser's first played audio can join as further offsets), and
        the vendor's own figures under "vendor"."""

        def offset(when: float | None) -> int | None:
            return None if when is None else round((when - t0) * 1000)

        moments = {
            "speech_end_ms": offset(self.speech_end),
            "first_audio_ms": offset(self.first_audio),
            "user_final_ms": offset(self.user_final),
        }
        out = {"v": TIMINGS_VERSION, "from": self.source}
        out.update({k: v for k, v in moments.items() if v is not None})
        vendor = dict(self.vendor)
        if self.vendor_speech_end is not None:
            vendor["speech_end_ms"] = offset(self.vendor_speech_end)
        if self.user_final is not None and self.first_audio is not None:
            vendor["transcript_to_audio_ms"] = round((self.first_audio - self.user_final) * 1000)
        if vendor:
            out["vendor"] = vendor
        return out


class ReplyClock:
    """The open user turn, and the starts of recent audible stretches of agent audio."""

    def __init__(self) -> None:
        self.current: Measure | None = None
        self._stretches: deque[tuple[float, dict]] = deque(maxlen=16)  # (start, vendor timings then)

    def speech_started(self, now: float) -> None:
        """Our VAD heard the user start. A pause inside one turn keeps its measure (the later end
        wins); after a reply, a new turn begins."""
        if self.current is None or self.current.first_audio is not None or self.current.source == TEXT:
            self.current = Measure(VAD, opened=now)

    def speech_ended(self, at: float) -> Measure | None:
        """Our VAD's end of speech (arrival of the last voiced audio); the measure if now complete."""
        if self.current is None or self.current.first_audio is not None or self.current.source == TEXT:
            self.current = Measure(VAD, opened=at)
        self.current.speech_end = at
        for start, vendor in self._stretches:
            if start >= at:  # the reply began before our VAD was sure the user had stopped
                return self._complete(start, vendor)
        return None

    def text(self, now: float) -> None:
        """A typed turn: its arrival is the end of the user's turn."""
        self.current = Measure(TEXT, opened=now, speech_end=now)

    def user_final(self, now: float, vendor_speech_end: float | None) -> None:
        """The vendor's final user transcript (for typed turns the vendor's echo of the text)."""
        if self.current is None:
            self.current = Measure(VAD, opened=now)
        if self.current.user_final is None:
            self.current.user_final = now
            self.current.vendor_speech_end = vendor_speech_end

    def agent_audio(self, now: float, vendor: dict | None = None) -> Measure | None:
        """An audible stretch of agent audio starts now; the measure if this completes it."""
        self._stretches.append((now, vendor or {}))
        current = self.current
        if current is None or current.first_audio is not None or current.speech_end is None:
            return None
        if now < current.speech_end:
            return None
        return self._complete(now, vendor or {})

    def _complete(self, start: float, vendor: dict) -> Measure:
        self.current.first_audio = start
        self.current.vendor = dict(vendor)
        return self.current

    def awaiting(self) -> Measure | None:
        """The open turn if an agent turn stored now may be its reply: the user has stopped, or
        agent audio has begun since the turn began, and no figure is known yet."""
        current = self.current
        if current is None or current.first_audio is not None:
            return None
        if current.speech_end is not None or any(start >= current.opened for start, _ in self._stretches):
            return current
        return None
