"""Limits per user (issue 7.6): each trips at its threshold and says the limit.

New conversations and logins through Django's test client on the configured backends (on the
PostgreSQL+Redis run the rate limit counts in Redis); live calls, typed turns, logins and the
cross-process budget over real Daphne processes.
"""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest
import websockets
from django.urls import reverse
from django_ratelimit.core import _get_window

from sessions.models import ApiToken, Conversation
from tests.server import ROOT, call, start_server

API = "/api/conversations/"


@pytest.fixture
def fresh_cache(settings):
    """The configured cache backend (Redis when REDIS_URL is set) under keys of this test's own."""
    default = dict(settings.CACHES["default"])
    if "locmem" in default["BACKEND"]:
        default["LOCATION"] = uuid.uuid4().hex
    else:
        default["KEY_PREFIX"] = f"test-{uuid.uuid4().hex}"
    settings.CACHES = {"default": default}


def fresh_window(user_pk, need: float = 10.0) -> None:
    """Wait out the end of the user's one-minute window if less than `need` seconds of it are left,
    so a test's requests stay in one window."""
    left = _get_window(str(user_pk), 60) - time.time()
    if left < need:
        # Past the whole second after the end: django-ratelimit counts a request in the second the
        # window ends (int(now) == end) in the old window, so a wait of left + 0.5 s split the
        # test's requests over two windows' counts, and all eight were allowed.
        time.sleep(max(0.0, left + 1.5))


@pytest.fixture
def pick_data(topic):
    return {"provider": "local", "topic": topic.pk, "voice": "en-us+f3", "language": "en"}


def api(client, key, data):
    return client.post(API, json.dumps(data), content_type="application/json",
                       headers={"Authorization": f"Token {key}"})  # fmt: skip


# ---- new conversations -------------------------------------------------------------------------


def start(client, data):
    """The talk page's Start: the chosen settings posted to the API on the session (with CSRF)."""
    return client.post(API, json.dumps(data), content_type="application/json")


def test_start_answers_429_over_the_limit(alice, user, pick_data, settings, fresh_cache):
    settings.CONVERSATIONS_PER_MINUTE = 3
    fresh_window(user.pk)
    for _ in range(3):
        assert start(alice, pick_data).status_code == 201
    refused = start(alice, pick_data)
    assert refused.status_code == 429
    assert refused.json()["error"].startswith("Too many new conversations: at most 3 a minute.")
    assert 0 < int(refused["Retry-After"]) <= 61
    assert Conversation.objects.filter(user=user).count() == 3


def test_the_pick_form_creates_nothing_so_uses_no_budget(alice, user, pick_data, settings, fresh_cache):
    settings.CONVERSATIONS_PER_MINUTE = 1
    fresh_window(user.pk)
    for _ in range(3):
        assert alice.post(reverse("pick"), pick_data).status_code == 302
    assert not Conversation.objects.exists()
    assert start(alice, pick_data).status_code == 201


def test_start_and_scripts_share_one_budget(
    alice, user, other_user, pick_data, settings, fresh_cache, client
):
    settings.CONVERSATIONS_PER_MINUTE = 3
    fresh_window(user.pk)
    key = ApiToken.issue(user)
    assert start(alice, pick_data).status_code == 201
    assert [api(client, key, pick_data).status_code for _ in range(2)] == [201, 201]
    refused = api(client, key, pick_data)
    assert refused.status_code == 429
    assert refused.json()["error"].startswith("Too many new conversations: at most 3 a minute.")
    assert start(alice, pick_data).status_code == 429
    assert api(client, ApiToken.issue(other_user), pick_data).status_code == 201  # per user


def test_invalid_settings_do_not_use_the_budget(alice, user, pick_data, settings, fresh_cache):
    settings.CONVERSATIONS_PER_MINUTE = 1
    fresh_window(user.pk)
    for _ in range(3):
        assert start(alice, {**pick_data, "voice": "nope"}).status_code == 400
    assert start(alice, pick_data).status_code == 201


# ---- over-size API body ------------------------------------------------------------------------


