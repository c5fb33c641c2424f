"""Capacity: how many real-time calls `bin/serve` holds, for 1 and 2 workers.

Simulated browsers stream 20 ms frames (16 kHz s16le) in real time through the playground to an
echo peer (its own process) and back: mouth to ear. Each frame carries its send time, so every echo
that comes back is one mouth-to-ear latency. A few control calls go straight to the same echo peer
at the same time, without the relay: the relay's added p99 is the relayed p99 minus theirs (both
see the same machine load). The number of calls rises step by step until the added p99 passes
--max-added-ms (20 ms) or a frame is lost; the last step that passed is the capacity.

What the browsers say is a user's side of a call, words and the room between them, each from its own
place in it (bench/call_audio.py; `--audio speech`: words only, the worst case for our VAD), with
the frame's header written quietly into its first samples. As the talk page does, each browser
scores its own audio with silero and sends the scores (static/js/vad.js; here the scores of the
track's windows, computed once), so the server runs no model for the call; `--vad server` is a page
whose VAD could not load, the server's model scoring every call.

The calls' phases are spread over the 20 ms (browsers do not all send at the same instant), in
--slots groups. PLAYBACK_RATE is 16 kHz, so frames pass bit-exact and carry their timestamps.

For each step it prints: calls, added p99 (and p50), frames lost, the workers' CPU per call (% of
one core), their RSS per call (growth over the step before, divided by the calls added), and the CPU
that this script's own clients and the echo peer used (% of one core): they run on the same
machine, and on a 2-core machine they compete with the workers, so they are kept lean
(bench/lean_ws.py: websockets' sans-I/O protocol on uvloop).

Run:  .venv/bin/python bench/capacity.py [--workers 1 2] [--steps 10 25 50 75 100 125 150]
      [--seconds 10] [--server daphne|uvicorn] [--all-steps] [--audio call|speech] [--vad page|server]
      .venv/bin/python bench/capacity.py --short     (the test suite's run: tiny, no verdict)
Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvloop
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import lean_ws  # noqa: E402
from bench.call_audio import KINDS, PageScores, chunk, loud, quiet, track, window_scores, words_share  # noqa: E402
from bench.relay_overhead import cpu_seconds, rss_mb  # noqa: E402
from tests.server import Server, free_port, start_server  # noqa: E402

FRAME = 640
FRAME_S = 0.02
HEADER = struct.Struct("<4sIId")  # magic, call, sequence, send time (CLOCK_MONOTONIC, machine-wide)
MAGIC = b"CPCT"
QUIET_HEADER = 2 * HEADER.size  # bytes of the frame the header takes, written quietly
CONTROL_CALLS = 5
DRAIN_S = 1.0  # after the last frame: echoes still on their way


# ---- the echo peer (own process) ----------------------------------------------------------------


async def echo_server(port: int) -> None:
    await lean_ws.serve_echo("127.0.0.1", port)
    await asyncio.Future()


# ---- simulated browsers ---------------------------------------------------------------------------


@dataclass
class Caller:
    index: int
    ws: lean_ws.Client
    page: PageScores | None = None  # the page's VAD scores (relayed calls with --vad page)
    sent: int = 0
    got: int = 0
    latencies: list = field(default_factory=list)
    errors: list = field(default_factory=list)  # the codes of the server's `error` messages

    def on_message(self, message: bytes | str) -> None:
        if isinstance(message, bytes) and loud(message, 0, 4) == MAGIC:
            self.latencies.append(time.monotonic() - HEADER.unpack(loud(message, 0, HEADER.size))[3])
            self.got += 1
        elif isinstance(message, str) and (parsed := json.loads(message))["type"] == "error":
            self.errors.append(parsed["code"])

    def send(self, seq: int, audio: bytes) -> None:
        said = chunk(audio, (self.index * 7919 + seq) * FRAME + QUIET_HEADER, FRAME - QUIET_HEADER)
        self.ws.send(quiet(HEADER.pack(MAGIC, self.index, seq, time.monotonic())) + said)
        self.sent += 1
        if self.page and (message := self.page.after(FRAME)):
            self.ws.send_text(message)


async def open_call(index: int, url: str, headers: dict | None, scores: list[float] | None = None) -> Caller:
    """A relayed call (headers: the API token and Origin) waits for `ready`; a control call does not."""
    if headers is None:
        ws = await lean_ws.Client.connect(url)
    else:
        extra = {k: v for k, v in headers.items() if k != "Origin"}
        ready = asyncio.get_running_loop().create_future()

        def until_ready(message):
            if isinstance(message, str) and json.loads(message)["type"] == "ready" and not ready.done():
                ready.set_result(None)

        ws = await lean_ws.Client.connect(url, origin=headers["Origin"], headers=extra)
        ws.on_message = until_ready
        await asyncio.wait_for(ready, 60)
    caller = Caller(index, ws, PageScores(scores, index * 7919 * FRAME) if scores else None)
    ws.on_message = caller.on_message
    return caller


async def stream(callers: list[Caller], seconds: float, slots: int, audio: bytes) -> None:
    """Every caller sends one frame per 20 ms of `audio`; caller i in phase slot i % slots."""
    groups = [callers[s::slots] for s in range(slots)]
    start = time.monotonic()
    for seq in range(int(seconds / FRAME_S)):
        for s, group in enumerate(groups):
            due = start + seq * FRAME_S + s * FRAME_S / slots
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            for caller in group:
                caller.send(seq, audio)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


# ---- the server under test ------------------------------------------------------------------------


def workers_of(server: Server) -> list[int]:
    pid = server.process.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def server_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def server_rss(pids: list[int]) -> float:
    return sum(rss_mb(p) for p in pids)


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def create_conversations(server: Server, n: int) -> list[str]:
    headers = {"Authorization": f"Token {server.token}"}
    body = {"provider": "echo", "topic": "restaurant-booking", "voice": "default", "language": "en"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as client:
        paths = []
        for _ in range(n):  # one at a time: a burst of writes is not what this measures
            response = await client.post("/api/conversations/", json=body)
            response.raise_for_status()
            paths.append(response.json()["ws_path"])
    return paths


@dataclass
class Step:
    calls: int
    added_p50: float
    added_p99: float
    relayed_p99: float
    control_p99: float
    lost: int
    sent: int
    cpu_per_call: float
    rss_per_call: float
    client_cpu: float
    rss: float
    errors: list

    def passed(self, max_added_ms: float) -> bool:
        return self.lost == 0 and self.added_p99 <= max_added_ms


async def run_step(
    server: Server, echo_url: str, echo_pid: int, n: int, args, base: tuple[int, float]
) -> Step:
    """`base`: calls and workers' RSS of the step before (0 and the idle workers' at first): the RSS per
    call is the growth since, divided by the calls added (memory a step used stays with the process,
    and the first call loads the VAD model once per worker)."""
    pids = workers_of(server)
    paths = await create_conversations(server, n)
    headers = {"Authorization": f"Token {server.token}", "Origin": server.url}
    relayed = []
    query, scores = ("?vad=page", args.scores) if args.vad == "page" else ("", None)
    for i in range(0, n, 10):  # connect in small batches, as calls arrive
        relayed += await asyncio.gather(*(open_call(j, server.ws_url + paths[j] + query, headers, scores)
                                          for j in range(i, min(n, i + 10))))  # fmt: skip
    control = [await open_call(n + i, echo_url, None) for i in range(CONTROL_CALLS)]
    everyone = relayed + control
    await asyncio.sleep(0.5)  # the last calls' VADs are loaded
    cpu0, own0, echo0 = server_cpu(pids), own_cpu(), cpu_seconds(echo_pid)
    t0 = time.monotonic()
    await stream(everyone, args.seconds, args.slots, args.pcm)
    rss = server_rss(pids)
    elapsed = time.monotonic() - t0
    cpu = server_cpu(pids) - cpu0
    clients = own_cpu() - own0 + cpu_seconds(echo_pid) - echo0
    await asyncio.sleep(DRAIN_S)
    await asyncio.gather(*(c.ws.close() for c in everyone), return_exceptions=True)
    ours = [x for c in relayed for x in c.latencies]
    theirs = [x for c in control for x in c.latencies]
    return Step(
        calls=n,
        added_p50=pct(ours, 0.5) - pct(theirs, 0.5),
        added_p99=pct(ours, 0.99) - pct(theirs, 0.99),
        relayed_p99=pct(ours, 0.99),
        control_p99=pct(theirs, 0.99),
        lost=sum(c.sent - c.got for c in relayed),
        sent=sum(c.sent for c in relayed),
        cpu_per_call=cpu / elapsed / n * 100,
        rss_per_call=max(0.0, rss - base[1]) / max(1, n - base[0]),
        rss=rss,
        client_cpu=clients / elapsed * 100,
        errors=sorted({code for c in relayed for code in c.errors}),
    )


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], cwd=ROOT)


async def measure(workers: int, args, echo_url: str, echo_pid: int) -> list[Step]:
    env = {"ECHO_URL": echo_url, "PLAYBACK_RATE": "16000", "LOG_LEVEL": "WARNING", "SERVER": args.server,
           # one user drives every simulated browser: lift the per-user limits for the measurement
           "LIVE_CALLS_PER_USER": "1000", "CONVERSATIONS_PER_MINUTE": "100000"}  # fmt: skip
    servers = start_server(env, workers=workers)
    server = await asyncio.to_thread(next, servers)
    steps: list[Step] = []
    try:
        await asyncio.sleep(2)  # every worker is up and registered
        base = (0, server_rss(workers_of(server)))
        for n in args.steps:
            step = await run_step(server, echo_url, echo_pid, n, args, base)
            base = (max(base[0], n), max(base[1], step.rss))
            steps.append(step)
            print_step(workers, step, args.max_added_ms)
            if not (args.short or args.all_steps) and not step.passed(args.max_added_ms):
                break
            await asyncio.sleep(1.0)  # the last step's calls end
    finally:
        await asyncio.to_thread(servers.close)
    return steps


def print_step(workers: int, s: Step, max_added_ms: float) -> None:
    verdict = "ok" if s.passed(max_added_ms) else "FAIL"
    print(f"{workers:>7} {s.calls:>6} {s.added_p50:>8.2f}ms {s.added_p99:>8.2f}ms {s.relayed_p99:>8.2f}ms "
          f"{s.control_p99:>8.2f}ms {s.lost:>5}/{s.sent:<6} {s.cpu_per_call:>7.2f}% {s.rss_per_call:>7.2f}MB "
          f"{s.client_cpu:>8.1f}%  {verdict}", flush=True)  # fmt: skip


def summary(results: dict[int, list[Step]], args) -> None:
    print(f"\nCapacity ({args.server}, added p99 <= {args.max_added_ms:g} ms and no frame lost):")
    for workers, steps in results.items():
        errors = sorted({code for s in steps for code in s.errors})
        print(f"  {workers} worker(s): errors sent to the callers: {', '.join(errors) or 'none'}")
        held = []  # the steps up to the first that failed
        for s in steps:
            if not s.passed(args.max_added_ms):
                break
            held.append(s)
        if not held:
            print(
                f"  {workers} worker(s): not even {steps[0].calls} calls" if steps else f"  {workers}: no run"
            )
            continue
        best = held[-1]
        print(f"  {workers} worker(s): {best.calls} calls held (added p99 {best.added_p99:.2f} ms); "
              f"CPU {best.cpu_per_call:.2f} % of a core and RSS {best.rss_per_call:.2f} MB per call; "
              f"clients and echo peer used {best.client_cpu:.0f} % of a core")  # fmt: skip
    print(f"Machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end")


async def main_async(args) -> None:
    port = free_port()
    echo = spawn("--echo-server", str(port))
    echo_url = f"ws://127.0.0.1:{port}/"
    try:
        for _ in range(100):
            try:
                async with websockets.connect(echo_url):
                    break
            except OSError:
                await asyncio.sleep(0.1)
        print(f"{args.seconds:g} s of 20 ms frames per step, {args.slots} phase slots, server {args.server}, "
              f"the {args.vad}'s VAD; "
              f"{CONTROL_CALLS} control calls straight to the echo peer; the callers say a {args.audio} "
              f"({words_share(args.pcm):.0%} of it words)")  # fmt: skip
        heads = ("workers", "calls", "add p50", "add p99", "relay p99", "ctrl p99", "lost/sent", "CPU/call",
                 "RSS/call", "clients")  # fmt: skip
        print(f"{heads[0]:>7} {heads[1]:>6} {heads[2]:>10} {heads[3]:>10} {heads[4]:>10} {heads[5]:>10} "
              f"{heads[6]:>12} {heads[7]:>8} {heads[8]:>9} {heads[9]:>9}")  # fmt: skip
        results = {w: await measure(w, args, echo_url, echo.pid) for w in args.workers}
        summary(results, args)
    finally:
        echo.terminate()
        echo.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50, 75, 100, 125, 150])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--slots", type=int, default=10)
    parser.add_argument("--max-added-ms", type=float, default=20.0)
    parser.add_argument("--server", choices=("daphne", "uvicorn"), default="daphne")
    parser.add_argument("--short", action="store_true", help="a tiny run that proves the benchmark works")
    parser.add_argument(
        "--all-steps", action="store_true", help="go on past a failed step (CPU and RSS figures)"
    )
    parser.add_argument("--echo-server", type=int)
    parser.add_argument("--audio", choices=KINDS, default="call", help="what the callers say")
    parser.add_argument("--vad", choices=("page", "server"), default="page", help="who scores (above)")
    args = parser.parse_args()
    # The load generator (clients, echo peer) runs on uvloop: it shares the cores with the workers,
    # so the less it costs, the more of the machine the measurement leaves to what it measures.
    if args.echo_server:
        return uvloop.run(echo_server(args.echo_server))
    if args.short:
        args.steps, args.seconds = [3], 1.0
    args.steps = [max(1, min(n, 400)) for n in args.steps]
    args.seconds = max(0.5, min(args.seconds, 60.0))
    args.pcm = track(args.audio)
    args.scores = window_scores(args.pcm)
    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
