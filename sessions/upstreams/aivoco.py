"""Aivoco speech-to-speech over Socket.IO (seed: shared/seeds/aivoco-s2s-socketio.txt).

Wire protocol (Socket.IO v4, default namespace, websocket transport)::

    -> start_call     {auth_key, system_message, voice_choice, custom_functions: [FunctionDef]}
    <- auth_success   {credits}            | auth_failed {message, credits}
    <- session_ready  {message, credits_available, cost_per_minute, functions_loaded}
    -> audio_data     {audio_data: base64 s16le 16 kHz mono, has_audio, max_amplitude}
    <- audio_response {audio_data: base64 s16le 24 kHz mono}
    <- text_response  {text}
    <- function_called {function_name, arguments, call_id}
    -> function_response {call_id, function_name, result}
    <- function_result / function_response_sent / function_error   (bookkeeping)
    -> stop_call
    <- session_ended  {reason?, message?, total_credits_used?, remaining_credits?}
    <- error          {type?, message}

Decisions:

* ``connect()`` returns only after both ``auth_success`` and ``session_ready``:
  the vendor's clients open the microphone on ``session_ready`` and audio sent
  earlier is dropped by the server.
* ``voice_choice``: the seed spells the voices ``female`` / ``male`` (ours
  too). The vendor's Demo sends ``Girl`` / ``Boy`` and its CLI ``alloy``; the
  config key ``voice_spelling`` ("seed" | "demo" | "cli") switches to those.
* ``has_audio`` / ``max_amplitude`` are measured on each chunk: the peak
  sample as a fraction of full scale, and "has audio" above 0.01 (the CLI's
  threshold; the Demo's 0.001 calls a fan's hiss speech).
* ``text_response``: the protocol has no turn or message id. The vendor's
  Demo logs each ``text_response`` as its own "AI:" line, so each one becomes
  one final agent turn here (ids ``t1``, ``t2``, ...). Were the service to
  stream fragments, they would show as several short agent turns, never lost.
* There is no user transcript in this protocol: nothing is emitted for the
  user (capability ``user_transcripts=False`` lets the page say so), and no barge-in
  signal (``barge_in_signal=False``: the relay's own VAD clears the browser).
* ``function_called`` runs the topic's function from ``sessions.functions``
  (only the topic's own) and answers ``function_response``; failures are a
  result ``{error, status: "failed"}`` as the vendor's client sends, never an
  exception. Each call becomes a ``ToolCall`` with its result.
* A malformed message is reported as a (non-fatal) ``Error`` and skipped.
* ``error`` events end the call: the seed's handler resets the call state and
  stops the audio after every one of them, typed or not, so none is
  recoverable. `events()` (or, before ``session_ready``, ``connect()``) raises
  each as ``UpstreamError``: the seed's types as ``aivoco.insufficient_credits``,
  ``aivoco.invalid_api_key`` and ``aivoco.rate_limit_exceeded`` with a message
  saying what to do; any other as ``aivoco.error`` with Aivoco's own words.
  No ``stop_call`` follows (the seed's client sends none either).
* ``session_ended`` is the service ending the call: an ``Ended`` whose reason
  is worded for people (``insufficient_user_credits`` -> "Aivoco ended the call:
  the account ran out of credits (used 0.03, 0 left).", an unknown
  ``some_reason`` -> "Aivoco ended the call: some reason."). After our own
  ``stop_call`` it only confirms the stop (the relay's reason stands).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import socketio

from sessions import functions

from .base import (
    Audio,
    Capabilities,
    Client,
    Ended,
    Error,
    Event,
    Session,
    ToolCall,
    Transcript,
    UpstreamError,
    scrub,
)

log = logging.getLogger(__name__)

DEFAULT_URL = "wss://sts.aivoco.on.cloud.vispark.in"  # the seed's base endpoint
INPUT_RATE = 16000
OUTPUT_RATE = 24000
HAS_AUDIO_LEVEL = 0.01
HANDSHAKE_TIMEOUT = 5.0  # Socket.IO connect
START_TIMEOUT = 15.0  # start_call -> auth_success + session_ready
STOP_GRACE = 0.5  # after stop_call, wait this long for session_ended (the server bills on it)
CLOSE_TIMEOUT = 1.8  # inside the relay's 2 s bound for close()
VOICE_SPELLINGS = {
    "seed": {"female": "female", "male": "male"},  # seed README
    "demo": {"female": "Girl", "male": "Boy"},  # vendor Demo/index.html
    "cli": {"female": "alloy", "male": "alloy"},  # vendor CLI: one voice
}
ERROR_MESSAGES = {
    "insufficient_credits": "The Aivoco account has no credits left. Add credits, then start a new call.",
    "invalid_api_key": "Aivoco refused the API key. Check AIVOCO_API_KEY on the server.",
    "rate_limit_exceeded": "Aivoco's rate limit was exceeded. Wait a minute, then start a new conversation.",
}
ENDED_REASONS = {
    "insufficient_user_credits": "Aivoco ended the call: the account ran out of credits",
    "insufficient_admin_units": "Aivoco ended the call: the account ran out of function-call units",
    "stopped_by_user": "Aivoco says the call was stopped",
}
_CLOSED = object()


class BadMessage(ValueError):
    """A message from Aivoco that does not have the documented shape."""


# ---- pure protocol functions -------------------------------------------------------------


def socketio_target(url: str) -> tuple[str, str]:
    """(server URL, socketio_path) for `url`: a bare host (the real service) serves
    Socket.IO at /socket.io; a URL with a path (our sandbox under /sandbox/aivoco)
    serves it below that path."""
    parts = urlsplit(url or DEFAULT_URL)
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    path = path.removesuffix("/socket.io")
    return urlunsplit((scheme, parts.netloc, "", parts.query, "")), f"{path}/socket.io"


def voice_choice(voice: str, spelling: str = "seed") -> str:
    names = VOICE_SPELLINGS.get(spelling, VOICE_SPELLINGS["seed"])
    return names.get(voice, names["female"])


def function_defs(names) -> list[dict]:
    """The topic's demo functions in Aivoco's FunctionDef shape (a flat parameter list, not JSON Schema)."""
    return [
        {
            "name": f.name,
            "description": f.description,
            "parameters": [
                {"name": p.name, "type": p.type, "description": p.description, "required": p.required}
                for p in f.params
            ],
        }
        for f in functions.known(names)
    ]


def start_call_payload(api_key: str, system_message: str, voice: str, defs: list[dict]) -> dict:
    return {"auth_key": api_key, "system_message": system_message, "voice_choice": voice,
            "custom_functions": defs}  # fmt: skip


def audio_payload(pcm: bytes) -> dict:
    """An `audio_data` event for a chunk, with its real peak level and speech flag."""
    samples = np.frombuffer(pcm, dtype="<i2")
    peak = int(np.max(np.abs(samples.astype(np.int32)))) if samples.size else 0
    level = min(1.0, peak / 32768)
    return {"audio_data": base64.b64encode(pcm).decode("ascii"), "has_audio": level > HAS_AUDIO_LEVEL,
            "max_amplitude": round(level, 4)}  # fmt: skip


def _object(data: Any, event: str) -> dict:
    if not isinstance(data, dict):
        raise BadMessage(f"{event} is not an object")
    return data


def audio_event(data: Any) -> Audio:
    encoded = _object(data, "audio_response").get("audio_data")
    if not isinstance(encoded, str):
        raise BadMessage("audio_response has no audio_data text")
    try:
        pcm = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BadMessage("audio_response audio_data is not base64") from None
    if len(pcm) % 2:
        raise BadMessage("audio_response audio is not 16-bit PCM (odd byte count)")
    return Audio(pcm, OUTPUT_RATE)


def text_event(data: Any, ident: str) -> Transcript | None:
    text = _object(data, "text_response").get("text")
    if not isinstance(text, str):
        raise BadMessage("text_response has no text")
    return Transcript("agent", text.strip(), True, ident) if text.strip() else None


def function_call(data: Any) -> tuple[str, str, Any]:
    """(call_id, function_name, arguments) of a `function_called`; arguments may come JSON-encoded."""
    data = _object(data, "function_called")
    call_id, name = data.get("call_id"), data.get("function_name")
    if not isinstance(call_id, str | int) or isinstance(call_id, bool) or str(call_id) == "":
        raise BadMessage("function_called has no call_id")
    arguments = data.get("arguments")
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):
            arguments = json.loads(arguments)
    return str(call_id), name if isinstance(name, str) else "", {} if arguments is None else arguments


def _credits(data: dict) -> str:
    used, left = data.get("total_credits_used"), data.get("remaining_credits")
    if isinstance(used, int | float) and isinstance(left, int | float):
        return f" (used {used:g}, {left:g} left)"
    return ""


def ended_event(data: Any) -> Ended:
    """A `session_ended` as an end reason people can read: the seed's `reason` (a code such as
    ``insufficient_user_credits``) in words, else the Demo's `message`, with the credits used."""
    data = data if isinstance(data, dict) else {}
    reason, message = str(data.get("reason") or "").strip(), str(data.get("message") or "").strip()
    if reason in ENDED_REASONS:
        return Ended(ENDED_REASONS[reason] + _credits(data) + ".")
    if not reason and "stopped by user" in message.lower():
        return Ended(ENDED_REASONS["stopped_by_user"] + _credits(data) + ".")
    detail = reason.replace("_", " ") if reason else message.rstrip(".")
    if not detail:
        return Ended("Aivoco ended the call" + _credits(data) + ".")
    return Ended(f"Aivoco ended the call: {detail}" + _credits(data) + ".")


