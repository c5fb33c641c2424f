"""Our uplink VAD for every call of the process: one round on its thread every TICK_S.

A call registers its stream (`add`) and hands over its uplink audio as it goes (`feed`: a bytes
append; no task, no event, no future per frame). Every TICK_S the streams that hold a whole model
window give up their audio, and it goes to the thread as one job (`run_many`, which runs their
windows as one batch). The results come back in one wake of the event loop, and only a stream
whose result is not empty (a turn started or ended: a few times a minute) hears of it (`deliver`).

Why rounds: before them each call had a task woken every 60 ms of audio and a future per job (at
50 calls, about 830 task wakes and futures a second); now 50 calls are 25 rounds a second, one
thread hop each, and a call's task wakes only for a turn (README "Capacity", fourth round).

While a round is on the thread, none starts: the audio waits for the next, so under load rounds
grow larger instead of queueing behind each other, and a stream's windows stay in order. No task of
its own: a timer handle, armed while streams are registered, and the executor's future.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable

TICK_S = 0.04  # a barge-in is heard at most this much later than the audio that shows it
NICE = 10  # the VAD thread's niceness: under a full CPU, the calls' frames go first


def background_thread() -> None:
    """An executor's initializer: its thread yields the CPU to the event loop's when both want it
    (Linux: a thread's own niceness). The VAD can wait; a frame that waits is heard late."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except OSError:  # not allowed, or not Linux: the thread runs at the process's priority
        pass


class Rounds:
    """`add(stream, deliver)`, then `feed(stream, pcm)` as audio comes: every TICK_S
    `run_many([(stream, pcm), ...])` runs on the executor's thread for the streams holding at least
    `min_bytes` (the model's window: less would give no result), and `deliver(result)` is called
    on the event loop for each stream whose result is not empty, or `deliver(error)` with the
    exception if the round failed."""

    def __init__(self, executor: concurrent.futures.Executor, run_many: Callable[[list], list], *,
                 min_bytes: int, tick_s: float = TICK_S):  # fmt: skip
        self.executor, self.run_many, self.tick_s, self.min_bytes = executor, run_many, tick_s, min_bytes
        self._streams: dict[object, tuple[bytearray, Callable]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._busy = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, stream, deliver: Callable) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # another event loop (tests run one each): nothing registered is ours
            self._streams, self._timer, self._busy, self._loop = {}, None, False, loop
        self._streams[stream] = (bytearray(), deliver)
        self._arm()

    def feed(self, stream, pcm: bytes) -> None:
        entry = self._streams.get(stream)
        if entry is not None:
            entry[0].extend(pcm)

    def remove(self, stream) -> None:
        """No more rounds or deliveries for `stream` (a round under way runs its audio all the same)."""
        self._streams.pop(stream, None)

    def _arm(self) -> None:
        if self._timer is None and self._streams:
            self._timer = self._loop.call_later(self.tick_s, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if not self._busy:
            jobs = [(stream, self._take(pending), deliver)
                    for stream, (pending, deliver) in self._streams.items()
                    if len(pending) >= self.min_bytes]  # fmt: skip
            if jobs:
                self._busy = True
                done = self._loop.run_in_executor(self.executor, self.run_many, [job[:2] for job in jobs])
                done.add_done_callback(lambda outcome: self._settle(jobs, outcome))
        self._arm()

    @staticmethod
    def _take(pending: bytearray) -> bytes:
        data = bytes(pending)
        pending.clear()
        return data

    def _settle(self, jobs: list, outcome: asyncio.Future) -> None:
        """Each stream still registered its result; a round that failed gives each its error."""
        self._busy = False
        error = RuntimeError("VAD round cancelled") if outcome.cancelled() else outcome.exception()
        results = [None] * len(jobs) if error is not None else outcome.result()
        for (stream, _, deliver), result in zip(jobs, results, strict=True):
            if stream not in self._streams:  # its call ended meanwhile
                continue
            if error is not None:
                deliver(error)
            elif result:
                deliver(result)
