"""Sandbox of Retell AI, played as Retell is to a custom-LLM server, backed by the offline engine.

Written from Retell's "Setup WebSocket Server" guide (shared/seeds/retell-llm-websocket-setup.txt)
and the notes in shared/protocols.md section 4; it shares no code with our client or our LLM socket.

* ``POST /v2/create-web-call`` (Bearer key): ``{agent_id}`` -> 201 ``{call_type: "web_call",
  access_token, call_id, agent_id, agent_version, call_status: "registered", ...}``; 401 without a
  valid Bearer, 400 for a bad body, 404 for an agent the sandbox does not know (its agents are the
  site's topics that name a Retell ``agent_id``, and ``agent_sandbox``). The sandbox's own extra field
  ``llm_websocket_url`` chooses the LLM server for this call (the real service keeps it in the
  agent's dashboard settings); without it the sandbox's ``llm_url`` is used.
* The relayed audio socket ``/audio-websocket/<call_id>?sample_rate=N&enable_update=true``: the
  sandbox's own transport, modelled on Retell's deprecated "web" audio WebSocket (real web calls
  carry audio over WebRTC). The call id is the credential; binary frames are the user's s16le mono
  audio at ``sample_rate`` (default 24000), the agent's speech comes back the same way. Text
  ``"ping"`` is answered ``"pong"``, ``"clear"`` means the user talked over the agent; JSON
  ``{"event_type": ...}``: ``update`` (the transcript, with ``enable_update``),
  ``agent_start_talking``, ``agent_stop_talking``, ``metadata`` (relayed from the LLM server), and
  the sandbox's own ``violation`` (``message``: what the LLM server got wrong). The socket closes
  1000 with reason ``end_call`` when the agent ended the call, 1011 when the LLM server failed.
* Opening the audio socket starts the call: the sandbox dials ``<llm url>/<call_id>``, needs a
  ``response`` with ``response_id`` 0 (the begin message) within ``begin_timeout`` s, sends
  ``call_details`` when the config asks for it and ``ping_pong`` every 2 s when it set
  ``auto_reconnect``; after ``silence_s`` (5) without any message from the server it closes and
  dials again, at most ``max_reconnects`` (2) times. The user's speech becomes ``update_only``
  with growing word lists, then ``response_required`` with increasing ids; a user who starts
  talking again before the answer is out gets a newer id (the old one is superseded). After
  ``reminder_s`` of silence following the agent, one ``reminder_required``.
* Every LLM message is validated (required fields and types, the ``response_id`` still
  outstanding, actions only on the final chunk, at most one action); each violation is recorded
  in ``app.state.violations`` and sent on the audio socket. ``end_call`` ends the call once its
  content has been spoken, unless the user interrupted it.

`make_app(secret, scripts=None, llm_url=, begin_timeout=, reminder_s=, silence_s=, max_reconnects=,
ping_s=, agent_options=)`; `app.state` (`State`) holds the calls; each `Call` has test controls
(`user_says`, `drop_llm`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field

import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from playground.engine.agent import Agent
from playground.engine.events import Audio, Interrupted, Status, Transcript
from playground.engine.resample import Resampler
from playground.engine.script import Script
from playground.sandbox import SandboxApp, Scripts, cancel, derive, find_script

log = logging.getLogger(__name__)

AGENT_RATE = 16000
DEFAULT_RATE = 24000
MAX_CALLS = 100
REGISTERED_TTL_S = 600  # a created call must be joined within this (a real access token lasts 30 s)
STALE_GRACE_S = 1.0  # chunks of a superseded id that were already on the wire are dropped quietly
RESPONSE_TYPES = frozenset({"config", "response", "agent_interrupt", "ping_pong", "update_agent",
                            "tool_call_invocation", "tool_call_result", "metadata"})  # fmt: skip
ACTIONS = ("end_call", "transfer_number", "digit_to_press")
# The agent every sandbox knows, also when run alone (no topics of ours): its LLM server decides all.
GENERIC_AGENT = "agent_sandbox"
GENERIC_SCRIPT = Script(slug="retell-sandbox", title="Retell sandbox", persona="", greeting="")


def api_key(secret: str) -> str:
    return derive(secret, "retell-api-key")


def client_config(base_url: str, secret: str) -> dict:
    """Our client's settings for this sandbox: its base URL (HTTP and the audio socket) and key."""
    return {"api_url": base_url, "api_key": api_key(secret)}


