"""Our uplink VAD's work for every call of the process, handed to its thread in one job per tick.

Each call's VAD wants a run every 60 ms of audio (sessions/relay.py, VAD_BATCH_BYTES). As one
executor job each, 100 calls made about 1,700 thread hops a second (a future, a queue put, a wake
of the thread, a wake of the event loop): in the profile of one Daphne worker the hops cost about
as much as the model itself (README "Capacity"). Here the jobs submitted within WINDOW_S go to the
thread together, as one call of `run_many` (which runs their model windows as one batch), and
their results come back in one wake of the event loop. A job waits at most WINDOW_S longer; the
latency figures are unaffected (they use arrival times, not when the VAD ran). No task of its
own: a timer handle and the executor's future, both settled by themselves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable

WINDOW_S = 0.02


class Batcher:
    """`run(job)` returns a future of `run_many([... job ...])`'s result for that job, computed on
    the executor's thread with the other jobs submitted within the window."""

    def __init__(self, executor: concurrent.futures.Executor, run_many: Callable[[list], list],
                 window_s: float = WINDOW_S):  # fmt: skip
        self.executor, self.run_many, self.window_s = executor, run_many, window_s
        self._jobs: list[tuple[object, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, *job) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # another event loop (tests run one each): nothing pending is ours
            self._jobs, self._timer, self._loop = [], None, loop
        future = loop.create_future()
        self._jobs.append((job, future))
        if self._timer is None:
            self._timer = loop.call_later(self.window_s, self._flush, loop)
        return future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        jobs, self._jobs, self._timer = self._jobs, [], None
        done = loop.run_in_executor(self.executor, self.run_many, [job for job, _ in jobs])
        done.add_done_callback(lambda outcome: _settle(jobs, outcome))


def _settle(jobs: list, outcome: asyncio.Future) -> None:
    """Each caller its result; a batch that failed fails each of them with its error."""
    error = RuntimeError("VAD batch cancelled") if outcome.cancelled() else outcome.exception()
    results = [None] * len(jobs) if error is not None else outcome.result()
    for (_, future), result in zip(jobs, results, strict=True):
        if future.done():  # its caller was cancelled meanwhile (the call ended)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
