"""Relay overhead: N simulated browsers through one server process to a loopback echo upstream,
against a bare `websockets` relay run side by side on the same load.

Each browser streams 20 ms frames (16 kHz s16le) in real time, offering permessage-deflate on its
socket as browsers do (every server measured here declines it). What they say is a user's side of
a call, words and the room between them (bench/call_audio.py; `--audio speech`: words only, the
worst case for our VAD). The frames carry a sequence number and the send time, written quietly;
the echo peer (its own process) notes when each frame arrived and stamps its own send time on the
echo, so each direction is timed separately: browser -> upstream (uplink) and upstream -> browser
(downlink). The
clock is CLOCK_MONOTONIC, shared by all processes on the machine.

PLAYBACK_RATE is 16 kHz here, so frames pass bit-exact in both directions and can
carry their timestamps; the resampling that a 24 kHz playback rate adds is the
filter's group delay, printed separately (soxr HQ, 16 -> 24 kHz).

Run:  .venv/bin/python bench/relay_overhead.py [--sessions 50] [--seconds 10] [--server daphne uvicorn]
                                               [--audio call|speech] [--vad page server]
                                               [--agent-chunk-ms 20]
(the playground runs as one worker of bin/serve, under each server named, after the bare relay,
which runs twice: on asyncio's own event loop and on uvloop, the loop of `--server uvicorn`)

`--agent-chunk-ms N` (default 20): the echo peer sends the audio back N ms at a time, as providers
do (the offline agent sends 40 ms chunks, Liku's guide 128 ms); the down latencies then include the
peer's wait for a chunk to fill, on every side alike.

`--vad page` (the default) is what the talk page does: it scores its own audio with silero and
sends the scores (static/js/vad.js), so the server runs no model for the call; the simulated
browsers send the scores of the track's windows, computed once (bench/call_audio.py). `--vad
server` is a page whose VAD could not load: the server's model scores every call. Both may be
named: each runs as a playground side of its own.
Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import uvloop
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.call_audio import KINDS, PageScores, chunk, loud, quiet, track, window_scores, words_share  # noqa: E402
from tests.server import free_port, start_server  # noqa: E402

FRAME = 640
HEADER = struct.Struct("<4sIId")  # magic, session, sequence, browser send time
STAMP = struct.Struct("<d")  # echo send time, after the header
MAGIC = b"BNCH"
QUIET_HEADER = 2 * HEADER.size  # bytes of the frame the header takes, written quietly


# ---- the echo upstream (own process) ----------------------------------------------------------


async def echo_server(port: int, report: Path, join: int = 1) -> None:
    """Echoes every frame, stamped with its send time; with `join` > 1 it holds the frames back and
    sends each `join` of them as one message, as a provider that sends its audio in longer chunks."""
    arrivals: list[float] = []  # uplink latencies in seconds

    async def serve(ws):
        held: list[bytes] = []
        async for message in ws:
            now = time.monotonic()
            if isinstance(message, bytes) and loud(message, 0, 4) == MAGIC:
                arrivals.append(now - HEADER.unpack(loud(message, 0, HEADER.size))[3])
                held.append(message)
                if len(held) < join:
                    continue
                stamp = quiet(STAMP.pack(time.monotonic()))
                message = b"".join(m[:QUIET_HEADER] + stamp + m[QUIET_HEADER + len(stamp) :] for m in held)
                held.clear()
            await ws.send(message)

    async with websockets.serve(serve, "127.0.0.1", port, compression=None):
        while not report.exists():
            await asyncio.sleep(0.2)
        report.write_text(json.dumps(arrivals))
        await asyncio.sleep(3600)


# ---- the bare relay baseline (own process) -------------------------------------------------------


async def bare_relay(port: int, upstream: str) -> None:
    async def serve(browser):
        async with websockets.connect(upstream, compression=None) as up:

            async def pump(src, dst):
                async for message in src:
                    await dst.send(message)

            tasks = [asyncio.create_task(pump(browser, up)), asyncio.create_task(pump(up, browser))]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async with websockets.serve(serve, "127.0.0.1", port, compression=None):
        await asyncio.sleep(3600)


# ---- the ASGI floor (own process) ------------------------------------------------------------------


def asgi_floor(port: int, upstream: str) -> None:
    """The same relay as an ASGI app under uvicorn, configured as `bin/serve --server uvicorn` serves
    ours (uvloop, websockets-sansio, no permessage-deflate): what the server and the ASGI interface
    cost before any of our code (consumer, relay, VAD, recording) runs."""
    import uvicorn

    async def app(scope, receive, send):
        if scope["type"] != "websocket":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            return await send({"type": "http.response.body", "body": b""})
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        async with websockets.connect(upstream, compression=None) as up:

            async def downlink():
                async for message in up:
                    key = "bytes" if isinstance(message, bytes) else "text"
                    await send({"type": "websocket.send", key: message})

            task = asyncio.create_task(downlink())
            try:
                while (message := await receive())["type"] == "websocket.receive":
                    await up.send(message.get("bytes") or message.get("text"))
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    uvicorn.run(app, host="127.0.0.1", port=port, ws="websockets-sansio", loop="uvloop",
                ws_per_message_deflate=False, lifespan="off", access_log=False,
                log_level="warning")  # fmt: skip


# ---- browsers --------------------------------------------------------------------------------


async def browser(
    index: int,
    url: str,
    headers: dict,
    seconds: float,
    down: list[float],
    ready: bool,
    started: asyncio.Barrier,
    audio: bytes,
    scores: list[float],
):
    extra = {k: v for k, v in headers.items() if k != "Origin"}
    # Offering permessage-deflate, as browsers do (websockets' default): a server that accepts it
    # pays for it on every frame
    async with websockets.connect(url, additional_headers=extra, origin=headers.get("Origin"),
                                  max_size=2**20) as ws:  # fmt: skip
        if ready:  # our protocol announces `ready`; the bare relay has none
            while not isinstance(message := await ws.recv(), str) or json.loads(message)["type"] != "ready":
                pass
        await started.wait()  # every call is set up: the steady-state figure starts here

        async def read():
            async for message in ws:
                if not isinstance(message, bytes):
                    continue
                now = time.monotonic()
                for at in range(0, len(message), FRAME):  # one frame a message, or several joined
                    if loud(message, at, 4) == MAGIC:
                        down.append(now - STAMP.unpack(loud(message, at + QUIET_HEADER, STAMP.size))[0])

        reader = asyncio.create_task(read())
        start = time.monotonic()
        page = PageScores(scores, index * 7919 * FRAME) if url.endswith("?vad=page") else None
        for seq in range(int(seconds * 50)):
            said = chunk(audio, (index * 7919 + seq) * FRAME, FRAME)  # each call from its own place
            frame = quiet(HEADER.pack(MAGIC, index, seq, time.monotonic())) + said[QUIET_HEADER:]
            await ws.send(frame)
            if page and (message := page.after(FRAME)):
                await ws.send(message)
            await asyncio.sleep(max(0.0, start + (seq + 1) * 0.02 - time.monotonic()))
        await asyncio.sleep(0.3)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def drive(urls, headers, seconds, pid, ready, audio, scores):
    """The server's CPU over the whole run (setting the calls up included), and over the streaming
    alone (from when every call is ready), in seconds of CPU per second."""
    down: list[float] = []
    rss0, cpu0 = rss_mb(pid), cpu_seconds(pid)
    started = asyncio.Barrier(len(urls) + 1)
    calls = asyncio.gather(
        *(browser(i, u, headers, seconds, down, ready, started, audio, scores) for i, u in enumerate(urls))
    )
    waiter = asyncio.ensure_future(started.wait())
    try:  # a call that fails to start fails `calls`, awaited below
        async with asyncio.timeout(60):
            await asyncio.wait([waiter, calls], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    steady = (cpu_seconds(pid), time.monotonic())  # when every call is ready
    await calls
    cpu1, wall1 = cpu_seconds(pid), time.monotonic()
    return down, cpu1 - cpu0, rss_mb(pid) - rss0, (cpu1 - steady[0]) / (wall1 - steady[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], cwd=ROOT)


def run_side(label, side, args, report: Path) -> dict:
    echo_port = free_port()
    chunk = str(args.agent_chunk_ms)
    echo = spawn("--echo-server", str(echo_port), "--report", str(report), "--agent-chunk-ms", chunk)
    time.sleep(1.0)
    try:
        with side(f"ws://127.0.0.1:{echo_port}/", args.sessions) as (urls, pid, headers, ready):
            down, cpu, rss, steady = uvloop.run(
                drive(urls, headers, args.seconds, pid, ready, args.pcm, args.scores)
            )
    finally:
        report.touch()  # tells the echo peer to write its uplink figures
        for _ in range(50):
            if report.stat().st_size:
                break
            time.sleep(0.1)
        up = json.loads(report.read_text() or "[]")
        echo.terminate()
    n = args.sessions
    return {
        "label": label, "up50": pct(up, 0.5), "up99": pct(up, 0.99), "down50": pct(down, 0.5),
        "down99": pct(down, 0.99), "cpu": cpu / args.seconds / n * 100, "rss": rss / n,
        "steady": steady / n * 100,
        "frames": (len(up), len(down)),
    }  # fmt: skip


def playground_side(server: str, vad: str):
    """One worker of the playground under `server` (daphne or uvicorn, through bin/serve), its
    calls' VAD run by the `page` or the `server`."""

    def side(echo_url: str, sessions: int):
        return _playground(echo_url, sessions, server, "?vad=page" if vad == "page" else "")

    return side


