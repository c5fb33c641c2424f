"""End to end over a real Daphne process: a script talks to the offline agent like a browser."""

import asyncio
import json

import pytest
import websockets

from playground.engine.text import word_error_rate
from tests.engine.speech import silence
from tests.server import Call, call, start_server

pytestmark = pytest.mark.slow

SENTENCE = "I would like to book a table for two"


async def talk(server, pcm: bytes):
    conv = server.conversation()
    async with call(server, conv["ws_path"]) as c:
        await c.until(lambda c: c.of("ready"), 30)
        await c.say(silence(1500) + pcm + silence(1500))
        await c.until(Call.answered)
        await c.stop()
    return conv, c.seen, c.audio


def test_a_spoken_sentence_gets_an_answer_and_is_stored(server, speech):
    conv, seen, audio = asyncio.run(talk(server, speech.pcm(SENTENCE)))
    user = [m for m in seen if m["type"] == "transcript" and m["role"] == "user" and m["final"]]
    agent = [m for m in seen if m["type"] == "transcript" and m["role"] == "agent" and m["final"]]
    assert word_error_rate(SENTENCE, user[0]["text"]) <= 0.35, user[0]["text"]
    assert agent[0]["text"].startswith("Hello, this is Bella Vista")  # the greeting
    assert "how many people" in agent[-1]["text"]  # the FAQ answer to a booking
    assert audio > 24000 * 2  # more than a second of agent speech at 24 kHz
    assert any(m["type"] == "metrics" and m["latency_ms"] > 0 for m in seen)
    assert seen[-1] == {"type": "ended", "reason": "stopped by the user"}
    # What the user sees afterwards: the conversation page lists the turns.
    page = server.client().get(f"/history/{conv['id']}/").text
    assert user[0]["text"] in page
    assert "how many people" in page
    assert "ms after you stopped speaking (our VAD)" in page  # the stored latency, labelled


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


def test_a_spanish_conversation_greets_and_answers_in_spanish(server):
    """Language es and a Spanish voice: the greeting, a typed Spanish question's answer and the
    stored turns are the topic's Spanish content, spoken."""
    from playground.demo_topics import RESTAURANT

    conv = server.conversation(language="es", voice="es+f3")

    async def run():
        async with call(server, conv["ws_path"]) as c:
            await c.until(lambda c: c.finals("agent"), 30)  # the greeting, spoken to its end
            greeting_audio = c.audio
            await c.ws.send(json.dumps({"type": "text", "text": "¿A qué hora abren?"}))
            await c.until(Call.answered)
            await c.stop()
        return c, greeting_audio

    c, greeting_audio = asyncio.run(run())
    agent = [m["text"] for m in c.finals("agent")]
    user = [m["text"] for m in c.finals("user")]
    assert agent[0] == RESTAURANT["es"]["greeting"]
    assert user == ["¿A qué hora abren?"]
    assert agent[1] == "Abrimos todos los días, de doce del mediodía a once de la noche."
    assert greeting_audio > 24000 * 2 * 2  # the greeting is spoken (more than 2 s)
    assert c.audio - greeting_audio > 24000 * 2 * 2  # and so is the answer
    page = server.client().get(f"/history/{conv['id']}/").text
    assert "Abrimos todos los días" in page and "¿A qué hora abren?" in page


def test_english_speech_in_a_spanish_conversation_gets_the_spanish_answer(server, speech):
    """Speech recognition is English only (the talk page says so): spoken English still finds
    the topic's answer, given in the chosen language."""
    conv = server.conversation(language="es", voice="es+f3")

    async def run():
        async with call(server, conv["ws_path"]) as c:
            await c.until(lambda c: c.finals("agent"), 30)
            await c.say(silence(500) + speech.pcm("what time do you open") + silence(1500))
            await c.until(Call.answered)
            await c.stop()
        return c

    c = asyncio.run(run())
    assert c.finals("agent")[-1]["text"] == "Abrimos todos los días, de doce del mediodía a once de la noche."
