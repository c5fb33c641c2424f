"""Reply latency per provider on one fixed utterance set, over the sandboxes.

Starts a Daphne of its own (own SQLite database, demo topics, sandboxes mounted; see
tests/server.py), then runs `manage.py compare` against it: the first N sentences of the
restaurant topic's script, spoken by flite, played at real time into each provider, one
conversation each, through the relay, exactly as the staff page runs a comparison. Prints
per provider P50/P90/P99 of the reply latency (end of the user's speech at the server's VAD to
the first agent audio the server sent) and the client's own P50.

Run:  .venv/bin/python bench/compare.py [--providers local,liku,lokutor,flow,aivoco] [--count 8] [--repeat 2]
Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server import start_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", default="local,liku,lokutor,flow,aivoco")
    parser.add_argument("--count", type=int, default=8, help="script sentences (the fixed set's size)")
    parser.add_argument("--repeat", type=int, default=2, help="times the set is said, in one conversation")
    parser.add_argument("--topic", default="restaurant-booking")
    args = parser.parse_args()
    server_process = start_server()
    server = next(server_process)
    try:
        started = time.monotonic()
        options = ["--providers", args.providers, "--topic", args.topic, "--count", str(args.count)]
        options += ["--repeat", str(args.repeat), "--user", server.username, "--bench"]
        argv = [sys.executable, "manage.py", "compare", "--server", server.url, *options]
        # server.manage() gives up after 120 s; a comparison runs at real time, so longer
        result = subprocess.run(argv, cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=3600)
        print(result.stdout + result.stderr[-2000:] * (result.returncode != 0), end="")
        calls = f"{args.count} utterances x {args.repeat} x {len(args.providers.split(','))} providers"
        print(f"({time.monotonic() - started:.0f} s, {calls})")
    finally:
        server_process.close()


if __name__ == "__main__":
    main()
