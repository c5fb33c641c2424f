"""Run a coroutine at once, in its caller, up to its first wait: only one that does wait gets a task.

This is what Python 3.12's eager tasks do, which 3.11 lacks. The relay writes each uplink frame to
the upstream this way (sessions/relay.py `_write_now`): a WebSocket send almost never waits (only
when the socket's buffer is full), so the usual frame costs no task and no queue hop, and a send
that does wait continues in a task of its own without holding up the browser's socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine


def start(coro: Coroutine, name: str | None = None) -> asyncio.Task | None:
    """Steps `coro` now. None if it finished without waiting (an exception it raised is raised
    here; its result is dropped); else a task that continues it from where it waits, for the caller
    to own (cancel and await)."""
    try:
        waiting = coro.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_resume(coro, waiting), name=name)


async def _resume(coro: Coroutine, waiting):
    return await _Resumed(coro, waiting)


class _Resumed:
    """Hands what `coro` waits on to the task driving this, and passes back what comes of it
    (a result, an exception, a cancellation), step by step, as the task would have to `coro`."""

    def __init__(self, coro: Coroutine, waiting):
        self.coro, self.waiting = coro, waiting

    def __await__(self):
        waiting = self.waiting
        while True:
            try:
                sent = yield waiting
            except BaseException as exc:  # a cancellation too: it belongs to `coro`
                try:
                    waiting = self.coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    waiting = self.coro.send(sent)
                except StopIteration as stop:
                    return stop.value
