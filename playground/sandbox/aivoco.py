"""Aivoco speech-to-speech sandbox: a Socket.IO server acting out the vendor's protocol,
backed by the offline agent. Written from the seed (shared/seeds/aivoco-s2s-socketio.txt)
and protocols.md section 5, independently of our client.

What it does, event by event (Socket.IO v4, default namespace):

* ``start_call {auth_key, system_message, voice_choice, custom_functions}``: keys are
  derived from the deployment's secret (`api_key`, and `poor_key` with almost no credits); an
  unknown key gets ``auth_failed {message, credits: 0}``, as does a key with no
  credits left; a malformed payload gets ``error {message}``. Otherwise
  ``auth_success {credits}``, the agent starts, then ``session_ready {message,
  credits_available, cost_per_minute, functions_loaded}``. ``voice_choice`` is the seed's
  ``'female'`` or ``'male'`` and nothing else (missing or otherwise spelled: ``error
  {message}``), unless the ``voices="any"`` variant accepts the spellings of the vendor's
  other sources too (Demo ``Girl``/``Boy``, CLI ``alloy``, any case, missing = female).
* ``audio_data``: dropped silently before ``session_ready`` (the vendor's clients
  gate the microphone on it) and when malformed; otherwise fed to the agent.
  ``has_audio``/``max_amplitude`` must be present with the right types; how well
  they match the samples is counted in `stats` (a test can look).
* The agent's speech (22 050 Hz) goes out as 24 kHz base64 ``audio_response``
  chunks at real-time pace; each reply's text goes out once as ``text_response``
  when the reply has been spoken (or, cut short by the user, the part heard).
  The user's speech is never sent back: the protocol has no user transcript,
  and no barge-in event (the agent just stops talking).
* Functions: a user turn matching a trigger rule of a *loaded* function (see
  `trigger`) makes the "model" emit ``function_called {function_name,
  arguments, call_id}``, wait for ``function_response`` with that ``call_id``,
  emit ``function_result`` and ``function_response_sent`` (billing), and speak
  a reply built from the result.
* Credits: per minute of session, metered while the call runs; when the key's
  credits are used up: ``session_ended {reason: "insufficient_user_credits",
  ...}``. Balances are kept per app instance (tests make their own).
* ``stop_call``: ``session_ended {reason: "stopped_by_user", message: "Call stopped by user",
  total_credits_used, remaining_credits}`` (the seed's client reads ``reason`` and the credits;
  the vendor's Demo the message); the socket stays connected.
* Typed errors, the seed's three: ``error {type, message}`` with ``type``
  ``insufficient_credits``, ``invalid_api_key`` or ``rate_limit_exceeded``. The seed's client
  ends the call on every ``error``, so the sandbox releases the call it sends one to (without
  ``session_ended``). When: more than ``calls_per_minute`` start_calls of a key within a minute
  (variant) get ``rate_limit_exceeded``; with ``typed_start_errors=True`` an unknown key or
  one without credits gets ``invalid_api_key`` / ``insufficient_credits`` after its
  ``auth_failed``; and the fault control ``await app.state.send_error(type)`` sends one to
  every live call.

The seed has no language parameter: the agent speaks the language of the topic whose persona
is the ``system_message`` (the site's topics in their default language), else English.
Where the seed is silent, every plausible variant is accepted: parameter types (JSON Schema's
and Python's names).

`make_app(secret, scripts=None, cost_per_minute=, voices=, calls_per_minute=,
typed_start_errors=)` builds a fresh sandbox (its own balances); its ASGI app serves
``socketio_path="socket.io"`` (under our server: ``/sandbox/aivoco/socket.io``), and
`app.state` is the `AivocoSandbox` (calls, accounts, stats, and the fault controls
`send_error`, `end_sessions` and `start_gate`). Calls are released when they end or their
socket disconnects.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import hmac
import itertools
import json
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import socketio

from playground.engine import tts
from playground.engine.agent import Agent
from playground.engine.events import Audio, Interrupted, Transcript
from playground.engine.resample import Resampler
from playground.engine.responder import Responder
from playground.engine.script import FAQ, Script
from playground.engine.text import words
from playground.sandbox import SandboxApp, Scripts, derive, find_script

log = logging.getLogger(__name__)

COST_PER_MINUTE = 1.0
FUNCTION_COST = 0.05  # admin units per function call (vendor Demo's billing text)
FUNCTION_TIMEOUT = 10.0
OUTPUT_RATE = 24000
# voice_choice -> the voice's gender. The seed's spellings, exactly; with the `voices="any"` variant
# also those of the vendor's Demo (Girl/Boy) and CLI (alloy), in any case.
SEED_VOICES = {"female": "female", "male": "male"}
ANY_VOICES = {"female": "female", "male": "male", "girl": "female", "boy": "male", "alloy": "female"}
VOICE_VARIANTS = ("seed", "any")
# The seed's typed errors (its `error` handler's cases), with the message the sandbox sends.
ERROR_TYPES = {
    "insufficient_credits": "Insufficient credits",
    "invalid_api_key": "Invalid API key",
    "rate_limit_exceeded": "Rate limit exceeded",
}
# The seed shows string/number/boolean; JSON Schema's and Python's other names are accepted too.
PARAM_TYPES = ("string", "number", "integer", "boolean", "object", "array", "str", "int", "float", "bool")


@dataclass
class Account:
    credits: float
    admin_units: float = 100.0


def api_key(secret: str) -> str:
    """The sandbox key with plenty of credits, in the deployment whose secret it is."""
    return derive(secret, "aivoco-api-key")


def poor_key(secret: str) -> str:
    """A key whose credits run dry within two seconds (for tests of the credit end)."""
    return derive(secret, "aivoco-poor-key")


def accounts(secret: str) -> dict[str, Account]:
    poor = Account(credits=0.03, admin_units=1.0)
    return {api_key(secret): Account(credits=100_000.0), poor_key(secret): poor}


def voice_of(choice, voices: str = "seed") -> str | None:
    """The gender ("female" | "male") a voice_choice names, or None when the variant refuses it."""
    if voices == "any" and choice is None:
        return "female"
    if not isinstance(choice, str):
        return None
    return ANY_VOICES.get(choice.lower()) if voices == "any" else SEED_VOICES.get(choice)


def espeak_voice(gender: str, language: str) -> str:
    """The offline agent's espeak-ng voice of `gender` for `language` (English when it has none)."""
    base = next((key for key, _ in tts.voices_for(language)), "en-us")
    return base + ("+f3" if gender == "female" else "")


