"""End to end over a real Daphne process: a script talks to the offline agent like a browser."""

import asyncio
import json
import time

import pytest
import websockets

from tests.engine.speech import Speech, silence
from tests.server import start_server

pytestmark = pytest.mark.slow

SENTENCE = "I would like to book a table for two"
FRAME = 640  # 20 ms at 16 kHz


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return Speech(tmp_path_factory.mktemp("speech"))


def word_errors(expected: str, heard: str) -> float:
    """Word error rate: edit distance over words / expected words."""
    a, b = expected.lower().split(), heard.lower().split()
    row = list(range(len(b) + 1))
    for i, word in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, other in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (word != other))
    return row[-1] / len(a)


async def stream(ws, pcm: bytes) -> None:
    """Send PCM in 20 ms frames at real-time pace, as a microphone would."""
    start = time.monotonic()
    for i in range(0, len(pcm) - FRAME + 1, FRAME):
        await ws.send(pcm[i : i + FRAME])
        await asyncio.sleep(max(0, start + (i // FRAME + 1) * 0.02 - time.monotonic()))


async def talk(server, pcm: bytes):
    conv = server.conversation()
    headers = {"Authorization": f"Token {server.token}"}
    seen, audio = [], 0
    async with websockets.connect(server.ws_url + conv["ws_path"], additional_headers=headers,
                                  origin=server.url) as ws:  # fmt: skip

        async def read():
            nonlocal audio
            async for message in ws:
                if isinstance(message, bytes):
                    audio += len(message)
                    continue
                seen.append(json.loads(message))
                if seen[-1]["type"] == "ready":
                    ready.set()
                if seen[-1]["type"] == "transcript" and seen[-1]["role"] == "agent" and seen[-1]["final"]:
                    if any(m["type"] == "transcript" and m["role"] == "user" and m["final"] for m in seen):
                        answered.set()

        ready, answered = asyncio.Event(), asyncio.Event()
        reader = asyncio.create_task(read())
        await asyncio.wait_for(ready.wait(), 30)
        await stream(ws, silence(1500) + pcm + silence(1500))
        await asyncio.wait_for(answered.wait(), 20)
        await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(reader, 10)
    return conv, seen, audio


def test_a_spoken_sentence_gets_an_answer_and_is_stored(server, speech):
    conv, seen, audio = asyncio.run(talk(server, speech.pcm(SENTENCE)))
    user = [m for m in seen if m["type"] == "transcript" and m["role"] == "user" and m["final"]]
    agent = [m for m in seen if m["type"] == "transcript" and m["role"] == "agent" and m["final"]]
    assert word_errors(SENTENCE, user[0]["text"]) <= 0.35, user[0]["text"]
    assert agent[0]["text"].startswith("Hello, this is Bella Vista")  # the greeting
    assert "how many people" in agent[-1]["text"]  # the FAQ answer to a booking
    assert audio > 24000 * 2  # more than a second of agent speech at 24 kHz
    assert any(m["type"] == "metrics" and m["latency_ms"] > 0 for m in seen)
    assert seen[-1] == {"type": "ended", "reason": "stopped by the user"}
    # What the user sees afterwards: the conversation page lists the turns.
    page = server.client().get(f"/history/{conv['id']}/").text
    assert user[0]["text"] in page
    assert "how many people" in page
    assert "reply after" in page  # the stored latency


def test_two_server_processes_share_one_conversation_lock(server):
    """Several Daphne processes on one database: a conversation is live on one socket only."""
    second = start_server(share_with=server)
    other = next(second)
    try:
        conv = server.conversation()

        async def both():
            headers = {"Authorization": f"Token {server.token}"}
            first = await websockets.connect(server.ws_url + conv["ws_path"], additional_headers=headers,
                                             origin=server.url)  # fmt: skip
            assert json.loads(await first.recv())["type"] in {"ready", "status", "transcript"}
            async with websockets.connect(other.ws_url + conv["ws_path"], additional_headers=headers,
                                          origin=other.url) as ws:  # fmt: skip
                await ws.wait_closed()
                code = ws.close_code
            await first.close()
            return code

        assert asyncio.run(both()) == 4409
        # and the other process serves the same data: the user sees the conversation there too
        assert conv["id"] in other.client().get("/history/").text
    finally:
        second.close()
