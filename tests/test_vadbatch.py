"""sessions/vadbatch.py: every stream's audio of a tick reaches the thread in one round; each stream
hears only of its own, non-empty result."""

import asyncio
import concurrent.futures
import threading

import pytest

from sessions.vadbatch import Rounds


@pytest.fixture
def executor():
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown()


def collector():
    got: asyncio.Queue = asyncio.Queue()
    return got, got.put_nowait


async def test_streams_fed_within_a_tick_run_as_one_round_and_each_hears_its_own_result(executor):
    rounds_seen, threads = [], set()

    def lengths(jobs):
        threads.add(threading.get_ident())
        rounds_seen.append(sorted(name for name, _ in jobs))
        return [[name, len(pcm)] if name != "quiet" else [] for name, pcm in jobs]

    rounds = Rounds(executor, lengths, tick_s=0.05, min_bytes=4)
    heard = {name: collector() for name in ("a", "b", "quiet", "short")}
    for name, (_, deliver) in heard.items():
        rounds.add(name, deliver)
    rounds.feed("a", b"12")
    rounds.feed("a", b"34")  # two frames of one tick go together
    rounds.feed("b", b"123456")
    rounds.feed("quiet", b"1234")
    rounds.feed("short", b"12")  # less than one window: it waits
    assert await asyncio.wait_for(heard["a"][0].get(), 2) == ["a", 4]
    assert await asyncio.wait_for(heard["b"][0].get(), 2) == ["b", 6]
    assert rounds_seen == [["a", "b", "quiet"]]  # one hop for all of them
    assert threads and threading.get_ident() not in threads
    await asyncio.sleep(0.15)
    assert heard["quiet"][0].empty()  # an empty result is not delivered
    rounds.feed("short", b"34")
    assert await asyncio.wait_for(heard["short"][0].get(), 2) == ["short", 4]  # with what waited
    rounds.remove("a")
    rounds.remove("b")
    rounds.remove("quiet")
    rounds.remove("short")


async def test_a_failed_round_gives_each_stream_its_error(executor):
    def broken(jobs):
        raise ValueError("model gone")

    rounds = Rounds(executor, broken, tick_s=0.02, min_bytes=1)
    one, two = collector(), collector()
    rounds.add(1, one[1])
    rounds.add(2, two[1])
    rounds.feed(1, b"x")
    rounds.feed(2, b"y")
    errors = [await asyncio.wait_for(q.get(), 2) for q in (one[0], two[0])]
    assert [str(e) for e in errors] == ["model gone", "model gone"]
    rounds.remove(1)
    rounds.remove(2)


async def test_a_removed_stream_hears_nothing_more(executor):
    release = threading.Event()

    def slow(jobs):
        release.wait(2)
        return [[pcm] for _, pcm in jobs]

    rounds = Rounds(executor, slow, tick_s=0.01, min_bytes=1)
    gone, kept = collector(), collector()
    rounds.add("gone", gone[1])
    rounds.add("kept", kept[1])
    rounds.feed("gone", b"x")
    rounds.feed("kept", b"y")
    await asyncio.sleep(0.05)  # the round is on the thread
    rounds.remove("gone")
    release.set()
    assert await asyncio.wait_for(kept[0].get(), 2) == [b"y"]
    await asyncio.sleep(0.05)
    assert gone[0].empty()
    rounds.remove("kept")


async def test_audio_fed_while_a_round_runs_goes_with_the_next_in_order(executor):
    release = threading.Event()
    seen = []

    def slow(jobs):
        release.wait(2)
        seen.append([pcm for _, pcm in jobs])
        return [[pcm] for _, pcm in jobs]

    rounds = Rounds(executor, slow, tick_s=0.01, min_bytes=1)
    heard, deliver = collector()
    rounds.add("s", deliver)
    rounds.feed("s", b"1")
    await asyncio.sleep(0.05)  # round one is on the thread: ticks pass without a second
    rounds.feed("s", b"2")
    await asyncio.sleep(0.05)
    rounds.feed("s", b"3")
    release.set()
    assert [await asyncio.wait_for(heard.get(), 2) for _ in range(2)] == [[b"1"], [b"23"]]
    assert seen == [[b"1"], [b"23"]]  # no round queued behind another
    rounds.remove("s")


def test_the_vad_thread_yields_the_cpu_to_the_event_loop():
    """The relay's VAD thread runs nicer than the process (frames first under a full CPU)."""
    from sessions.relay import VAD_EXECUTOR
    from sessions.vadbatch import NICE

    def niceness(tid: int) -> int:
        return int(open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()[16])

    vad_thread = VAD_EXECUTOR.submit(threading.get_native_id).result(5)
    assert niceness(vad_thread) == niceness(threading.get_native_id()) + NICE
