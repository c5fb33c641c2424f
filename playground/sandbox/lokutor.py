"""Sandbox of the Lokutor Orchestrator voice agent WebSocket, backed by the offline agent.

Written from Lokutor's "Voice Chat API" page (shared/seeds/lokutor-voice-chat.txt) and the
notes in shared/protocols.md section 3; it shares no code with our client.

* ``/ws/agent?api_key=<key>``: a missing or wrong key fails the upgrade with HTTP 401 and a
  JSON body (servers without the denial-response extension, like Daphne, answer 403 instead);
* configuration (the seed's "Initialization"): ``prompt``, ``voice`` (F1-F5, M1-M5) and
  ``language`` (en, es, fr, pt, ko: what the docs and SDK list; the engine's de, it, ja, zh
  are refused), one JSON text frame each, in any order; also ``visemes``, ``tools`` and the
  SDK's ``{"type": "rates", "playback": n, "input": n}``. A bad value is answered with an
  error and leaves the default (F1, en) in place; the socket stays open;
* errors as the seed writes them, ``{"type": "error", "data": "<message>"}``, or with
  ``errors="object"`` as the SDK reads them, ``"data": {"code": "validation.invalid_voice",
  "message": ...}``;
* binary frames: microphone audio, s16le mono at 44.1 kHz (the docs) unless ``rates`` said
  otherwise (any standard rate, 8 to 96 kHz, at the top level or under ``data``: the seed
  names no list); it is resampled to 16 kHz for the agent. Audio before the configuration
  (before prompt, voice and language have each been sent) is refused: one error, and the
  frames are dropped until it is complete;
* out: ``status`` (``thinking``/``speaking`` with the reply's ``generation``, ``listening``,
  ``interrupted``), final ``transcript`` with ``role`` ``user`` or ``agent``, and the agent's
  speech as binary s16le mono 44.1 kHz frames, paced at real time by the agent (or as JSON
  ``audio`` with base64 ``data`` and ``generation``, the SDK's other carriage).

Generations: every reply gets the next number, announced by ``status: thinking`` (the
greeting too); barge-in (the user speaking over the agent) stops the reply's audio at
once, sends ``status: interrupted`` and moves the counter on, so the next reply has a
higher number than the interrupted one.

The agent starts once the configuration is complete and has settled (``SETTLE_S`` after the
last config message). It speaks the chosen language with that language's espeak-ng voice
(its speech recognition stays English only). Its topic is ours when the prompt is a stored
Topic's persona in that language (so it knows the greeting, FAQ and phrases), else the prompt
with a generic FAQ and a greeting in the language.

`make_app(secret, scripts=None, errors=, audio=, agent_options=)`: the key is derived from
`secret` (`api_key`); the state object `app.state` (`State`) holds the live calls, each
released when its socket closes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from playground.engine import tts
from playground.engine.agent import Agent
from playground.engine.events import Audio, Failure, Interrupted, Status, Transcript
from playground.engine.resample import Resampler
from playground.engine.script import FAQ, Script
from playground.sandbox import SandboxApp, Scripts, cancel, derive, find_script

log = logging.getLogger(__name__)

VOICES = frozenset(f"{g}{n}" for g in "FM" for n in range(1, 6))
# What the docs and SDK list. The open-source engine also knows de, it, ja, zh; the hosted
# agent is not documented to speak them, so they are refused like any other code.
LANGUAGES = ("en", "es", "fr", "pt", "ko")
CONFIGURATION = ("prompt", "voice", "language")  # the seed's "Initialization" messages
# The seed names no list: every standard PCM rate is accepted, whatever our client picks.
RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000})
INPUT_RATE = 44100  # "Sample Rate 44,100 Hz" in the docs, for the stream both ways
OUTPUT_RATE = 44100
AGENT_RATE = 16000
SETTLE_S = 0.3
BAD_FORMAT = "validation.invalid_request_format"
DEFAULT_PROMPT = "You are a helpful assistant. Be concise."
# The generic agent's greeting and fallback per language, for a prompt that is none of our topics.
GENERIC_LINES = {
    "en": ("Hello! How can I help you today?",
           "Sorry, I did not catch that. Could you say it another way?"),
    "es": ("¡Hola! ¿En qué puedo ayudarle hoy?",
           "Perdone, no le he entendido. ¿Puede decirlo de otra manera?"),
    "fr": ("Bonjour ! Comment puis-je vous aider ?",
           "Pardon, je n'ai pas compris. Pouvez-vous le dire autrement ?"),
    "pt": ("Olá! Como posso ajudar hoje?", "Desculpe, não entendi. Pode dizer de outra forma?"),
    "ko": ("안녕하세요! 무엇을 도와드릴까요?", "죄송합니다, 잘 못 들었어요. 다시 말씀해 주시겠어요?"),
}  # fmt: skip
GENERIC_FAQ = (
    FAQ("What can you do", "I can answer short questions and keep you company.", ("help", "what", "can")),
    FAQ("Who are you", "I am a voice assistant in the Lokutor sandbox.", ("who", "name")),
    FAQ("Thank you goodbye", "You are welcome. Goodbye!", ("thank", "thanks", "goodbye", "bye")),
)


def api_key(secret: str) -> str:
    """The sandbox's API key in the deployment whose secret it is."""
    return derive(secret, "lokutor-api-key")


