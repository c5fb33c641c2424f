"""The responder: FAQ retrieval, and a streaming OpenAI-compatible LLM with FAQ fallback.

The LLM tests talk to a real HTTP server on a loopback port that speaks the
OpenAI chat-completions SSE protocol (or misbehaves the way servers do).
"""

import asyncio
import json
import time

import pytest

from playground.engine.responder import FaqIndex, LLMConfig, Responder, fold, parse_sse_line, terms
from playground.engine.script import FAQ, Script


def test_faq_picks_the_matching_answer(script):
    index = FaqIndex(script.faq)
    assert index.best("what time do you open on sunday").question == "What are your opening hours?"
    assert index.best("i would like to book a table for two").question == "Can I book a table?"
    assert index.best("is there parking near the restaurant").question == "Is there parking nearby?"
    assert index.best("can i pay by card").question == "Do you take card payments?"
    assert index.best("do you have a menu for children").question == "Do you have a children's menu?"


def test_unrelated_text_gets_the_fallback(script):
    responder = Responder(script)
    assert responder.faq_answer("the weather on mars is cold") == script.fallback


def test_sse_lines():
    assert parse_sse_line('data: {"choices":[{"delta":{"content":"Hi"}}]}') == "Hi"
    assert parse_sse_line('data: {"choices":[{"delta":{"role":"assistant"}}]}') == ""
    assert parse_sse_line(": keep-alive") == ""
    assert parse_sse_line("data: [DONE]") is not None and parse_sse_line("data: [DONE]") != ""


class FakeLLM:
    """A loopback HTTP/1.1 server for POST /v1/chat/completions. `mode`: ok, hang, 500, cut."""

    def __init__(self, mode: str = "ok", words=("Sure, ", "we can ", "do that. ", "Anything ", "else?")):
        self.mode, self.words, self.requests = mode, words, []
        self._server = None
        self._handlers: set[asyncio.Task] = set()

    async def __aenter__(self):
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc):
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"

    async def _serve(self, reader, writer):
        self._handlers.add(asyncio.current_task())
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":")[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
            )
            self.requests.append((head.split(b" ")[1].decode(), json.loads(await reader.readexactly(length))))
            await getattr(self, "_" + self.mode.replace("500", "error"))(writer)
        finally:
            writer.close()

    async def _ok(self, writer, upto=None):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
        for word in self.words[:upto]:
            chunk = {"choices": [{"delta": {"content": word}, "index": 0}]}
            writer.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await writer.drain()
            await asyncio.sleep(0.05)
        if upto is None:
            writer.write(b"data: [DONE]\n\n")
        await writer.drain()

    async def _cut(self, writer):
        await self._ok(writer, upto=2)

    async def _hang(self, writer):
        await asyncio.sleep(3600)

    async def _error(self, writer):
        writer.write(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\nConnection: close\r\n\r\noops!"
        )
        await writer.drain()


async def reply(responder, text):
    pieces, times, start = [], [], time.monotonic()
    async for piece in responder.reply([{"role": "user", "content": text}]):
        pieces.append(piece)
        times.append(time.monotonic() - start)
    return pieces, times


async def test_llm_reply_streams_token_by_token(script):
    async with FakeLLM() as server:
        responder = Responder(script, LLMConfig(server.base_url, "demo-model", "sk-test"))
        try:
            pieces, times = await reply(responder, "can I book a table")
        finally:
            await responder.aclose()
    assert "".join(pieces) == "Sure, we can do that. Anything else?"
    assert len(pieces) == 5 and times[0] < times[-1] - 0.1  # the first piece came before the last was sent
    path, body = server.requests[0]
    assert path == "/v1/chat/completions" and body["stream"] is True and body["model"] == "demo-model"
    assert body["messages"][0]["role"] == "system" and "Luigi" in body["messages"][0]["content"]
    assert body["messages"][-1] == {"role": "user", "content": "can I book a table"}