def client_config(base_url: str, secret: str) -> dict:
    return {"url": base_url, "api_key": api_key(secret)}


# ---- the "model": scripts, trigger rules, spoken results -------------------------------

GENERIC_FAQ = (
    FAQ("Hello", "Hello! How can I help you today?", ("hello", "hi")),
    FAQ(
        "What can you do",
        "I can answer a few questions, tell you the time, and check for a free table.",
        ("what", "can", "do", "help"),
    ),
    FAQ("Thank you goodbye", "You are welcome. Goodbye!", ("thank", "thanks", "goodbye", "bye")),
)
# Sentences that should reach the functions, so that the recogniser's language model knows them.
TRIGGER_PHRASES = (
    "what time is it",
    "what is the time now",
    "tell me the current time",
    "is a table available tonight",
    "can I book a table for two",
    "do you have a table for four at seven",
    "I would like to book a table for two tomorrow",
    "check availability for tomorrow",
)
BOOKING_WORDS = {"table", "book", "booking", "available", "availability", "reserve", "reservation"}
HOURS_WORDS = {"open", "opening", "close", "closing"}
NUMBERS = {
    w: n for n, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())
}


def trigger(text: str, loaded: dict[str, dict]) -> tuple[str, dict] | None:
    """(function name, arguments) a user turn calls for, or None.

    Rules: booking words ("table", "book", "available", ...) call
    check_availability; "time" (but not with opening-hours words) calls
    current_time. Only functions the client loaded are called, and only with
    the parameters it declared.
    """
    said = words(text)
    if BOOKING_WORDS & set(said) and "check_availability" in loaded:
        return "check_availability", _declared(loaded["check_availability"], _booking_arguments(said))
    if "time" in said and not HOURS_WORDS & set(said) and "current_time" in loaded:
        return "current_time", {}
    return None


