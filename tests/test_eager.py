"""sessions/eager.py: a coroutine runs in its caller up to its first wait, and in a task after it."""

import asyncio

import pytest

from sessions import eager


async def test_a_coroutine_that_never_waits_runs_at_once_and_needs_no_task():
    done = []

    async def write():
        done.append("written")

    assert eager.start(write()) is None
    assert done == ["written"]  # before the caller awaited anything


async def test_a_coroutine_that_waits_continues_in_a_task_in_order():
    steps, gate = [], asyncio.Event()

    async def write():
        steps.append("before")
        await gate.wait()
        steps.append("after")
        return 7

    task = eager.start(write(), name="resumed")
    assert steps == ["before"] and task is not None and task.get_name() == "resumed"
    gate.set()
    assert await asyncio.wait_for(task, 5) == 7
    assert steps == ["before", "after"]


async def test_errors_reach_the_caller_before_a_wait_and_the_task_after_one():
    async def fails_now():
        raise ValueError("now")

    with pytest.raises(ValueError, match="now"):
        eager.start(fails_now())

    async def fails_later():
        await asyncio.sleep(0.01)
        raise ValueError("later")

    task = eager.start(fails_later())
    with pytest.raises(ValueError, match="later"):
        await asyncio.wait_for(task, 5)


async def test_a_caught_exception_inside_the_coroutine_is_its_own_to_handle():
    async def recovers():
        try:
            await asyncio.sleep(0.01)
            raise OSError("socket")
        except OSError:
            await asyncio.sleep(0.01)  # it may even wait again while handling it
            return "recovered"

    assert await asyncio.wait_for(eager.start(recovers()), 5) == "recovered"


async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits():
    cleaned = asyncio.Event()

    async def waits_forever():
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.set()

    task = eager.start(waits_forever())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned.is_set()