@dataclass
class State:
    key: str
    scripts: Scripts | None = None
    llm_url: str = ""
    begin_timeout: float = 5.0
    reminder_s: float = 10.0
    silence_s: float = 5.0
    ping_s: float = 2.0
    max_reconnects: int = 2
    agent_options: dict = field(default_factory=dict)
    calls: dict = field(default_factory=dict)  # call_id -> Call
    violations: list = field(default_factory=list)  # {"call_id", "problem", "message"}

    def prune(self) -> None:
        """Forget calls never joined within REGISTERED_TTL_S, and the oldest ended ones past MAX_CALLS."""
        now = time.monotonic()
        for cid in [cid for cid, c in self.calls.items()
                    if c.status == "registered" and now - c.created > REGISTERED_TTL_S]:  # fmt: skip
            del self.calls[cid]
        ended = [cid for cid, c in self.calls.items() if c.status == "ended"]
        while len(self.calls) > MAX_CALLS and ended:
            self.calls.pop(ended.pop(0), None)


def make_app(secret: str, *, scripts: Scripts | None = None, llm_url: str = "", begin_timeout: float = 5.0,
             reminder_s: float = 10.0, silence_s: float = 5.0, ping_s: float = 2.0, max_reconnects: int = 2,
             agent_options: dict | None = None) -> SandboxApp:  # fmt: skip
    state = State(api_key(secret), scripts, llm_url, begin_timeout, reminder_s, silence_s, ping_s,
                  max_reconnects, dict(agent_options or {}))  # fmt: skip

    async def create_web_call(request: Request) -> JSONResponse:
        return await _create_web_call(state, request)

    async def audio_socket(websocket: WebSocket) -> None:
        call = state.calls.get(websocket.path_params["call_id"])
        if call is None or call.status != "registered":
            await websocket.close(code=1008)  # before accept: the handshake is refused
            return
        await websocket.accept()
        await call.run(websocket)

    routes = [Route("/v2/create-web-call", create_web_call, methods=["POST"]),
              WebSocketRoute("/audio-websocket/{call_id}", audio_socket)]  # fmt: skip
    return SandboxApp(Starlette(routes=routes), state)


async def _create_web_call(state: State, request: Request) -> JSONResponse:
    auth = request.headers.get("authorization", "")
    given = auth[7:] if auth.lower().startswith("bearer ") else ""
    if not given or not secrets.compare_digest(given.encode(), state.key.encode()):
        return JSONResponse({"error_message": "Unauthorized: invalid or missing API key"}, status_code=401)
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("agent_id"), str) or not body["agent_id"]:
        return JSONResponse({"error_message": "agent_id is required"}, status_code=400)
    url = body.get("llm_websocket_url", state.llm_url)
    if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
        message = "llm_websocket_url must be a ws:// or wss:// URL"
        return JSONResponse({"error_message": message}, status_code=400)
    script = await find_script(state.scripts, lambda _s, opts: _agent_of(opts) == body["agent_id"])
    if script is None and body["agent_id"] == GENERIC_AGENT:
        script = GENERIC_SCRIPT
    if script is None:
        return JSONResponse({"error_message": f"agent {body['agent_id']} not found"}, status_code=404)
    call = Call(state, script, body["agent_id"], url.rstrip("/"), body.get("metadata") or {})
    state.prune()
    state.calls[call.call_id] = call
    return JSONResponse(call.summary(), status_code=201)


def _agent_of(options: dict) -> str:
    retell = options.get("retell") if isinstance(options, dict) else None
    return retell.get("agent_id", "") if isinstance(retell, dict) else ""


# ---- validation of what the LLM server sends ------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _of(kind: type):
    return lambda value: isinstance(value, kind)


# Required fields of each response_type and their checks (the LLM WebSocket reference).
REQUIRED = {
    "response": (("response_id", _is_int), ("content", _of(str)), ("content_complete", _of(bool))),
    "agent_interrupt": (("interrupt_id", _is_int), ("content", _of(str)), ("content_complete", _of(bool))),
    "config": (("config", _of(dict)),),
    "ping_pong": (("timestamp", _is_int),),
    "update_agent": (("agent_config", _of(dict)),),
    "tool_call_invocation": (("tool_call_id", _of(str)), ("name", _of(str)), ("arguments", _of(str))),
    "tool_call_result": (("tool_call_id", _of(str)), ("content", _of(str))),
    "metadata": (("metadata", _of(dict)),),
}


