"""N server processes on one port: ``bin/serve --workers N --host H --port P [--server daphne|uvicorn]``.

The socket is bound and listening once, here; every worker inherits it and accepts from it (Daphne's
``--fd`` through `playground.serve`, or uvicorn's through `playground.serve_uvicorn`), so the kernel
hands each new connection to whichever worker accepts first. No balancer: a call's WebSocket lives
in the process that accepted it, the conversation lock (a conditional UPDATE) and the Worker rows
(sessions/liveness.py) hold across them through the database, and Redis carries the channel layer
between them.

Supervision:
- SIGTERM or SIGINT: every worker gets SIGTERM (under Daphne each ends its live calls with `ended`
  "server shutting down" and a close frame, sessions/liveness.py), then SIGKILL after
  SHUTDOWN_TIMEOUT + GRACE_S seconds; exit 0.
- A worker that dies on its own is reported and restarted, since its calls are already gone and
  the others keep serving (its live calls are swept as "server stopped" by the survivors). One
  that dies within STARTUP_S (``--startup-s``) of starting is a broken configuration, not a crash:
  everything stops and the supervisor exits non-zero, so a restart loop cannot hide it.
- Workers die with the supervisor (PR_SET_PDEATHSIG), so a killed supervisor leaves no orphans.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

APP = "playground.asgi:application"
STARTUP_S = 10.0  # a worker that dies sooner than this after starting is misconfigured
GRACE_S = 10.0  # beyond SHUTDOWN_TIMEOUT, for the workers to drop their sockets and exit
SERVERS = ("daphne", "uvicorn")


def bind(host: str, port: int) -> socket.socket:
    """The listening socket every worker inherits."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


def command(
    server: str, sock: socket.socket | None, extra: list[str], host: str = "", port: int = 0
) -> list[str]:
    """A worker's command line: on the inherited socket, or (`sock` None) binding host:port itself."""
    if sock is None:
        return [sys.executable, "-m", "playground.serve", "-b", host, "-p", str(port), *extra, APP]
    fd = sock.fileno()
    if server == "uvicorn":  # ends live calls on SIGTERM as under Daphne; no access log (see there)
        return [sys.executable, "-m", "playground.serve_uvicorn", "--fd", str(fd), *extra, APP]
    # Daphne's `--fd` adopts the socket as IPv4 (Twisted's fd endpoint takes no other family here).
    return [sys.executable, "-m", "playground.serve", "--fd", str(fd), *extra, APP]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the supervisor dies, however it dies (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Supervisor:
    def __init__(self, argv: list[str], sock: socket.socket | None, workers: int, shutdown_s: float,
                 startup_s: float = STARTUP_S):  # fmt: skip
        self.argv, self.sock, self.count, self.shutdown_s = argv, sock, workers, shutdown_s
        self.startup_s = startup_s
        self.children: dict[int, tuple[subprocess.Popen, float]] = {}  # pid -> (process, started)
        self.stopping = False

    def spawn(self) -> None:
        fds = (self.sock.fileno(),) if self.sock else ()
        process = subprocess.Popen(self.argv, pass_fds=fds, preexec_fn=_die_with_parent)
        self.children[process.pid] = (process, time.monotonic())
        log(f"worker {process.pid} started")

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        for _ in range(self.count):
            self.spawn()
        while not self.stopping:
            failed = self._reap()
            if failed:
                self.stop()
                return 1
            time.sleep(0.2)
        self.stop()
        return 0

    def _reap(self) -> bool:
        """Restart workers that died; True when one died at startup (stop everything)."""
        for pid, (process, started) in list(self.children.items()):
            code = process.poll()
            if code is None or self.stopping:
                continue
            del self.children[pid]
            lived = time.monotonic() - started
            log(f"worker {pid} exited with {code} after {lived:.1f} s")
            if lived < self.startup_s:
                log("it died at startup: stopping every worker")
                return True
            self.spawn()
        return False

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def stop(self) -> None:
        """SIGTERM to every worker, SIGKILL to any still running past the drain time."""
        self.stopping = True
        for process, _ in self.children.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_s + GRACE_S
        for process, _ in self.children.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"worker {process.pid} did not stop in time: killed")
                process.kill()
                process.wait()
        self.children.clear()


def log(text: str) -> None:
    print(f"[serve {os.getpid()}] {text}", file=sys.stderr, flush=True)


def parse(argv: list[str], settings) -> argparse.Namespace:
    epilog = "Arguments after -- go to each worker's server command."
    parser = argparse.ArgumentParser(prog="bin/serve", description=__doc__.split("\n\n")[0], epilog=epilog)
    parser.add_argument(
        "--workers", type=int, default=settings.WORKERS, help="[WORKERS: cores with Redis, else 1]"
    )
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--server", choices=SERVERS, default=settings.SERVER, help="[SERVER: daphne]")
    parser.add_argument("--startup-s", type=float, default=STARTUP_S,
                        help="a worker dying this soon after its start stops all (exit 1) [10]")  # fmt: skip
    parser.add_argument("extra", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    args.extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    args.host = args.host.strip("[]")
    if ":" in args.host and args.server == "daphne" and args.workers > 1:
        parser.error("Daphne adopts an inherited socket as IPv4 only: several workers on an IPv6 host "
                     "need --server uvicorn")  # fmt: skip
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")
    from django.conf import settings  # the same settings the workers read: fails early if invalid

    args = parse(sys.argv[1:] if argv is None else argv, settings)

    # One Daphne worker on IPv6 binds the address itself (it cannot adopt an IPv6 socket).
    alone = ":" in args.host and args.server == "daphne"
    sock = None if alone else bind(args.host, args.port)
    log(f"{args.workers} {args.server} worker(s) on {args.host}:{args.port}")
    argv = command(args.server, sock, args.extra, args.host, args.port)
    supervisor = Supervisor(argv, sock, args.workers, settings.SHUTDOWN_TIMEOUT, args.startup_s)
    try:
        return supervisor.run()
    finally:
        supervisor.stop()
        if sock is not None:
            sock.close()


if __name__ == "__main__":
    sys.exit(main())