def _booking_arguments(said: list[str]) -> dict:
    party, hour = 2, 19
    for before, word in itertools.pairwise(said):
        if word in NUMBERS and before == "for":
            party = NUMBERS[word]
        elif word in NUMBERS and before == "at":
            hour = NUMBERS[word] + (12 if NUMBERS[word] < 12 else 0)  # "at seven": in the evening
    day = dt.date.today() + dt.timedelta(days=1 if "tomorrow" in said else 0)
    return {"date": day.isoformat(), "time": f"{hour:02d}:00", "party_size": party}


def _declared(definition: dict, arguments: dict) -> dict:
    names = {p["name"] for p in definition.get("parameters", [])}
    return {k: v for k, v in arguments.items() if k in names}


def _clock(value: Any) -> str:
    """'19:30' as espeak should say it: '7:30 pm'."""
    try:
        hour, minute = (int(x) for x in str(value).split(":")[:2])
    except ValueError:
        return str(value)
    return f"{hour % 12 or 12}{f':{minute:02d}' if minute else ''} {'pm' if hour >= 12 else 'am'}"


def spoken_result(name: str, result: Any) -> str:
    """What the agent says once a function answered."""
    if not isinstance(result, dict):
        return f"The {name} function returned {json.dumps(result)[:200]}."
    if result.get("status") == "failed":
        return f"Sorry, I could not do that: {result.get('error') or 'the function failed'}."
    if name == "current_time" and "time" in result:
        return f"It is {_clock(result['time'])} now."
    if name == "check_availability" and "available" in result:
        party, at = result.get("party_size"), _clock(result.get("time"))
        if result["available"]:
            return f"Good news, there is a table for {party} at {at}. Shall I book it for you?"
        others = [_clock(t) for t in result.get("alternatives") or []]
        offer = f" I could offer {', '.join(others)} instead." if others else ""
        return f"Sorry, there is no table for {party} at {at}.{offer}"
    return f"The {name} function returned {json.dumps(result)[:200]}."


async def script_for(scripts: Scripts | None, system_message: str) -> Script:
    """The agent's script: the site's topic when the persona is one of ours (better recognition
    and answers in demos), else a generic one; trigger phrases always in its vocabulary."""
    found = await find_script(scripts, lambda script, _options: script.persona == system_message)
    base = found or Script("aivoco-sandbox", "Aivoco sandbox", system_message, "")
    # No language in the protocol: the topic's own (its default language), its FAQ and fallback.
    generic = GENERIC_FAQ if base.language == "en" else ()
    return Script(base.slug, base.title, system_message, "", base.language, faq=base.faq + generic,
                  phrases=base.phrases + TRIGGER_PHRASES, fallback=base.fallback)  # fmt: skip


class FunctionResponder:
    """The agent's responder: a function round trip when a user turn triggers one, else the FAQ."""

    def __init__(self, call: Call, faq: Responder):
        self.call, self.faq = call, faq

    async def reply(self, history: list[dict]):
        text = next((m["content"] for m in reversed(history) if m["role"] == "user"), "")
        wanted = trigger(text, self.call.functions)
        if wanted is None:
            async with contextlib.aclosing(self.faq.reply(history)) as pieces:
                async for piece in pieces:
                    yield piece
            return
        yield spoken_result(wanted[0], await self.call.invoke(*wanted))

    async def aclose(self) -> None:
        await self.faq.aclose()


# ---- one call ----------------------------------------------------------------------------


@dataclass
class Stats:
    chunks: int = 0
    voiced: int = 0  # chunks flagged has_audio
    dropped: int = 0  # before session_ready, or malformed
    flag_mismatches: int = 0  # has_audio / max_amplitude not what the samples say


