"""The transcript-save outbox (sessions/outbox.py), end to end: real Daphne, real calls to the Liku
sandbox (in this process, on loopback, where the tests set its save API's faults), and the
worker as a real `manage.py savetranscripts` process. What the tests read is what a user or the
provider sees: the owner's conversation page, and the saves the sandbox stored."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
from html import unescape

import httpx
import pytest
import uvicorn
from django.contrib.auth import get_user_model

from playground.sandbox import liku as sandbox
from sessions import outbox
from sessions.models import Conversation, TranscriptSave
from tests.server import ROOT, call, start_server

SECRET = "outbox-test-liku-deployment"
SAVE = re.compile(
    r'<li class="save" data-save="(\d+)" data-status="(\w+)" data-attempts="(\d+)">(.*?)</li>', re.S
)


# ---- fixtures: the Liku sandbox in a thread of this process, and a Daphne configured for it --------


@pytest.fixture(scope="module")
def box():
    """The Liku sandbox served by uvicorn on 127.0.0.1 in a thread of its own (it outlives each test's
    event loop); `box.state` is its state object and `box.url` its base URL."""
    app = sandbox.make_app(SECRET)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                                           timeout_graceful_shutdown=2))  # fmt: skip
    thread = threading.Thread(target=server.run, name="liku-sandbox", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the Liku sandbox did not start"
    app.url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    yield app
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def state(box, server):
    """The sandbox's state, its save API up and answering at once, and no save of an earlier test
    still queued (so the counters, read as differences, count this test's requests only)."""
    box.state.save_failures, box.state.save_error, box.state.save_delay = 0, None, 0.0
    once(server)
    yield box.state
    box.state.save_failures, box.state.save_error, box.state.save_delay = 0, None, 0.0


@pytest.fixture(scope="module")
def server(box):
    """Daphne with Liku configured as a real service at the sandbox above, and a quick outbox: retries
    after 0.1 s doubling up to 1 s, and a lease of 3 s (a killed worker's save is taken over after it)."""
    env = {
        "LIKU_API_URL": box.url,
        "LIKU_CHAT_URL": "ws" + box.url[4:],
        "LIKU_EMAIL": sandbox.EMAIL,
        "LIKU_PASSWORD": sandbox.password(SECRET),
        "TRANSCRIPT_SAVE_BACKOFF_MS": "100",
        "TRANSCRIPT_SAVE_BACKOFF_MAX_S": "1",
        "TRANSCRIPT_SAVE_LEASE_S": "3",
    }
    yield from start_server(env)


@pytest.fixture
def spawn(server):
    """Start a worker process (`manage.py savetranscripts --interval 0.2`); any still running when the
    test ends, passed or not, is killed."""
    started: list[subprocess.Popen] = []

    def start(*args: str, **env: str) -> subprocess.Popen:
        started.append(worker(server, *args, **env))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


# ---- helpers -----------------------------------------------------------------------------------


def finished_call(server, greeting: bool = False) -> str:
    """A Liku call over Daphne that ends (Stop) once ready, or once the greeting came: its id."""
    conv = server.conversation(provider="liku", topic="restaurant-booking", voice="default", language="en")

    async def talk():
        async with call(server, conv["ws_path"]) as c:
            await c.until(lambda c: c.finals("agent") if greeting else c.of("ready"), 30)
            await c.stop()
        return c

    c = asyncio.run(talk())
    assert c.of("ended"), c.seen
    return conv["id"]


def saves(client: httpx.Client, conversation_id: str) -> list[dict]:
    """The saves as the owner's page shows them, newest first."""
    page = client.get(f"/history/{conversation_id}/")
    assert page.status_code == 200
    found = SAVE.findall(page.text)
    text = [" ".join(unescape(re.sub(r"<[^>]+>", " ", body)).split()) for *_, body in found]
    return [{"id": int(i), "status": status, "attempts": int(n), "text": words}
            for (i, status, n, _), words in zip(found, text, strict=True)]  # fmt: skip


def wait_for(check, timeout: float = 60, what: str = ""):
    """Poll `check()` until it returns something true (bounded): that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or check}")


def worker(server, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "manage.py", "savetranscripts", "--interval", "0.2", *args],
                            cwd=ROOT, env={**server.env, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def stop(process: subprocess.Popen) -> str:
    """SIGTERM, as a process manager stops it: it must exit cleanly (0). Its output."""
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    return out


def once(server) -> str:
    return server.manage("savetranscripts", "--once")


def log_in(server, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=10)
    client.get("/login/")
    data = {"username": username, "password": password}
    response = client.post("/login/", data=data, headers={"X-CSRFToken": client.cookies["csrftoken"]})
    assert response.status_code == 302, response.text
    return client


# ---- end to end ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_ended_call_is_queued_sent_once_and_saved_again_only_when_asked(server, state):
    owner = server.client()
    before = (state.stored, state.save_requests)
    conv = finished_call(server, greeting=True)
    [queued] = saves(owner, conv)  # the call's end queued it; nothing was sent yet
    assert (queued["status"], queued["attempts"]) == ("pending", 0) and "when the call ended" in queued[
        "text"
    ]
    assert (state.stored, state.save_requests) == before

    assert "delivered: 1 saved" in once(server)
    [sent] = saves(owner, conv)
    assert (sent["status"], sent["attempts"]) == ("saved", 1) and sent["text"].startswith("Sent")
    kept = next(s for s in state.saved if s["conversation_id"] == conv)
    assert kept["transcript"][0]["role"] == "agent" and "Hello" in kept["transcript"][0]["text"]
    assert state.stored == before[0] + 1

    page = owner.get(f"/history/{conv}/").text
    action = re.search(r'<form method="post" action="([^"]+)">', page).group(1)
    assert action == f"/history/{conv}/save/"
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert owner.post(action, data={}).status_code == 403  # no CSRF token, no save
    answer = owner.post(action, data={"csrfmiddlewaretoken": token})
    assert answer.status_code == 302 and answer.headers["location"] == f"/history/{conv}/#saves"
    again, first = saves(owner, conv)
    assert (again["status"], again["attempts"]) == ("pending", 0) and "asked by demo" in again["text"]
    assert first == sent

    assert "delivered: 1 unchanged" in once(server)  # the same version: not sent a second time
    again = saves(owner, conv)[0]
    assert (
        again["status"] == "saved" and f"unchanged since save #{sent['id']}, not sent again" in again["text"]
    )
    assert (state.stored, state.save_requests) == (before[0] + 1, before[1] + 1)


@pytest.mark.slow
def test_a_stranger_gets_404_for_the_save_url(server, state):
    conv = finished_call(server)
    server.manage("shell", "-c", "from django.contrib.auth import get_user_model as m; "
                  "m().objects.filter(username='mallory').exists() or "
                  "m().objects.create_user('mallory', password='mallory-pw-123')")  # fmt: skip
    stranger = log_in(server, "mallory", "mallory-pw-123")
    token = stranger.cookies["csrftoken"]
    answer = stranger.post(f"/history/{conv}/save/", data={"csrfmiddlewaretoken": token},
                           headers={"X-CSRFToken": token})  # fmt: skip
    assert answer.status_code == 404
    assert stranger.get(f"/history/{conv}/").status_code == 404
    assert len(saves(server.client(), conv)) == 1  # only the call's own


@pytest.mark.slow
def test_save_api_down_for_a_while_is_retried_until_saved_once_across_a_worker_restart(server, state, spawn):
    owner = server.client()
    conv = finished_call(server)
    before = (state.stored, state.save_requests)
    state.save_failures = 3  # the next three saves answer 503, then the API is up again
    first = spawn()
    failed = wait_for(lambda: [s for s in saves(owner, conv) if s["status"] == "pending" and s["attempts"]],
                      what="a first failed attempt")  # fmt: skip
    assert (
        "Last error: Liku did not save the transcript (HTTP 503: Transcript service unavailable.)"
        in (failed[0]["text"])
    )
    stop(first)  # all state is in the database: another worker carries on

    second = spawn()
    try:
        [saved] = wait_for(lambda: [s for s in saves(owner, conv) if s["status"] == "saved"], what="the save")
    finally:
        stop(second)
    assert saved["attempts"] == 4
    assert (state.stored, state.save_requests) == (before[0] + 1, before[1] + 4)  # exactly one stored
    assert [s["conversation_id"] for s in state.saved].count(conv) == 1


@pytest.mark.slow
def test_a_worker_killed_mid_delivery_is_resumed_without_a_duplicate(server, state, spawn):
    owner = server.client()
    conv = finished_call(server)
    before = (state.stored, state.save_requests)
    state.save_delay = 30  # the sandbox stores the save, then keeps the worker waiting for its answer
    victim = spawn()
    wait_for(lambda: state.save_requests > before[1], what="the save request in flight")
    [sending] = saves(owner, conv)
    assert (sending["status"], sending["attempts"]) == ("sending", 1)
    victim.kill()  # SIGKILL: no chance to record anything
    victim.communicate(timeout=10)
    state.save_delay = 0

    successor = spawn()
    try:
        [saved] = wait_for(lambda: [s for s in saves(owner, conv) if s["status"] == "saved"], what="the save")
    finally:
        stop(successor)
    assert saved["attempts"] == 2  # taken over after the lease ran out, and sent again ...
    assert state.save_requests == before[1] + 2
    assert state.stored == before[0] + 1  # ... with the same idempotency key: stored once
    [kept] = [s for s in state.saved if s["conversation_id"] == conv]
    assert kept["idempotency_key"]


@pytest.mark.slow
def test_a_4xx_fails_the_save_with_its_message_and_is_not_retried(server, state):
    owner = server.client()
    conv = finished_call(server)
    before = state.save_requests
    state.save_error = (422, "This topic no longer takes transcripts.")
    once(server)
    time.sleep(0.3)  # past any backoff: a retry would be due by now
    once(server)
    [failed] = saves(owner, conv)
    assert (failed["status"], failed["attempts"]) == ("failed", 1)
    assert ("Failed: Liku did not save the transcript (HTTP 422: This topic no longer takes transcripts.)."
            in failed["text"])  # fmt: skip
    assert state.save_requests == before + 1


@pytest.mark.slow
def test_two_workers_deliver_each_save_once(server, state, spawn):
    """On PostgreSQL (SKIP LOCKED and the conditional claim) and on SQLite (the conditional claim under
    its single writer): two workers at once, every save delivered by exactly one of them."""
    owner = server.client()
    conversations = [finished_call(server) for _ in range(6)]
    before = (state.stored, state.save_requests)
    state.save_delay = 0.3  # slow answers keep both workers busy at once
    # A lease far above the answer time: on a loaded machine a 3 s lease could run out mid-request and
    # a second (deduplicated) request would be right, but this test counts requests.
    workers = [spawn(TRANSCRIPT_SAVE_LEASE_S="60"), spawn(TRANSCRIPT_SAVE_LEASE_S="60")]
    try:
        for conv in conversations:
            wait_for(lambda conv=conv: saves(owner, conv)[0]["status"] == "saved", what=f"the save of {conv}")
    finally:
        outputs = [stop(w) for w in workers]
    assert [saves(owner, conv)[0]["attempts"] for conv in conversations] == [1] * 6
    assert (state.stored, state.save_requests) == (before[0] + 6, before[1] + 6)  # no request twice
    delivered = sum(int(n) for out in outputs for n in re.findall(r"(\d+) saved", out))
    assert delivered == 6, outputs


# ---- in process: the admin action and the backoff --------------------------------------------------


@pytest.mark.django_db
def test_the_admin_action_queues_a_save_for_each_selected_conversation_that_can_have_one(client, topic, user):
    staff = get_user_model().objects.create_superuser("boss", password="pw-boss-123")

    def ended(provider, **fields):
        return Conversation.objects.create(user=user, provider=provider, topic=topic, voice="default",
                                           language="en", status="ended", **fields)  # fmt: skip

    liku = [ended("liku", provider_refs={"connection_data": "x"}) for _ in range(2)]
    local = ended("local")
    client.force_login(staff)
    answer = client.post(
        "/admin/voice_sessions/conversation/",
        {"action": "save_transcripts_again", "_selected_action": [str(c.id) for c in [*liku, local]]},
        follow=True,
    )
    assert answer.status_code == 200
    text = answer.content.decode()
    assert "2 transcript save(s) queued." in text and "1 conversation(s) skipped" in text
    rows = TranscriptSave.objects.all()
    assert {(r.conversation_id, r.status, r.requested_by_id) for r in rows} == {
        (c.id, "pending", staff.id) for c in liku}  # fmt: skip


def test_backoff_doubles_with_jitter_up_to_its_ceiling(settings):
    settings.TRANSCRIPT_SAVE_BACKOFF_MS, settings.TRANSCRIPT_SAVE_BACKOFF_MAX_S = 1000, 10
    for attempts, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (20, 10)]:
        delays = [outbox.backoff_s(attempts) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not one value


@pytest.mark.django_db
def test_a_save_sends_the_reviewed_text_and_a_correction_is_a_new_version(topic, user):
    fields = {"provider": "liku", "voice": "default", "language": "en", "status": "ended", "topic": topic}
    conv = Conversation.objects.create(user=user, provider_refs={"connection_data": "x"}, **fields)
    said = conv.turns.create(sequence=0, role="user", text="I would like to book a tabel")
    conv.turns.create(sequence=1, role="agent", text="For how many people?")
    conv.turns.create(sequence=2, role="user", text="two", final=False)  # a partial is never saved
    first = outbox.enqueue(conv)
    texts = [t["text"] for t in first.payload["turns"]]
    assert texts == ["I would like to book a tabel", "For how many people?"]
    assert outbox.enqueue(conv) == first  # the same version waiting: not queued twice

    said.corrected_text = "I would like to book a table"
    said.save()
    second = outbox.enqueue(conv)
    assert second != first
    assert second.digest != first.digest and second.idempotency_key != first.idempotency_key
    texts = [t["text"] for t in second.payload["turns"]]
    assert texts == ["I would like to book a table", "For how many people?"]
    said.refresh_from_db()
    assert said.text == "I would like to book a tabel"  # the original is kept


@pytest.mark.browser
@pytest.mark.slow
def test_the_owner_sees_a_failed_save_on_a_phone_and_saves_again_in_chromium(server, state):
    from playwright.sync_api import sync_playwright

    from tests.test_browser import BASE_ARGS, CHROMIUM, log_in, watch_csp

    conv = finished_call(server)
    state.save_error = (400, "Rejected:" + "x" * 200)  # one long word: must wrap, not widen the page
    once(server)
    state.save_error = None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BASE_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 800})
            csp = watch_csp(page)
            log_in(page, server)
            page.goto(f"{server.url}/history/{conv}/")
            failed = page.locator("li.save[data-status=failed]")
            assert failed.count() == 1
            assert "Failed: Liku did not save the transcript (HTTP 400" in failed.inner_text()
            assert "1 attempt" in failed.inner_text()
            assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing overflows a phone
            page.click("text=Save transcript again")
            page.wait_for_url(f"**/history/{conv}/#saves")
            assert "queued" in page.locator(".messages").inner_text()
            assert page.locator("li.save").count() == 2
            assert page.locator("li.save").first.get_attribute("data-status") == "pending"
            assert csp == []
        finally:
            browser.close()
    once(server)  # the API is up again: the new save goes through
    assert saves(server.client(), conv)[0]["status"] == "saved"
