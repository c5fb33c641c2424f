"""Speechmatics Flow (conversational AI) as an upstream, over its WebSocket or over LiveKit.

Written from the vendor's LiveKit page (shared/seeds/speechmatics-flow-livekit.txt) and, where
it is silent, from shared/protocols.md section 2 (the AsyncAPI spec and the vendor's clients).

WebSocket transport (``FLOW_TRANSPORT=websocket``, the default; media relayed through us):

* connect ``FLOW_URL`` (default ``wss://flow.api.speechmatics.com/v1/flow``) with
  ``Authorization: Bearer <SPEECHMATICS_API_KEY>``; keep-alive is WebSocket pings;
* ``StartConversation`` first and once: ``conversation_config`` (the topic's ``template_id``
  and ``template_variables``, with ``timezone`` added as the vendor's JS client does),
  ``audio_format`` raw pcm_s16le 16 kHz, and the topic's ``tools``; then wait up to 10 s for
  ``ConversationStarted`` before any audio;
* microphone audio as binary frames, each acknowledged by ``AudioAdded{seq_no}``; at most
  ``ACK_WINDOW`` (512) frames go unacknowledged, then ``send_audio`` waits for acks;
* agent audio: binary s16le 16 kHz, each frame acknowledged by ``AudioReceived{seq_no,
  buffering}`` with seq_no counting from 1;
* user transcripts from ``AddPartialTranscript``/``AddTranscript`` ``metadata.transcript``
  (``<sb>`` markup stripped); agent turns ``ResponseStarted`` -> audio -> ``ResponseCompleted``,
  or ``ResponseInterrupted{content}`` (what was actually spoken): `Interrupted` (the relay
  clears the browser) and the spoken part stored as an interrupted agent turn;
* ``ToolInvoke`` runs the demo function (sessions/functions.py) and is answered with
  ``ToolResult{id, status ok|rejected|failed, content}``; the topic's ``quiet_tools`` answer
  ``<NO_RESPONSE_REQUIRED/>`` so the agent says nothing about them;
* a typed turn is ``AddInput{input, interrupt_response, immediate}``;
* ``Info`` and ``Warning`` are shown to the user (`Error` events ``flow.info``/``flow.warning``),
  the call goes on; ``Error{type, reason}`` ends it (`UpstreamError` ``flow.<type>``);
* stop sends ``AudioEnded{last_seq_no}`` and waits up to 5 s for ``ConversationEnded`` (the
  relay's own close timeout may cut that wait shorter); the agent ends the call with
  ``ConversationEnding`` then ``ConversationEnded`` (`Ended`).

LiveKit transport (``FLOW_TRANSPORT=livekit``; direct media, see base.py ``direct_media``):
``connect()`` POSTs the ``StartConversation`` body (no ``audio_format``) to ``/v1/flow/livekit``
next to FLOW_URL; the answer ``{url, token, id}`` (``session_id`` accepted too) is a `Join` for
the owner's page, which joins the room and forwards every data-channel message to ``forward()``:
the same parser as the WebSocket transport turns them into events.

Close codes: Flow documents none; a socket closed without an ``Error`` is worded from
``FLOW_CLOSE_CODES`` (``code=type`` pairs; default the sibling Realtime API's table).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from urllib.parse import urlsplit, urlunsplit

import httpx
import websockets
from websockets.exceptions import InvalidStatus

from sessions import functions

from .base import (
    Audio,
    Capabilities,
    Client,
    Ended,
    Error,
    Event,
    Interrupted,
    Join,
    Session,
    Status,
    ToolCall,
    Transcript,
    UpstreamError,
    scrub,
)

DEFAULT_URL = "wss://flow.api.speechmatics.com/v1/flow"
FLOW_PATH = "/v1/flow"
LIVEKIT_PATH = "/v1/flow/livekit"
RATE = 16000  # both ways: we declare pcm_s16le 16 kHz; agent audio is always s16le 16 kHz
AUDIO_FORMAT = {"type": "raw", "encoding": "pcm_s16le", "sample_rate": RATE}
ACK_WINDOW = 512  # unacknowledged microphone frames at most (the vendor's Python client)
ACK_TIMEOUT = 30.0  # no AudioAdded for this long with a full window: Flow has stalled
START_TIMEOUT = 10.0  # for ConversationStarted (the vendor's JS client)
END_WAIT = 5.0  # for ConversationEnded after AudioEnded (the vendor's clients)
OPEN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
PING_INTERVAL, PING_TIMEOUT = 20.0, 60.0
BUFFERING = 0.01  # seconds of agent audio we hold before playing (what the SDKs report)
NO_RESPONSE = "<NO_RESPONSE_REQUIRED/>"
# The Realtime ASR API's close codes (Flow documents none): a setting, FLOW_CLOSE_CODES.
DEFAULT_CLOSE_CODES = {1003: "protocol_error", 1008: "policy_violation", 1011: "internal_error",
                       4001: "not_authorised", 4003: "not_allowed", 4005: "quota_exceeded",
                       4006: "timelimit_exceeded", 4013: "job_error"}  # fmt: skip
# How each fatal Error type is worded for the user (the reason follows).
ERROR_WORDS = {
    "not_authorised": "Speechmatics refused the API key; check SPEECHMATICS_API_KEY",
    "not_allowed": "Speechmatics does not allow this for the account",
    "quota_exceeded": "the Speechmatics account has no quota left (3 concurrent sessions, 50 hours a month)",
    "timelimit_exceeded": "the conversation reached Flow's time limit",
    "config_error": "Flow refused the conversation's configuration (check the topic's template_id)",
    "protocol_error": "Flow says we broke its protocol",
    "idle_timeout": "Flow ended the conversation after a long silence",
    "session_timeout": "the Flow session timed out",
    "asr_error": "Flow's speech recognition failed",
    "job_error": "Flow could not run the conversation",
    "internal_error": "Flow had an internal error",
}
SENTENCE_MARKS = re.compile(r"</?sb>")


class Malformed(ValueError):
    """A message from Flow we cannot read; reported, and the call goes on."""


# ---- pure parsing: one wire message -> its meaning ------------------------------------------


@dataclass(frozen=True)
class Started:
    id: str


@dataclass(frozen=True)
class Ack:
    """AudioAdded: Flow has our microphone frame `seq_no`."""

    seq_no: int


@dataclass(frozen=True)
class ToolInvoke:
    id: str
    name: str
    arguments: dict


@dataclass(frozen=True)
class Fatal:
    """An Error message: it ends the call."""

    type: str
    reason: str


@dataclass(frozen=True)
class ConversationEnded:
    """The last message before Flow closes."""


def parse_text(text: str) -> list:
    """A JSON text frame (or a forwarded data-channel message) as base events and markers."""
    try:
        message = json.loads(text)
    except ValueError:
        raise Malformed(f"text that is not JSON: {text[:60]!r}") from None
    return parse_message(message)


def parse_message(message) -> list:
    if not isinstance(message, dict) or not isinstance(message.get("message"), str):
        raise Malformed(f"JSON without a 'message': {json.dumps(message)[:60]}")
    handler = _HANDLERS.get(message["message"])
    if handler is None:
        return []  # Debug, legacy prompt/audio, new types: nothing for us to show
    try:
        return handler(message)
    except (TypeError, AttributeError, KeyError) as exc:
        raise Malformed(f"a {message['message']} message of unexpected shape ({exc!r})") from None


def clean(text: str) -> str:
    """Transcript text without Flow's ``<sb>`` sentence markup."""
    return " ".join(SENTENCE_MARKS.sub(" ", text).split())


