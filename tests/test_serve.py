"""`bin/serve --workers 2`: two Daphne processes on one port, one conversation lock across them.

Which process accepts a connection is the kernel's choice; to make it the test's, one worker is
paused (SIGSTOP) while a socket opens, so the other one must accept it. Runs on SQLite, and on
PostgreSQL + Redis when DATABASE_URL / REDIS_URL say so (bin/test).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import websockets
from django.core.exceptions import ImproperlyConfigured

from playground import config
from tests.peers import FRAME, EchoPeer
from tests.server import ROOT, Server, call, start_server

pytestmark = pytest.mark.slow


def children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def log_of(server: Server) -> str:
    return server.log.read_text()


def alive(*pids: int) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def owners(server: Server, *conversation_ids: str) -> dict[str, int | None]:
    """The pid of the process that holds each conversation's socket, from its Worker row."""
    code = ("import json; from sessions.models import Conversation as C; "
            f"print(json.dumps({{str(i): p for i, p in C.objects.filter(id__in={list(conversation_ids)!r})"
            ".values_list('id', 'worker__pid')}))")  # fmt: skip
    return json.loads(server.manage("shell", "-v0", "-c", code))


def registered_pids(server: Server) -> set[int]:
    code = "from sessions.models import Worker; print(*Worker.objects.values_list('pid', flat=True))"
    return {int(p) for p in server.manage("shell", "-v0", "-c", code).split()}


def wait_for_workers(server: Server, count: int, gone: int = 0) -> list[int]:
    """Both workers run and have registered (their Worker rows): their pids."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = children(server.process.pid)
        if len(pids) == count and gone not in pids and registered_pids(server) >= pids:
            return sorted(pids)
        time.sleep(0.5)
    raise AssertionError(
        f"workers {children(server.process.pid)} did not all register:\n{log_of(server)[-3000:]}"
    )


@contextlib.contextmanager
def paused(pid: int):
    """The worker takes no connection meanwhile: the other one accepts every new socket."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


async def ready(c) -> None:
    await c.until(lambda c: c.of("ready"), timeout=60)


async def echoes(c, frames: int = 5) -> None:
    """Audio sent on the call comes back through the relay and the echo peer."""
    before = c.audio
    for _ in range(frames):
        await c.ws.send(bytes(FRAME))
    await c.until(lambda c: c.audio >= before + frames * FRAME, timeout=30)


async def refused(server: Server, ws_path: str) -> int:
    async with call(server, ws_path) as c:
        with contextlib.suppress(websockets.ConnectionClosed):
            await c.until(lambda _: False, timeout=30)
        return c.ws.close_code


@pytest.mark.parametrize("server_name", ["daphne", "uvicorn"])
async def test_two_workers_serve_calls_hold_the_lock_and_drain_on_sigterm(server_name):
    async with EchoPeer() as peer:
        env = {"ECHO_URL": peer.url, "PLAYBACK_RATE": "16000", "SERVER": server_name}
        servers = start_server(env, workers=2)
        server = await asyncio.to_thread(next, servers)
        try:
            await drive(server)
        finally:
            await asyncio.to_thread(servers.close)


async def drive(server: Server) -> None:
    first_pid, second_pid = await asyncio.to_thread(wait_for_workers, server, 2)
    one, two = [await asyncio.to_thread(server.conversation, "echo", voice="default") for _ in range(2)]
    async with contextlib.AsyncExitStack() as stack:
        with paused(second_pid):  # the first worker takes this call
            a = await stack.enter_async_context(call(server, one["ws_path"]))
            await ready(a)
        with paused(first_pid):  # the second worker takes this one
            b = await stack.enter_async_context(call(server, two["ws_path"]))
            await ready(b)
        # The tests' client offers permessage-deflate, as browsers do: frames go uncompressed all the same
        assert [c.ws.response.headers.get("Sec-WebSocket-Extensions") for c in (a, b)] == [None, None]
        held = await asyncio.to_thread(owners, server, one["id"], two["id"])
        assert held == {one["id"]: first_pid, two["id"]: second_pid}
        await asyncio.gather(echoes(a), echoes(b))  # two clients, two processes, both served

        # The lock holds across processes: a second socket for a call on the other worker is refused.
        with paused(first_pid):
            assert await refused(server, one["ws_path"]) == 4409
        with paused(second_pid):
            assert await refused(server, two["ws_path"]) == 4409
        await asyncio.gather(echoes(a), echoes(b))  # and the calls go on

        # SIGTERM to the supervisor: each worker ends its calls with a reason and a close frame.
        server.process.send_signal(signal.SIGTERM)
        for c in (a, b):
            with contextlib.suppress(websockets.ConnectionClosed):
                await c.until(lambda _: False, timeout=30)
            assert c.of("ended")[-1]["reason"] == "server shutting down"
            assert c.ws.close_code == 1000
    assert await asyncio.to_thread(server.process.wait, 30) == 0
    assert await asyncio.to_thread(alive, first_pid, second_pid) == []  # the workers are gone too