def shape_problems(message) -> list[str]:
    """What is wrong with one LLM-server message on its own (fields and types)."""
    if not isinstance(message, dict):
        return ["a message that is not a JSON object"]
    kind = message.get("response_type", "response")
    if kind not in RESPONSE_TYPES:
        return [f"unknown response_type {kind!r}"]
    problems = [f"{kind}: {name} missing or of the wrong type" for name, check in REQUIRED[kind]
                if not check(message.get(name))]  # fmt: skip
    if kind in ("response", "agent_interrupt"):
        problems += _action_problems(kind, message)
    if kind == "tool_call_invocation" and isinstance(message.get("arguments"), str):
        try:
            json.loads(message["arguments"])
        except ValueError:
            problems.append("tool_call_invocation: arguments is not a JSON string")
    return problems


def _action_problems(kind: str, message: dict) -> list[str]:
    problems = []
    for name, typ in (("end_call", bool), ("no_interruption_allowed", bool), ("transfer_number", str),
                      ("digit_to_press", str)):  # fmt: skip
        if name in message and not isinstance(message[name], typ):
            problems.append(f"{kind}: {name} of the wrong type")
    actions = [a for a in ACTIONS if message.get(a)]
    if actions and message.get("content_complete") is not True:
        problems.append(f"{kind}: {actions[0]} on a chunk that is not the final one")
    if len(actions) > 1:
        problems.append(f"{kind}: {' and '.join(actions)} together (they are mutually exclusive)")
    return problems


# ---- one call -------------------------------------------------------------------------------------