@contextlib.contextmanager
def _playground(echo_url: str, sessions: int, server_name: str, query: str):
    """One worker process of the playground with the echo provider; yields urls, pid, headers, ready."""
    env = {"ECHO_URL": echo_url, "PLAYBACK_RATE": "16000", "LOG_LEVEL": "WARNING", "SERVER": server_name,
           # one user drives every simulated browser: lift the per-user limits for the measurement
           "LIVE_CALLS_PER_USER": str(sessions), "CONVERSATIONS_PER_MINUTE": str(sessions)}  # fmt: skip
    servers = start_server(env, workers=1)
    server = next(servers)
    try:
        convs = [server.conversation("echo", voice="default", language="en") for _ in range(sessions)]
        headers = {"Authorization": f"Token {server.token}", "Origin": server.url}
        pid = server.process.pid
        worker = int(
            Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0]
        )  # bin/serve's one worker
        yield [server.ws_url + c["ws_path"] + query for c in convs], worker, headers, True
    finally:
        servers.close()


def bare_side(loop: str):
    """The bare `websockets` relay, in its own process, on `loop` (asyncio or uvloop)."""

    def side(echo_url: str, sessions: int):
        return _bare(echo_url, sessions, loop)

    return side


@contextlib.contextmanager
def _bare(echo_url: str, sessions: int, loop: str, kind: str = "--bare-relay"):
    port = free_port()
    process = spawn(kind, str(port), "--upstream", echo_url, "--loop", loop)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield [f"ws://127.0.0.1:{port}/"] * sessions, process.pid, {}, False
    finally:
        process.terminate()
        process.wait(5)