def _seq_no(message: dict) -> int:
    seq_no = message["seq_no"]
    if not isinstance(seq_no, int) or isinstance(seq_no, bool):
        raise TypeError("seq_no is not a number")
    return seq_no


def _transcript(final: bool):
    def parse(message: dict) -> list:
        metadata = message["metadata"]
        text = clean(metadata["transcript"])
        if not text:
            return []
        start, end = metadata.get("start_time"), metadata.get("end_time")
        ms = [round(v * 1000) if isinstance(v, int | float) else None for v in (start, end)]
        return [Transcript("user", text, final, start_ms=ms[0], end_ms=ms[1])]

    return parse


def _content(message: dict) -> str:
    content = message.get("content", "")
    if not isinstance(content, str):
        raise TypeError("content is not text")
    return clean(content)


def _response_started(message: dict) -> list:
    content = _content(message)
    return [Status("speaking")] + ([Transcript("agent", content, False)] if content else [])


def _response_completed(message: dict) -> list:
    content = _content(message)
    return ([Transcript("agent", content, True)] if content else []) + [Status("listening")]


def _response_interrupted(message: dict) -> list:
    content = _content(message)
    spoken = [Transcript("agent", content, True, interrupted=True)] if content else []
    return [Interrupted(), *spoken, Status("listening")]


