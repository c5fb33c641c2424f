"""Audio flood: one logged-in socket sends frames as fast as it can into a real Daphne process.

Two calls run on one server process (the built-in offline agent): a calm one, and one that, once
greeted, floods audio for at most --seconds. The script prints the server's RSS before, at its
peak during and 3 s after the flood, how long until the server closed the flooding socket (and
with which code), and how long a `stop` on the calm socket then takes to be answered with `ended`
(and, if the server never closed the flood, a `stop` on the flooding socket itself).

Run:  .venv/bin/python bench/flood.py [--seconds 15] [--frame-bytes 4096]
Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.relay_overhead import rss_mb  # noqa: E402
from tests.server import call, start_server  # noqa: E402


class Sampler:
    """The server's RSS every 0.1 s on a thread, for the peak."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self):
        self.peak = rss_mb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.pid))


async def flood(ws, frame: bytes, seconds: float) -> dict:
    """Send until the server closes or `seconds` pass. If the server never closed, press Stop on the
    flooding socket and time the answer (the close that follows `ended`)."""

    async def drain():  # keep reading, so the client sees the server's close frame
        with contextlib.suppress(websockets.ConnectionClosed):
            async for _ in ws:
                pass

    reader = asyncio.create_task(drain())
    sent, start = 0, time.monotonic()
    with contextlib.suppress(websockets.ConnectionClosed):
        while time.monotonic() - start < seconds:
            await ws.send(frame)
            sent += 1
    figures = {"sent": sent, "flooded": time.monotonic() - start, "own_stop_answered_after": None}
    if ws.close_code is None:
        asked = time.monotonic()
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(json.dumps({"type": "stop"}))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reader), 120)
        figures["own_stop_answered_after"] = time.monotonic() - asked
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    figures["code"] = ws.close_code
    return figures


async def scenario(server, args) -> dict:
    calm_conv, flood_conv = server.conversation(), server.conversation()
    pid = server.process.pid
    async with call(server, calm_conv["ws_path"]) as calm, call(server, flood_conv["ws_path"]) as flooder:
        await calm.until(lambda c: c.finals("agent"), 60)
        await flooder.until(lambda c: c.finals("agent"), 60)
        reader = asyncio.create_task(calm.until(lambda _: False, 3600))
        await asyncio.sleep(1)
        figures = {"rss_before": rss_mb(pid)}
        with Sampler(pid) as sampler:
            figures.update(await flood(flooder.ws, bytes(args.frame_bytes), args.seconds))
        figures["rss_peak"] = sampler.peak
        asked = time.monotonic()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await calm.ws.send(json.dumps({"type": "stop"}))
        with contextlib.suppress(websockets.ConnectionClosed):
            await calm.until(lambda c: c.of("ended"), 120)
        figures["stop_answered_after"] = time.monotonic() - asked
        await asyncio.sleep(3)
        figures["rss_after"] = rss_mb(pid)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="longest flood (at most 30)")
    parser.add_argument("--frame-bytes", type=int, default=4096, help="bytes per frame (even, at most 65536)")
    args = parser.parse_args()
    args.seconds = max(1.0, min(args.seconds, 30.0))
    args.frame_bytes = max(2, min(args.frame_bytes // 2 * 2, 65536))
    servers = start_server({"LOG_LEVEL": "WARNING"})
    server = next(servers)
    try:
        f = asyncio.run(scenario(server, args))
    finally:
        servers.close()
    mb = f["sent"] * args.frame_bytes / 2**20
    print(f"\nflood of {args.frame_bytes}-byte frames, at most {args.seconds:.0f} s, one Daphne process")
    if f["own_stop_answered_after"] is None:
        print(f"sent {f['sent']} frames ({mb:.0f} MB); the server closed it after {f['flooded']:.2f} s, "
              f"code {f['code']}")  # fmt: skip
    else:
        print(
            f"sent {f['sent']} frames ({mb:.0f} MB) in {f['flooded']:.2f} s; the server never closed it;"
            f" Stop on it answered after {f['own_stop_answered_after']:.2f} s (close code {f['code']})"
        )
    print(f"server RSS: before {f['rss_before']:.0f} MB, peak {f['rss_peak']:.0f} MB, "
          f"3 s after {f['rss_after']:.0f} MB")  # fmt: skip
    print(f"stop on the other call answered after {f['stop_answered_after']:.2f} s")


if __name__ == "__main__":
    main()
