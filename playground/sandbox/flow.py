"""Sandbox of Speechmatics Flow (WebSocket and the LiveKit exchange), backed by the offline agent.

Written from the vendor's LiveKit page (shared/seeds/speechmatics-flow-livekit.txt) and the notes
in shared/protocols.md section 2 (the AsyncAPI spec, the vendor's clients); it shares no code
with our client. Strict: it refuses what the real service would refuse.

``/v1/flow`` (WebSocket):

* auth: ``Authorization: Bearer <key>`` on the upgrade, or the browser client's ``?jwt=<key>``;
  anything else gets HTTP 401 at the upgrade (403 where the server cannot send a denial body,
  as under Daphne);
* order: the first message must be ``StartConversation`` and it comes once; audio before
  ``ConversationStarted`` is refused. A violation is ``Error{type: protocol_error}`` and a close;
* configuration: a missing or unknown ``conversation_config.template_id`` is a ``config_error``
  (the known ids: the vendor's public templates, and each topic's Flow ``template_id`` from the
  site's `scripts`); ``audio_format`` must be ``raw`` PCM (``pcm_s16le`` or ``pcm_f32le``, 8 to
  48 kHz): ``mulaw`` and anything else is a ``config_error``; ``tools`` must be ToolConfigs;
* acknowledgements: every binary frame gets ``AudioAdded{seq_no}`` counting from 1 (the
  ``acks=False`` variant withholds them); each ``AudioReceived`` seq_no must be at most the
  number of frames sent, and ``AudioEnded.last_seq_no`` must equal the frames received;
* replies: ``ResponseStarted{content}`` before the first audio frame, agent audio as s16le
  16 kHz binary frames paced at real time, then ``ResponseCompleted`` or, when the user talks
  over it, ``ResponseInterrupted{content}`` with what was spoken;
* tools: a user turn that asks for a declared demo tool (booking words: check_availability;
  "time": current_time) sends ``ToolInvoke`` and waits for ``ToolResult``; its content is spoken,
  or nothing for ``<NO_RESPONSE_REQUIRED/>``; ``AddInput{input, interrupt_response, immediate}``
  is a typed turn (``immediate: false`` only adds it to the context);
* idle: no message for ``idle_timeout`` s gets ``Warning{type: idle_timeout}``, ``idle_grace``
  s more an ``Error`` and a close;
* close codes: Flow documents none, so they are a setting (``close_codes``: type -> code,
  default the Realtime API's table);
* ``AudioEnded`` ends the conversation: ``ConversationEnded`` and close 1000.

``POST /v1/flow/livekit``: 401 without the Bearer key, 400 for a body that is not a
``StartConversation`` with a known ``template_id`` (or that carries ``audio_format``), else
``{url, token, id}``: a LiveKit JWT minted with livekit-api for one new room, with publish,
subscribe and data grants, valid ``token_ttl`` s. Its LiveKit key and secret derive from the
deployment secret; no LiveKit server runs here (``livekit_url`` is only named).

`make_app(secret, scripts=None, acks=True, close_codes=None, idle_timeout=60, idle_grace=15,
livekit_url=..., token_ttl=300, agent_options=None)`; ``app.state`` (`State`) holds the live
calls (released when their socket closes) and the LiveKit rooms handed out (the last 100).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from livekit import api as livekit
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from playground.engine.agent import Agent
from playground.engine.events import Audio, Failure, Interrupted, Transcript
from playground.engine.resample import Resampler
from playground.engine.responder import Responder
from playground.engine.script import FAQ, Script
from playground.sandbox import SandboxApp, Scripts, derive, find_script
from playground.sandbox.aivoco import TRIGGER_PHRASES, spoken_result, trigger

log = logging.getLogger(__name__)

RATE = 16000
# The vendor's public templates (its JS client and docs); the site's topics add their own ids.
PUBLIC_TEMPLATES = ("default", "flow-service-assistant-amelia", "flow-service-assistant-humphrey",
                    "flow-service-assistant-one")  # fmt: skip
ENCODINGS = ("pcm_s16le", "pcm_f32le")
CLOSE_CODES = {"protocol_error": 1003, "config_error": 1003, "idle_timeout": 1008, "session_timeout": 1008,
               "not_authorised": 4001, "not_allowed": 4003, "quota_exceeded": 4005,
               "timelimit_exceeded": 4006, "job_error": 4013, "internal_error": 1011}  # fmt: skip
NO_RESPONSE = "<NO_RESPONSE_REQUIRED/>"
TOOL_TIMEOUT = 30.0
ROOMS_KEPT = 100
GENERIC_FAQ = (
    FAQ("Who are you", "I am a voice assistant in the Flow sandbox.", ("who", "name")),
    FAQ(
        "What can you do",
        "I can answer short questions, tell the time and look for a table.",
        ("what", "help"),
    ),
    FAQ("Thank you goodbye", "You are welcome. Goodbye!", ("thank", "thanks", "goodbye", "bye")),
)


def api_key(secret: str) -> str:
    """The sandbox's Speechmatics key in the deployment whose secret it is."""
    return derive(secret, "flow-api-key")