def test_an_over_size_api_body_is_answered_in_json(client, user, pick_data, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api(client, ApiToken.issue(user), {**pick_data, "padding": "x" * 2000})
    assert response.status_code == 413
    assert response.json() == {"error": "the body is too large: at most 1000 bytes"}


# ---- failed logins -----------------------------------------------------------------------------


def test_login_locks_after_the_failure_limit_and_says_so(client, user, other_user, settings):
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(2):
        assert client.post("/login/", {"username": "alice", "password": "wrong"}).status_code == 200
    locked = client.post("/login/", {"username": "alice", "password": "wrong"})
    assert locked.status_code == 429
    assert "Too many failed logins: at most 3 attempts" in locked.content.decode()
    right = client.post("/login/", {"username": "alice", "password": "pw-alice-123"})
    assert right.status_code == 429 and "_auth_user_id" not in client.session
    assert client.post("/login/", {"username": "bob", "password": "pw-bob-123"}).status_code == 302


def test_axes_comes_first_among_the_backends_with_liku_login():
    """So a locked-out login never reaches the Liku backend (an outbound Liku login per attempt)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    code = "from django.conf import settings; print(','.join(settings.AUTHENTICATION_BACKENDS))"
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={**env, "LIKU_LOGIN": "1"})  # fmt: skip
    backends = result.stdout.strip().splitlines()[-1].split(",")
    assert backends[0] == "axes.backends.AxesStandaloneBackend" and backends[-1].endswith("LikuBackend")


# ---- over real Daphne processes ----------------------------------------------------------------

LIMITS = {"LIVE_CALLS_PER_USER": "1", "TEXT_TURNS_PER_SECOND": "2", "CONVERSATIONS_PER_MINUTE": "5",
          "LOGIN_FAILURE_LIMIT": "3",
          # With REDIS_URL every test server counts in the same Redis, where users of other tests'
          # databases have the same ids: these two servers count under keys of their own
          "REDIS_PREFIX": f"limits-{uuid.uuid4().hex[:12]}"}  # fmt: skip


@pytest.fixture(scope="module")
def limited():
    yield from start_server(LIMITS)


@pytest.fixture(scope="module")
def second(limited):
    """A second process of the same deployment: same database (and Redis, when set)."""
    yield from start_server(LIMITS, share_with=limited)


async def closed_with(server, ws_path) -> tuple[list[dict], int]:
    """Open a call and read until the server closes it: (JSON messages, close code)."""
    async with call(server, ws_path) as c:
        with contextlib.suppress(websockets.ConnectionClosed):
            await c.until(lambda _: False, timeout=10)
        return c.seen, c.ws.close_code


@pytest.mark.slow
def test_a_second_live_call_on_another_process_is_refused_4429(limited, second):
    async def scenario():
        first, other = limited.conversation()["ws_path"], limited.conversation()["ws_path"]
        async with call(limited, first) as c:
            await c.until(lambda c: c.of("ready"))
            seen, code = await closed_with(second, other)
            assert code == 4429
            assert seen[-1]["code"] == "too_many_calls" and "at most 1 at a time" in seen[-1]["message"]
            await c.stop()
        async with call(second, other) as c:  # the refused one may start once the first ended
            await c.until(lambda c: c.of("ready"))
            await c.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_text_turns_over_the_rate_are_dropped_with_an_error(limited):
    async def scenario():
        conv = limited.conversation()
        async with call(limited, conv["ws_path"]) as c:
            await c.until(lambda c: c.of("ready"))
            for i in range(10):
                await c.ws.send(json.dumps({"type": "text", "text": f"turn {i}"}))
            await c.until(lambda c: c.of("error") and len(c.finals("user")) >= 2)
            await asyncio.sleep(1.2)
            await c.ws.send(json.dumps({"type": "text", "text": "after a pause"}))
            await c.until(lambda c: len(c.finals("user")) >= 3)
            await c.stop()
        return c

    c = asyncio.run(scenario())
    [error] = c.of("error")
    assert error["code"] == "too_many_turns" and "at most 2 a second" in error["message"]
    assert error["fatal"] is False
    assert [m["text"] for m in c.finals("user")] == ["turn 0", "turn 1", "after a pause"]


@pytest.mark.slow
def test_login_lockout_over_daphne(limited):
    with httpx.Client(base_url=limited.url, timeout=10) as client:
        client.get("/login/")
        headers = {"X-CSRFToken": client.cookies["csrftoken"]}

        def log_in(password):
            return client.post("/login/", data={"username": "demo", "password": password}, headers=headers)

        codes = [log_in("wrong").status_code for _ in range(3)]
        locked = log_in(limited.password)
    assert codes == [200, 200, 429]
    assert locked.status_code == 429 and "at most 3 attempts" in locked.text


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="one budget across processes needs REDIS_URL")
def test_the_conversation_budget_holds_across_processes(limited, second):
    """Alternating between two processes, a user still gets 5 a minute, not 5 on each."""
    limited.manage("createsuperuser", "--noinput", "--username", "carol", "--email", "carol@example.test")
    token = limited.manage("api_token", "carol").strip()
    # Eight requests to two real servers, in one window (see fresh_window); the two servers count
    # under a Redis prefix of their own (LIMITS), and a failure shows each answer and the window's
    # time left.
    pk = limited.manage("shell", "-c", PK).strip().splitlines()[-1]
    fresh_window(pk, need=30.0)
    body = {"provider": "local", "topic": "restaurant-booking", "voice": "en-us+f3", "language": "en"}
    answers = [httpx.post(f"{server.url}{API}", json=body, headers={"Authorization": f"Token {token}"})
               for server in (limited, second) * 4]  # fmt: skip
    seen = [(a.status_code, a.text[:60]) for a in answers], _get_window(pk, 60) - time.time()
    assert [a.status_code for a in answers] == [201] * 5 + [429] * 3, seen  # what and when, if not
    assert "at most 5 a minute" in answers[-1].json()["error"]


PK = "from django.contrib.auth.models import User; print(User.objects.get(username='carol').pk)"
