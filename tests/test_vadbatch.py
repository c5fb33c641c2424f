"""sessions/vadbatch.py: jobs of one window reach the thread together; each caller gets its own result."""

import asyncio
import concurrent.futures
import threading

import pytest

from sessions.vadbatch import Batcher


async def test_jobs_of_one_window_run_as_one_batch_and_each_caller_gets_its_own_result():
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    batches, threads = [], set()

    def squares(jobs):
        threads.add(threading.get_ident())
        batches.append(len(jobs))
        return [x * x for (x,) in jobs]

    batcher = Batcher(executor, squares, window_s=0.05)
    results = await asyncio.gather(*(batcher.run(x) for x in range(5)))
    assert results == [0, 1, 4, 9, 16]
    assert batches == [5]  # five jobs, one hop, one batch
    assert threads and threading.get_ident() not in threads
    assert await batcher.run(6) == 36  # the next window is a batch of its own
    assert batches == [5, 1]
    executor.shutdown()


async def test_a_failed_batch_fails_each_caller_with_its_error():
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def broken(jobs):
        raise ValueError("model gone")

    batcher = Batcher(executor, broken, window_s=0.02)
    results = await asyncio.gather(batcher.run(1), batcher.run(2), return_exceptions=True)
    assert [str(r) for r in results] == ["model gone", "model gone"]
    executor.shutdown()


async def test_a_caller_that_went_away_does_not_break_the_others():
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    batcher = Batcher(executor, lambda jobs: [x for (x,) in jobs], window_s=0.02)
    gone = batcher.run(1)
    kept = batcher.run(2)
    gone.cancel()
    assert await kept == 2
    with pytest.raises(asyncio.CancelledError):
        await gone
    executor.shutdown()