def client_config(base_url: str, secret: str) -> dict:
    """Our client's settings for this sandbox: its WebSocket base and the deployment's key."""
    scheme, rest = base_url.split("://", 1)
    return {"url": f"{'wss' if scheme == 'https' else 'ws'}://{rest}", "api_key": api_key(secret)}


@dataclass
class State:
    """One Lokutor sandbox: its key, its options, and the live calls (released when they close)."""

    key: str
    errors: str = "string"
    audio: str = "binary"
    agent_options: dict = field(default_factory=dict)
    scripts: Scripts | None = None
    calls: set = field(default_factory=set)


def make_app(secret: str, *, scripts: Scripts | None = None, errors: str = "string", audio: str = "binary",
             agent_options: dict | None = None) -> SandboxApp:  # fmt: skip
    """A fresh sandbox. `errors`: "string" (the seed) or "object" (SDK); `audio`: "binary" or "json"."""
    state = State(api_key(secret), errors, audio, dict(agent_options or {}), scripts)

    async def agent_socket(websocket: WebSocket) -> None:
        if not await _admitted(websocket, state.key):
            return
        await websocket.accept()
        call = Call(websocket, state)
        state.calls.add(call)
        try:
            await call.run()
        finally:
            state.calls.discard(call)

    return SandboxApp(Starlette(routes=[WebSocketRoute("/ws/agent", agent_socket)]), state)


async def _admitted(websocket: WebSocket, key: str) -> bool:
    """Check the api_key before the upgrade; refuse it with 401 (or 403 where denial bodies can't be sent)."""
    given = websocket.query_params.get("api_key")
    if given and secrets.compare_digest(given.encode(), key.encode()):
        return True
    code = "auth.missing_key" if not given else "auth.invalid_key"
    body = {"error": {"code": code, "message": "Invalid or missing API key", "retryable": False}}
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(body, status_code=401))
    else:
        await websocket.close(code=1008)  # before accept: the server answers HTTP 403
    return False


def espeak_voice(voice: str, language: str) -> str:
    """Lokutor's F/M voices on the offline agent's espeak voices (it has two female variants)."""
    offered = [key for key, _ in tts.voices_for(language)] or [key for key, _ in tts.voices_for("en")]
    base = offered[0]
    if voice.startswith("F"):
        return base + ("+f3" if int(voice[1:]) % 2 else "+f1")
    return base


async def script_for(scripts: Scripts | None, prompt: str, language: str) -> Script:
    """The site's script in `language` whose persona is the prompt (its greeting, FAQ and phrases),
    else a generic one that greets in `language`."""
    ours = await find_script(scripts, lambda script, _opts: script.persona == prompt, language)
    if ours is not None:
        return ours
    greeting, fallback = GENERIC_LINES[language]
    return Script(slug="lokutor-sandbox", title="Lokutor sandbox", persona=prompt, greeting=greeting,
                  language=language, faq=GENERIC_FAQ, fallback=fallback)  # fmt: skip