def livekit_credentials(secret: str) -> tuple[str, str]:
    """(LiveKit API key, LiveKit API secret) the sandbox signs room tokens with."""
    return "API" + derive(secret, "flow-livekit-key")[:12], derive(secret, "flow-livekit-secret")


def client_config(base_url: str, secret: str) -> dict:
    scheme, rest = base_url.split("://", 1)
    return {"url": f"{'wss' if scheme == 'https' else 'ws'}://{rest}/v1/flow", "api_key": api_key(secret)}


@dataclass
class State:
    key: str
    livekit_key: str
    livekit_secret: str
    scripts: Scripts | None = None
    acks: bool = True
    close_codes: dict = field(default_factory=lambda: dict(CLOSE_CODES))
    idle_timeout: float = 60.0
    idle_grace: float = 15.0
    livekit_url: str = "ws://127.0.0.1:7880"
    token_ttl: int = 300
    agent_options: dict = field(default_factory=dict)
    calls: set = field(default_factory=set)
    rooms: deque = field(default_factory=lambda: deque(maxlen=ROOMS_KEPT))  # (id, room, template_id)

    def authorised(self, given: str | None) -> bool:
        return bool(given) and secrets.compare_digest(given.encode(), self.key.encode())


def make_app(secret: str, *, scripts: Scripts | None = None, acks: bool = True,
             close_codes: dict | None = None, idle_timeout: float = 60.0, idle_grace: float = 15.0,
             livekit_url: str = "ws://127.0.0.1:7880", token_ttl: int = 300,
             agent_options: dict | None = None) -> SandboxApp:  # fmt: skip
    state = State(api_key(secret), *livekit_credentials(secret), scripts=scripts, acks=acks,
                  close_codes={**CLOSE_CODES, **(close_codes or {})}, idle_timeout=idle_timeout,
                  idle_grace=idle_grace, livekit_url=livekit_url, token_ttl=token_ttl,
                  agent_options=dict(agent_options or {}))  # fmt: skip

    async def flow_socket(websocket: WebSocket) -> None:
        if not state.authorised(_bearer(websocket.headers) or websocket.query_params.get("jwt")):
            await _deny(websocket)
            return
        await websocket.accept()
        call = Call(websocket, state)
        state.calls.add(call)
        try:
            await call.run()
        finally:
            state.calls.discard(call)

    async def livekit_session(request: Request) -> JSONResponse:
        return await _livekit(request, state)

    routes = [WebSocketRoute("/v1/flow", flow_socket),
              Route("/v1/flow/livekit", livekit_session, methods=["POST"])]  # fmt: skip
    return SandboxApp(Starlette(routes=routes), state)


def _bearer(headers) -> str | None:
    value = headers.get("authorization", "")
    return value[7:].strip() if value.lower().startswith("bearer ") else None


async def _deny(websocket: WebSocket) -> None:
    body = {"message": "Error", "type": "not_authorised", "reason": "Invalid or missing API key"}
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(body, status_code=401))
    else:
        await websocket.close(code=1008)  # before accept: the server answers HTTP 403