def _tool_invoke(message: dict) -> list:
    function = message["function"]
    name, arguments = function["name"], function.get("arguments") or {}
    if not isinstance(name, str) or not name:
        raise TypeError("a function without a name")
    if isinstance(arguments, str):  # the spec says an object; tolerate a JSON string
        try:
            arguments = json.loads(arguments)
        except ValueError:
            arguments = {"raw": arguments}
    if not isinstance(arguments, dict):
        arguments = {"value": arguments}
    return [ToolInvoke(str(message.get("id") or ""), name, arguments)]


def _notice(kind: str):
    def parse(message: dict) -> list:
        reason = message.get("reason") or message.get("type") or "(no reason given)"
        label = "Flow" if kind == "info" else "Flow warning"
        detail = f" ({message['type']})" if message.get("type") and message.get("reason") else ""
        return [Error(f"flow.{kind}", f"{label}: {reason}{detail}")]

    return parse


def _error(message: dict) -> list:
    kind = message.get("type")
    kind = kind if isinstance(kind, str) and re.fullmatch(r"[a-z_]{1,40}", kind) else "unknown_error"
    return [Fatal(kind, str(message.get("reason") or ""))]


_HANDLERS = {
    "ConversationStarted": lambda m: [Started(str(m.get("id") or ""))],
    "AudioAdded": lambda m: [Ack(_seq_no(m))],
    "AddPartialTranscript": _transcript(final=False),
    "AddTranscript": _transcript(final=True),
    "ResponseStarted": _response_started,
    "ResponseCompleted": _response_completed,
    "ResponseInterrupted": _response_interrupted,
    "ToolInvoke": _tool_invoke,
    "Info": _notice("info"),
    "Warning": _notice("warning"),
    "Error": _error,
    "ConversationEnding": lambda m: [],  # the agent's final words still play; Ended follows
    "ConversationEnded": lambda m: [ConversationEnded()],
}


def fatal_error(item: Fatal, secret: str = "") -> UpstreamError:
    """An Error message as what ends the call: code ``flow.<type>``, a worded reason."""
    words = ERROR_WORDS.get(item.type, f"Flow ended the conversation ({item.type})")
    reason = f": {item.reason}" if item.reason else ""
    return UpstreamError(scrub(f"{words[0].upper()}{words[1:]}{reason}", secret),
                         permanent=True, code=f"flow.{item.type}")  # fmt: skip


# ---- configuration ----------------------------------------------------------------------------


def close_codes(value) -> dict[int, str]:
    """FLOW_CLOSE_CODES (``"4001=not_authorised, 1008=policy_violation"``) over the default table."""
    table = dict(DEFAULT_CLOSE_CODES)
    if isinstance(value, dict):
        return {**table, **{int(k): str(v) for k, v in value.items()}}
    for pair in str(value or "").replace(";", ",").split(","):
        code, _, name = pair.partition("=")
        if code.strip().isdigit() and name.strip():
            table[int(code)] = name.strip()
    return table


def endpoint(url: str) -> str:
    """The WebSocket URL: ws(s) for http(s), ``/v1/flow`` added to a bare host."""
    url = (url or DEFAULT_URL).rstrip("/")
    if url.startswith("http"):
        url = "ws" + url[4:]
    return url if url.endswith(FLOW_PATH) else url + FLOW_PATH


def livekit_endpoint(url: str) -> str:
    """``/v1/flow/livekit`` beside the WebSocket URL, over http(s)."""
    parts = urlsplit(endpoint(url))
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path + "/livekit", "", ""))


def tool_configs(tools) -> list[dict]:
    """The topic's ``tools`` as Flow ToolConfigs: names of demo functions are described from
    sessions/functions.py; full ToolConfig objects pass as they are."""
    configs = []
    for tool in tools or ():
        if isinstance(tool, dict):
            configs.append(tool)
        elif isinstance(tool, str) and tool in functions.FUNCTIONS:
            configs.append(_described(functions.FUNCTIONS[tool]))
    return configs