@pytest.mark.parametrize("mode", ["hang", "500"])
async def test_a_failing_llm_falls_back_to_the_faq_within_the_timeout(script, mode):
    async with FakeLLM(mode) as server:
        responder = Responder(script, LLMConfig(server.base_url, "demo-model", timeout=0.5))
        try:
            pieces, times = await reply(responder, "do you have vegetarian options")
        finally:
            await responder.aclose()
    assert pieces == [script.faq[2].answer]
    assert times[0] < 1.5


async def test_an_unreachable_llm_falls_back_to_the_faq(script):
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    responder = Responder(script, LLMConfig(f"http://127.0.0.1:{port}", "m", timeout=1.0))
    try:
        pieces, _ = await reply(responder, "where are you located")
    finally:
        await responder.aclose()
    assert pieces == [script.faq[3].answer]


async def test_a_stream_cut_midway_keeps_what_was_said(script):
    async with FakeLLM("cut") as server:
        responder = Responder(script, LLMConfig(server.base_url, "m", timeout=1.0))
        try:
            pieces, _ = await reply(responder, "book a table")
        finally:
            await responder.aclose()
    assert "".join(pieces) == "Sure, we can "


def test_llm_config_from_settings_dict():
    assert LLMConfig.from_dict(None) is None
    assert LLMConfig.from_dict({"base_url": "", "model": "x"}) is None
    cfg = LLMConfig.from_dict({"base_url": "http://h/v1/", "model": "m"})
    assert cfg.base_url == "http://h/v1" and cfg.api_key == ""


SPANISH = Script(
    "restaurante",
    "Restaurante",
    "Eres Sofía.",
    "Hola, ¿en qué puedo ayudarle?",
    language="es",
    faq=(
        FAQ("¿Cuál es el horario?", "Abrimos de doce a once.", ("horario", "abren", "cierran", "open")),
        FAQ("Quisiera reservar una mesa", "¿Para cuántas personas?", ("reservar", "mesa", "book")),
        FAQ("¿Dónde están?", "En la calle del Puerto.", ("donde", "direccion", "where")),
    ),
)


@pytest.mark.parametrize(
    "question,answer",
    [
        ("¿Qué horario tienen?", "Abrimos de doce a once."),  # accents and ¿ in the question
        ("QUÉ HORARIO TIENEN", "Abrimos de doce a once."),
        ("¿A qué hora abren?", "Abrimos de doce a once."),
        ("¿Dónde están?", "En la calle del Puerto."),  # accent in the question, none in the keyword
        ("donde estan", "En la calle del Puerto."),  # typed without accents
        ("Quiero reservar una mesa para dos", "¿Para cuántas personas?"),
        ("what time do you open", "Abrimos de doce a once."),  # English speech, Spanish answer
    ],
)
def test_spanish_faq_matches_whatever_the_accents(question, answer):
    assert Responder(SPANISH).faq_answer(question) == answer


def test_accented_keywords_match_unaccented_questions():
    faq = (
        FAQ("Où êtes-vous ?", "Rue du Port.", ("adresse", "situés")),
        FAQ("Quel prix ?", "Trente euros.", ("prix", "coûte")),
    )
    script = Script("s", "S", "p", "g", faq=faq)
    responder = Responder(script)
    assert responder.faq_answer("Quelle est l'adresse ?") == "Rue du Port."  # "l'" is cut off
    assert responder.faq_answer("vous etes situes ou") == "Rue du Port."
    assert responder.faq_answer("ça coute combien") == "Trente euros."


def test_fold_removes_accents_only():
    assert fold("¿Qué horario tienen? Mañana, señor") == "¿Que horario tienen? Manana, senor"
    assert terms("¿Qué horario tienen?") == ["horario"]  # "que" and "tienen" are stop words


def test_spanish_fallback_for_unrelated_text():
    from playground.engine.script import FALLBACKS

    script = Script("s", "S", "p", "g", language="es", faq=SPANISH.faq, fallback=FALLBACKS["es"])
    assert Responder(script).faq_answer("el tiempo en Marte") == FALLBACKS["es"]