class Call:
    """One web call: the audio socket, the offline engine's ears and voice, and the LLM link."""

    def __init__(self, state: State, script: Script, agent_id: str, llm_url: str, metadata: dict):
        self.state, self.script, self.agent_id, self.llm_url = state, script, agent_id, llm_url
        self.metadata = metadata
        self.call_id = "call_" + secrets.token_hex(12)
        self.access_token = secrets.token_urlsafe(24)
        self.status = "registered"
        self.ws: WebSocket | None = None
        self.llm = None  # the websockets connection to the LLM server
        self.agent: Agent | None = None
        self.rate, self.updates = DEFAULT_RATE, False
        self.t0 = time.monotonic()
        # What Retell knows of the conversation: [{"role", "content", "words"}], and engine ids.
        self.transcript: list[dict] = []
        self._engine_ids: dict[str, int] = {}
        # Requests: the newest response_id, its queue of chunks, and when older ids were superseded.
        self.latest = 0
        self.queues: dict[int, asyncio.Queue] = {0: asyncio.Queue()}
        self.superseded: dict[int, float] = {}
        self.complete: set[int] = set()
        self.invocations: set[str] = set()
        self.end_after: int | None = None  # the response whose speech ends the call
        self.speaking_id: int | None = None
        # Counters tests read.
        self.connections = 0
        self.begins = 0
        self.pongs = 0
        self.reminders = 0
        self.received: list[dict] = []
        self.ended_by = ""
        self.config: dict = {}
        self._tasks: set[asyncio.Task] = set()
        self._reminder: asyncio.Task | None = None
        self._dropped = asyncio.Event()
        self._done = asyncio.Event()
        self._from_agent: Resampler | None = None
        self._to_agent: Resampler | None = None
        self._talking = False
        self._begun = False
        self._may_remind = True
        self._ending = False
        self.created = time.monotonic()

    def summary(self) -> dict:
        return {"call_type": "web_call", "access_token": self.access_token, "call_id": self.call_id,
                "agent_id": self.agent_id, "agent_version": 0, "call_status": self.status,
                "metadata": self.metadata, "retell_llm_dynamic_variables": {}}  # fmt: skip

    # ---- the audio socket ------------------------------------------------------------------

    async def run(self, websocket: WebSocket) -> None:
        self.ws, self.status = websocket, "ongoing"
        self.rate = _rate(websocket.query_params.get("sample_rate"))
        self.updates = websocket.query_params.get("enable_update") == "true"
        self._to_agent = Resampler(self.rate, AGENT_RATE)
        self.agent = Agent(self.script, greet=False, responder=_Responder(self), **self.state.agent_options)
        try:
            await self.agent.start()
            self._own(self._pump())
            self._own(self._link())
            reader = self._own(self._read_audio())
            await asyncio.wait([reader, self._own(self._done.wait())], return_when=asyncio.FIRST_COMPLETED)
        finally:
            await self._shut_down()

    async def _read_audio(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                self.ended_by = self.ended_by or "client hung up"
                return
            if message.get("bytes"):
                pcm = message["bytes"][: len(message["bytes"]) // 2 * 2]
                self.agent.feed(self._to_agent.process(pcm))
            elif message.get("text") == "ping":
                await self.ws.send_text("pong")

    async def _shut_down(self) -> None:
        self.status = "ended"
        for queue in self.queues.values():
            queue.put_nowait(None)
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.agent is not None:
            await self.agent.close()
        if self.llm is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.llm.close(), 2)

    async def end(self, code: int, reason: str) -> None:
        """End the call: the LLM socket first (its server stores the last turns), then the audio."""
        if self._ending:
            return
        self._ending, self.ended_by = True, reason
        if self.llm is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.llm.close(), 2)
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, reason=reason)
        self._done.set()

    async def event(self, event_type: str, **fields) -> None:
        with contextlib.suppress(Exception):
            await self.ws.send_text(json.dumps({"event_type": event_type, **fields}))

    async def violation(self, problem: str, message=None) -> None:
        log.info("retell sandbox: %s", problem)
        self.state.violations.append({"call_id": self.call_id, "problem": problem, "message": message})
        del self.state.violations[:-500]
        await self.event("violation", message=problem)

    # ---- the engine's events on the audio socket and in the transcript ----------------------

    async def _pump(self) -> None:
        async for event in self.agent.events():
            match event:
                case Audio(pcm=pcm, rate=rate):
                    await self._speak(pcm, rate)
                case Interrupted():
                    self._from_agent = None
                    with contextlib.suppress(Exception):
                        await self.ws.send_text("clear")
                case Status(state="speaking"):
                    self._talking = True
                    self._cancel_reminder()
                    await self.event("agent_start_talking")
                case Status(state="listening"):
                    await self._stop_talking()
                case Transcript(role=role, text=text, final=final, id=ident, interrupted=cut):
                    await self._on_transcript(role, text, final, ident, cut)

    async def _speak(self, pcm: bytes, rate: int) -> None:
        if self._from_agent is None or self._from_agent.in_rate != rate:
            self._from_agent = Resampler(rate, self.rate)
        with contextlib.suppress(Exception):
            await self.ws.send_bytes(self._from_agent.process(pcm))

    async def _stop_talking(self) -> None:
        if self._talking:
            self._talking = False
            await self.event("agent_stop_talking")
            self._start_reminder()

    async def _on_transcript(self, role: str, text: str, final: bool, ident: str, cut: bool) -> None:
        index = self._utterance(role, ident)
        self._set(index, text)
        if role == "user":
            self._cancel_reminder()
            self._may_remind = True
            if not final:
                await self._send_update("user_turn" if len(self.transcript[index]["words"]) <= 1 else None)
            return
        if final:
            await self._send_update("user_turn")
            if self.end_after is not None and self.speaking_id == self.end_after and not cut:
                self._own(self.end(1000, "end_call"))
        else:
            await self._send_update(None)

    def _utterance(self, role: str, ident: str) -> int:
        """The transcript index of the engine's utterance `ident` (appended when new)."""
        if ident in self._engine_ids:
            return self._engine_ids[ident]
        last = len(self.transcript) - 1
        if last >= 0 and self.transcript[last]["role"] == role and last not in self._engine_ids.values():
            index = last  # added by a request before the engine's event came
        else:
            self.transcript.append({"role": role, "content": "", "words": []})
            index = len(self.transcript) - 1
        self._engine_ids[ident] = index
        return index

    def _set(self, index: int, text: str) -> None:
        utterance, now = self.transcript[index], round(time.monotonic() - self.t0, 2)
        words = text.split()
        old = utterance["words"]
        utterance["content"] = text
        utterance["words"] = [old[i] if i < len(old) and old[i]["word"] == w else
                              {"word": w, "start": now, "end": round(now + 0.3, 2)}
                              for i, w in enumerate(words)]  # fmt: skip

    def _public(self) -> list[dict]:
        return [dict(u) for u in self.transcript if u["content"]]

    async def _send_update(self, turntaking: str | None) -> None:
        message = {"interaction_type": "update_only", "transcript": self._public()}
        if turntaking:
            message["turntaking"] = turntaking
        await self._to_llm(message)
        if self.updates:
            update = [{"role": u["role"], "content": u["content"]} for u in self.transcript if u["content"]]
            extra = {"turntaking": turntaking} if turntaking else {}
            await self.event("update", transcript=update, **extra)

    # ---- requests and their answers ----------------------------------------------------------

    async def request(self, kind: str) -> int:
        """Send `response_required`/`reminder_required` with the next id; older ids are superseded."""
        now = time.monotonic()
        for old, queue in self.queues.items():
            if old not in self.complete and old not in self.superseded:
                self.superseded[old] = now
                queue.put_nowait(None)
        self.latest += 1
        self.queues[self.latest] = asyncio.Queue()
        message = {"interaction_type": kind, "response_id": self.latest, "transcript": self._public()}
        await self._to_llm(message)
        return self.latest

    async def answer(self, kind: str):
        """The LLM's content for a new request of `kind`, piece by piece, for the engine to speak."""
        number = await self.request(kind)
        async for piece in self.pieces(number):
            yield piece

    async def pieces(self, number: int):
        queue = self.queues[number]
        self.speaking_id = number
        while (chunk := await queue.get()) is not None:
            if chunk["content"]:
                yield chunk["content"]
            if chunk["content_complete"]:
                return

    async def _on_response(self, message: dict) -> None:
        number = message["response_id"]
        if number in self.superseded:
            if time.monotonic() - self.superseded[number] > STALE_GRACE_S:
                await self.violation(f"response for superseded response_id {number}", message)
            return
        if number not in self.queues or number in self.complete:
            state = "already complete" if number in self.complete else "never requested"
            await self.violation(f"response for response_id {number}, {state}", message)
            return
        self._begun = self._begun or number == 0
        if message["content_complete"]:
            self.complete.add(number)
            if message.get("end_call"):
                self.end_after = number
        if number == 0 and self.begins > 1:
            return  # a begin message after a reconnect: required, not spoken again
        self.queues[number].put_nowait(message)

    # ---- the LLM WebSocket -------------------------------------------------------------------

    async def _link(self) -> None:
        """Dial the LLM server; dial again after a silence, at most `max_reconnects` times."""
        for attempt in range(self.state.max_reconnects + 1):
            outcome = await self._connection()
            if outcome != "silent" or self.status != "ongoing":
                break
            log.info("retell sandbox: LLM server silent, reconnecting (%d)", attempt + 1)
        else:
            outcome = "silent"
        if self.status == "ongoing" and not self._ending:  # not our own hang-up after end_call
            await self.violation(f"the LLM WebSocket {outcome}; the call ends")
            await self.end(1011, "llm_websocket_" + outcome.replace(" ", "_"))

    async def _connection(self) -> str:
        try:
            self.llm = await websockets.connect(f"{self.llm_url}/{self.call_id}", open_timeout=5)
        except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            log.info("retell sandbox: LLM WebSocket unreachable: %r", exc)
            return "unreachable"
        self.connections += 1
        self._dropped.clear()
        self.queues.setdefault(0, asyncio.Queue())
        self.complete.discard(0)
        self._begun = False
        pinger = None
        try:
            if not await self._await_begin():
                return "sent no begin message"
            if self.config.get("auto_reconnect"):
                pinger = self._own(self._ping())
            return await self._listen()
        except websockets.ConnectionClosed:
            return "closed" if not self._dropped.is_set() else "silent"
        finally:
            await cancel(pinger)
            with contextlib.suppress(Exception):
                await self.llm.close()

    async def _await_begin(self) -> bool:
        """Read until the begin message (response_id 0) comes, within `begin_timeout`."""
        self.begins += 1
        if self.begins == 1:
            self._own(self._speak_begin())
        deadline = time.monotonic() + self.state.begin_timeout
        while not self._begun:
            remaining = deadline - time.monotonic()
            try:
                raw = await asyncio.wait_for(self.llm.recv(), max(0.0, remaining))
            except TimeoutError:
                wait = self.state.begin_timeout
                await self.violation(f"no begin message (response_id 0) within {wait:g} s")
                return False
            await self._on_llm(raw)
        return True

    async def _speak_begin(self) -> None:
        self.agent.say(self.pieces(0))

    async def _listen(self) -> str:
        silence = self.state.silence_s if self.config.get("auto_reconnect") else None
        while True:
            try:
                raw = await asyncio.wait_for(self.llm.recv(), silence)
            except TimeoutError:
                return "silent"
            await self._on_llm(raw)

    async def _ping(self) -> None:
        while True:
            await self._to_llm({"interaction_type": "ping_pong", "timestamp": int(time.time() * 1000)})
            await asyncio.sleep(self.state.ping_s)

    async def _to_llm(self, message: dict) -> None:
        if self.llm is None:
            return
        with contextlib.suppress(websockets.ConnectionClosed):
            await self.llm.send(json.dumps(message))

    async def _on_llm(self, raw) -> None:
        try:
            message = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            message = None
        if message is None:
            await self.violation("a frame that is not JSON text", str(raw)[:200])
            return
        self.received.append(message)
        del self.received[:-500]
        problems = shape_problems(message)
        for problem in problems:
            await self.violation(problem, message)
        if problems:
            return
        await self._dispatch(message)

    async def _dispatch(self, message: dict) -> None:
        kind = message.get("response_type", "response")
        if kind == "config":
            self.config = message["config"]
            if self.config.get("call_details"):
                await self._to_llm({"interaction_type": "call_details", "call": self._call_object()})
        elif kind == "response":
            await self._on_response(message)
        elif kind == "ping_pong":
            self.pongs += 1
        elif kind == "tool_call_invocation":
            self.invocations.add(message["tool_call_id"])
        elif kind == "tool_call_result" and message["tool_call_id"] not in self.invocations:
            problem = f"tool_call_result for unknown tool_call_id {message['tool_call_id']!r}"
            await self.violation(problem, message)
        elif kind == "metadata":
            await self.event("metadata", metadata=message["metadata"])
        elif kind == "agent_interrupt":
            self.agent.say(_once(message["content"]))

    def _call_object(self) -> dict:
        return {**self.summary(), "call_status": "ongoing", "start_timestamp": int(time.time() * 1000),
                "direction": "inbound"}  # fmt: skip

    # ---- reminders ---------------------------------------------------------------------------

    def _start_reminder(self) -> None:
        self._cancel_reminder()
        if self._may_remind:
            self._reminder = self._own(self._remind())

    def _cancel_reminder(self) -> None:
        if self._reminder is not None and not self._reminder.done():
            self._reminder.cancel()
        self._reminder = None

    async def _remind(self) -> None:
        await asyncio.sleep(self.state.reminder_s)
        self.reminders += 1
        self._reminder, self._may_remind = None, False
        self.agent.say(self.answer("reminder_required"))

    # ---- test controls -----------------------------------------------------------------------

    async def user_says(self, text: str, keep_talking: str = "") -> None:
        """The user says `text` (without audio): growing `update_only`s, then `response_required`.
        With `keep_talking`, a request goes out, the user goes on with those words, and a newer
        request supersedes the first."""
        self._cancel_reminder()
        self._may_remind = True
        self.transcript.append({"role": "user", "content": "", "words": []})
        index = len(self.transcript) - 1
        await self._grow(index, text)
        if keep_talking:
            await self.request("response_required")
            await self._grow(index, f"{text} {keep_talking}")
        self.agent.say(self.answer("response_required"))

    async def _grow(self, index: int, text: str) -> None:
        words = text.split()
        start = len(self.transcript[index]["content"].split())
        for n in range(max(1, start + 1), len(words) + 1):
            self._set(index, " ".join(words[:n]))
            await self._send_update("user_turn" if n == 1 else None)

    async def drop_llm(self) -> None:
        """Act as if the LLM server fell silent: close its socket; the sandbox dials again."""
        self._dropped.set()
        if self.llm is not None:
            await self.llm.close()

    def _own(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


class _Responder:
    """The engine's responder: what the user said goes to the LLM server as `response_required`."""

    def __init__(self, call: Call):
        self.call = call

    async def reply(self, history: list[dict]):
        text = next((m["content"] for m in reversed(history) if m["role"] == "user"), "")
        transcript = self.call.transcript
        if not transcript or transcript[-1]["role"] != "user":
            transcript.append({"role": "user", "content": "", "words": []})
        self.call._set(len(transcript) - 1, text)
        async for piece in self.call.answer("response_required"):
            yield piece

    async def aclose(self) -> None:
        return None


async def _once(text: str):
    yield text


def _rate(value) -> int:
    try:
        rate = int(value)
    except (TypeError, ValueError):
        return DEFAULT_RATE
    return rate if 8000 <= rate <= 48000 else DEFAULT_RATE
