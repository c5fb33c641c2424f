"""Calls outlive no server: heartbeats, the sweep of dead processes' calls, graceful SIGTERM, and
the claim race, over real Daphne processes (on PostgreSQL too when DATABASE_URL points there)."""

import asyncio
import contextlib
import json
import time
from datetime import timedelta

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.db.models.functions import Now
from django.utils import timezone

from sessions.liveness import sweep
from sessions.models import Conversation, Worker
from tests.server import call, start_server

FAST = {"HEARTBEAT_INTERVAL": "1", "HEARTBEAT_TIMEOUT": "3"}
GREETING = "Hello, this is Bella Vista"


@contextlib.contextmanager
def running(extra_env=None, share_with=None):
    servers = start_server(extra_env, share_with)
    try:
        yield next(servers)
    finally:
        servers.close()


def row(server, conversation_id) -> dict:
    """The conversation's row as the database holds it (read by a manage.py of that deployment)."""
    code = (
        "import json; from sessions.models import Conversation as C; "
        f"c = C.objects.get(id='{conversation_id}'); "
        "print(json.dumps({'status': c.status, 'reason': c.end_reason, 'ended': c.ended_at is not None, "
        "'turns': list(c.turns.values_list('text', flat=True))}))"
    )
    return json.loads(server.manage("shell", "-c", code).strip().splitlines()[-1])


def page(server, conversation_id) -> str:
    return server.client().get(f"/history/{conversation_id}/").text


async def close_code(server, ws_path) -> int:
    headers = {"Authorization": f"Token {server.token}"}
    url = server.ws_url + ws_path
    async with websockets.connect(url, additional_headers=headers, origin=server.url) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            async with asyncio.timeout(30):
                while True:
                    await ws.recv()
    return ws.close_code


async def greeted(server, ws_path, then):
    """Open a call, wait until the agent's greeting is stored and shown, then run `then(call)`."""
    async with call(server, ws_path) as c:
        await c.until(lambda c: c.finals("agent"), 60)
        await then(c)
    return c


# ---- the sweep, in process ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_thread_connections")
async def test_sweep_fails_calls_of_silent_workers_only(user, topic):
    """Only calls whose owner stopped heartbeating (or that have no owner) are failed; turns stay."""

    def make(**fields):
        return Conversation.objects.acreate(user=user, topic=topic, provider="local", voice="v",
                                            language="en", **fields)  # fmt: skip

    fresh = await Worker.objects.acreate(host="a", pid=1, started_at=Now(), heartbeat_at=Now())
    silent = await Worker.objects.acreate(host="b", pid=2, started_at=Now(), heartbeat_at=Now())
    await Worker.objects.filter(id=silent.id).aupdate(heartbeat_at=Now() - timedelta(seconds=60))
    healthy = await make(status="active", worker=fresh)
    dead = await make(status="active", worker=silent)
    dead_connecting = await make(status="connecting", worker=silent)
    finished = await make(status="ended", worker=silent, end_reason="stopped by the user")
    stuck = await make(status="connecting", created_at=timezone.now() - timedelta(seconds=60))  # no owner
    just_claimed = await make(status="connecting")  # no owner either, but younger than the timeout
    await sync_to_async(dead.turns.create)(sequence=1, role="agent", text="said before")

    assert await sweep(30) == 3
    for conv, status, reason in [(healthy, "active", ""), (dead, "failed", "server stopped"),
                                 (dead_connecting, "failed", "server stopped"),
                                 (stuck, "failed", "server stopped"), (just_claimed, "connecting", ""),
                                 (finished, "ended", "stopped by the user")]:  # fmt: skip
        await conv.arefresh_from_db()
        assert (conv.status, conv.end_reason) == (status, reason)
    assert dead.ended_at is not None and await dead.turns.acount() == 1
    assert not await Worker.objects.filter(id=silent.id).aexists()
    assert await sweep(30) == 0


# ---- over real Daphne processes ----------------------------------------------------------------


