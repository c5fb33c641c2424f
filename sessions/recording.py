"""A conversation's audio as one stereo 16 kHz s16le WAV: the user left, the agent right, placed on
one clock (seconds since the call started, the relay's `_t0`, the same origin as `Turn.start_ms`).

Where each piece of audio goes:
- The user (and, for direct media, the agent as the page heard it) is a stream that arrives in real
  time: each frame follows the previous one, unless it arrived later than that by more than
  STREAM_SLACK_S (frames were dropped, or the page stopped sending), when it goes where it arrived;
  unless the frames behind it come in a burst that runs the stream ahead of the clock: then they
  were held up on the way (a stalled event loop), not lost, and they close the gap.
- Relayed agent audio reaches the browser faster than real time and waits in its playout queue:
  each frame plays when the one before it has ended, or now if the queue ran dry (the model of
  `Relay._audible_until`). A `clear` (barge-in) empties the queue: what was still to play is dropped.

It is written while the call goes on: the file only ever receives audio up to WRITE_LAG_S behind
now, so nothing written can still be cleared or still be waiting for a late user frame, and the
header's sizes are rewritten with each write, so a crash leaves a valid WAV of all but about the last
second. The cost per frame is a list append; the agent's audio is resampled and the file written
every FLUSH_S, with no fsync.

Storage is Django's (the default storage, `Conversation.recording`). A FileSystemStorage is written
in place; any other (S3, say) gets a local spool file that is uploaded when the call ends, so there
a crash keeps nothing.
"""

from __future__ import annotations

import logging
import os
import struct
import tempfile
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from asgiref.sync import sync_to_async
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage

from playground.engine.resample import Resampler

log = logging.getLogger(__name__)

RATE = 16000
CHANNELS = 2
USER, AGENT = 0, 1  # channel index: left, right
HEADER_BYTES = 44
FLUSH_S = 0.5
WRITE_LAG_S = 0.5  # audio newer than this is still open to a clear, or to a late user frame
STREAM_SLACK_S = 0.25


def wav_header(frames: int) -> bytes:
    data = frames * CHANNELS * 2
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + data, b"WAVE", b"fmt ", 16, 1, CHANNELS, RATE, RATE * CHANNELS * 2, CHANNELS * 2, 16,
        b"data", data,
    )  # fmt: skip


@dataclass(frozen=True)
class Gap:
    since: int  # where the stream stopped (a frame of the file)
    to: int  # where it went on
    decided_by: float  # if no burst came by then (time.monotonic()), it was a real gap


