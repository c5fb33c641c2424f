"""Our uplink VAD's work for every call of the process, handed to its thread in one job per tick.

Each call's VAD wants a run every 60 ms of audio (sessions/relay.py, VAD_BATCH_BYTES). As one
executor job each, 100 calls made about 1,700 thread hops a second (a future, a queue put, a wake
of the thread, a wake of the event loop): in the profile of one Daphne worker the hops cost about
as much as the model itself (README "Capacity"). Here the jobs submitted within WINDOW_S go to the
thread together, and their results come back in one wake of the event loop. A job waits at most
WINDOW_S longer; the latency figures are unaffected (they use arrival times, not when the VAD
ran). No task of its own: a timer handle and the executor's future, both settled by themselves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable

WINDOW_S = 0.02


class Batcher:
    def __init__(self, executor: concurrent.futures.Executor, window_s: float = WINDOW_S):
        self.executor, self.window_s = executor, window_s
        self._jobs: list[tuple[Callable, tuple, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, fn: Callable, *args) -> asyncio.Future:
        """`fn(*args)` on the executor's thread, with the other jobs of this window; its result."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # another event loop (tests run one each): nothing pending is ours
            self._jobs, self._timer, self._loop = [], None, loop
        future = loop.create_future()
        self._jobs.append((fn, args, future))
        if self._timer is None:
            self._timer = loop.call_later(self.window_s, self._flush, loop)
        return future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        jobs, self._jobs, self._timer = self._jobs, [], None
        done = loop.run_in_executor(self.executor, _run_all, jobs)
        done.add_done_callback(lambda outcome: _settle(jobs, outcome))


def _run_all(jobs: list) -> list:
    """On the executor's thread: every job, each result or exception kept for its own caller."""
    outcomes = []
    for fn, args, _ in jobs:
        try:
            outcomes.append((True, fn(*args)))
        except Exception as exc:
            outcomes.append((False, exc))
    return outcomes


def _settle(jobs: list, outcome: asyncio.Future) -> None:
    if outcome.cancelled() or outcome.exception() is not None:
        error = outcome.exception() if not outcome.cancelled() else RuntimeError("VAD batch cancelled")
        outcomes = [(False, error)] * len(jobs)
    else:
        outcomes = outcome.result()
    for (_, _, future), (ok, value) in zip(jobs, outcomes, strict=True):
        if future.done():  # its caller was cancelled meanwhile (the call ended)
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