@dataclass
class Call:
    sandbox: AivocoSandbox
    sid: str
    account: Account
    functions: dict[str, dict]
    agent: Agent | None = None
    ready: bool = False
    started: float = 0.0
    pending: dict[str, asyncio.Future] = field(default_factory=dict)
    tasks: set[asyncio.Task] = field(default_factory=set)

    def used(self) -> float:
        return (time.monotonic() - self.started) / 60 * self.sandbox.cost_per_minute if self.ready else 0.0

    def spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def invoke(self, name: str, arguments: dict) -> Any:
        """function_called -> wait for the client's function_response -> billing notices."""
        call_id = f"call_{uuid.uuid4().hex[:12]}"
        future = self.pending[call_id] = asyncio.get_running_loop().create_future()
        emit = self.sandbox.emit
        try:
            await emit("function_called", {"function_name": name, "arguments": arguments, "call_id": call_id},
                       self.sid)  # fmt: skip
            try:
                result = await asyncio.wait_for(future, FUNCTION_TIMEOUT)
            except TimeoutError:
                await emit("function_error", {"error": f"No function_response for {name} in time"}, self.sid)
                return {"error": "the system did not answer", "status": "failed"}
        finally:
            self.pending.pop(call_id, None)
        self.account.admin_units = max(0.0, self.account.admin_units - FUNCTION_COST)
        await emit("function_result", {"function_name": name, "result": result}, self.sid)
        await emit("function_response_sent", {"function_name": name, "admin_units_deducted": FUNCTION_COST,
                                              "remaining_admin_units": round(self.account.admin_units, 4)},
                   self.sid)  # fmt: skip
        return result

    async def shutdown(self) -> None:
        """Cancel and await every task of the call (except the caller's own), close the agent."""
        for future in self.pending.values():
            future.cancel()
        tasks = [t for t in self.tasks if t is not asyncio.current_task() and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        if self.agent is not None:
            await self.agent.close()


# ---- the server ---------------------------------------------------------------------------


def start_problem(data: dict, voices: str = "seed") -> str:
    """Why a start_call payload (past the key check) is unusable, or ""."""
    if not isinstance(data.get("system_message", ""), str):
        return "system_message must be a string"
    voice = data.get("voice_choice")
    if voice_of(voice, voices) is None:
        if "voice_choice" not in data:
            return "voice_choice is required: 'female' or 'male'"
        return f"Unsupported voice_choice {voice!r}: use 'female' or 'male'"
    defs = data.get("custom_functions", [])
    if not isinstance(defs, list):
        return "custom_functions must be a list"
    for i, definition in enumerate(defs):
        problem = _function_problem(definition)
        if problem:
            return f"Invalid custom_functions[{i}]: {problem}"
    return ""


def _function_problem(definition: Any) -> str:
    if (
        not isinstance(definition, dict)
        or not isinstance(definition.get("name"), str)
        or not definition["name"]
    ):
        return "a function needs a name"
    if not isinstance(definition.get("description", ""), str):
        return "description must be a string"
    params = definition.get("parameters", [])
    if not isinstance(params, list):
        return "parameters must be a list of {name, type, description, required}"
    for p in params:
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or p.get("type") not in PARAM_TYPES:
            return f"parameter {p!r} needs a name and a type of {', '.join(PARAM_TYPES)}"
        if not isinstance(p.get("required", False), bool):
            return "parameter 'required' must be true or false"
    return ""


def decode_audio(data: Any, stats: Stats) -> bytes | None:
    """The PCM of an audio_data event, or None when it is malformed; checks the level flags."""
    if not isinstance(data, dict) or not isinstance(data.get("audio_data"), str):
        return None
    has_audio, level = data.get("has_audio"), data.get("max_amplitude")
    if not isinstance(has_audio, bool) or not isinstance(level, int | float) or isinstance(level, bool):
        return None
    try:
        pcm = base64.b64decode(data["audio_data"], validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(pcm) % 2:
        return None
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    peak = float(np.max(np.abs(samples))) / 32768 if samples.size else 0.0
    stats.voiced += has_audio
    # The vendor's clients call a chunk speech above 0.001 (Demo) or 0.01 (CLI) of full scale.
    wrong_flag = peak < 0.0009 if has_audio else peak > 0.0105
    stats.flag_mismatches += abs(peak - level) > 0.02 or wrong_flag
    return pcm


class AivocoSandbox:
    """One Aivoco sandbox: the state object (accounts, live calls, stats, fault controls) and its
    Socket.IO server. Variants: see `make_app`."""

    def __init__(self, secret: str, *, scripts: Scripts | None = None,
                 cost_per_minute: float = COST_PER_MINUTE, voices: str = "seed",
                 calls_per_minute: int | None = None, typed_start_errors: bool = False):  # fmt: skip
        if voices not in VOICE_VARIANTS:
            raise ValueError(f"voices must be one of {VOICE_VARIANTS}")
        self.cost_per_minute, self.scripts, self.voices = cost_per_minute, scripts, voices
        self.calls_per_minute, self.typed_start_errors = calls_per_minute, typed_start_errors
        self.accounts = accounts(secret)
        self.calls: dict[str, Call] = {}
        self.stats = Stats()
        self._starts: dict[str, deque[float]] = {}  # key -> recent start_call times (rate limit)
        # Fault control: when set, a call's session_ready waits until it is (tests make "audio
        # before session_ready" happen for sure, whatever the machine's load).
        self.start_gate: asyncio.Event | None = None
        self.sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*")
        for name in ("start_call", "audio_data", "function_response", "stop_call", "disconnect"):
            self.sio.on(name, getattr(self, f"on_{name}"))

    async def emit(self, event: str, data: dict, sid: str) -> None:
        await self.sio.emit(event, data, to=sid)

    async def on_start_call(self, sid, data=None) -> None:
        data = data if isinstance(data, dict) else {}
        if sid in self.calls:
            return await self.emit("error", {"message": "A call is already active"}, sid)
        key = data.get("auth_key")
        account = self._account(key)
        if account is None or account.credits <= 0:
            kind = "invalid_api_key" if account is None else "insufficient_credits"
            await self.emit("auth_failed", {"message": ERROR_TYPES[kind], "credits": 0}, sid)
            if self.typed_start_errors:
                await self.emit("error", {"type": kind, "message": ERROR_TYPES[kind]}, sid)
            return None
        if self._rate_limited(key):
            message = f"Rate limit exceeded: at most {self.calls_per_minute} calls a minute"
            return await self.emit("error", {"type": "rate_limit_exceeded", "message": message}, sid)
        problem = start_problem(data, self.voices)
        if problem:
            return await self.emit("error", {"message": problem}, sid)
        defs = {d["name"]: d for d in data.get("custom_functions", [])}
        call = self.calls[sid] = Call(self, sid, account, defs)
        await self.emit("auth_success", {"credits": round(account.credits, 4)}, sid)
        await self._start(call, data.get("system_message") or "You are a helpful AI assistant.",
                          voice_of(data.get("voice_choice"), self.voices))  # fmt: skip

    def _rate_limited(self, key: str) -> bool:
        """Whether this start_call is one too many for the key in the last minute (variant)."""
        if self.calls_per_minute is None:
            return False
        now = time.monotonic()
        recent = self._starts.setdefault(key, deque(maxlen=self.calls_per_minute + 1))
        while recent and now - recent[0] > 60:
            recent.popleft()
        if len(recent) >= self.calls_per_minute:
            return True
        recent.append(now)
        return False

    def _account(self, key) -> Account | None:
        if not isinstance(key, str):
            return None
        found = [a for k, a in self.accounts.items() if hmac.compare_digest(k.encode(), key.encode())]
        return found[0] if found else None

    async def _start(self, call: Call, system_message: str, gender: str) -> None:
        script = await script_for(self.scripts, system_message)
        responder = FunctionResponder(call, Responder(script, None))
        voice = espeak_voice(gender, script.language)
        agent = call.agent = Agent(script, voice=voice, language=script.language, greet=False,
                                   responder=responder)  # fmt: skip
        try:
            await agent.start()
            if self.start_gate is not None:
                await self.start_gate.wait()
        except Exception:
            log.exception("aivoco sandbox: the agent did not start")
            await self._end(call, emit=False)
            return await self.emit("error", {"message": "The voice session could not start"}, call.sid)
        if self.calls.get(call.sid) is not call:  # stopped or gone while starting
            return await call.shutdown()
        call.ready, call.started = True, time.monotonic()
        await self.emit("session_ready", {"message": "Voice session started",
                                          "credits_available": round(call.account.credits, 4),
                                          "cost_per_minute": self.cost_per_minute,
                                          "functions_loaded": len(call.functions)}, call.sid)  # fmt: skip
        call.spawn(self._speak(call))
        call.spawn(self._meter(call))

    async def on_audio_data(self, sid, data=None) -> None:
        call = self.calls.get(sid)
        pcm = decode_audio(data, self.stats)
        if call is None or not call.ready or pcm is None:
            self.stats.dropped += 1  # silently: the vendor's clients only stream after session_ready
            return
        self.stats.chunks += 1
        call.agent.feed(pcm)

    async def on_function_response(self, sid, data=None) -> None:
        call = self.calls.get(sid)
        if call is None:
            return
        data = data if isinstance(data, dict) else {}
        future = call.pending.get(data.get("call_id")) if isinstance(data.get("call_id"), str) else None
        if future is None or "result" not in data:
            detail = "unknown call_id" if future is None else "no result"
            return await self.emit("function_error", {"error": f"Bad function_response: {detail}"}, sid)
        if not future.done():
            future.set_result(data["result"])

    async def on_stop_call(self, sid, data=None) -> None:
        call = self.calls.get(sid)
        if call is not None:
            await self._end(call, reason="stopped_by_user", message="Call stopped by user")

    async def on_disconnect(self, sid, reason=None) -> None:
        call = self.calls.get(sid)
        if call is not None:
            await self._end(call, emit=False)

    # ---- fault controls (tests)

    async def send_error(self, kind: str, message: str | None = None) -> int:
        """Send every live call the typed `error {type, message}` and release it, as a service that
        ends the call on it would; the number of calls it reached."""
        if kind not in ERROR_TYPES:
            raise ValueError(f"the seed's error types are {', '.join(ERROR_TYPES)}")
        calls = list(self.calls.values())
        for call in calls:
            await self.emit("error", {"type": kind, "message": message or ERROR_TYPES[kind]}, call.sid)
            await self._end(call, emit=False)
        return len(calls)

    async def end_sessions(self, reason: str, message: str = "") -> int:
        """End every live call from the service's side: `session_ended {reason, ...}`."""
        calls = list(self.calls.values())
        for call in calls:
            await self._end(call, reason=reason, **({"message": message} if message else {}))
        return len(calls)

    async def _end(self, call: Call, emit: bool = True, **payload) -> None:
        if self.calls.get(call.sid) is not call:
            return
        del self.calls[call.sid]
        used = min(call.used(), call.account.credits)
        call.account.credits = round(call.account.credits - used, 6)
        if emit:
            await self.emit("session_ended", {**payload, "total_credits_used": round(used, 4),
                                              "remaining_credits": round(call.account.credits, 4)},
                            call.sid)  # fmt: skip
        await call.shutdown()

    async def _meter(self, call: Call) -> None:
        # Nothing else spends user credits during a call, so they run out at a known moment.
        await asyncio.sleep(call.account.credits / self.cost_per_minute * 60)
        await self._end(call, reason="insufficient_user_credits", message="Insufficient credits")

    async def _speak(self, call: Call) -> None:
        """The agent's output as the vendor sends it: 24 kHz audio chunks and one text per reply."""
        resampler: Resampler | None = None
        async for event in call.agent.events():
            if isinstance(event, Audio):
                if resampler is None or resampler.in_rate != event.rate:
                    resampler = Resampler(event.rate, OUTPUT_RATE)
                pcm = resampler.process(event.pcm)
                if pcm:
                    await self.emit(
                        "audio_response", {"audio_data": base64.b64encode(pcm).decode()}, call.sid
                    )
            elif isinstance(event, Interrupted) and resampler is not None:
                resampler.reset()
            elif isinstance(event, Transcript) and event.role == "agent" and event.final and event.text:
                await self.emit("text_response", {"text": event.text}, call.sid)


def make_app(secret: str, *, scripts: Scripts | None = None, cost_per_minute: float = COST_PER_MINUTE,
             voices: str = "seed", calls_per_minute: int | None = None,
             typed_start_errors: bool = False) -> SandboxApp:  # fmt: skip
    """A fresh sandbox (its own balances) whose keys derive from `secret`; state: `app.state`.

    Variants: `voices` "seed" (``female``/``male`` only, required) or "any" (also the Demo's and
    CLI's spellings, in any case; missing = female); `calls_per_minute`: start_calls a key may
    make in a minute before ``error {type: "rate_limit_exceeded"}`` (None: no limit);
    `typed_start_errors`: an unknown key or one without credits also gets the typed ``error``
    after its ``auth_failed``."""
    sandbox = AivocoSandbox(
        secret,
        scripts=scripts,
        cost_per_minute=cost_per_minute,
        voices=voices,
        calls_per_minute=calls_per_minute,
        typed_start_errors=typed_start_errors,
    )
    return SandboxApp(socketio.ASGIApp(sandbox.sio, socketio_path="socket.io"), sandbox)