async def test_a_worker_that_dies_is_restarted_and_the_port_keeps_serving():
    servers = start_server(workers=2, serve_args=("--startup-s", "1"))
    server = await asyncio.to_thread(next, servers)
    try:
        pids = await asyncio.to_thread(wait_for_workers, server, 2)
        await asyncio.sleep(1.5)  # past the startup window
        os.kill(pids[0], signal.SIGKILL)
        others = await asyncio.to_thread(wait_for_workers, server, 2, pids[0])
        assert pids[0] not in others and pids[1] in others  # a new worker in the dead one's place
        async with httpx.AsyncClient(base_url=server.url) as client:
            for _ in range(4):  # whichever worker takes it
                assert (await client.get("/login/")).status_code == 200
    finally:
        await asyncio.to_thread(servers.close)
    assert "exited with -9" in await asyncio.to_thread(log_of, server)


def test_a_worker_that_dies_at_startup_stops_the_supervisor_non_zero(tmp_path):
    """A broken worker (here: the port's socket is fine, the app is not) is not restarted forever."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "playground.settings", "SECRET_KEY": "x" * 60,
           "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3", "SECURE_COOKIES": "0",
           "WORKERS": "2"}  # fmt: skip
    argv = [str(ROOT / "bin" / "serve"), "--port", "0", "--", "--no-such-daphne-option"]
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "2 daphne worker(s)" in result.stderr  # WORKERS, read as every setting is
    assert "died at startup" in result.stderr


def test_default_worker_count_follows_the_channel_layer():
    """One process on the in-memory channel layer (its groups do not cross processes), every core
    with Redis, and WORKERS wins."""
    assert config.workers({}) == 1
    assert config.workers({"REDIS_URL": "redis://127.0.0.1:6379/0"}) == (os.cpu_count() or 1)
    assert config.workers({"WORKERS": "3", "REDIS_URL": "redis://127.0.0.1:6379/0"}) == 3
    with pytest.raises(ImproperlyConfigured):
        config.workers({"WORKERS": "0"})


async def test_an_audience_view_follows_a_call_held_by_the_other_worker():
    """Presenter mode across `bin/serve`'s workers: the talker's socket on one, the viewer's on the
    other, the mirror crossing between them through Redis."""
    from tests.test_audience import REDIS_URL, present, redis_running, share, viewer

    if not redis_running():
        pytest.skip("needs Redis on 127.0.0.1:6379 (bin/test starts it)")
    async with EchoPeer() as peer:
        env = {"ECHO_URL": peer.url, "PLAYBACK_RATE": "16000", "REDIS_URL": REDIS_URL}
        servers = start_server(env, workers=2)
        server = await asyncio.to_thread(next, servers)
        try:
            first_pid, second_pid = await asyncio.to_thread(wait_for_workers, server, 2)
            conv = await asyncio.to_thread(server.conversation, "echo", voice="default")
            async with contextlib.AsyncExitStack() as stack:
                with paused(second_pid):  # the first worker holds the call
                    talker = await stack.enter_async_context(call(server, conv["ws_path"]))
                    await present(talker)
                token = await asyncio.to_thread(share, server, conv["id"])
                with paused(first_pid):  # the second worker takes the viewer
                    watcher = await stack.enter_async_context(viewer(server, token, audio=True))
                    await watcher.until(lambda v: v.of("snapshot"), 30)
                assert (await asyncio.to_thread(owners, server, conv["id"]))[conv["id"]] == first_pid
                await echoes(talker, 25)
                await watcher.until(lambda v: v.audio >= 20 * FRAME, 30)  # the agent's audio, mirrored
                await talker.ws.send(json.dumps({"type": "stop"}))
                await watcher.until(lambda v: v.of("ended"), 30)
            assert not [m for m in watcher.seen if m.get("type") in ("join", "ready")]
        finally:
            await asyncio.to_thread(servers.close)