def asgi_floor_side(echo_url: str, sessions: int):
    return _bare(echo_url, sessions, "uvloop", "--asgi-floor")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--echo-server", type=int)
    parser.add_argument("--report")
    parser.add_argument("--bare-relay", type=int)
    parser.add_argument("--asgi-floor", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream")
    parser.add_argument("--server", nargs="+", choices=("daphne", "uvicorn"), default=["daphne"])
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), help=argparse.SUPPRESS)
    parser.add_argument("--audio", choices=KINDS, default="call", help="what the browsers say")
    parser.add_argument("--vad", nargs="+", choices=("page", "server"), default=["page"],
                        help="who scores the calls' audio (see above)")  # fmt: skip
    parser.add_argument("--agent-chunk-ms", type=int, default=20, choices=(20, 40, 60, 80, 100, 120, 160),
                        help="the echo peer answers in chunks this long (see above)")  # fmt: skip
    args = parser.parse_args()
    # The echo peer and the browsers run on uvloop (the load generator: the less it costs, the
    # more of the machine is left to what is measured); the bare relay on the loop it is asked for.
    if args.echo_server:
        return uvloop.run(echo_server(args.echo_server, Path(args.report), args.agent_chunk_ms // 20))
    if args.bare_relay:
        run = uvloop.run if args.loop == "uvloop" else asyncio.run
        return run(bare_relay(args.bare_relay, args.upstream))
    if args.asgi_floor:
        return asgi_floor(args.asgi_floor, args.upstream)
    args.sessions = max(1, min(args.sessions, 200))
    args.seconds = max(1.0, min(args.seconds, 60.0))
    import tempfile

    args.pcm = track(args.audio)
    args.scores = window_scores(args.pcm)
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    # The bare relay on asyncio's own loop (the baseline the goal names) and on uvloop (the loop
    # of `--server uvicorn`), so that the comparison with uvicorn is also like for like.
    results = [run_side(f"bare relay ({loop})", bare_side(loop), args, tmp / f"bare-{loop}.json")
               for loop in ("asyncio", "uvloop")]  # fmt: skip
    if "uvicorn" in args.server:  # what uvicorn and ASGI cost alone: the part of ours that is not our code
        results.append(run_side("ASGI floor (uvicorn)", asgi_floor_side, args, tmp / "floor.json"))
    for name in args.server:
        for vad in args.vad:
            label = f"playground ({name}, {vad} VAD)"
            results.append(run_side(label, playground_side(name, vad), args, tmp / f"{name}-{vad}.json"))
    print_results(args, results)


def ratios(ours: dict, bares: list[dict], key: str) -> str:
    return ", ".join(f"{ours[key] / max(b[key], 1e-9):.2f}x the {b['label']}" for b in bares)


def print_results(args, results):
    from sessions.audio import Resampler

    print(f"\n{args.sessions} browsers x {args.seconds:.0f} s of 20 ms frames, real time, one server "
          f"process; they say a {args.audio} ({words_share(args.pcm):.0%} of it words); the echo peer "
          f"answers in {args.agent_chunk_ms} ms chunks")  # fmt: skip
    heads = ("up p50", "up p99", "down p50", "down p99", "CPU/sess", "streaming", "RSS/sess")
    print(" " * 32 + "".join(f"{h:>10}" for h in heads))
    for r in results:
        cells = [f"{r[k]:8.2f}ms" for k in ("up50", "up99", "down50", "down99")]
        cells += [f"{r['cpu']:8.2f}% ", f"{r['steady']:8.2f}% ", f"{r['rss']:7.2f}MB "]
        print(f"{r['label']:32}" + "".join(cells) + f"  frames up/down {r['frames'][0]}/{r['frames'][1]}")
    bares = results[:2]
    floor = [r for r in results if r["label"].startswith("ASGI floor")]
    for ours in results[2:]:
        for d in ("up99", "down99"):
            print(f"{ours['label']}: {d} {ours[d]:.2f} ms = " + ratios(ours, bares, d))
        print(f"{ours['label']}: CPU per call " + ratios(ours, bares, "cpu")
              + "; streaming alone " + ratios(ours, bares, "steady"))  # fmt: skip
        if floor and ours["label"].startswith("playground (uvicorn"):
            print(f"{ours['label']}: streaming CPU per call " + ratios(ours, floor, "steady"))
    resampler = Resampler(16000, 24000)
    resampler.process(bytes(FRAME * 5))
    delay = resampler._stream.delay() / 24  # samples at 24 kHz -> ms
    print(f"(at PLAYBACK_RATE=24000 the downlink also carries soxr's {delay:.1f} ms filter delay)")


if __name__ == "__main__":
    main()