async def template_script(scripts: Scripts | None, template_id) -> Script | None:
    """The script acting out `template_id`: the site's topic whose Flow options name it, a generic
    assistant for the vendor's public templates, or None (unknown)."""
    if not isinstance(template_id, str) or not template_id:
        return None
    found = await find_script(scripts, lambda _s, opts: (opts.get("flow") or {}).get("template_id")
                              == template_id)  # fmt: skip
    if found is not None:
        return found
    if template_id in PUBLIC_TEMPLATES:
        return Script(slug="flow-sandbox", title="Flow sandbox", persona="You are a helpful assistant.",
                      greeting="Hello! How can I help you today?", faq=GENERIC_FAQ)  # fmt: skip
    return None


def config_problem(message: dict, *, audio: bool = True) -> str:
    """Why a StartConversation cannot start (not counting the template's existence), or ""."""
    config = message.get("conversation_config")
    if not isinstance(config, dict):
        return "conversation_config is required"
    if not isinstance(config.get("template_id"), str) or not config["template_id"]:
        return "conversation_config.template_id is required"
    variables = config.get("template_variables", {})
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        return "template_variables must map names to strings"
    if audio and "audio_format" in message:
        problem = format_problem(message["audio_format"])
        if problem:
            return problem
    if not audio and "audio_format" in message:
        return "audio_format must not be given for LiveKit: LiveKit controls the audio format"
    return tools_problem(message.get("tools", []))


def format_problem(audio_format) -> str:
    if not isinstance(audio_format, dict) or audio_format.get("type") != "raw":
        return "audio_format.type must be 'raw'"
    if audio_format.get("encoding", "pcm_s16le") not in ENCODINGS:
        return f"audio_format.encoding must be one of {', '.join(ENCODINGS)} (raw PCM)"
    rate = audio_format.get("sample_rate", RATE)
    if not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 48000:
        return "audio_format.sample_rate must be a whole number from 8000 to 48000"
    return ""


def tools_problem(tools) -> str:
    if not isinstance(tools, list):
        return "tools must be a list"
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" if isinstance(tool, dict) else True:
            return f"tools[{i}].type must be 'function'"
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return f"tools[{i}].function needs a name"
        extra = set(function) - {"name", "description", "parameters"}
        if extra:
            return f"tools[{i}].function has unknown field(s) {', '.join(sorted(extra))}"
    return ""


async def _livekit(request: Request, state: State) -> JSONResponse:
    if not state.authorised(_bearer(request.headers)):
        return JSONResponse({"detail": "Invalid or missing API key"}, status_code=401)
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("message") != "StartConversation":
        return JSONResponse({"detail": "The body must be a StartConversation message"}, status_code=400)
    problem = config_problem(body, audio=False)
    template_id = (body.get("conversation_config") or {}).get("template_id") if not problem else None
    if not problem and await template_script(state.scripts, template_id) is None:
        problem = f"Unknown template_id {template_id!r}"
    if problem:
        return JSONResponse({"detail": problem}, status_code=400)
    ident, room = str(uuid.uuid4()), f"flow-{uuid.uuid4().hex[:16]}"
    grants = livekit.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True,
                                 can_publish_data=True)  # fmt: skip
    token = (livekit.AccessToken(state.livekit_key, state.livekit_secret)
             .with_identity(f"client-{ident[:8]}").with_grants(grants)
             .with_ttl(dt.timedelta(seconds=state.token_ttl)).to_jwt())  # fmt: skip
    state.rooms.append((ident, room, body["conversation_config"]["template_id"]))
    return JSONResponse({"url": state.livekit_url, "token": token, "id": ident})


class Violation(Exception):
    """The client broke the protocol: the call has been closed."""


class FlowResponder:
    """The agent's responder: a tool round trip when a user turn asks for a declared tool, else the
    FAQ; remembers the reply's full text for ResponseStarted."""

    def __init__(self, call: Call, faq: Responder):
        self.call, self.faq = call, faq
        self.text: str | None = None  # the reply in progress, as far as it is known

    async def reply(self, history: list[dict]):
        self.text = ""
        said = next((m["content"] for m in reversed(history) if m["role"] == "user"), "")
        wanted = trigger(said, self.call.declared())
        if wanted is None:
            async with contextlib.aclosing(self.faq.reply(history)) as pieces:
                async for piece in pieces:
                    self.text += piece
                    yield piece
            return
        answer = await self.call.invoke(*wanted)
        if answer:
            self.text = answer
            yield answer

    async def aclose(self) -> None:
        await self.faq.aclose()