class Recording:
    """The relay's recorder (sessions/relay.py `Recorder`): called with direct-media frames as
    `recording(channel, pcm, now)`, and by relayed calls through `user`, `agent_sent` and `clear`.
    `now` is time.monotonic(); `t0` the moment the file starts."""

    def __init__(self, file, t0: float, agent_rate: int = RATE):
        self.file = file
        self.t0 = t0
        self.written = 0  # frames in the file
        self._chunks = (deque(), deque())  # per channel: (start frame, s16le bytes), in order
        self._stream_end: list[int | None] = [None, None]
        self._gaps: list[Gap | None] = [None, None]  # per stream: a gap not yet known to be one
        self._play_end = 0.0  # relayed agent: the frame where the browser's queue runs dry
        self._agent_out: int | None = None  # where the next resampled agent sample goes
        self._agent_raw: list[bytes] = []  # agent audio at agent_rate, resampled when it is written
        self._resampler = Resampler(agent_rate, RATE) if agent_rate != RATE else None
        self._agent_rate = agent_rate
        self._next_flush = t0 + FLUSH_S
        self.closed = False
        file.seek(0)
        file.write(wav_header(0))
        file.flush()

    def _frame(self, when: float) -> int:
        return round((when - self.t0) * RATE)

    # ---- what the relay calls ---------------------------------------------------------

    def __call__(self, channel: str, pcm: bytes, now: float) -> None:
        """Direct media: a recording frame the page tagged "user" or "agent" (as heard)."""
        self._stream(USER if channel == "user" else AGENT, pcm, now)

    def user(self, pcm: bytes, now: float) -> None:
        self._stream(USER, pcm, now)

    def agent_sent(self, pcm: bytes, now: float) -> None:
        """Relayed agent audio (at `agent_rate`) as sent to the browser: queued behind what it plays."""
        if self.closed:
            return
        start = max(self._play_end, float(self._frame(now)))
        if self._agent_out is None or start > self._play_end:  # the queue ran dry: a new stretch
            self._place_raw()
            if self._agent_out is not None and self._resampler is not None:
                self._place_agent(self._resampler.flush())  # the old stretch's tail, in the filter
            self._agent_out = round(start)
        self._play_end = start + len(pcm) / 2 * RATE / self._agent_rate
        if self._resampler is None:
            self._place_agent(pcm)
        else:  # resampled in one go before a write: per 20 ms frame, soxr's call cost 4x the work
            self._agent_raw.append(pcm)
        self._tick(now)

    def _place_raw(self) -> None:
        """The current stretch's agent audio not yet resampled, resampled and placed. Placed one
        after the other from the stretch's start: the resampler's output lags its input by its
        filter delay, but it is in step with it (and in float32 the same however it is chunked)."""
        if self._agent_raw:
            self._place_agent(self._resampler.process(b"".join(self._agent_raw)))
            self._agent_raw.clear()

    def _place_agent(self, pcm: bytes) -> None:
        if pcm:
            self._chunks[AGENT].append((self._agent_out, pcm))
            self._agent_out += len(pcm) // 2

    def clear(self, now: float) -> None:
        """The browser flushed its queue (barge-in): agent audio not yet played never will be."""
        cut = self._frame(now)
        self._place_raw()
        chunks = self._chunks[AGENT]
        while chunks and chunks[-1][0] >= cut:
            chunks.pop()
        if chunks and chunks[-1][0] + len(chunks[-1][1]) // 2 > cut:
            start, pcm = chunks.pop()
            chunks.append((start, pcm[: (cut - start) * 2]))
        self._play_end, self._agent_out = float(cut), None
        if self._resampler is not None:
            self._resampler.reset()

    def close(self, now: float | None = None) -> None:
        """Write what was played and received by `now`; the rest of the agent's queue was never heard."""
        if self.closed:
            return
        now = time.monotonic() if now is None else now
        self.clear(now)
        ends = [self._frame(now), *(end for end in self._stream_end if end is not None)]
        self._flush(max(ends))
        self.closed = True

    # ---- placement and writing --------------------------------------------------------

    def _stream(self, channel: int, pcm: bytes, now: float) -> None:
        if self.closed:
            return
        count = len(pcm) // 2
        arrived = self._frame(now) - count  # it was captured about then
        end = self._stream_end[channel]
        late = end is None or arrived - end > STREAM_SLACK_S * RATE  # a gap, or frames held up
        start = max(arrived if late else end, self.written, 0)
        if late and end is not None:
            self._gaps[channel] = Gap(max(end, self.written), start, now + STREAM_SLACK_S)
        self._chunks[channel].append((start, pcm))
        self._stream_end[channel] = start + count
        self._settle_gap(channel, now)
        self._tick(now)

    def _settle_gap(self, channel: int, now: float) -> None:
        """Frames held up on their way (a stalled event loop, a stalled page) arrive late and then
        all at once: the late one opened a gap, and the burst behind it runs the stream ahead of
        the clock. A stream cannot be ahead of real time, so it was a delay, not a gap: what came
        after it moves back to close it. A page that stopped sending sends no burst: once the
        stream has gone on in real time for STREAM_SLACK_S, the gap is real and stays."""
        gap = self._gaps[channel]
        if gap is None:
            return
        if self._stream_end[channel] - self._frame(now) > STREAM_SLACK_S * RATE / 2:  # ahead
            shift, chunks = gap.to - gap.since, self._chunks[channel]
            for i in range(len(chunks) - 1, -1, -1):
                start, pcm = chunks[i]
                if start < gap.to:
                    break
                chunks[i] = (start - shift, pcm)
            self._stream_end[channel] -= shift
            self._gaps[channel] = None
        elif now >= gap.decided_by:
            self._gaps[channel] = None

    def _tick(self, now: float) -> None:
        if now >= self._next_flush:
            self._next_flush = now + FLUSH_S
            # an open gap is not written yet: it may still turn out to be a delay, and close
            self._flush(min([self._frame(now - WRITE_LAG_S), *(gap.since for gap in self._gaps if gap)]))

    def _flush(self, upto: int) -> None:
        self._place_raw()
        count = upto - self.written
        if count <= 0:
            return
        out = np.zeros((count, CHANNELS), dtype="<i2")
        for channel, chunks in enumerate(self._chunks):
            # Frames that follow each other (a stream's, a reply's) are joined and copied in once;
            # where one overlaps another, the later is copied over it, as it came.
            run, run_start, run_end = [], 0, 0
            while chunks and chunks[0][0] < upto:
                start, pcm = chunks.popleft()
                if start + len(pcm) // 2 > upto:  # the rest waits for the next write
                    chunks.appendleft((upto, pcm[(upto - start) * 2 :]))
                    pcm = pcm[: (upto - start) * 2]
                if start < self.written:  # the part before what is written is gone
                    pcm, start = pcm[(self.written - start) * 2 :], self.written
                if not pcm:
                    continue
                if start != run_end:
                    self._paste(out, channel, run_start, run)
                    run, run_start = [], start
                run.append(pcm)
                run_end = start + len(pcm) // 2
            self._paste(out, channel, run_start, run)
        try:
            self.file.seek(HEADER_BYTES + self.written * CHANNELS * 2)
            self.file.write(out.tobytes())
            self.written = upto
            self.file.seek(0)
            self.file.write(wav_header(self.written))  # the sizes a reader trusts, kept current
            self.file.flush()
        except OSError:  # a full disk costs the recording, never the call
            log.exception("recording: write failed; recording stops")
            self.closed = True

    def _paste(self, out: np.ndarray, channel: int, start: int, run: list[bytes]) -> None:
        if run:
            samples = np.frombuffer(b"".join(run), dtype="<i2")
            out[start - self.written : start - self.written + len(samples), channel] = samples


