"""Liku voice chat (med2lab): REST login and init, then audio over the `chat-stream` WebSocket.

Written from the vendor's guide (shared/seeds/liku-websocket-guide.txt); the
sandbox (playground/sandbox/liku.py) is written separately from the same guide.

The protocol as we read it:

1. Token: ``POST {api}/api/liku/authentication/`` with ``{"email", "password"}``
   answers ``{"token_key": "<40 hex>"}``. The token is, in order of preference,
   the logged-in user's own (kept server side by sessions/auth_liku.py and passed
   by the consumer as ``config["user_token"]``), the service token ``LIKU_TOKEN``,
   or a login with ``LIKU_EMAIL``/``LIKU_PASSWORD`` when the call starts.
2. ``GET {chat}/api/init-websocket?token=&topic_id=[&face_id][&liku_id][&language]``
   answers plain text: the connection data, sent back verbatim (the guide reads
   it with ``response.text()``). REST calls go to the chat host over http(s).
3. ``ws {chat}/chat-stream``: the first frame is ``{"connection_data": "..."}``;
   the server "confirms connection is established" (no message shown, and the guide's
   own client never waits for one), then
   binary s16le 16 kHz goes in, in chunks of ``chunk_bytes`` (4096, the guide's
   recommendation), and binary s16le 24 kHz comes out, with JSON text messages
   ``{"type": "user_transcript"|"assistant_transcript"|"assistant_message",
   "text", "message_id", "response_id"?, "status"?}``.
4. ``POST {chat}/api/save-transcript`` with ``Authorization: Token <token>`` and
   ``{"connection_data", "topic_id", "conversation_id"}`` after the call. We call it from the
   outbox worker (sessions/outbox.py) through the class method `LikuUpstream.save_transcript`,
   with the refs the call left (see "Saving" below).

Decisions where the guide is silent:

* Confirmation: after sending the connection data we wait ``confirm_wait_ms``
  (1000 ms, ``LIKU_CONFIRM_WAIT_MS``) for a
  frame. Whatever comes is handled (a confirmation, the first audio, a close: 4000 is
  invalid data); silence counts as confirmed, since a server may say nothing until it
  hears audio.
* Finality (the guide's rule): a transcript with no ``status`` or ``"completed"`` is final.
  The words the guide does not show are settings: ``partial_statuses`` (default
  ``in_progress``, ``partial``, ``pending``, ``streaming``) mark a partial,
  ``cut_short_statuses`` (``incomplete``, ``cancelled``, ``interrupted``) a final agent
  turn cut short. Any other word is taken as final, so nothing said is lost.
* One reply, one turn: the guide's ``assistant_transcript`` carries ``message_id`` and
  ``response_id``, its ``assistant_message`` ``message_id``; a reply may come in either
  form or both. Every id an agent message carries is linked to its reply (the turn's id is
  the first seen, ``response_id`` before ``message_id``), and a reply already final drops
  any later form of it; a final repeating the previous reply's text with no user turn in
  between is the same reply too (ids we cannot link).
* ``conversation_id`` for save-transcript: the one the server gives in any
  message (``"conversation_id"`` key, e.g. in its confirmation), else our own
  conversation uuid (the guide does not say where it comes from).
* Liku sends no barge-in signal: capability ``barge_in_signal=False`` makes the relay run
  its own VAD and clear the browser when the user talks over the agent.
* Reconnection (the guide asks for exponential backoff): when the socket drops
  mid-call, `events()` yields a non-permanent ``Error`` ("reconnecting") and
  reconnects with the same connection data after 0.5, 1, 2, 4, 8 s (config
  ``reconnect_attempts``/``reconnect_delay``/``reconnect_max_delay``); the relay
  keeps running, so the same conversation goes on. Close 4000 (invalid
  connection data) gets a clear error and a FRESH init before the next attempt;
  fresh data refused again, a rejected token, or all attempts failing end the
  call: `events()` raises the ``UpstreamError`` (base.py's rule). A close 1000
  (normal closure) or 1005 (no status), the guide's normal ends, ends the call cleanly.
* Saving (the guide shows only the three fields): our body adds ``"transcript"``, the turns as
  reviewed (``[{"sequence", "role", "text"}]``), which a DRF serializer that does not know the
  field ignores, and the header ``Idempotency-Key`` (``LIKU_IDEMPOTENCY_HEADER``; ``none`` sends
  none) with one key per version of a transcript, so that a save repeated after our worker died
  mid-request is stored once by a server that honours it (the sandbox does). The token is the
  user's own where the call used it (kept with the queued save), else the service's
  (``LIKU_TOKEN``, or a fresh login with ``LIKU_EMAIL``/``LIKU_PASSWORD``). HTTP 4xx (but 408
  and 429) is permanent, 5xx, timeouts and connection errors are worth another try.
* Secrets: no message we raise contains the token, password or a URL with the
  token (httpx errors are reported by type only).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import httpx
import websockets

from sessions.audio import Rechunker

from .base import (
    Audio,
    Capabilities,
    Client,
    Ended,
    Error,
    Event,
    SaveRequest,
    Session,
    Transcript,
    UpstreamError,
    scrub,
)

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://torooc-liku-api.med2lab.com"
DEFAULT_CHAT_URL = "wss://voice-liku-chat.med2lab.com"
OUTPUT_RATE = 24000
CHUNK_BYTES = 4096
INVALID_CONNECTION_DATA = 4000
STABLE_S = 10.0  # a connection that lived this long resets the reconnect budget
CONFIRM_WAIT_S = 1.0  # silence this long after the connection data counts as confirmed
NORMAL_ENDS = {1000: "Liku ended the conversation", 1005: "Liku ended the conversation (no status)"}
PARTIAL = frozenset({"in_progress", "partial", "pending", "streaming"})
CUT_SHORT = frozenset({"incomplete", "cancelled", "interrupted"})
MAX_REPLY_IDS = 256  # ids of recent agent replies kept for de-duplication
SPEAKERS = {"user_transcript": "user", "assistant_transcript": "agent", "assistant_message": "agent"}
IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRYABLE_4XX = frozenset({408, 429})  # a client error that may pass: timed out, rate limited


# ---- configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoints:
    login: str
    init: str
    save: str
    stream: str


def endpoints(config: dict) -> Endpoints:
    """The four URLs; the chat host serves REST over http(s) and the stream over ws(s)."""
    api = (config.get("api_url") or DEFAULT_API_URL).rstrip("/")
    chat = (config.get("chat_url") or DEFAULT_CHAT_URL).rstrip("/")
    scheme, _, rest = chat.partition("://")
    http = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    ws = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    return Endpoints(
        login=f"{api}/api/liku/authentication/",
        init=f"{http}://{rest}/api/init-websocket",
        save=f"{http}://{rest}/api/save-transcript",
        stream=f"{ws}://{rest}/chat-stream",
    )


def status_words(value, default: frozenset[str]) -> frozenset[str]:
    """A status-word setting: a comma-separated string or a list; unset or empty gives `default`."""
    if not value:
        return default
    words = value.split(",") if isinstance(value, str) else value
    return frozenset(str(w).strip() for w in words if str(w).strip())


def init_params(session: Session) -> dict[str, str]:
    """Query parameters of init-websocket besides the token: the topic's Liku options and
    the language picked for the conversation (the options' own `language` is the fallback)."""
    options = session.options or {}
    params = {"topic_id": str(options.get("topic_id", "")).strip()}
    for key in ("face_id", "liku_id"):
        if str(options.get(key, "")).strip():
            params[key] = str(options[key]).strip()
    language = session.language or str(options.get("language", "")).strip()
    if language:
        params["language"] = language
    return params


# ---- messages (pure) ---------------------------------------------------------------------


def decode(text: str) -> dict | Error:
    """A text frame as a JSON object, or the error event that says why it is not one."""
    try:
        data = json.loads(text)
    except ValueError:
        return Error("liku.bad_message", f"Liku sent a text message that is not JSON: {text[:60]!r}")
    if not isinstance(data, dict):
        return Error("liku.bad_message", "Liku sent a JSON message that is not an object.")
    return data


def to_event(message: dict, partial: frozenset[str] = PARTIAL, cut_short: frozenset[str] = CUT_SHORT
             ) -> Event | None:  # fmt: skip
    """One JSON message as an event; None for messages that carry nothing for us
    (the connection confirmation, types we do not know). No status or "completed" is final;
    a word in `partial` is a partial, one in `cut_short` an agent turn cut short."""
    kind = message.get("type")
    if kind == "error":  # not in the guide; shown rather than dropped if it ever comes
        return Error("liku.error", f"Liku reported an error: {str(message.get('message') or '')[:200]}")
    role = SPEAKERS.get(kind) if isinstance(kind, str) else None
    if role is None:
        return None
    text, status = message.get("text"), message.get("status")
    if not isinstance(text, str) or not (status is None or isinstance(status, str)):
        return Error("liku.bad_message", f"Liku sent {kind} without text.")
    ident = message.get("response_id") if role == "agent" else None
    ident = str(ident or message.get("message_id") or "")
    final = status is None or status == "completed" or status not in partial
    return Transcript(role, text, final, ident, interrupted=role == "agent" and status in cut_short)


def reply_ids(message: dict) -> list[str]:
    """Every id an agent message carries, `response_id` first."""
    ids = (message.get("response_id"), message.get("message_id"))
    return [str(i) for i in ids if isinstance(i, str | int) and str(i)]


class Replies:
    """Which agent replies were seen and which are final, under every id they came with, so that
    one reply sent as assistant_transcript and assistant_message (in any order) is one turn."""

    def __init__(self):
        self._alias: dict[str, str] = {}  # any id -> the reply's id (the first seen)
        self._final: set[str] = set()
        self._last: tuple[str, str] | None = None  # (id, text) of the last final reply, until the user talks

    def boundary(self) -> None:
        """The user spoke, or a new socket began: the next reply's words are its own."""
        self._last = None

    def admit(self, event: Transcript, ids: list[str]) -> Transcript | None:
        """`event` under its reply's id, or None when that reply is already final (a repeat)."""
        known = next((self._alias[i] for i in ids if i in self._alias), None)
        if known is None and event.final and self._last and self._last[1] == event.text:
            known = self._last[0]  # the same words again, ids we cannot link: the same reply
        reply = known or event.id or (ids[0] if ids else "")
        for i in ids:
            self._alias[i] = reply
        self._trim()
        if reply and reply in self._final:
            return None
        if event.final:
            self._final.add(reply)
            self._last = (reply, event.text)
        return replace(event, id=reply) if reply != event.id else event

    def _trim(self) -> None:
        while len(self._alias) > MAX_REPLY_IDS:
            self._alias.pop(next(iter(self._alias)))
        if len(self._final) > MAX_REPLY_IDS:
            self._final &= set(self._alias.values())


def server_conversation_id(message: dict) -> str:
    value = message.get("conversation_id")
    return str(value) if isinstance(value, str | int) and str(value) else ""


def error_detail(response: httpx.Response) -> str:
    """The `detail` (DRF style) or first field error of an error response, shortened."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        if "detail" in body:
            return str(body["detail"])[:200]
        for value in body.values():
            return str(value[0] if isinstance(value, list) and value else value)[:200]
    return str(body)[:200]


# ---- REST --------------------------------------------------------------------------------


async def authenticate(url: str, email: str, password: str, wait_s: float = 10.0) -> str:
    """Liku's login: the token_key for `email`/`password`. Also used by sessions/auth_liku.py."""
    try:
        async with httpx.AsyncClient(timeout=wait_s) as http:
            response = await http.post(url, json={"email": email, "password": password},
                                       headers={"Accept": "application/json"})  # fmt: skip
    except httpx.HTTPError as exc:
        message = f"Liku login is unreachable ({type(exc).__name__})."
        raise UpstreamError(message, code="liku.unreachable") from None
    if response.status_code in (400, 401, 403):
        message = "Liku refused the login: wrong email or password."
        raise UpstreamError(message, permanent=True, code="liku.auth")
    if not response.is_success:
        raise UpstreamError(f"Liku login failed (HTTP {response.status_code}).", code="liku.unavailable")
    try:
        token = response.json().get("token_key")
    except (ValueError, AttributeError):
        token = None
    if not isinstance(token, str) or not token:
        raise UpstreamError("Liku login answered without a token_key.", permanent=True, code="liku.auth")
    return token


# ---- saving (without a call) -----------------------------------------------------------


def user_token(config: dict) -> str:
    """The user's own token, only against the service it came from, never against a sandbox."""
    return "" if config.get("sandbox") else config.get("user_token") or ""


async def save_token(config: dict, wait_s: float) -> str:
    """The token to save with: the user's own, the service token, or a fresh service login."""
    token = user_token(config) or config.get("token") or ""
    if token:
        return token
    email, password = config.get("email"), config.get("password")
    if not (email and password):
        message = "No Liku credentials to save with: set LIKU_TOKEN or LIKU_EMAIL and LIKU_PASSWORD."
        raise UpstreamError(message, permanent=True, code="liku.auth")
    return await authenticate(endpoints(config).login, email, password, wait_s)


def save_body(request: SaveRequest) -> dict:
    refs = request.refs or {}
    connection_data = refs.get("connection_data") or ""
    if not connection_data:
        raise UpstreamError("Nothing to save: the Liku chat never started.", permanent=True, code="liku.save")
    topic_id = str(refs.get("topic_id") or (request.options or {}).get("topic_id") or "")
    return {
        "connection_data": connection_data,
        "topic_id": topic_id,
        "conversation_id": str(refs.get("conversation_id") or request.conversation_id),
        "transcript": [
            {"sequence": t["sequence"], "role": t["role"], "text": t["text"]} for t in request.turns
        ],
    }


def save_headers(config: dict, token: str, key: str) -> dict:
    headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
    name = str(config.get("idempotency_header") or IDEMPOTENCY_HEADER).strip()
    if key and name.lower() != "none":
        headers[name] = key
    return headers


def save_outcome(response: httpx.Response, secrets: tuple[str, ...]) -> dict:
    """The answer of a successful save, or the UpstreamError that says why not (4xx permanent)."""
    if not response.is_success:
        detail = scrub(error_detail(response), *secrets)
        status = response.status_code
        permanent = 400 <= status < 500 and status not in RETRYABLE_4XX
        raise UpstreamError(f"Liku did not save the transcript (HTTP {status}: {detail}).",
                            permanent=permanent, code="liku.save")  # fmt: skip
    try:
        data = response.json()
    except ValueError:
        return {"text": response.text[:500]}
    return data if isinstance(data, dict) else {"response": data}


class LikuUpstream(Client):
    input_rate = 16000
    # Speech only; Liku never says it stopped (the relay's own VAD clears the browser); it has a
    # save-transcript API, which the outbox worker calls after the call (`save_transcript` below).
    capabilities = Capabilities(accepts_text=False, user_transcripts=True, barge_in_signal=False,
                                saves_transcript=True)  # fmt: skip

    def __init__(self, session: Session):
        config = session.config or {}
        self.config = config
        self.urls = endpoints(config)
        self.params = init_params(session)
        self.conversation_id = session.conversation_id
        self.server_conversation_id = ""
        own = user_token(config)
        self._own_token = bool(own)
        self._token = own or config.get("token") or ""
        self._connection_data = ""
        self._chunks = Rechunker(int(config.get("chunk_bytes") or CHUNK_BYTES))
        self._attempts = int(config.get("reconnect_attempts", 5))
        self._delay = float(config.get("reconnect_delay", 0.5))
        self._max_delay = float(config.get("reconnect_max_delay", 8.0))
        wait_ms = config.get("confirm_wait_ms")
        self._confirm_wait = CONFIRM_WAIT_S if wait_ms is None else wait_ms / 1000
        self._partial = status_words(config.get("partial_statuses"), PARTIAL)
        self._cut_short = status_words(config.get("cut_short_statuses"), CUT_SHORT)
        self._http_timeout = float(config.get("http_timeout", 10.0))
        self._ws = None
        self._first: str | bytes | None = None  # the confirmation, or whatever came first
        self._connected_at = 0.0
        self._close_code: int | None = None
        self._failures = 0  # reconnect attempts used (see _reconnect)
        self._carry = b""  # an odd byte of agent audio waiting for its pair
        self._replies = Replies()
        self._closed = asyncio.Event()

    # ---- the Upstream interface ------------------------------------------------------

    async def connect(self) -> None:
        if not self.params["topic_id"]:
            raise UpstreamError("This topic has no Liku topic_id: add it to the topic's provider options.",
                                permanent=True, code="liku.config")  # fmt: skip
        await self._open(fresh=True)

    async def send_audio(self, pcm: bytes) -> None:
        for chunk in self._chunks.push(pcm):
            ws = self._ws
            if ws is None:
                continue
            try:
                await ws.send(chunk)
            except websockets.ConnectionClosed:
                pass  # the reader sees the close and reconnects; audio of the gap is lost

    async def events(self) -> AsyncIterator[Event]:
        while True:
            async for event in self._read():
                yield event
            if self._closed.is_set():
                return
            if self._close_code in NORMAL_ENDS:  # the guide's normal closures: no reconnecting
                yield Ended(NORMAL_ENDS[self._close_code])
                return
            yield self._drop_notice()
            failure = await self._reconnect()
            if failure is not None:
                raise failure
            if self._closed.is_set():
                await self._shut(self._ws)
                return

    @property
    def refs(self) -> dict:
        """What identifies this call at Liku, kept with the conversation (server side only)."""
        return {
            "topic_id": self.params.get("topic_id", ""),
            "conversation_id": self.server_conversation_id or self.conversation_id,
            "connection_data": self._connection_data,
        }

    async def close(self) -> None:
        self._closed.set()
        await self._shut(self._ws)

    @classmethod
    async def save_transcript(cls, request: SaveRequest) -> dict:
        """Save a transcript with Liku, no call needed (the outbox worker calls this)."""
        config = request.config or {}
        timeout = float(config.get("http_timeout", 10.0))
        body = save_body(request)
        token = await save_token(config, timeout)
        headers = save_headers(config, token, request.idempotency_key)
        try:
            async with httpx.AsyncClient(timeout=timeout) as http:
                response = await http.post(endpoints(config).save, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"Liku is unreachable, could not save the transcript ({type(exc).__name__}).",
                                code="liku.unreachable") from None  # fmt: skip
        return save_outcome(response, (token, config.get("password") or ""))

    # ---- connecting ------------------------------------------------------------------

    async def _open(self, fresh: bool) -> None:
        """Token, connection data (new when `fresh` or none yet) and a confirmed socket."""
        if not self._token:
            self._token = await self._login()
        if fresh or not self._connection_data:
            self._connection_data = await self._init()
        try:
            self._ws = await self._dial()
        except _Refused:
            if fresh:  # data issued a moment ago and refused: retrying cannot help
                message = "Liku refused its own new connection data (close 4000: invalid connection data)."
                raise UpstreamError(message, permanent=True, code="liku.connection_data") from None
            raise
        self._connected_at = time.monotonic()

    async def _login(self) -> str:
        email, password = self.config.get("email"), self.config.get("password")
        if not (email and password):
            message = ("No Liku credentials: log in with your Liku account, or set LIKU_TOKEN or "
                       "LIKU_EMAIL and LIKU_PASSWORD.")  # fmt: skip
            raise UpstreamError(message, permanent=True, code="liku.auth")
        return await authenticate(self.urls.login, email, password, self._http_timeout)

    async def _init(self, relogin: bool = True) -> str:
        params = {"token": self._token, **self.params}
        response = await self._http("get", self.urls.init, "start a chat", params=params)
        if response.status_code in (401, 403):
            if relogin and self._logs_in():  # our service login may have expired: once with a new one
                self._token = await self._login()
                return await self._init(relogin=False)
            raise UpstreamError(f"Liku rejected the token (HTTP {response.status_code}); log in again.",
                                permanent=True, code="liku.auth")  # fmt: skip
        return self._connection_data_from(response)

    def _logs_in(self) -> bool:
        """Whether our token comes from a service login (not the user's, not LIKU_TOKEN)."""
        return not self._own_token and not self.config.get("token") and bool(self.config.get("email"))

    def _connection_data_from(self, response: httpx.Response) -> str:
        if response.status_code in (400, 404, 422):
            detail = self._scrub(error_detail(response))
            raise UpstreamError(f"Liku could not start a chat for topic {self.params['topic_id']}: {detail}",
                                permanent=True, code="liku.init")  # fmt: skip
        if not response.is_success:
            raise UpstreamError(f"Liku could not start a chat (HTTP {response.status_code}).",
                                code="liku.unavailable")  # fmt: skip
        if not response.text.strip():
            raise UpstreamError("Liku returned empty connection data.", code="liku.init")
        return response.text  # verbatim, as the guide's client sends it back

    async def _dial(self):
        """Open chat-stream and send the connection data; a frame within `confirm_wait` is kept
        for the reader (a confirmation, audio, or a close), silence counts as confirmed."""
        try:
            ws = await websockets.connect(self.urls.stream, open_timeout=10, max_size=2**22, compression=None)
        except (OSError, websockets.WebSocketException, TimeoutError) as exc:
            raise UpstreamError(f"Liku chat is unreachable ({type(exc).__name__}).",
                                code="liku.unreachable") from None  # fmt: skip
        try:
            await ws.send(json.dumps({"connection_data": self._connection_data}))
            self._first = await asyncio.wait_for(ws.recv(), self._confirm_wait)
        except asyncio.CancelledError:
            ws.transport.abort()  # close() came first: drop the half-open socket, no handshake
            raise
        except websockets.ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
            if code == INVALID_CONNECTION_DATA:
                raise _Refused() from None
            raise UpstreamError(f"Liku closed the chat before confirming it ({code}).",
                                code="liku.unreachable") from None  # fmt: skip
        except TimeoutError:
            self._first = None  # silence: the guide shows no confirmation message
        return ws

    async def _reconnect(self) -> UpstreamError | None:
        """Reconnect with exponential backoff: None when connected (or closed), else what ends the call.

        `_failures` counts failed attempts and connections that dropped again within STABLE_S,
        so a server that accepts and drops at once still runs out of attempts."""
        while self._failures < self._attempts:
            delay = min(self._max_delay, self._delay * 2**self._failures)
            self._failures += 1
            if await self._closed_within(delay):
                return None
            try:
                await self._unless_closed(self._open(fresh=self._close_code == INVALID_CONNECTION_DATA))
                return None
            except _Refused:
                self._close_code = INVALID_CONNECTION_DATA  # the next attempt gets fresh data
            except UpstreamError as exc:
                if exc.permanent:
                    return exc
                log.info("liku reconnect attempt %d failed: %s", self._failures, exc.message)
        return UpstreamError(f"Lost the connection to Liku and could not reconnect after {self._attempts} "
                             "attempts.", permanent=True, code="liku.lost")  # fmt: skip

    def _drop_notice(self) -> Error:
        """What the user sees while we reconnect; a connection that lived long resets the budget."""
        if time.monotonic() - self._connected_at >= STABLE_S:
            self._failures = 0
        if self._close_code == INVALID_CONNECTION_DATA:
            return Error("liku.connection_data", "Liku closed the chat: invalid connection data (4000). "
                                                 "Getting new connection data and reconnecting…")  # fmt: skip
        return Error("liku.reconnecting", f"Lost the connection to Liku ({self._close_code}); reconnecting…")

    # ---- reading ---------------------------------------------------------------------

    async def _read(self) -> AsyncIterator[Event]:
        """Events of the current socket until it closes; its close code is left in _close_code."""
        ws, self._close_code = self._ws, None
        if ws is None:
            return
        self._replies.boundary()
        first, self._first = self._first, None
        if first is not None:
            for event in self._translate(first):
                yield event
        try:
            async for message in ws:
                for event in self._translate(message):
                    yield event
            self._close_code = ws.close_code or 1000
        except websockets.ConnectionClosedError as exc:
            self._close_code = exc.rcvd.code if exc.rcvd else 1006

    def _translate(self, message: str | bytes) -> list[Event]:
        if isinstance(message, bytes):
            return self._audio(message)
        data = decode(message)
        if isinstance(data, Error):
            return [data]
        self.server_conversation_id = server_conversation_id(data) or self.server_conversation_id
        event = to_event(data, self._partial, self._cut_short)
        if isinstance(event, Transcript) and event.role == "agent":
            event = self._replies.admit(event, reply_ids(data))
        elif isinstance(event, Transcript) and event.final:
            self._replies.boundary()
        return [] if event is None else [event]

    def _audio(self, data: bytes) -> list[Event]:
        """Whole samples only: an odd byte waits for the next frame."""
        data, self._carry = self._carry + data, b""
        if len(data) % 2:
            data, self._carry = data[:-1], data[-1:]
        return [Audio(data, OUTPUT_RATE)] if data else []

    # ---- plumbing --------------------------------------------------------------------

    async def _http(self, method: str, url: str, doing: str, **kwargs) -> httpx.Response:
        try:
            async with httpx.AsyncClient(timeout=self._http_timeout) as http:
                return await http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"Liku is unreachable, could not {doing} ({type(exc).__name__}).",
                                code="liku.unreachable") from None  # fmt: skip

    def _scrub(self, text: str) -> str:
        """Server text shown to the user never carries our token or password, even if echoed."""
        return scrub(text, self._token, self.config.get("password") or "")

    async def _closed_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._closed.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _unless_closed(self, coro) -> bool:
        """Await `coro` unless close() comes first (then cancel it): whether it ran to the end.
        Both helper tasks are cancelled and awaited here, whatever happens."""
        work = asyncio.ensure_future(coro)
        stop = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not work.done():
                work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(work, stop, return_exceptions=True)
        if work.cancelled():
            return False
        work.result()  # raises what the attempt raised
        return True

    @staticmethod
    async def _shut(ws) -> None:
        if ws is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 2)


class _Refused(UpstreamError):
    """The chat socket closed with 4000: the connection data is invalid (expired or unknown)."""

    def __init__(self):
        super().__init__("Liku refused the connection data (close 4000: invalid connection data).",
                         code="liku.connection_data")  # fmt: skip