class Call:
    """One agent socket: configuration, the offline agent, and the generation counter."""

    def __init__(self, websocket: WebSocket, state: State):
        self.ws, self.scripts = websocket, state.scripts
        self.errors, self.audio_carriage, self.agent_options = state.errors, state.audio, state.agent_options
        self.prompt: str | None = None
        self.voice, self.language = "F1", "en"  # the SDK's defaults, kept when a value is refused
        self.received: set[str] = set()  # which of the CONFIGURATION messages came
        self._refused_audio = False  # audio before the configuration was answered (once)
        self.input_rate = INPUT_RATE
        self.generation = 0
        self._in_reply = False  # between a reply's thinking/speaking and the next listening
        self._pending = False  # barge-in moved the counter on; the next reply takes that number
        self._cut = False  # the current reply was interrupted: none of its audio may follow
        self.agent: Agent | None = None
        self._to_agent = Resampler(self.input_rate, AGENT_RATE)
        self._from_agent: Resampler | None = None
        self._odd = b""
        self._reconfigured = asyncio.Event()
        self._starting = asyncio.Lock()
        self._starter: asyncio.Task | None = None
        self._pump: asyncio.Task | None = None

    async def run(self) -> None:
        try:
            while True:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("bytes") is not None:
                    await self.on_audio(message["bytes"])
                elif message.get("text") is not None:
                    await self.on_text(message["text"])
        finally:
            for task in (self._starter, self._pump):
                await cancel(task)
            if self.agent is not None:
                await self.agent.close()

    # ---- client -> server -------------------------------------------------------------------

    async def on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.error(BAD_FORMAT, "Messages must be JSON objects with a 'type'.")
            return
        handler = getattr(self, f"_on_{message['type']}", None)
        if handler is None:
            await self.error(BAD_FORMAT, f"Unknown message type {message['type']!r}.")
            return
        await handler(message)

    async def _on_prompt(self, message: dict) -> None:
        data = message.get("data")
        if not isinstance(data, str):
            await self.error(BAD_FORMAT, "'prompt' needs a string in 'data'.")
            return
        if self.agent is None:  # changes after the start are accepted but the agent keeps its topic
            self.prompt = data
        self._configured("prompt")

    async def _on_voice(self, message: dict) -> None:
        data = message.get("data")
        if data in VOICES:
            self.voice = data
            self._apply_voice()
        else:
            await self.error("validation.invalid_voice", f"Invalid voice {data!r}: use F1-F5 or M1-M5.")
        self._configured("voice")

    async def _on_language(self, message: dict) -> None:
        data = message.get("data")
        if data in LANGUAGES:
            if self.agent is None:  # the agent keeps the language it started in
                self.language = data
        else:
            known = ", ".join(LANGUAGES)
            await self.error("validation.invalid_language", f"Unsupported language {data!r}: use {known}.")
        self._configured("language")

    async def _on_rates(self, message: dict) -> None:
        body = message["data"] if isinstance(message.get("data"), dict) else message  # either carriage
        rate_in, playback = body.get("input"), body.get("playback", OUTPUT_RATE)
        if not (_rate(rate_in) and _rate(playback)):
            await self.error(BAD_FORMAT, f"'rates' needs 'input' and 'playback' among {sorted(RATES)}.")
            return
        self.input_rate = rate_in
        self._to_agent = Resampler(rate_in, AGENT_RATE)

    async def _on_visemes(self, message: dict) -> None:
        if not isinstance(message.get("data"), bool):
            await self.error(BAD_FORMAT, "'visemes' needs true or false.")

    async def _on_tools(self, message: dict) -> None:
        tools = message.get("data")
        good = isinstance(tools, list) and all(
            isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict)
            and isinstance(t["function"].get("name"), str) for t in tools
        )  # fmt: skip
        if not good:
            await self.error(BAD_FORMAT,
                             "'tools' needs a list of {type: function, function: {name, ...}}.")  # fmt: skip

    def _configured(self, kind: str) -> None:
        """A configuration message came: once all have, the agent starts when they settle."""
        self.received.add(kind)
        if not self.complete:
            return
        self._reconfigured.set()
        if self._starter is None:
            self._starter = asyncio.create_task(self._start_when_settled())

    @property
    def complete(self) -> bool:
        return self.received.issuperset(CONFIGURATION)

    def _apply_voice(self) -> None:
        if self.agent is not None:
            language = self.agent.language
            self.agent.voice = tts.resolve_voice(language, espeak_voice(self.voice, language))

    async def on_audio(self, data: bytes) -> None:
        if not self.complete:
            await self._refuse_audio()
            return
        if self.agent is None:
            await self._start()  # audio means the client is done configuring
        pcm = self._odd + data
        self._odd = pcm[len(pcm) - len(pcm) % 2 :]
        pcm = pcm[: len(pcm) - len(pcm) % 2]
        if self.agent is not None and pcm:
            self.agent.feed(self._to_agent.process(pcm))

    async def _refuse_audio(self) -> None:
        """Audio before the configuration is dropped; said once, not for every frame."""
        if not self._refused_audio:
            self._refused_audio = True
            missing = ", ".join(kind for kind in CONFIGURATION if kind not in self.received)
            await self.error(BAD_FORMAT, f"Audio before configuration: send {missing} first.")

    # ---- the agent --------------------------------------------------------------------------

    async def _start_when_settled(self) -> None:
        """Start once no config message came for SETTLE_S: voice and language may follow the prompt."""
        while True:
            self._reconfigured.clear()
            try:
                await asyncio.wait_for(self._reconfigured.wait(), SETTLE_S)
            except TimeoutError:
                break
        await self._start()

    async def _start(self) -> None:
        async with self._starting:  # the settle timer and the first audio frame may race here
            if self.agent is not None:
                return
            prompt = self.prompt if self.prompt is not None else DEFAULT_PROMPT
            script = await script_for(self.scripts, prompt, self.language)
            voice = espeak_voice(self.voice, self.language)
            agent = self.agent = Agent(script, voice=voice, language=self.language, **self.agent_options)
            self._pump = asyncio.create_task(self._forward(agent))
            try:
                await agent.start()
            except Exception as exc:
                log.exception("sandbox agent failed to start")
                await self.error("agent.session_failed", f"The agent could not start: {exc}")
                await self.ws.close(code=1011)

    async def _forward(self, agent: Agent) -> None:
        """The agent's events, in Lokutor's words, until the agent closes or the client goes."""
        try:
            async for event in agent.events():
                await self._send_event(event)
        except Exception as exc:  # the client went away mid-send: the receive loop ends the call
            log.debug("lokutor sandbox send failed: %r", exc)

    async def _send_event(self, event) -> None:
        match event:
            case Audio(pcm=pcm, rate=rate):
                await self._speak(pcm, rate)
            case Status(state="thinking"):
                await self._new_reply()
            case Status(state="speaking"):
                if not self._in_reply:  # the greeting has no thinking phase of its own
                    await self._new_reply()
                await self.send({"type": "status", "data": "speaking", "generation": self.generation})
            case Status(state="listening"):
                await self._end_of_audio()
                await self.send({"type": "status", "data": "listening"})
            case Interrupted():
                await self._interrupted()
            case Transcript(final=True, text=text, role=role) if text.strip():
                await self.send({"type": "transcript", "data": text, "role": role})
            case Failure(message=message):
                await self.error("agent.provider_error", message)

    async def _new_reply(self) -> None:
        if self._pending:
            self._pending = False
        else:
            self.generation += 1
        self._in_reply, self._cut = True, False
        await self.send({"type": "status", "data": "thinking", "generation": self.generation})

    async def _interrupted(self) -> None:
        """Barge-in: no more audio of this reply, tell the client at once, next generation."""
        self._cut = True
        if self._from_agent is not None:
            self._from_agent.reset()
        await self.send({"type": "status", "data": "interrupted"})
        self.generation += 1
        self._in_reply, self._pending = False, True

    async def _speak(self, pcm: bytes, rate: int) -> None:
        if self._cut:
            return
        if self._from_agent is None or self._from_agent.in_rate != rate:
            self._from_agent = Resampler(rate, OUTPUT_RATE)
        await self._send_audio(self._from_agent.process(pcm))

    async def _end_of_audio(self) -> None:
        if self._from_agent is not None and not self._cut:
            await self._send_audio(self._from_agent.flush())
        self._in_reply = False

    async def _send_audio(self, pcm: bytes) -> None:
        if not pcm:
            return
        if self.audio_carriage == "json":
            data = base64.b64encode(pcm).decode()
            await self.send({"type": "audio", "data": data, "generation": self.generation})
        else:
            await self.ws.send_bytes(pcm)

    # ---- server -> client -------------------------------------------------------------------

    async def send(self, message: dict) -> None:
        await self.ws.send_text(json.dumps(message))

    async def error(self, code: str, message: str) -> None:
        data = {"code": code, "message": message} if self.errors == "object" else message
        with contextlib.suppress(Exception):
            await self.send({"type": "error", "data": data})


def _rate(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in RATES