def _described(function: functions.Function) -> dict:
    properties = {p.name: {"type": p.type, "description": p.description} for p in function.params}
    parameters = {"type": "object", "properties": properties,
                  "required": [p.name for p in function.params if p.required]}  # fmt: skip
    return {"type": "function", "function": {"name": function.name, "description": function.description,
                                             "parameters": parameters}}  # fmt: skip


def start_message(session: Session, timezone: str, *, audio: bool = True) -> dict:
    """StartConversation for the topic (the LiveKit exchange sends it without audio_format)."""
    options = session.options or {}
    given = options.get("template_variables") or {}
    variables = {"timezone": timezone, **{str(k): str(v) for k, v in given.items()}}
    message = {"message": "StartConversation",
               "conversation_config": {"template_id": str(options.get("template_id") or ""),
                                       "template_variables": variables}}  # fmt: skip
    if audio:
        message["audio_format"] = dict(AUDIO_FORMAT)
    tools = tool_configs(options.get("tools"))
    if tools:
        message["tools"] = tools
    return message


def local_timezone() -> str:
    """The server's IANA zone name where it can be read, else UTC."""
    try:
        from pathlib import Path

        link = str(Path("/etc/localtime").resolve())
        return link.split("zoneinfo/", 1)[1] if "zoneinfo/" in link else "UTC"
    except OSError:
        return "UTC"


# ---- the client -------------------------------------------------------------------------------


