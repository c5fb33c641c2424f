"""Which process owns which live call, and what happens to calls whose process died.

Each server process has a `Worker` row and heartbeats it every HEARTBEAT_INTERVAL seconds from one
task (`Liveness`). A socket that claims a conversation records that row as the call's owner. The
same task sweeps: a live call (connecting or active) whose owner has not heartbeated for
HEARTBEAT_TIMEOUT seconds is marked failed, "server stopped", with its end time; its turns stay.
So is a live call with no owner at all (claimed before this module existed, or its owner's row
was removed) once it is older than the timeout. A healthy process's calls are never touched: its
heartbeat is fresh. `manage.py sweep_calls` runs the same sweep once.

Under Daphne the task starts when the reactor runs (so every process sweeps at startup) and a
Twisted "before shutdown" trigger ends this process's calls on SIGTERM: each gets `ended`
("server shutting down") and a close frame, its row is ended with that reason, and the Worker row
is deleted. Outside Daphne (in-process tests, another ASGI server) the task runs while the process
owns calls and stops with the last one.

Times are the database's clock (`Now()`), so processes on hosts with skewed clocks agree.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta

from django.conf import settings
from django.db.models import DateTimeField, ExpressionWrapper, Q
from django.db.models.functions import Now
from django.utils import timezone

from sessions.models import Conversation, Worker

log = logging.getLogger(__name__)

LIVE = (Conversation.Status.CONNECTING, Conversation.Status.ACTIVE)
STOPPED = "server stopped"
SHUTTING_DOWN = "server shutting down"


def _db_now_minus(seconds: float):
    return ExpressionWrapper(Now() - timedelta(seconds=seconds), output_field=DateTimeField())


async def sweep(silent_s: float | None = None) -> int:
    """Fail the live calls of processes silent for `silent_s` seconds (default HEARTBEAT_TIMEOUT)
    and the ownerless ones older than that; the number of calls failed."""
    silent_s = settings.HEARTBEAT_TIMEOUT if silent_s is None else silent_s
    dead = Worker.objects.filter(heartbeat_at__lt=_db_now_minus(silent_s))
    # created_at is the app's clock; ownerless rows are rare leftovers, a skew of seconds is harmless.
    ownerless = Q(worker__isnull=True, created_at__lt=timezone.now() - timedelta(seconds=silent_s))
    swept = await Conversation.objects.filter(Q(worker__in=dead) | ownerless, status__in=LIVE).aupdate(
        status=Conversation.Status.FAILED, ended_at=Now(), end_reason=STOPPED
    )
    await dead.adelete()  # their calls are settled; a process that comes back registers anew
    if swept:
        log.warning("swept %d call(s) of stopped server processes", swept)
    return swept


class Liveness:
    """This process: its Worker row, the calls it owns, and the heartbeat-and-sweep task."""

    def __init__(self):
        self.calls: dict[object, Callable[[str], Awaitable[None]]] = {}  # socket -> end(reason)
        self.daphne = False  # Daphne's reactor runs: the task runs for the process lifetime
        self._attached = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._worker: asyncio.Future | None = None  # resolves to the Worker id once registered

    # ---- the task ----------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop and self._task is not None and not self._task.done():
            return
        self._loop, self._worker = loop, loop.create_future()
        self._task = loop.create_task(self._run(self._worker), name="liveness")

    async def _run(self, worker: asyncio.Future) -> None:
        try:
            row = await Worker.objects.acreate(
                host=socket.gethostname()[:255], pid=os.getpid(), started_at=Now(), heartbeat_at=Now()
            )
        except Exception as exc:
            worker.set_exception(exc)
            raise
        worker.set_result(row.id)
        while True:
            await self._beat(row)
            try:
                await sweep()
            except Exception:
                log.exception("sweeping stopped calls failed")
            await asyncio.sleep(settings.HEARTBEAT_INTERVAL)

    async def _beat(self, row: Worker) -> None:
        try:
            if not await Worker.objects.filter(id=row.id).aupdate(heartbeat_at=Now()):
                # This process stalled past the timeout and was swept: its calls were failed.
                log.error("worker %s was swept as stopped; registering it again", row.id)
                await Worker.objects.acreate(id=row.id, host=row.host, pid=row.pid, started_at=Now(),
                                             heartbeat_at=Now())  # fmt: skip
        except Exception:
            log.exception("heartbeat failed")  # the database is down: try again next interval

    async def stop(self, reason: str | None) -> None:
        """Cancel and await the task and delete this process's Worker row. With a `reason` (shutdown),
        rows of this worker still marked live end with it first: a socket Daphne cancelled mid-connect."""
        task, worker, self._loop, self._task = self._task, self._worker, None, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
        if not worker.done():
            worker.cancel()
        if worker.cancelled() or worker.exception():
            return
        if reason:
            mine = Conversation.objects.filter(worker_id=worker.result(), status__in=LIVE)
            await mine.aupdate(status=Conversation.Status.ENDED, ended_at=Now(), end_reason=reason)
        await Worker.objects.filter(id=worker.result()).adelete()

    # ---- calls -------------------------------------------------------------------------

    async def enlist(self, key, end: Callable[[str], Awaitable[None]]) -> int:
        """Own a socket about to claim a call (`end(reason)` ends it at shutdown); this process's
        Worker id. Starts the task if needed. Owned before the claim, so that outside Daphne the
        task does not stop between a claim and its call."""
        self.start(asyncio.get_running_loop())
        self.calls[key] = end
        return await asyncio.shield(self._worker)

    async def release(self, key) -> None:
        """The socket is done: its call ended or it never claimed one."""
        self.calls.pop(key, None)
        if not self.calls and not self.daphne:
            await self.stop(None)

    async def shutdown(self, reason: str = SHUTTING_DOWN) -> None:
        """End every call of this process (bounded), then stop the task."""
        ends = [end(reason) for end in list(self.calls.values())]
        if ends:
            log.warning("ending %d live call(s): %s", len(ends), reason)
            done, pending = await asyncio.wait(
                [asyncio.ensure_future(e) for e in ends], timeout=settings.SHUTDOWN_TIMEOUT
            )
            for future in pending:
                future.cancel()
            await asyncio.gather(*done, *pending, return_exceptions=True)
            await asyncio.sleep(0.3)  # the close frames leave before the reactor drops the sockets
        self.calls.clear()
        await self.stop(reason)

    def run_for_lifetime(self, loop: asyncio.AbstractEventLoop) -> None:
        """Another server that calls `shutdown()` itself before it stops (playground/serve_uvicorn.py):
        the task runs from now to then, as under Daphne."""
        self.daphne = True
        self.start(loop)

    # ---- Daphne ------------------------------------------------------------------------

    def attach_to_daphne(self) -> None:
        """Under Daphne: run from reactor start to shutdown, and end calls cleanly on SIGTERM.

        Daphne installs Twisted's asyncio reactor when it is imported, which Channels' test helpers
        also do; so the decision waits until the reactor actually runs."""
        reactor = sys.modules.get("twisted.internet.reactor")
        if self._attached or reactor is None or "daphne.server" not in sys.modules:
            return
        from twisted.internet import asyncioreactor

        if not isinstance(reactor, asyncioreactor.AsyncioSelectorReactor):
            return
        self._attached = True
        if reactor.running:
            self._serve_with(reactor)
        else:
            reactor.callWhenRunning(self._serve_with, reactor)

    def _serve_with(self, reactor) -> None:
        """Daphne handles SIGTERM by stopping the reactor; before it stops, it cancels every
        application instance (our consumers, not their relay tasks) and waits for them, then drops
        the sockets. A "before shutdown" trigger that returns a Deferred holds the reactor until our
        calls have ended."""
        from twisted.internet import defer

        self.daphne = True
        loop = reactor._asyncioEventloop
        self.start(loop)
        shut_down = lambda: defer.Deferred.fromFuture(asyncio.ensure_future(self.shutdown(), loop=loop))  # noqa: E731
        reactor.addSystemEventTrigger("before", "shutdown", shut_down)


liveness = Liveness()
