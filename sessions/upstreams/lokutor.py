"""Lokutor Orchestrator (voice agent WebSocket) as an upstream.

Written from the vendor's "Voice Chat API" page (shared/seeds/lokutor-voice-chat.txt)
and, where it is silent, from the notes in shared/protocols.md section 3 (SDK behaviour).

Wire protocol, client side:

* connect ``{url}/ws/agent?api_key=<key>`` (default url ``wss://api.lokutor.com``); the key
  is the only credential and a bad one fails the upgrade (HTTP 401/403) or closes 1008;
* configure with one JSON text frame each: ``{"type": "prompt", "data": persona}``,
  ``{"type": "voice", "data": "F1".."M5"}``, ``{"type": "language", "data": "en"}``, then
  ``{"type": "tools", "data": [...]}`` if the topic has tools, and the SDK's
  ``{"type": "rates", "playback": 44100, "input": 16000}`` only when rates are configured;
* microphone audio as binary frames, s16le mono: 44.1 kHz as the docs say (the default), or
  the input rate announced by ``rates`` (what the SDKs do since 2026-03: 16 kHz);
* the server answers with binary s16le mono 44.1 kHz audio (or JSON ``audio`` with base64
  ``data`` and a ``generation``), and JSON ``status`` (listening / thinking / speaking /
  interrupted, ``generation`` with thinking), ``transcript`` (``data`` text, ``role``),
  ``error`` (``data`` a string, or ``{code, message, detail?, retryable?}``), ``tool_call``.

Errors, by the contract's rule (sessions/upstreams/base.py): the seed's string errors
(code ``lokutor.error``) and the SDK's object errors are `Error` events and the call goes on,
validation errors (``lokutor.validation.invalid_language`` ...) included; the SDK's ``auth.*``
and ``internal.cancelled`` end the call (`UpstreamError` with that code).

Options (``Topic.provider_options["lokutor"]``, or the same keys in the provider config):

* ``"tools"``: OpenAI-style tool definitions, sent as the ``tools`` message;
* ``"rates"``: ``true`` for the SDK variant (16 kHz in, 44.1 kHz out, announced), or
  ``{"input": 16000, "playback": 44100}``; unset follows the docs: 44.1 kHz in, no message.

Generations: every reply has a number (``status: thinking`` carries it). After
``status: interrupted`` the client must not play the interrupted reply any further, so
binary audio is dropped until the next reply starts (a ``thinking``/``speaking`` status
of a newer generation), and JSON audio of a generation older than the newest seen is
dropped always, as the SDK does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlencode

import websockets
from websockets.exceptions import InvalidStatus

from .base import (
    Audio,
    Capabilities,
    Client,
    Error,
    Event,
    Interrupted,
    Session,
    Status,
    ToolCall,
    Transcript,
    UpstreamError,
    scrub,
)

DEFAULT_URL = "wss://api.lokutor.com"
AGENT_PATH = "/ws/agent"
DOCS_INPUT_RATE = 44100  # the docs: "Sample Rate 44,100 Hz" for the stream
SDK_INPUT_RATE = 16000  # what the SDKs send since 2026-03, announced by `rates`
OUTPUT_RATE = 44100
RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
OPEN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
# What ends the call: the SDK's auth errors and internal.cancelled (the session is gone). The SDK
# also counts validation errors as fatal, but the seed's errors are reports "in the pipeline"
# and the socket stays open: a refused voice or language leaves the service's default in place,
# so the call goes on and the user is told (an `Error` event).
FATAL_PREFIXES = ("auth.",)
FATAL_CODES = frozenset({"internal.cancelled"})
STRING_ERROR = "error"  # the seed's form, `data` a bare string, names no reason
STATES = frozenset({"listening", "thinking", "speaking"})


class Malformed(ValueError):
    """A message from Lokutor we cannot read; reported, and the call goes on."""


# ---- pure parsing: one wire message -> its meaning ------------------------------------------


@dataclass(frozen=True)
class Generation:
    """A `status: thinking`/`speaking` that starts (or continues) reply number `number`."""

    number: int | None


@dataclass(frozen=True)
class AudioPacket:
    pcm: bytes
    generation: int | None  # None for binary frames: they carry no number


@dataclass(frozen=True)
class ServerRates:
    playback: int | None


@dataclass(frozen=True)
class Fatal:
    """An error Lokutor sends that ends the session (the SDK's catalogue): raised by events()."""

    code: str
    message: str


def parse_binary(data: bytes) -> AudioPacket:
    if len(data) % 2:
        raise Malformed(f"an audio frame of {len(data)} bytes (16-bit samples need an even count)")
    return AudioPacket(data, None)


def parse_text(text: str) -> list:
    """A JSON text frame as a list of base events and protocol markers (Generation, AudioPacket...)."""
    try:
        message = json.loads(text)
    except ValueError:
        raise Malformed(f"text that is not JSON: {text[:60]!r}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise Malformed(f"JSON without a 'type': {text[:60]!r}")
    handler = _HANDLERS.get(message["type"])
    if handler is None:
        return []  # unknown types (visemes, tool results...) are nothing for us to show
    try:
        return handler(message)
    except (TypeError, AttributeError) as exc:  # a field of an unexpected JSON type
        raise Malformed(f"a {message['type']!r} message of unexpected shape ({exc})") from None


def _status(message: dict) -> list:
    state = message.get("data")
    if not isinstance(state, str):
        raise Malformed("a status without a state in 'data'")
    if state == "interrupted":
        return [Interrupted()]
    if state not in STATES:
        return []  # prompt_set and other notices: nothing to show
    if state in ("thinking", "speaking"):
        return [Generation(_generation(message)), Status(state)]
    return [Status(state)]


def _transcript(message: dict) -> list:
    text = message.get("data")
    if not isinstance(text, str):
        raise Malformed("a transcript without text in 'data'")
    # The SDK treats every role but "user" as the agent's.
    role = "user" if message.get("role") == "user" else "agent"
    return [Transcript(role, text, True)]


def _audio(message: dict) -> list:
    try:
        pcm = base64.b64decode(message.get("data") or "", validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise Malformed("an audio message whose 'data' is not base64") from None
    return [AudioPacket(parse_binary(pcm).pcm, _generation(message))]


def _error(message: dict) -> list:
    data = message.get("data")
    if isinstance(data, dict):  # the SDK's structured form (SDK >= 1.1.18)
        code = str(data.get("code") or "internal.error")
        text = str(data.get("message") or data.get("detail") or code)
    elif isinstance(data, str) and data:  # the seed's form: just a string, recoverable
        code, text = STRING_ERROR, data
    else:
        raise Malformed("an error without a message")
    fatal = code.startswith(FATAL_PREFIXES) or code in FATAL_CODES
    return [(Fatal if fatal else Error)(f"lokutor.{code}", f"Lokutor: {text}")]


def _tool_call(message: dict) -> list:
    name, arguments = message.get("name"), message.get("arguments") or "{}"
    if not isinstance(name, str) or not name:
        raise Malformed("a tool_call without a name")
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        parsed = {"raw": arguments}
    if not isinstance(parsed, dict):
        parsed = {"value": parsed}
    return [ToolCall(str(message.get("id") or ""), name, parsed)]


def _server_rates(message: dict) -> list:
    playback = message.get("playback")
    return [ServerRates(playback if playback in RATES else None)]


def _generation(message: dict) -> int | None:
    value = message.get("generation")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


_HANDLERS = {
    "status": _status,
    "transcript": _transcript,
    "audio": _audio,
    "error": _error,
    "tool_call": _tool_call,
    "server_rates": _server_rates,
}


class GenerationGate:
    """Which audio may still play: none of an interrupted reply, nothing of an older generation."""

    def __init__(self):
        self.latest = 0  # the newest generation number seen
        self.stale = False  # between `interrupted` and the start of the next reply

    def interrupted(self) -> None:
        self.stale = True

    def reply(self, number: int | None) -> None:
        """A thinking/speaking status: a newer number (or, without numbers, any) starts a new reply."""
        if number is None:
            self.stale = False
        elif number > self.latest:
            self.latest, self.stale = number, False

    def admit(self, packet: AudioPacket) -> bool:
        if packet.generation is None:  # binary audio: belongs to the reply in progress
            return not self.stale
        self.reply(packet.generation)
        return packet.generation == self.latest and not self.stale


# ---- configuration ----------------------------------------------------------------------------


def endpoint(url: str) -> str:
    """`{url}/ws/agent`, with http(s) turned into ws(s); a url already ending in it is kept."""
    url = (url or DEFAULT_URL).rstrip("/")
    if url.startswith("http"):
        url = "ws" + url[4:]
    return url if url.endswith(AGENT_PATH) else url + AGENT_PATH


def rates_setting(value) -> tuple[int, dict | None]:
    """(input rate, the `rates` message or None) for the "rates" option."""
    if value in (None, False, ""):
        return DOCS_INPUT_RATE, None
    if value is True:
        value = {"input": SDK_INPUT_RATE}
    if not isinstance(value, dict):
        raise UpstreamError(
            'Lokutor option \'rates\' must be true or {"input": ..., "playback": ...}',
            permanent=True,
            code="lokutor.config",
        )
    input_rate, playback = value.get("input", SDK_INPUT_RATE), value.get("playback", OUTPUT_RATE)
    if input_rate not in RATES or playback not in RATES:
        raise UpstreamError(f"Lokutor rates must be among {RATES}", permanent=True, code="lokutor.config")
    return input_rate, {"type": "rates", "playback": playback, "input": input_rate}


def config_messages(session: Session, rates: dict | None) -> list[dict]:
    """The initialisation messages, in the docs' order, then the SDK's extras."""
    persona = getattr(session.topic, "persona", "") or ""
    messages = [
        {"type": "prompt", "data": persona},
        {"type": "voice", "data": session.voice},
        {"type": "language", "data": session.language},
    ]
    tools = _option(session, "tools")
    if tools:
        messages.append({"type": "tools", "data": tools})
    if rates:
        messages.append(rates)
    return messages


def _option(session: Session, key: str):
    return session.options.get(key, (session.config or {}).get(key))


# ---- the client -------------------------------------------------------------------------------


class LokutorUpstream(Client):
    # The agent socket takes audio only; Lokutor says `interrupted` itself and transcribes the user.
    capabilities = Capabilities(accepts_text=False, user_transcripts=True, barge_in_signal=True,
                                saves_transcript=False)  # fmt: skip

    def __init__(self, session: Session):
        self.session = session
        config = session.config or {}
        self.url = endpoint(config.get("url", ""))
        self.api_key = config.get("api_key", "")
        self._config_error: UpstreamError | None = None
        try:
            self.input_rate, self._rates = rates_setting(_option(session, "rates"))
        except UpstreamError as exc:
            self.input_rate, self._rates, self._config_error = DOCS_INPUT_RATE, None, exc
        self.output_rate = OUTPUT_RATE
        self.gate = GenerationGate()
        self.ws = None
        self._send_failed = False
        self._closing = False

    async def connect(self) -> None:
        if self._config_error:
            raise self._config_error
        if not self.api_key:
            raise UpstreamError("LOKUTOR_API_KEY is not set", permanent=True, code="lokutor.auth")
        try:
            self.ws = await websockets.connect(f"{self.url}?{urlencode({'api_key': self.api_key})}",
                                               open_timeout=OPEN_TIMEOUT, max_size=2**22,
                                               compression=None)  # fmt: skip
        except InvalidStatus as exc:
            raise self._refused(exc.response.status_code) from None
        except (OSError, websockets.WebSocketException, TimeoutError) as exc:
            message = self.scrub(f"Lokutor is unreachable: {exc}")
            raise UpstreamError(message, code="lokutor.connect") from None
        for message in config_messages(self.session, self._rates):
            await self._send(json.dumps(message))

    def _refused(self, status: int) -> UpstreamError:
        if status in (401, 403):
            return UpstreamError(f"Lokutor refused the API key (HTTP {status}); check LOKUTOR_API_KEY.",
                                 permanent=True, code="lokutor.auth")  # fmt: skip
        return UpstreamError(f"Lokutor refused the connection (HTTP {status}).", permanent=status < 500,
                             code="lokutor.connect")  # fmt: skip

    async def send_audio(self, pcm: bytes) -> None:
        await self._send(pcm)

    async def _send(self, data: str | bytes) -> None:
        if self._send_failed:
            return  # reported once; the reader reports how the connection ended
        try:
            await self.ws.send(data)
        except websockets.ConnectionClosed as exc:
            self._send_failed = True
            raise UpstreamError(self.scrub(f"Lokutor went away: {self._closed_text(exc)}"),
                                code="lokutor.closed") from None  # fmt: skip

    async def events(self) -> AsyncIterator[Event]:
        try:
            async for message in self.ws:
                for event in self._translate(message):
                    yield event
        except websockets.ConnectionClosedError as exc:  # anything but a clean 1000/1001 close
            if not self._closing:
                raise self._dropped(exc) from None

    def _translate(self, message: str | bytes) -> list[Event]:
        try:
            items = [parse_binary(message)] if isinstance(message, bytes) else parse_text(message)
        except Malformed as exc:
            return [Error("lokutor.malformed", self.scrub(f"Lokutor sent {exc}; it was ignored."))]
        return [event for item in items if (event := self._apply(item)) is not None]

    def _apply(self, item) -> Event | None:
        """Protocol markers update the generation state; base events pass (scrubbed) through."""
        match item:
            case Generation(number=number):
                self.gate.reply(number)
                return None
            case AudioPacket():
                return Audio(item.pcm, self.output_rate) if self.gate.admit(item) else None
            case ServerRates(playback=playback):
                self.output_rate = playback or self.output_rate
                return None
            case Interrupted():
                self.gate.interrupted()
                return item
            case Transcript(role="agent") if self.gate.stale:
                return Transcript(item.role, item.text, True, interrupted=True)  # the cut-short reply
            case Error():
                return Error(item.code, self.scrub(item.message))
            case Fatal():
                raise UpstreamError(self.scrub(item.message), permanent=True, code=item.code)
        return item

    def _dropped(self, exc: websockets.ConnectionClosed) -> UpstreamError:
        code = exc.rcvd.code if exc.rcvd else 1006
        permanent = code == 1008  # policy violation: the SDK does not retry it either
        return UpstreamError(self.scrub(f"Lokutor dropped the connection ({self._closed_text(exc)})"),
                             permanent=permanent, code="lokutor.closed")  # fmt: skip

    @staticmethod
    def _closed_text(exc: websockets.ConnectionClosed) -> str:
        if exc.rcvd is None:
            return "code 1006, no close frame"
        return f"code {exc.rcvd.code}" + (f": {exc.rcvd.reason}" if exc.rcvd.reason else "")

    def scrub(self, text: str) -> str:
        """`text` without the API key: it travels in the URL, so library errors may quote it."""
        return scrub(text, self.api_key)

    @property
    def refs(self) -> dict:
        return {"input_rate": self.input_rate, "rates_announced": self._rates is not None}

    async def close(self) -> None:
        if self._closing or self.ws is None:
            return
        self._closing = True
        try:
            await asyncio.wait_for(self.ws.close(), CLOSE_TIMEOUT)
        except (TimeoutError, websockets.WebSocketException, OSError):
            with contextlib.suppress(Exception):
                self.ws.transport.abort()