class FlowUpstream(Client):
    capabilities = Capabilities(accepts_text=True, user_transcripts=True, barge_in_signal=True,
                                saves_transcript=False)  # fmt: skip
    input_rate = RATE

    def __init__(self, session: Session):
        self.session = session
        config = session.config or {}
        self.url = endpoint(config.get("url", ""))
        self.api_key = config.get("api_key", "")
        self.transport = config.get("transport") or "websocket"
        self.timezone = config.get("timezone") or local_timezone()
        self.close_codes = close_codes(config.get("close_codes"))
        self.ack_timeout = float(config.get("ack_timeout", ACK_TIMEOUT))
        self.quiet = set((session.options or {}).get("quiet_tools") or ())
        self.allowed = {t if isinstance(t, str) else t.get("function", {}).get("name")
                        for t in (session.options or {}).get("tools") or ()}  # fmt: skip
        if self.transport == "livekit":
            self.capabilities = replace(type(self).capabilities, accepts_text=False, direct_media=True)
        self.ws = None
        self.conversation_id = ""
        self.livekit_id = ""
        self._queue: asyncio.Queue = asyncio.Queue()
        self._reader: asyncio.Task | None = None
        self._sent = 0  # microphone frames sent
        self._acked = 0  # the highest AudioAdded seq_no
        self._ack = asyncio.Event()
        self._received = 0  # agent audio frames received (AudioReceived seq_no)
        self._ended = asyncio.Event()  # ConversationEnded came
        self._fatal: UpstreamError | None = None  # the Error message that ended the call, if one did
        self._closing = False

    # ---- connecting -----------------------------------------------------------------------

    async def connect(self) -> None:
        if not self.api_key:
            raise UpstreamError("SPEECHMATICS_API_KEY is not set", permanent=True, code="flow.not_authorised")
        if not (self.session.options or {}).get("template_id"):
            raise UpstreamError("The topic has no Flow template_id (its Flow options need one).",
                                permanent=True, code="flow.config_error")  # fmt: skip
        if self.transport == "livekit":
            await self._join_livekit()
            return
        await self._open()
        await self._send_json(start_message(self.session, self.timezone))
        await self._await_start()
        self._reader = asyncio.create_task(self._read(), name="flow-reader")

    async def _open(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        try:
            self.ws = await websockets.connect(self.url, additional_headers=headers,
                                               open_timeout=OPEN_TIMEOUT, ping_interval=PING_INTERVAL,
                                               ping_timeout=PING_TIMEOUT, max_size=2**22,
                                               compression=None)  # fmt: skip
        except InvalidStatus as exc:
            raise self._refused(exc.response.status_code) from None
        except (OSError, websockets.WebSocketException, TimeoutError) as exc:
            raise UpstreamError(self.scrub(f"Flow is unreachable: {exc}"), code="flow.connect") from None

    def _refused(self, status: int) -> UpstreamError:
        if status in (401, 403):
            message = f"Speechmatics refused the API key (HTTP {status}); check SPEECHMATICS_API_KEY."
            return UpstreamError(message, permanent=True, code="flow.not_authorised")
        return UpstreamError(f"Flow refused the connection (HTTP {status}).", permanent=status < 500,
                             code="flow.connect")  # fmt: skip

    async def _await_start(self) -> None:
        """Read until ConversationStarted (at most START_TIMEOUT): notices before it are kept."""
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while True:
                    message = await self.ws.recv()
                    for item in self._items(message):
                        if isinstance(item, Started):
                            self.conversation_id = item.id
                            return
                        await self._apply(item)
        except TimeoutError:
            await self._abort()
            raise UpstreamError(f"Flow did not start the conversation within {START_TIMEOUT:g} s.",
                                code="flow.timeout") from None  # fmt: skip
        except websockets.ConnectionClosed as exc:
            raise self._dropped(exc, "before the conversation started") from None

    async def _join_livekit(self) -> None:
        """The LiveKit exchange: our key buys a short-lived room token for the owner's page."""
        body = start_message(self.session, self.timezone, audio=False)
        headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
        try:
            async with httpx.AsyncClient(timeout=OPEN_TIMEOUT) as http:
                response = await http.post(livekit_endpoint(self.url), json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise UpstreamError(self.scrub(f"Flow is unreachable: {exc}"), code="flow.connect") from None
        if response.status_code in (401, 403):
            raise self._refused(response.status_code)
        if not 200 <= response.status_code < 300:
            detail = self.scrub(response.text[:200])
            raise UpstreamError(f"Flow refused the LiveKit session (HTTP {response.status_code}): {detail}",
                                permanent=response.status_code < 500, code="flow.livekit")  # fmt: skip
        url, token, ident = _livekit_answer(response)
        self.livekit_id = ident
        self._put(Join("livekit", url, token, call_id=ident))

    # ---- sending --------------------------------------------------------------------------

    async def send_audio(self, pcm: bytes) -> None:
        if self.ws is None:
            return  # direct media: the page sends the microphone to LiveKit itself
        while self._sent - self._acked >= ACK_WINDOW:
            self._ack.clear()
            try:
                await asyncio.wait_for(self._ack.wait(), self.ack_timeout)
            except TimeoutError:
                raise UpstreamError(f"Flow stopped acknowledging audio ({ACK_WINDOW} frames unacknowledged).",
                                    code="flow.stalled") from None  # fmt: skip
        await self._send(pcm)
        self._sent += 1

    async def send_text(self, text: str) -> None:
        await self._send_json({"message": "AddInput", "input": text, "interrupt_response": True,
                               "immediate": True})  # fmt: skip
        self._put(Transcript("user", text, True))

    async def _send_json(self, message: dict) -> None:
        await self._send(json.dumps(message))

    async def _send(self, data: str | bytes) -> None:
        try:
            await self.ws.send(data)
        except websockets.ConnectionClosed as exc:
            # After an Error message, the send that finds the socket closed reports that Error: the
            # relay shows the writer's failure first, and "closed" would hide the service's reason.
            if self._fatal is None and (self._closing or self._ended.is_set()):
                # We sent AudioEnded, or the agent ended the call: the service closing the socket is
                # the end we asked for. An ack or a microphone frame still on its way is moot, and
                # failing here would end the reader before ConversationEnded.
                return
            raise self._fatal or self._dropped(exc, "while we were sending") from None

    # ---- receiving ------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[Event]:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            if isinstance(item, UpstreamError):
                raise item
            yield item

    async def forward(self, message) -> None:
        """A data-channel message the page forwarded (LiveKit): the WebSocket transport's parser."""
        text = message if isinstance(message, str) else json.dumps(message)
        for item in self._items(text):
            await self._apply(item)

    async def _read(self) -> None:
        """The WebSocket's messages into events, until it closes (owned by close())."""
        try:
            async for message in self.ws:
                for item in self._items(message):
                    await self._apply(item)
        except websockets.ConnectionClosed as exc:
            if not (self._closing or self._ended.is_set()):
                self._put(self._dropped(exc, "during the conversation"))
        except UpstreamError as exc:
            self._put(exc)
        else:
            if not (self._closing or self._ended.is_set()):
                self._put(self._dropped(None, "during the conversation"))
        finally:
            self._put(None)

    def _items(self, message: str | bytes) -> list:
        if isinstance(message, bytes):
            return (
                [Audio(message, RATE)]
                if len(message) % 2 == 0
                else [
                    Error(
                        "flow.malformed", f"Flow sent an audio frame of {len(message)} bytes; it was ignored."
                    )
                ]
            )
        try:
            return parse_text(message)
        except Malformed as exc:
            return [Error("flow.malformed", self.scrub(f"Flow sent {exc}; it was ignored."))]

    async def _apply(self, item) -> None:
        match item:
            case Audio():
                self._received += 1
                await self._send_json({"message": "AudioReceived", "seq_no": self._received,
                                       "buffering": BUFFERING})  # fmt: skip
                self._put(item)
            case Ack(seq_no=seq_no):
                self._acked = max(self._acked, seq_no)
                self._ack.set()
            case ToolInvoke():
                await self._run_tool(item)
            case Fatal():
                self._fatal = fatal_error(item, self.api_key)
                raise self._fatal
            case ConversationEnded():
                self._ended.set()
                if not self._closing:
                    self._put(Ended("the agent ended the conversation"))
            case Started():
                pass  # a second one: nothing new
            case Error():
                self._put(Error(item.code, self.scrub(item.message)))
            case _:
                self._put(item)

    async def _run_tool(self, invoke: ToolInvoke) -> None:
        result = functions.call(invoke.name, invoke.arguments, allowed=self.allowed)
        failed = isinstance(result, dict) and result.get("status") == "failed"
        status = ("rejected" if str(result.get("error", "")).startswith("unknown function") else "failed") \
            if failed else "ok"  # fmt: skip
        content = NO_RESPONSE if invoke.name in self.quiet and not failed else json.dumps(result)
        if self.ws is not None:  # over LiveKit the answer would go through the page's data channel
            await self._send_json({"message": "ToolResult", "id": invoke.id, "status": status,
                                   "content": content})  # fmt: skip
        self._put(ToolCall(invoke.id, invoke.name, invoke.arguments, result))

    def _put(self, item) -> None:
        self._queue.put_nowait(item)

    def _dropped(self, exc: websockets.ConnectionClosed | None, when: str) -> UpstreamError:
        frame = exc.rcvd if exc is not None else None
        code = frame.code if frame else 1006
        name = self.close_codes.get(code, "")
        detail = f"code {code}" + (f" {name}" if name else "")
        detail += f": {frame.reason}" if frame and frame.reason else ""
        permanent = code in (1003, 4001, 4003, 4005)
        return UpstreamError(self.scrub(f"Flow closed the connection {when} ({detail})."),
                             permanent=permanent, code=f"flow.{name or 'closed'}")  # fmt: skip

    def scrub(self, text: str) -> str:
        return scrub(text, self.api_key)

    @property
    def refs(self) -> dict:
        refs = {"transport": self.transport}
        if self.conversation_id:
            refs["conversation_id"] = self.conversation_id
        if self.livekit_id:
            refs["livekit_id"] = self.livekit_id
        return refs

    # ---- ending ---------------------------------------------------------------------------

    async def close(self) -> None:
        """AudioEnded, then up to END_WAIT for ConversationEnded, then the socket closes. Idempotent."""
        if self._closing:
            return
        self._closing = True
        try:
            if self.ws is not None and self._reader is not None and not self._ended.is_set():
                with contextlib.suppress(UpstreamError):
                    await self._send_json({"message": "AudioEnded", "last_seq_no": self._sent})
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._ended.wait(), END_WAIT)
            if self.ws is not None:
                with contextlib.suppress(TimeoutError, websockets.WebSocketException, OSError):
                    await asyncio.wait_for(self.ws.close(), CLOSE_TIMEOUT)
        finally:
            await self._abort()

    async def _abort(self) -> None:
        """Drop the socket and the reader at once (also when close() is cancelled mid-wait)."""
        if self.ws is not None:
            with contextlib.suppress(Exception):
                self.ws.transport.abort()
        reader, self._reader = self._reader, None
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        self._put(None)


def _livekit_answer(response: httpx.Response) -> tuple[str, str, str]:
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not answer.get("url") or not answer.get("token"):
        raise UpstreamError("Flow's LiveKit answer has no url and token.", code="flow.livekit")
    ident = answer.get("id") or answer.get("session_id") or ""
    return str(answer["url"]), str(answer["token"]), str(ident)