class Call:
    """One conversation socket."""

    def __init__(self, websocket: WebSocket, state: State):
        self.ws, self.state = websocket, state
        self.phase = "new"  # new -> starting -> started
        self.frames_in = 0  # microphone frames received (AudioAdded seq_no)
        self.frames_out = 0  # agent audio frames sent
        self.acked_out = 0  # the highest AudioReceived seq_no
        self.agent: Agent | None = None
        self.responder: FlowResponder | None = None
        self.tools: dict[str, dict] = {}
        self.pending: dict[str, asyncio.Future] = {}
        self.tasks: set[asyncio.Task] = set()
        self.t0 = time.monotonic()
        self.last_heard = time.monotonic()
        self.to_agent: Resampler | None = None
        self.from_agent: Resampler | None = None
        self.encoding = "pcm_s16le"
        self.responding: float | None = None  # start_time of the reply in progress
        self.cut = False
        self.replies = 0
        self.typed: list[str] = []  # AddInput texts the agent will echo as user turns
        self.closed = False

    async def run(self) -> None:
        self.spawn(self._watch_idle())
        try:
            while not self.closed:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                self.last_heard = time.monotonic()
                if message.get("bytes") is not None:
                    await self.on_audio(message["bytes"])
                elif message.get("text") is not None:
                    await self.on_text(message["text"])
        except Violation:
            pass
        except (WebSocketDisconnect, RuntimeError):  # the client left while we answered (after AudioEnded)
            pass
        finally:
            await self.shutdown()

    def spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def shutdown(self) -> None:
        self.closed = True
        for future in self.pending.values():
            future.cancel()
        tasks = [t for t in self.tasks if t is not asyncio.current_task() and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        if self.agent is not None:
            await self.agent.close()

    # ---- client -> server -------------------------------------------------------------------

    async def on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("message"), str):
            await self.fail("protocol_error", "Messages must be JSON objects with a 'message' field")
        kind = message["message"]
        if self.phase == "new" and kind != "StartConversation":
            await self.fail("protocol_error", f"The first message must be StartConversation, not {kind}")
        handler = getattr(self, f"_on_{kind}", None)
        if handler is None:
            await self.warn("protocol_error", f"Unknown message {kind!r} was ignored")
            return
        await handler(message)

    async def _on_StartConversation(self, message: dict) -> None:
        if self.phase != "new":
            await self.fail("protocol_error", "StartConversation may be sent only once")
        problem = config_problem(message)
        if problem:
            await self.fail("config_error", problem)
        template_id = message["conversation_config"]["template_id"]
        script = await template_script(self.state.scripts, template_id)
        if script is None:
            await self.fail("config_error", f"Unknown template_id {template_id!r}")
        audio_format = message.get("audio_format") or {}
        self.encoding = audio_format.get("encoding", "pcm_s16le")
        self.to_agent = Resampler(audio_format.get("sample_rate", RATE), RATE)
        self.tools = {t["function"]["name"]: t for t in message.get("tools", [])}
        self.phase = "starting"
        self.spawn(self._start(script))

    async def _on_AudioReceived(self, message: dict) -> None:
        seq_no = message.get("seq_no")
        if not isinstance(seq_no, int) or isinstance(seq_no, bool) or not 1 <= seq_no <= self.frames_out:
            sent = self.frames_out
            await self.fail("protocol_error", f"AudioReceived seq_no {seq_no!r}: {sent} frame(s) were sent")
        self.acked_out = max(self.acked_out, seq_no)

    async def _on_AudioEnded(self, message: dict) -> None:
        last = message.get("last_seq_no")
        if last != self.frames_in:
            await self.fail("protocol_error", f"AudioEnded last_seq_no {last!r}, but {self.frames_in} "
                                              "audio frame(s) were received")  # fmt: skip
        await self.send({"message": "ConversationEnded"})
        await self.close(1000)

    async def _on_ToolResult(self, message: dict) -> None:
        ident, status = message.get("id"), message.get("status")
        future = self.pending.get(ident) if isinstance(ident, str) else None
        if future is None or status not in ("ok", "rejected", "failed"):
            await self.warn("protocol_error", f"ToolResult for unknown id {ident!r} or bad status {status!r}")
            return
        if not future.done():
            future.set_result((status, str(message.get("content", ""))))

    async def _on_AddInput(self, message: dict) -> None:
        text = message.get("input")
        if not isinstance(text, str) or not text.strip() or self.agent is None:
            await self.warn("protocol_error", "AddInput needs a non-empty 'input' after ConversationStarted")
            return
        if message.get("immediate") or message.get("interrupt_response"):
            self.typed.append(text.strip())  # no transcript of it: AddInput is not speech
            await self.agent.send_text(text)  # barges in on the reply in progress, answers at once
        else:
            self.agent.history.append({"role": "user", "content": text})  # context for the next request

    async def on_audio(self, data: bytes) -> None:
        if self.phase != "started":
            await self.fail("protocol_error", "Audio was sent before ConversationStarted")
        self.frames_in += 1
        if self.state.acks:
            await self.send({"message": "AudioAdded", "seq_no": self.frames_in})
        if self.encoding == "pcm_f32le":
            data = np.clip(np.frombuffer(data[: len(data) // 4 * 4], "<f4") * 32767, -32768, 32767)
            data = data.astype("<i2").tobytes()
        self.agent.feed(self.to_agent.process(data[: len(data) // 2 * 2]))

    # ---- the agent --------------------------------------------------------------------------

    async def _start(self, script: Script) -> None:
        if self.tools:
            script = Script(script.slug, script.title, script.persona, script.greeting, script.language,
                            faq=script.faq, phrases=script.phrases + TRIGGER_PHRASES,
                            fallback=script.fallback)  # fmt: skip
        self.responder = FlowResponder(self, Responder(script, None))
        agent = Agent(script, language=script.language, responder=self.responder, chunk_ms=20,
                      **self.state.agent_options)  # fmt: skip
        try:
            await agent.start()
        except Exception:
            log.exception("flow sandbox: the agent did not start")
            with contextlib.suppress(Violation):
                await self.fail("internal_error", "The conversation could not start")
            return
        self.agent = agent
        session = uuid.uuid4().hex
        await self.send({"message": "ConversationStarted", "id": session, "asr_session_id": session[::-1],
                         "language_pack_info": {"language_description": "English", "word_delimiter": " ",
                                                "writing_direction": "left-to-right", "itn": True,
                                                "adapted": False}})  # fmt: skip
        self.phase = "started"
        self.spawn(self._forward(agent))

    async def _forward(self, agent: Agent) -> None:
        try:
            async for event in agent.events():
                await self._send_event(event)
        except Exception as exc:  # the client went away mid-send: the receive loop ends the call
            log.debug("flow sandbox send failed: %r", exc)

    async def _send_event(self, event) -> None:
        match event:
            case Transcript(role="user", text=text, final=True) if text in self.typed:
                self.typed.remove(text)
            case Transcript(role="user", text=text, final=final, start_ms=start, end_ms=end):
                await self._user_transcript(text, final, start, end)
            case Transcript(role="agent", final=False, text=text):
                await self._response_started(text)
            case Transcript(role="agent", interrupted=True, text=text):
                await self._response_over("ResponseInterrupted", text)
            case Transcript(role="agent", text=text):
                await self._response_over("ResponseCompleted", text)
            case Audio(pcm=pcm, rate=rate):
                await self._speak(pcm, rate)
            case Interrupted():
                self.cut = True
                if self.from_agent is not None:
                    self.from_agent.reset()
            case Failure(where=where, message=message):
                await self.warn("llm_error" if where == "reply" else "high_asr_latency", message)

    async def _user_transcript(self, text: str, final: bool, start_ms, end_ms) -> None:
        now = time.monotonic() - self.t0
        start = start_ms / 1000 if start_ms is not None else now
        end = end_ms / 1000 if end_ms is not None else now
        results = [{"type": "word", "start_time": start, "end_time": end,
                    "alternatives": [{"content": w, "confidence": 0.9}]} for w in text.split()]  # fmt: skip
        await self.send({"message": "AddTranscript" if final else "AddPartialTranscript", "format": "2.1",
                         "metadata": {"start_time": start, "end_time": end, "transcript": text},
                         "results": results})  # fmt: skip

    async def _response_started(self, clause: str) -> None:
        if self.responding is not None:
            return
        self.replies += 1
        self.cut = False
        self.responding = time.monotonic() - self.t0
        known = self.responder.text if self.responder and self.responder.text else ""
        if self.replies == 1 and not known and self.agent.script.greeting:
            known = self.agent.script.greeting  # the greeting does not go through the responder
        started = {"message": "ResponseStarted", "content": known or clause, "start_time": self.responding}
        await self.send(started)

    async def _response_over(self, kind: str, text: str) -> None:
        if self.responding is None:
            return
        if kind == "ResponseCompleted" and self.from_agent is not None:
            await self._send_audio(self.from_agent.flush())
        end = time.monotonic() - self.t0
        await self.send({"message": kind, "content": text, "start_time": self.responding, "end_time": end})
        self.responding = None
        if self.responder is not None:
            self.responder.text = None

    async def _speak(self, pcm: bytes, rate: int) -> None:
        if self.cut:
            return
        if self.responding is None:  # ResponseStarted always comes before a reply's first audio
            await self._response_started("")
        if self.from_agent is None or self.from_agent.in_rate != rate:
            self.from_agent = Resampler(rate, RATE)
        await self._send_audio(self.from_agent.process(pcm))

    async def _send_audio(self, pcm: bytes) -> None:
        if pcm:
            self.frames_out += 1
            await self.ws.send_bytes(pcm)

    # ---- tools ------------------------------------------------------------------------------

    def declared(self) -> dict[str, dict]:
        """The declared tools as the trigger rules read them: name -> {parameters: [{name}]}."""
        shaped = {}
        for name, tool in self.tools.items():
            properties = (tool["function"].get("parameters") or {}).get("properties") or {}
            shaped[name] = {"parameters": [{"name": p} for p in properties]}
        return shaped

    async def invoke(self, name: str, arguments: dict) -> str:
        """ToolInvoke -> the client's ToolResult -> what the agent says ("" for no response)."""
        ident = f"tool_{uuid.uuid4().hex[:12]}"
        future = self.pending[ident] = asyncio.get_running_loop().create_future()
        try:
            await self.send({"message": "ToolInvoke", "id": ident, "type": "function",
                             "function": {"name": name, "arguments": arguments}})  # fmt: skip
            status, content = await asyncio.wait_for(future, TOOL_TIMEOUT)
        except TimeoutError:
            return "Sorry, the system did not answer in time."
        finally:
            self.pending.pop(ident, None)
        if content.strip() == NO_RESPONSE:
            return ""
        if status != "ok":
            return f"Sorry, I could not do that: {content[:120]}"
        try:
            return spoken_result(name, json.loads(content))
        except ValueError:
            return content[:300]

    # ---- server -> client -------------------------------------------------------------------

    async def _watch_idle(self) -> None:
        warned = False
        while not self.closed:
            await asyncio.sleep(min(0.5, self.state.idle_timeout / 4))
            idle = time.monotonic() - self.last_heard
            if idle < self.state.idle_timeout:
                warned = False
            elif not warned:
                warned = True
                await self.warn("idle_timeout", f"No input for {self.state.idle_timeout:g} s")
            elif idle >= self.state.idle_timeout + self.state.idle_grace:
                with contextlib.suppress(Violation):
                    await self.fail("idle_timeout", "The conversation was idle for too long")
                return

    async def send(self, message: dict) -> None:
        if not self.closed:
            await self.ws.send_text(json.dumps(message))

    async def warn(self, kind: str, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.send({"message": "Warning", "type": kind, "reason": reason})

    async def fail(self, kind: str, reason: str) -> None:
        """Error{type, reason} and a close with the type's code; ends the receive loop."""
        with contextlib.suppress(Exception):
            await self.send({"message": "Error", "type": kind, "reason": reason})
        await self.close(self.state.close_codes.get(kind, 1011), kind)
        raise Violation(reason)

    async def close(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, reason=reason)