@pytest.mark.slow
def test_a_call_on_a_killed_server_ends_as_failed_and_keeps_its_turns():
    """kill -9 mid-call; another process of the deployment fails the call within a bounded time."""
    with running(FAST) as first:
        conv = first.conversation()

        async def kill(_):
            first.process.kill()
            first.process.wait(5)

        with contextlib.suppress(websockets.ConnectionClosed, OSError):
            asyncio.run(greeted(first, conv["ws_path"], kill))
        killed = time.monotonic()
        with running(FAST, share_with=first) as second:
            while "server stopped" not in (text := page(second, conv["id"])):
                assert time.monotonic() - killed < 20, "the dead server's call was not swept"
                time.sleep(0.5)
            assert "Failed" in text and GREETING in text  # the turns said before the crash stay
            assert asyncio.run(close_code(second, conv["ws_path"])) == 4410  # no 4409 for good
            state = row(second, conv["id"])
            assert state["status"] == "failed" and state["ended"]


@pytest.mark.slow
def test_the_sweep_leaves_a_healthy_process_calls_alone():
    """Two Daphne processes on one database: the second sweeps every second, the first's call lives."""
    with running(FAST) as first, running(FAST, share_with=first) as second:
        conv = first.conversation()

        async def outlive_sweeps(c):
            await asyncio.sleep(5)  # more than HEARTBEAT_TIMEOUT + an interval of sweeps by both
            assert "0 call(s) swept" in await asyncio.to_thread(second.manage, "sweep_calls")
            assert "Active" in await asyncio.to_thread(page, second, conv["id"])
            await c.ws.send(json.dumps({"type": "text", "text": "I would like to book a table"}))
            await c.until(lambda c: "how many people" in c.finals("agent")[-1]["text"], 20)
            await c.stop()

        c = asyncio.run(greeted(first, conv["ws_path"], outlive_sweeps))
        assert c.seen[-1] == {"type": "ended", "reason": "stopped by the user"}
        assert row(second, conv["id"])["status"] == "ended"


@pytest.mark.slow
def test_sigterm_ends_live_calls_with_a_reason_and_a_close_frame():
    with running() as server:
        conv = server.conversation()

        async def terminate(c):
            started = time.monotonic()
            server.process.terminate()
            with contextlib.suppress(websockets.ConnectionClosed):
                await c.until(lambda _: False, 15)
            assert time.monotonic() - started < 8
            assert c.seen[-1] == {"type": "ended", "reason": "server shutting down"}
            assert c.ws.close_code == 1000  # a close frame, not a dropped connection (1006)

        asyncio.run(greeted(server, conv["ws_path"], terminate))
        assert server.process.wait(10) is not None
        state = row(server, conv["id"])
        assert state == {"status": "ended", "reason": "server shutting down", "ended": True,
                         "turns": state["turns"]}  # fmt: skip
        assert any(GREETING in text for text in state["turns"])


@pytest.mark.slow
def test_sockets_racing_for_one_new_conversation_are_told_it_is_live(server):
    """20 sockets open one new conversation at once: one gets the call, 19 get 4409 (not 4410)."""
    conv = server.conversation()
    headers = {"Authorization": f"Token {server.token}"}

    async def one():
        ws = await websockets.connect(server.ws_url + conv["ws_path"], additional_headers=headers,
                                      origin=server.url)  # fmt: skip
        try:
            await asyncio.wait_for(ws.recv(), 60)
            return ws
        except websockets.ConnectionClosed:
            return ws.close_code

    async def race():
        results = await asyncio.gather(*(one() for _ in range(20)))
        winners = [r for r in results if not isinstance(r, int)]
        for ws in winners:
            await ws.close()
        return len(winners), sorted(r for r in results if isinstance(r, int))

    assert asyncio.run(race()) == (1, [4409] * 19)


def test_heartbeat_settings_are_checked():
    from django.core.exceptions import ImproperlyConfigured

    from playground.config import heartbeat

    assert heartbeat({}) == (5, 15)
    assert heartbeat({"HEARTBEAT_INTERVAL": "2"}) == (2, 6)
    assert heartbeat({"HEARTBEAT_INTERVAL": "1", "HEARTBEAT_TIMEOUT": "3"}) == (1, 3)
    with pytest.raises(ImproperlyConfigured, match="HEARTBEAT_TIMEOUT"):
        heartbeat({"HEARTBEAT_INTERVAL": "5", "HEARTBEAT_TIMEOUT": "6"})
    with pytest.raises(ImproperlyConfigured, match="HEARTBEAT_INTERVAL"):
        heartbeat({"HEARTBEAT_INTERVAL": "0"})
