"""A real Daphne process for end-to-end tests, on its own database, on loopback.

It runs the project as production does (DEBUG unset, a strong SECRET_KEY of its own,
collected static files through WhiteNoise; only cookies allowed over plain http), with a
database of its own (a temporary SQLite file, or a fresh PostgreSQL database when
DATABASE_URL points at PostgreSQL) and REDIS_URL passed through, so both CI runs exercise
their stack.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import websockets

from tests.peers import realtime

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "e2e-demo-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_database(url: str) -> tuple[str, callable]:
    """A new database next to the one in `url`, and a function that drops it."""
    import psycopg

    name = f"e2e_{uuid.uuid4().hex[:10]}"
    parts = urlsplit(url)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return urlunsplit(parts._replace(path=f"/{name}")), drop


@dataclass
class Server:
    url: str
    ws_url: str
    username: str
    password: str
    token: str
    env: dict
    process: subprocess.Popen
    log: Path | None = None  # the server's output

    def client(self) -> httpx.Client:
        """An HTTP client logged in as the demo user, as a browser would be."""
        client = httpx.Client(base_url=self.url, timeout=10)
        client.get("/login/")
        data = {"username": self.username, "password": self.password}
        response = client.post("/login/", data=data, headers={"X-CSRFToken": client.cookies["csrftoken"]})
        assert response.status_code == 302, response.text
        return client

    def conversation(self, provider="local", topic="restaurant-booking", voice="en-us+f3", language="en"):
        body = {"provider": provider, "topic": topic, "voice": voice, "language": language}
        response = httpx.post(f"{self.url}/api/conversations/", json=body,
                              headers={"Authorization": f"Token {self.token}"})  # fmt: skip
        assert response.status_code == 201, response.text
        return response.json()

    def manage(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout


def production_env(extra_env: dict | None = None) -> dict:
    """The environment of a production-like process: DEBUG unset, a strong SECRET_KEY of its own,
    collected static files; plain-http cookies, since tests speak http on loopback."""
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY", "SECRET_KEY_FILE")}
    env.update({
        "DJANGO_SETTINGS_MODULE": "playground.settings",  # not the in-process tests' DEBUG=1 module
        "SECRET_KEY": secrets.token_urlsafe(50),
        "SECURE_COOKIES": "0",
        "PYTHONUNBUFFERED": "1",
    })  # fmt: skip
    env.update(extra_env or {})
    if "STATIC_ROOT" not in env:
        env["STATIC_ROOT"] = collected_static()
    return env


@functools.cache
def collected_static() -> str:
    """`collectstatic` once per test process, into a directory every server of it shares."""
    root = tempfile.mkdtemp(prefix="playground-static-")
    atexit.register(shutil.rmtree, root, True)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "playground.settings", "DEBUG": "0",
           "SECRET_KEY": secrets.token_urlsafe(50), "STATIC_ROOT": root}  # fmt: skip
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
                   cwd=ROOT, env=env, check=True, timeout=300)  # fmt: skip
    return root


def start_server(extra_env: dict | None = None, share_with: Server | None = None, workers: int = 0,
                 serve_args: tuple[str, ...] = ()):  # fmt: skip
    """Start Daphne; a generator for a pytest fixture (yields a Server, stops it after).

    It runs on production settings (see `production_env`); `extra_env` overrides them,
    e.g. {"DEBUG": "1"}. `share_with`: another server whose database (and SECRET_KEY) this
    one uses too, as a second process of one deployment would. `workers`: serve through
    `bin/serve --workers N [serve_args]` instead (N worker processes on one port, one supervisor)."""
    tmp = tempfile.mkdtemp(prefix="playground-e2e-")
    env = production_env(extra_env)
    drop = None
    if share_with is not None:
        env["DATABASE_URL"] = share_with.env["DATABASE_URL"]
        env["SECRET_KEY"] = share_with.env["SECRET_KEY"]
    elif env.get("DATABASE_URL", "").startswith(("postgres", "postgresql")):
        env["DATABASE_URL"], drop = _postgres_database(env["DATABASE_URL"])
    else:
        env["DATABASE_URL"] = f"sqlite:///{tmp}/db.sqlite3"
    env.setdefault("MEDIA_ROOT", str(Path(tmp) / "media"))  # recordings: the test's, not var/
    port = free_port()
    env["SANDBOX_BASE_URL"] = f"http://127.0.0.1:{port}"
    server = Server(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", "demo", PASSWORD, "", env, None)
    if share_with is None:
        server.manage("migrate", "--noinput", "-v0")
        server.manage("demo", "--password", PASSWORD)
        server.token = server.manage("api_token", "demo").strip()
    else:
        server.token = share_with.token
    server.log = Path(tmp) / "daphne.log"
    log = open(server.log, "w")
    app = "playground.asgi:application"
    argv = [sys.executable, "-m", "playground.serve", "-b", "127.0.0.1", "-p", str(port), app]
    if workers:
        serve = ["--workers", str(workers), "--host", "127.0.0.1", "--port", str(port), *serve_args]
        argv = [str(ROOT / "bin" / "serve"), *serve]
    server.process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(server, Path(tmp) / "daphne.log")
        yield server
    finally:
        server.process.terminate()
        try:
            server.process.wait(20 if workers else 10)
        except subprocess.TimeoutExpired:
            server.process.kill()
        log.close()
        # pytest shows this only with a failed test (its teardown output): what the server said last
        tail = server.log.read_text(errors="replace").splitlines()[-40:]
        print(f"--- the server's log, its last {len(tail)} lines ({server.log}):", *tail, sep="\n")
        if drop:
            drop()


def _wait_until_up(server: Server, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"daphne exited:\n{log.read_text()}")
        try:
            httpx.get(f"{server.url}/login/", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"daphne did not start:\n{log.read_text()}")


class Call:
    """A script in the talk page's place on one conversation socket: what it heard, what it says."""

    def __init__(self, ws):
        self.ws = ws
        self.seen: list[dict] = []  # the JSON messages, in order
        self.audio = 0  # bytes of agent audio received

    def of(self, kind: str) -> list[dict]:
        return [m for m in self.seen if m["type"] == kind]

    def finals(self, role: str | None = None) -> list[dict]:
        return [m for m in self.of("transcript") if m["final"] and role in (None, m["role"])]

    def answered(self) -> bool:
        """The user said something and the agent's final reply to it came."""
        roles = [m["role"] for m in self.finals()]
        return "user" in roles and roles[-1] == "agent"

    async def until(self, predicate, timeout: float = 20) -> None:
        """Read until `predicate(self)` holds."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                try:
                    message = await self.ws.recv()
                except websockets.ConnectionClosed as exc:  # a failure says why the call ended
                    exc.add_note(f"the call's last messages: {self.seen[-4:]}")
                    raise
                if isinstance(message, bytes):
                    self.audio += len(message)
                else:
                    self.seen.append(json.loads(message))

    async def say(self, pcm: bytes) -> None:
        """Stream the microphone in real time while reading what comes back."""
        reader = asyncio.create_task(self.until(lambda _: False, timeout=3600))
        try:
            await realtime(self.ws.send, pcm)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def stop(self) -> None:
        """Press Stop and read until the server closes."""
        await self.ws.send(json.dumps({"type": "stop"}))
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.until(lambda _: False, timeout=15)


@contextlib.asynccontextmanager
async def call(server: Server, ws_path: str):
    headers = {"Authorization": f"Token {server.token}"}
    async with websockets.connect(server.ws_url + ws_path, additional_headers=headers,
                                  origin=server.url) as ws:  # fmt: skip
        yield Call(ws)
