"""uvicorn for `bin/serve --server uvicorn`: ``python -m playground.serve_uvicorn --fd N [--log-level L]``.

Plain uvicorn closes every WebSocket with 1012 on SIGTERM, so a live call would end as "browser
disconnected" without an `ended` message. This server first stops accepting, then ends this
process's calls as under Daphne (sessions/liveness.py: `ended` "server shutting down", a close
frame, the rows ended with that reason), and only then lets uvicorn shut down. The heartbeat and
sweep task runs from startup, as under Daphne. No access log: uvicorn's goes through logging
unredacted, and a sandbox's token can be in a request's query (playground/serve.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket

import uvicorn


class DrainingServer(uvicorn.Server):
    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        from playground import heap
        from sessions.liveness import liveness  # after the app (and Django) is loaded

        heap.freeze()
        liveness.run_for_lifetime(asyncio.get_running_loop())

    async def shutdown(self, sockets=None) -> None:
        from sessions.liveness import liveness

        for server in self.servers:  # no new calls while the live ones end
            server.close()
        await liveness.shutdown()
        await super().shutdown(sockets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fd", type=int, required=True, help="an inherited listening socket")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("app", nargs="?", default="playground.asgi:application")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")
    # uvloop and the sans-I/O websockets protocol: less CPU per call than asyncio's own loop with
    # the legacy protocol (bench/relay_overhead.py, README "Capacity").
    # No permessage-deflate (uvicorn accepts it by default, and browsers offer it): PCM barely
    # compresses, and deflating every 20 ms frame both ways cost 8-15 % more CPU per call
    # (bench/relay_overhead.py, README "Capacity", sixth round). Daphne does not accept it either.
    config = uvicorn.Config(args.app, ws="websockets-sansio", loop="uvloop", lifespan="off",
                            ws_per_message_deflate=False, access_log=False, log_level=args.log_level,
                            timeout_graceful_shutdown=10)  # fmt: skip
    # Not `Config(fd=)`: uvicorn adopts that as AF_UNIX, so asyncio leaves Nagle's algorithm on for
    # its TCP connections and small frames wait for the peer's delayed ACK (20-40 ms per frame
    # downstream). A socket object made from the descriptor knows its real family.
    DrainingServer(config).run(sockets=[socket.socket(fileno=args.fd)])


if __name__ == "__main__":
    main()
