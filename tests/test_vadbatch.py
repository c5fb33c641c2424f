"""sessions/vadbatch.py: jobs of one window reach the thread together; each caller gets its own outcome."""

import asyncio
import concurrent.futures
import threading

import pytest

from sessions.vadbatch import Batcher


async def test_jobs_of_one_window_run_in_one_hop_and_each_caller_gets_its_own_outcome():
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    hops = []
    original = executor.submit

    def submit(fn, *args):
        hops.append(len(args[0]) if args and isinstance(args[0], list) else 1)
        return original(fn, *args)

    executor.submit = submit
    batcher = Batcher(executor, window_s=0.05)
    threads = set()

    def square(x):
        threads.add(threading.get_ident())
        if x == 3:
            raise ValueError("three")
        return x * x

    futures = [batcher.run(square, x) for x in range(5)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[:3] == [0, 1, 4] and results[4] == 16
    assert isinstance(results[3], ValueError)
    assert hops == [5]  # five jobs, one hop
    assert threads and threading.get_ident() not in threads
    assert await batcher.run(square, 6) == 36  # the next window is a hop of its own
    assert hops == [5, 1]
    executor.shutdown()


async def test_a_caller_that_went_away_does_not_break_the_others():
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    batcher = Batcher(executor, window_s=0.02)
    gone = batcher.run(lambda: 1)
    kept = batcher.run(lambda: 2)
    gone.cancel()
    assert await kept == 2
    with pytest.raises(asyncio.CancelledError):
        await gone
    executor.shutdown()