def error_event(data: Any) -> UpstreamError:
    """An `error` event: it ends the call."""
    data = data if isinstance(data, dict) else {"message": str(data)}
    kind = str(data.get("type") or "")
    if kind in ERROR_MESSAGES:
        said = str(data.get("message") or "").strip().rstrip(".")
        detail = f" (Aivoco said: {said})" if said else ""
        return UpstreamError(ERROR_MESSAGES[kind] + detail, permanent=True, code=f"aivoco.{kind}")
    message = str(data.get("message") or "no details")
    if kind:  # a type the seed does not list: shown, not made into a code
        message = f"{kind}: {message}"
    return UpstreamError(f"Aivoco reported an error: {message}", permanent=True, code="aivoco.error")


def auth_failed_error(data: Any) -> UpstreamError:
    message = str((data if isinstance(data, dict) else {}).get("message") or "no reason given").rstrip(".")
    return UpstreamError(f"Aivoco refused the API key ({message}). Check AIVOCO_API_KEY on the server.",
                         permanent=True, code="aivoco.auth_failed")  # fmt: skip


# ---- the client ----------------------------------------------------------------------------


class AivocoUpstream(Client):
    input_rate = INPUT_RATE
    # Speech only; no interruption event (the relay's own VAD clears the browser), and the
    # protocol never says what the user said.
    capabilities = Capabilities(accepts_text=False, user_transcripts=False, barge_in_signal=False,
                                saves_transcript=False)  # fmt: skip

    def __init__(self, session: Session):
        config = session.config or {}
        self.url = config.get("url") or DEFAULT_URL
        self.api_key = config.get("api_key", "")
        self.voice = voice_choice(session.voice, config.get("voice_spelling", "seed"))
        topic = session.topic
        self.system_message = getattr(topic, "persona", "") or "You are a helpful voice assistant."
        names = (session.options or {}).get("functions", ())  # the topic's options for Aivoco
        self.functions = function_defs(names)
        self.allowed = frozenset(f["name"] for f in self.functions)
        self.sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        self._queue: asyncio.Queue = asyncio.Queue()
        self._started: asyncio.Future | None = None
        self._authed = self._ready = self._live = False
        self._stopped = asyncio.Event()  # session_ended seen
        self._closing = False  # a disconnect from now on is ours, not a drop
        self._closed = False
        self._texts = 0
        self._last_complaint: dict[str, float] = {}
        self._register()

    def _register(self) -> None:
        on = self.sio.on
        on("auth_success", self._on_auth_success)
        on("auth_failed", self._on_auth_failed)
        on("session_ready", self._on_session_ready)
        on("audio_response", self._on_audio)
        on("text_response", self._on_text)
        on("function_called", self._on_function_called)
        on("function_error", self._on_function_error)
        on("session_ended", self._on_session_ended)
        on("error", self._on_error)
        on("disconnect", self._on_disconnect)
        on("*", self._on_other)

    # ---- Upstream interface

    async def connect(self) -> None:
        if not self.api_key:
            raise UpstreamError("AIVOCO_API_KEY is not set", permanent=True, code="aivoco.config")
        self._started = asyncio.get_running_loop().create_future()
        url, path = socketio_target(self.url)
        try:
            await self.sio.connect(url, socketio_path=path, transports=["websocket"],
                                   wait_timeout=HANDSHAKE_TIMEOUT)  # fmt: skip
            payload = start_call_payload(self.api_key, self.system_message, self.voice, self.functions)
            await self.sio.emit("start_call", payload)
            await asyncio.wait_for(asyncio.shield(self._started), START_TIMEOUT)
        except socketio.exceptions.ConnectionError as exc:
            await self._disconnect()
            message = f"Aivoco is unreachable: {self._scrub(str(exc))}"
            raise UpstreamError(message, code="aivoco.unreachable") from exc
        except TimeoutError:
            await self._disconnect()
            message = f"Aivoco did not start the call within {START_TIMEOUT:g} s"
            raise UpstreamError(message, code="aivoco.timeout") from None
        except UpstreamError:
            await self._disconnect()
            raise
        self._live = True

    async def send_audio(self, pcm: bytes) -> None:
        if not self._live:
            return  # before session_ready the server drops audio; after session_ended nothing listens
        try:
            await self.sio.emit("audio_data", audio_payload(pcm))
        except socketio.exceptions.SocketIOError as exc:
            raise UpstreamError("the connection to Aivoco is closed", code="aivoco.closed") from exc

    async def events(self) -> AsyncIterator[Event]:
        """Events in arrival order; ends on close, raises UpstreamError when the connection drops."""
        while (item := await self._queue.get()) is not _CLOSED:
            if isinstance(item, UpstreamError):
                raise item
            yield item

    @property
    def refs(self) -> dict:
        return {"voice_choice": self.voice, "functions": sorted(self.allowed)}

    async def close(self) -> None:
        """stop_call (if a call runs), then disconnect; bounded; idempotent."""
        if self._closed:
            return
        self._closed = self._closing = True
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                if self._live and self.sio.connected:
                    self._live = False
                    with contextlib.suppress(socketio.exceptions.SocketIOError):
                        await self.sio.emit("stop_call")
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._stopped.wait(), STOP_GRACE)
                await self.sio.disconnect()
        except TimeoutError:
            log.warning("closing the Aivoco connection timed out")
        finally:
            self._queue.put_nowait(_CLOSED)

    # ---- start of the call

    def _on_auth_success(self, data=None) -> None:
        self._authed = True
        self._maybe_started()

    def _on_session_ready(self, data=None) -> None:
        self._ready = True
        self._maybe_started()

    def _maybe_started(self) -> None:
        if self._authed and self._ready and self._started and not self._started.done():
            self._started.set_result(None)

    def _fail_start(self, error: UpstreamError) -> bool:
        """Fail a pending connect(); False when the call had already started."""
        if self._started is None or self._started.done():
            return False
        self._started.set_exception(error)
        return True

    def _on_auth_failed(self, data=None) -> None:
        error = auth_failed_error(data)
        error.message = self._scrub(error.message)
        if not self._fail_start(error):
            self._put(error)

    # ---- during the call

    def _on_audio(self, data=None) -> None:
        try:
            self._put(audio_event(data))
        except BadMessage as exc:
            self._complain("audio_response", exc)

    def _on_text(self, data=None) -> None:
        try:
            event = text_event(data, f"t{self._texts + 1}")
        except BadMessage as exc:
            self._complain("text_response", exc)
            return
        if event is not None:
            self._texts += 1
            self._put(event)

    async def _on_function_called(self, data=None) -> None:
        try:
            call_id, name, arguments = function_call(data)
        except BadMessage as exc:
            self._complain("function_called", exc)
            return
        result = functions.call(name, arguments, allowed=self.allowed)
        try:
            await self.sio.emit(
                "function_response", {"call_id": call_id, "function_name": name, "result": result}
            )
        except socketio.exceptions.SocketIOError:
            log.warning("function_response %s could not be sent: connection closed", call_id)
        shown = arguments if isinstance(arguments, dict) else {"value": arguments}
        self._put(ToolCall(call_id, name or "(no name)", shown, result))

    def _on_function_error(self, data=None) -> None:
        detail = data.get("error") if isinstance(data, dict) else data
        message = self._scrub(f"Aivoco could not use a function result: {detail}")
        self._put(Error("aivoco.function_error", message))

    def _on_session_ended(self, data=None) -> None:
        self._stopped.set()
        self._live = False
        event = ended_event(data)
        event = Ended(self._scrub(event.reason))
        if not self._fail_start(UpstreamError(event.reason, permanent=True, code="aivoco.ended")):
            self._put(event)

    def _on_error(self, data=None) -> None:
        error = error_event(data)
        error.message = self._scrub(error.message)
        if not self._fail_start(error):
            self._live = False
            self._put(error)

    def _on_disconnect(self, reason=None) -> None:
        self._live = False
        if self._closing:
            return
        if self._fail_start(
            UpstreamError("Aivoco closed the connection before the call started", code="aivoco.closed")
        ):
            return
        if self._stopped.is_set():
            self._queue.put_nowait(_CLOSED)  # the call was over anyway
        else:
            message = "the connection to Aivoco dropped in the middle of the call"
            self._queue.put_nowait(UpstreamError(message, code="aivoco.closed"))

    def _on_other(self, event, data=None) -> None:
        # function_result and function_response_sent are billing notices; anything else is undocumented.
        log.debug("aivoco event %s: %.200r", event, data)

    # ---- plumbing

    def _put(self, event: Event | UpstreamError) -> None:
        if not self._closing:
            self._queue.put_nowait(event)

    def _complain(self, event: str, exc: Exception) -> None:
        """A malformed message: one clear error per second per event type, and the call goes on."""
        now = time.monotonic()
        if now - self._last_complaint.get(event, -10.0) < 1.0:
            return
        self._last_complaint[event] = now
        self._put(Error("aivoco.bad_message", f"Aivoco sent a malformed message ({exc}); it was skipped."))

    def _scrub(self, text: str) -> str:
        """Messages are shown to the user: never with the key in them, never endless."""
        return scrub(text, self.api_key)

    async def _disconnect(self) -> None:
        self._closing = True  # a failed start: the disconnect is ours, not a drop
        if self._started is not None and not self._started.done():
            self._started.cancel()  # nothing waits for it any more
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sio.disconnect(), CLOSE_TIMEOUT)
