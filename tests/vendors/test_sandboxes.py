"""The sandboxes as a deployment sees them: closed to keys from the source and to foreign hosts,
bounded in what they keep, credentials out of the access log, and independent of `sessions/`."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import socketio
import websockets

from playground.logfilters import redact
from playground.sandbox import aivoco, liku, lokutor
from tests.peers import serving
from tests.server import ROOT, call, free_port, start_server

SECRET = "deployment-secret-for-the-sandbox-tests-0123456789abcdef"
# What the source used to hold: fixed keys, and a Liku password from the public development key.
SOURCE_KEYS = {"lokutor": "sandbox-lokutor-key", "aivoco": "sandbox-aivoco-key",
               "liku": hmac.new(b"dev-only-insecure-key-do-not-use-in-production", b"liku-sandbox",
                                hashlib.sha256).hexdigest()[:24]}  # fmt: skip


# ---- the import rule ---------------------------------------------------------------------------


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ["playground/engine", "playground/sandbox"])
def test_engine_and_sandboxes_import_nothing_from_sessions(package):
    offenders = {str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path)
                                                     if m == "sessions" or m.startswith("sessions."))
                 for path in sorted((ROOT / package).rglob("*.py"))}  # fmt: skip
    assert {path: names for path, names in offenders.items() if names} == {}


def test_vendor_sandboxes_read_no_settings():
    for vendor in ("liku", "lokutor", "aivoco"):
        modules = imported_modules(ROOT / "playground" / "sandbox" / f"{vendor}.py")
        assert not {m for m in modules if m.startswith("django")}, vendor


# ---- credentials per deployment ----------------------------------------------------------------


def test_credentials_derive_from_the_secret_and_differ_per_deployment():
    one, other = "a-deployment-secret", "another-deployment-secret"
    for module, field in ((liku, "password"), (lokutor, "api_key"), (aivoco, "api_key")):
        mine = module.client_config("http://127.0.0.1:1/sandbox/x", one)[field]
        assert mine == module.client_config("http://127.0.0.1:1/sandbox/x", one)[field]  # stable
        assert mine != module.client_config("http://127.0.0.1:1/sandbox/x", other)[field]
        assert mine not in Path(module.__file__).read_text()
    with pytest.raises(ValueError):
        lokutor.make_app("")


@pytest.fixture(scope="module")
def deployment():
    """A production-like Daphne (tests/server.py): DEBUG off, its own SECRET_KEY, only 127.0.0.1 allowed."""
    yield from start_server({"DEBUG": "0", "SECRET_KEY": SECRET, "ALLOWED_HOSTS": "127.0.0.1"})


async def liku_login(base: str, password: str, **headers) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(f"{base}/sandbox/liku/api/liku/authentication/", headers=headers,
                               json={"email": liku.EMAIL, "password": password})  # fmt: skip


async def lokutor_status(ws_base: str, key: str, host: str = "") -> int:
    """101 when the sandbox accepts the key, else the HTTP status that refused the upgrade.

    `host`: the Host header to send (the connection still goes to the server, on loopback)."""
    server = ws_base.split("://", 1)[1]
    target, _, port = server.rpartition(":")
    uri = f"ws://{host + ':' + port if host else server}/sandbox/lokutor/ws/agent?api_key={key}"
    try:
        async with websockets.connect(uri, host=target, port=int(port)):
            return 101
    except websockets.InvalidStatus as refused:
        return refused.response.status_code


async def aivoco_answer(base: str, key: str) -> str:
    """The first answer to start_call with `key`: auth_success or auth_failed."""
    client, answered = socketio.AsyncClient(), asyncio.get_running_loop().create_future()
    for event in ("auth_success", "auth_failed"):
        client.on(event, lambda data, event=event: answered.done() or answered.set_result(event))
    await client.connect(base, socketio_path="/sandbox/aivoco/socket.io", transports=["websocket"])
    try:
        await client.emit("start_call", {"auth_key": key, "system_message": "Hi.", "voice_choice": "female"})
        return await asyncio.wait_for(answered, 15)
    finally:
        with contextlib.suppress(Exception):
            await client.emit("stop_call", {})
        await client.disconnect()


@pytest.mark.slow
def test_over_daphne_a_key_from_the_source_opens_no_sandbox_and_the_deployments_own_does(deployment):
    url, ws = deployment.url, deployment.ws_url

    async def check():
        assert (await liku_login(url, SOURCE_KEYS["liku"])).status_code == 400
        assert (await liku_login(url, liku.password(SECRET))).status_code == 200
        assert await lokutor_status(ws, SOURCE_KEYS["lokutor"]) == 403
        assert await lokutor_status(ws, lokutor.api_key(SECRET)) == 101
        assert await aivoco_answer(url, SOURCE_KEYS["aivoco"]) == "auth_failed"
        assert await aivoco_answer(url, aivoco.api_key(SECRET)) == "auth_success"

    asyncio.run(check())


@pytest.mark.slow
@pytest.mark.parametrize("provider", ["liku", "lokutor", "aivoco"])
def test_over_daphne_a_call_through_the_apps_own_sandbox_still_works(deployment, provider):
    voice = {"liku": "default", "lokutor": "F1", "aivoco": "female"}[provider]
    conv = deployment.conversation(provider=provider, voice=voice)

    async def greeted():
        async with call(deployment, conv["ws_path"]) as c:
            await c.until(lambda c: c.of("ready"), 30)
            if provider != "aivoco":  # Aivoco's agent waits for the user to speak first
                await c.until(lambda c: c.finals("agent"), 30)
            await c.stop()
        return c.seen

    seen = asyncio.run(greeted())
    assert not [m for m in seen if m["type"] == "error"], seen
    assert seen[-1] == {"type": "ended", "reason": "stopped by the user"}


@pytest.mark.slow
def test_over_daphne_sandbox_routes_obey_allowed_hosts(deployment):
    url, ws = deployment.url, deployment.ws_url

    async def check():
        refused = await liku_login(url, liku.password(SECRET), host="evil.example")
        assert refused.status_code == 400 and "token_key" not in refused.text
        assert await lokutor_status(ws, lokutor.api_key(SECRET), host="evil.example") == 403
        assert (await liku_login(url, liku.password(SECRET), host="127.0.0.1")).status_code == 200
        assert await lokutor_status(ws, lokutor.api_key(SECRET), host="127.0.0.1") == 101

    asyncio.run(check())


# ---- bounded state ------------------------------------------------------------------------------


async def test_liku_sandbox_state_stays_bounded(monkeypatch):
    box = liku.make_app(SECRET)
    async with serving(box) as base, httpx.AsyncClient(base_url=f"{base}/api", timeout=10) as http:
        account = {"email": liku.EMAIL, "password": liku.password(SECRET)}
        token = (await http.post("/liku/authentication/", json=account)).json()["token_key"]
        auth = {"Authorization": f"Token {token}"}
        issued = []
        for _ in range(liku.MAX_CHATS + 20):
            issued.append((await http.get("/init-websocket", params={"token": token, "topic_id": "5"})).text)
        state = box.state
        assert len(state.chats) == liku.MAX_CHATS and len(state.inits) <= liku.MAX_INITS
        assert issued[0] not in state.chats and issued[-1] in state.chats  # the oldest went first
        for i in range(liku.MAX_SAVED + 20):  # one chat per conversation: a save binds them
            data = (await http.get("/init-websocket", params={"token": token, "topic_id": "5"})).text
            body = {"connection_data": data, "topic_id": "5", "conversation_id": f"c{i}"}
            saved = await http.post("/save-transcript", json=body, headers=auth)
            assert saved.status_code == 200
        assert len(state.saved) == liku.MAX_SAVED
        monkeypatch.setattr(liku, "CHAT_TTL_S", 0.05)
        await asyncio.sleep(0.1)
        fresh = (await http.get("/init-websocket", params={"token": token, "topic_id": "5"})).text
        assert list(state.chats) == [fresh]  # every stale chat was forgotten
        async with websockets.connect(f"{base.replace('http', 'ws')}/chat-stream") as ws:
            await ws.send(json.dumps({"connection_data": issued[-1]}))
            await ws.wait_closed()
        assert ws.close_code == liku.INVALID and not state.sockets


async def test_lokutor_and_aivoco_release_a_call_when_its_socket_closes():
    box = lokutor.make_app(SECRET)
    async with serving(box) as base:
        key = lokutor.api_key(SECRET)
        async with websockets.connect(f"{base.replace('http', 'ws')}/ws/agent?api_key={key}"):
            await asyncio.sleep(0.1)
            assert len(box.state.calls) == 1
        await _until(lambda: not box.state.calls)
    box = aivoco.make_app(SECRET)
    async with serving(box) as base:
        client = socketio.AsyncClient()
        ready = asyncio.get_running_loop().create_future()
        client.on("session_ready", lambda data: ready.done() or ready.set_result(data))
        await client.connect(base, socketio_path="/socket.io", transports=["websocket"])
        await client.emit("start_call", {"auth_key": aivoco.api_key(SECRET), "system_message": "Hi.",
                                         "voice_choice": "female"})  # fmt: skip
        await asyncio.wait_for(ready, 15)
        assert len(box.state.calls) == 1
        await client.disconnect()
        await _until(lambda: not box.state.calls)


async def _until(condition, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.02)


# ---- credentials out of the access log ----------------------------------------------------------


def test_redact_hides_credential_query_values_only():
    line = "GET /sandbox/liku/api/init-websocket?token=abc&topic_id=5 /ws?api_key=k1&key=k2&monkey=3"
    assert redact(line) == (
        "GET /sandbox/liku/api/init-websocket?token=***&topic_id=5 /ws?api_key=***&key=***&monkey=3"
    )


@contextlib.contextmanager
def process(args: list[str], env: dict, output: Path):
    """A server process on loopback (output to a file), stopped afterwards."""
    with open(output, "w") as out:
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_up(url: str, proc, output: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, output.read_text()
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1)
            return
        time.sleep(0.2)
    raise AssertionError(f"no server:\n{output.read_text()}")


async def _use_credentials_in_urls(base: str) -> tuple[str, str]:
    async with httpx.AsyncClient(timeout=10) as http:
        login = await http.post(f"{base}/sandbox/liku/api/liku/authentication/",
                                json={"email": liku.EMAIL, "password": liku.password(SECRET)})  # fmt: skip
        token = login.json()["token_key"]
        init = await http.get(f"{base}/sandbox/liku/api/init-websocket",
                              params={"token": token, "topic_id": "5"})  # fmt: skip
        assert init.status_code == 200
    key = lokutor.api_key(SECRET)
    async with websockets.connect(f"{base.replace('http', 'ws')}/sandbox/lokutor/ws/agent?api_key={key}"):
        pass
    return token, key


@pytest.mark.slow
@pytest.mark.parametrize("server", ["serve", "runserver"])
def test_credentials_in_request_urls_are_redacted_in_the_servers_log(server, tmp_path):
    """`python -m playground.serve --access-log` (production) and `manage.py runserver` (bin/run)."""
    port, log, output = free_port(), tmp_path / "access.log", tmp_path / "output.log"
    env = {**os.environ, "SECRET_KEY": SECRET, "DEBUG": "0", "PYTHONUNBUFFERED": "1",
           "DATABASE_URL": f"sqlite:///{tempfile.mkdtemp()}/db.sqlite3"}  # fmt: skip
    args = (["-m", "playground.serve", "-b", "127.0.0.1", "-p", str(port), "--access-log", str(log),
             "playground.asgi:application"] if server == "serve"
            else ["manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"])  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with process(args, env, output) as proc:
        _wait_up(f"{base}/favicon.ico", proc, output)
        token, key = asyncio.run(_use_credentials_in_urls(base))
        time.sleep(0.5)  # the last lines reach the file
    written = (log if server == "serve" else output).read_text()
    assert "init-websocket?token=***&topic_id=5" in written, written
    assert token not in written and key not in written