def heard_part(text: str, played_ms: float, audio_ms: float) -> str:
    """The words of an interrupted reply the user heard, estimated: the share of the reply's audio
    that played before the clear, applied to its words (speech runs at a roughly even pace)."""
    words = text.split()
    if audio_ms <= 0 or not words:
        return ""
    share = min(1.0, max(0.0, played_ms / audio_ms))
    return " ".join(words[: round(len(words) * share)])


# ---- storage ------------------------------------------------------------------------------


class Handle:
    """An open recording and where it goes when the call ends."""

    def __init__(self, conversation_id, recording: Recording, name: str, spool: str | None):
        self.conversation_id, self.recording, self.name, self.spool = conversation_id, recording, name, spool


def _open(conversation_id, t0: float, agent_rate: int) -> Handle | None:
    from sessions.models import Conversation

    name = f"recordings/{conversation_id}.wav"
    # Only files on the local disk can be appended to in place (a storage's path() is no sign:
    # InMemoryStorage has one too); any other storage gets a spool file, uploaded at the end.
    if isinstance(default_storage, FileSystemStorage):
        name = default_storage.save(name, ContentFile(wav_header(0)))
        file, spool = open(default_storage.path(name), "r+b"), None  # closed in _close
    else:
        fd, spool = tempfile.mkstemp(prefix="recording-", suffix=".wav")
        file = os.fdopen(fd, "w+b")
    Conversation.objects.filter(id=conversation_id).update(recording=name if spool is None else "")
    return Handle(conversation_id, Recording(file, t0, agent_rate), name, spool)


def _close(handle: Handle, now: float) -> None:
    from sessions.models import Conversation

    handle.recording.close(now)
    handle.recording.file.close()
    if handle.spool is None:
        return
    with open(handle.spool, "rb") as spooled:
        name = default_storage.save(handle.name, File(spooled))
    os.unlink(handle.spool)
    Conversation.objects.filter(id=handle.conversation_id).update(recording=name)


async def start(conversation_id, t0: float, agent_rate: int) -> Handle | None:
    """Open the recording of a call; None (and a log line) if the storage refuses."""
    try:
        handle = await sync_to_async(_open)(conversation_id, t0, agent_rate)
    except Exception:
        log.exception("recording of %s could not start; the call goes on unrecorded", conversation_id)
        return None
    return handle


async def finish(handle: Handle) -> None:
    now = time.monotonic()
    try:
        await sync_to_async(_close)(handle, now)
    except Exception:
        log.exception("recording of %s could not be finished", handle.conversation_id)
