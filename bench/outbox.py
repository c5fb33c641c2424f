"""Throughput of the transcript-save outbox: N queued saves delivered by 1, 2, ... worker processes.

A Liku sandbox runs in this process (uvicorn on loopback) and answers each save after --delay-ms
(a provider's response time; each save also logs in: the worker keeps no token). A fresh
database (a temporary SQLite file, or a new PostgreSQL database next to DATABASE_URL's) gets N
ended Liku conversations with real sandbox chats, each with a queued save. For each worker
count, `manage.py savetranscripts` processes deliver them all; it prints saves per second from
the first stored to the last (process start-up left out) and checks that the sandbox stored each
exactly once.

Run:  .venv/bin/python bench/outbox.py [--saves 40] [--workers 1 2 4] [--delay-ms 50]
      DATABASE_URL=postgres://postgres@127.0.0.1:5432/playground .venv/bin/python bench/outbox.py
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playground.sandbox import liku as sandbox  # noqa: E402
from tests.server import _postgres_database  # noqa: E402

SECRET = secrets.token_urlsafe(50)


def serve_sandbox(delay_s: float):
    app = sandbox.make_app(SECRET, save_delay=delay_s)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    return app, server, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"


def environment(base: str) -> tuple[dict, callable]:
    url, drop = os.environ.get("DATABASE_URL", ""), None
    if url.startswith(("postgres", "postgresql")):
        url, drop = _postgres_database(url)
    else:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='outbox-bench-')}/db.sqlite3"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "playground.settings", "DATABASE_URL": url,
           "SECRET_KEY": SECRET, "LIKU_API_URL": base, "LIKU_CHAT_URL": "ws" + base[4:],
           "LIKU_EMAIL": sandbox.EMAIL, "LIKU_PASSWORD": sandbox.password(SECRET),
           "LOG_LEVEL": "WARNING"}  # fmt: skip
    env.pop("DEBUG", None)
    return env, drop


def queue_saves(env: dict, base: str, n: int) -> None:
    """N ended Liku conversations, each on its own sandbox chat, each with a queued save."""
    token = httpx.post(f"{base}/api/liku/authentication/", json={"email": sandbox.EMAIL,
                       "password": sandbox.password(SECRET)}).json()["token_key"]  # fmt: skip
    chats = [httpx.get(f"{base}/api/init-websocket", params={"token": token, "topic_id": "55"}).text
             for _ in range(n)]  # fmt: skip
    script = (
        "import sys, json\n"
        "from django.contrib.auth import get_user_model\n"
        "from sessions.models import Conversation, Topic\n"
        "from sessions import outbox\n"
        "user, _ = get_user_model().objects.get_or_create(username='bench')\n"
        "topic, _ = Topic.objects.get_or_create(slug='b', defaults=dict(title='B', persona='p', "
        "greeting='Hi', provider_options={'liku': {'topic_id': '55'}}))\n"
        "for data in json.load(sys.stdin):\n"
        "    c = Conversation.objects.create(user=user, provider='liku', topic=topic, voice='default', "
        "language='en', status='ended', provider_refs={'connection_data': data, 'topic_id': '55'})\n"
        "    outbox.enqueue(c)\n"
    )
    subprocess.run([sys.executable, "manage.py", "shell", "-c", script], input=json.dumps(chats),
                   cwd=ROOT, env=env, check=True, text=True)  # fmt: skip


def run(env: dict, app, workers: int, n: int) -> tuple[float, int]:
    """Start the workers on the queued saves: (seconds from the first save stored to the last, stored)."""
    before = app.state.stored
    command = [sys.executable, "manage.py", "savetranscripts", "--interval", "0.05"]
    procs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL) for _ in range(workers)]
    deadline = time.monotonic() + 600
    while app.state.stored == before and time.monotonic() < deadline:
        time.sleep(0.005)
    first = time.monotonic()  # process start-up is left out
    while app.state.stored - before < n and time.monotonic() < deadline:
        time.sleep(0.005)
    elapsed = time.monotonic() - first
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)
    return elapsed, app.state.stored - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--delay-ms", type=int, default=50)
    args = parser.parse_args()
    app, server, base = serve_sandbox(args.delay_ms / 1000)
    env, drop = environment(base)
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        engine = "PostgreSQL" if env["DATABASE_URL"].startswith("postgres") else "SQLite"
        print(f"{args.saves} saves, the save API answering in {args.delay_ms} ms, on {engine}")
        for n_workers in args.workers:
            app.state.answered.clear()
            queue_saves(env, base, args.saves)
            elapsed, stored = run(env, app, n_workers, args.saves)
            rate = (stored - 1) / elapsed if elapsed > 0 else float("nan")
            print(f"  {n_workers} worker(s): {rate:6.1f} saves/s (first to last of {stored}), stored "
                  f"{stored} of {args.saves}{'' if stored == args.saves else '  <-- MISMATCH'}")  # fmt: skip
    finally:
        server.should_exit = True
        if drop:
            drop()


if __name__ == "__main__":
    main()
