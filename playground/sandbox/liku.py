"""Sandbox of Liku voice chat (med2lab), backed by the offline agent.

Written from the vendor's guide (shared/seeds/liku-websocket-guide.txt), apart
from our client (sessions/upstreams/liku.py). It is strict where the guide is:

* ``POST /api/liku/authentication/`` ``{"email", "password"}`` -> ``{"token_key": "<40 hex>"}``;
  wrong credentials -> 400 ``{"non_field_errors": [...]}`` (Django REST framework's login).
  Login and save take JSON only (the guide sends ``Content-Type: application/json``): another
  content type -> 415 ``{"detail": "Unsupported media type \"…\" in request."}``, as a DRF
  view with the JSON parser answers; malformed JSON -> 400.
  The one account: ``sandbox@liku.test``, its password derived from the deployment's secret
  (`password`), so it is not computable from public source.
* ``GET /api/init-websocket?token=&topic_id=[&face_id&liku_id&language]`` -> plain text
  connection data (base64 of the parameters and a nonce); bad token -> 401, no
  ``topic_id`` -> 400, both as ``{"detail": ...}``.
* ``WebSocket /chat-stream``: the first frame must be text JSON
  ``{"connection_data": <issued, still valid>}``, else close 4000 (binary first too);
  then ``{"type": "connection_established"}`` (variant ``confirmation="silent"``: no message,
  and nothing at all until the client's first audio); binary s16le 16 kHz of any size in;
  turn end after 700 ms of silence; per turn ``user_transcript`` (``status``
  ``in_progress`` while speaking, ``completed`` at the end), 24 kHz s16le audio
  paced at real time, then the reply as the guide shows it: ``assistant_transcript`` with
  ``message_id``, ``response_id`` and ``status`` ``completed`` (``incomplete`` when the user
  cut it short), and ``assistant_message`` with the same ``message_id`` (variant
  ``replies``: "both", the default, "transcript" or "message"). The status words the guide
  does not show are a variant too (``statuses``; a final of None sends no ``status``).
  No barge-in message: the audio just stops. The server may end a chat normally with close
  1000 or 1005 (no status; `end_all`).
* ``POST /api/save-transcript`` with ``Authorization: Token <key>`` and
  ``{"connection_data", "topic_id", "conversation_id"}``: missing/bad token -> 401;
  missing fields -> 400; connection data unknown or another account's, a ``topic_id`` or
  ``conversation_id`` that does not match the connection data -> 400 with DRF field errors
  (``{"conversation_id": ["…"]}``). Where ``conversation_id`` comes from the guide does not
  say: by default (``conversation_ids="client"``) it is the client's own, bound to the
  connection data by its first save; with ``"server"`` the sandbox issues one per chat in its
  confirmation message (``conversation_id``) and only that one is accepted. Saves are kept in
  memory (`State.saved`), re-saving the same conversation replaces it;
  ``GET /api/_sandbox/saved`` lists the caller's own (sandbox only). The guide's body has no
  transcript: an extra ``"transcript"`` (our reviewed turns) is kept with the save as given.
  Idempotency (not in the guide; our assumption, documented in sessions/upstreams/liku.py): a
  save carrying an ``Idempotency-Key`` header that an earlier successful save carried is not
  stored again: the earlier answer is repeated. `State.stored` counts saves actually stored,
  `State.save_requests` every authenticated save request.

Connection data stays valid after a socket closes (for CHAT_TTL_S after its last use), so
a client may reconnect with it and the chat goes on (no second greeting). The topic comes
from the site's scripts whose ``provider_options.liku.topic_id`` matches (the sandbox stands
in for Liku's topic configuration), else a generic demo script; it is spoken in the init's
``language`` where the topic is written in it (with that language's espeak-ng voice), else in
the topic's own language.

`make_app(secret, scripts=None, replies=, confirmation=, conversation_ids=, statuses=,
save_failures=, save_error=, save_delay=)`; the state object is `app.state` (`State`), whose
fault controls tests use: `outage`, `expire_all`, `drop_all`, `end_all`, `send_raw`,
`save_outage`, `reset`, and the save API's faults (its attributes, settable while it runs):
`save_failures` (the next N authenticated saves answer 503, then it is up again), `save_error`
((status, detail): every save answers that, e.g. (422, "…")), `save_delay` (seconds a save
waits after it is stored before answering, so a client can die with its request in flight).
Everything it keeps is bounded (MAX_* below, oldest first out).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from playground.engine.agent import Agent
from playground.engine.events import Audio, Interrupted, Transcript
from playground.engine.resample import Resampler
from playground.engine.script import FAQ, Script
from playground.sandbox import SandboxApp, Scripts, derive, find_script

log = logging.getLogger(__name__)

EMAIL = "sandbox@liku.test"
OUTPUT_RATE = 24000
TURN_SILENCE_MS = 700
FIRST_FRAME_TIMEOUT = 10.0
INVALID = 4000
# Bounds on what the sandbox keeps, so no client can grow it without limit.
MAX_TOKENS = 100
MAX_CHATS = 200
CHAT_TTL_S = 3600.0  # connection data unused this long is forgotten
MAX_MESSAGES = 500  # per chat
MAX_INITS = 200
MAX_SAVED = 200
IDEMPOTENCY_HEADER = "Idempotency-Key"
NO_STATUS = 1005  # a close frame without a status code
STATUSES = {"partial": "in_progress", "final": "completed", "cut_short": "incomplete"}
REPLIES = ("both", "transcript", "message")

GENERIC = Script(
    slug="liku-demo",
    title="Liku demo",
    persona="You are Liku, a friendly assistant.",
    greeting="Hello, this is Liku. How can I help you today?",
    faq=(FAQ("What can you do", "I can chat with you about anything you like.", ("what", "do", "help")),),
)


def password(secret: str) -> str:
    """The sandbox account's password in the deployment whose secret it is."""
    return derive(secret, "liku-password")[:24]


def client_config(base_url: str, secret: str) -> dict:
    chat = "ws" + base_url[4:] if base_url.startswith("http") else base_url
    return {"api_url": base_url, "chat_url": chat, "email": EMAIL, "password": password(secret), "token": ""}


@dataclass
class Chat:
    """What one issued connection data stands for: a chat on the server."""

    email: str
    params: dict
    valid: bool = True
    greeted: bool = False
    used: float = field(default_factory=time.monotonic)
    conversation_id: str = ""  # issued ("server") or bound by the first save ("client")
    voice: str = ""  # the espeak-ng voice the agent speaks with, for tests
    messages: list[dict] = field(default_factory=list)
    frame_sizes: set[int] = field(default_factory=set)  # of the audio received, for tests

    def add(self, message: dict) -> None:
        self.messages.append(message)
        del self.messages[:-MAX_MESSAGES]


@dataclass
class State:
    """Everything one Liku sandbox keeps, and the fault controls of tests running it in process."""

    accounts: dict[str, str]  # email -> password
    scripts: Scripts | None = None
    tokens: OrderedDict[str, str] = field(default_factory=OrderedDict)  # token_key -> email
    chats: OrderedDict[str, Chat] = field(default_factory=OrderedDict)  # connection data -> chat
    inits: list[dict] = field(default_factory=list)  # every successful init: email and parameters
    saved: list[dict] = field(default_factory=list)
    sockets: set = field(default_factory=set)
    down: bool = False
    save_down: bool = False
    # The save API's faults and counters (see the module doc).
    save_failures: int = 0
    save_error: tuple[int, str] | None = None
    save_delay: float = 0.0
    save_requests: int = 0
    stored: int = 0
    answered: OrderedDict[str, dict] = field(default_factory=OrderedDict)  # idempotency key -> answer
    # Variants where the guide is silent (see make_app).
    replies: str = "both"
    confirmation: str = "message"
    conversation_ids: str = "client"
    statuses: dict = field(default_factory=lambda: dict(STATUSES))

    def token_for(self, email: str) -> str:
        token = next((t for t, e in self.tokens.items() if e == email), None) or secrets.token_hex(20)
        self.tokens[token] = email
        self.tokens.move_to_end(token)
        while len(self.tokens) > MAX_TOKENS:
            self.tokens.popitem(last=False)
        return token

    def new_chat(self, data: str, chat: Chat) -> None:
        self.prune()
        self.chats[data] = chat
        while len(self.chats) > MAX_CHATS:
            self.chats.popitem(last=False)

    def chat(self, data: str) -> Chat | None:
        chat = self.chats.get(data)
        if chat is not None:
            chat.used = time.monotonic()
            self.chats.move_to_end(data)
        return chat

    def prune(self) -> None:
        """Forget connection data unused for CHAT_TTL_S (the least recently used come first)."""
        stale = time.monotonic() - CHAT_TTL_S
        while self.chats and next(iter(self.chats.values())).used < stale:
            self.chats.popitem(last=False)

    def record_init(self, entry: dict) -> None:
        self.inits.append(entry)
        del self.inits[:-MAX_INITS]

    def save(self, record: dict) -> None:
        kept = [s for s in self.saved if s["conversation_id"] != record["conversation_id"]]
        self.saved[:] = [*kept, record][-MAX_SAVED:]
        self.stored += 1

    def remember(self, key: str, answer: dict) -> None:
        if key:
            self.answered[key] = answer
            while len(self.answered) > MAX_SAVED:
                self.answered.popitem(last=False)

    def save_fault(self) -> Response | None:
        """The answer an injected fault gives instead of saving, if any."""
        if self.save_down:
            return _detail(503, "Transcript service unavailable.")
        if self.save_failures > 0:
            self.save_failures -= 1
            return _detail(503, "Transcript service unavailable.")
        if self.save_error is not None:
            return _detail(*self.save_error)
        return None

    # ---- fault controls for in-process tests ----

    async def _close_all(self, code: int) -> None:
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close(code)

    async def drop_all(self) -> None:
        """The server loses every live chat socket (1011); connection data stays valid."""
        await self._close_all(1011)

    async def end_all(self, code: int = 1000) -> None:
        """The server ends every live chat normally: 1000, or 1005, a close frame without a status
        (served by uvicorn; Daphne turns a close without a code into 1000)."""
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.send({"type": "websocket.close", "code": None if code == NO_STATUS else code,
                               "reason": ""})  # fmt: skip

    async def outage(self, down: bool = True) -> None:
        """The chat service goes down (sockets dropped, init and new sockets refused) or comes back."""
        self.down = down
        if down:
            await self._close_all(1011)

    async def expire_all(self) -> None:
        """Every connection data becomes invalid; live sockets close with 4000."""
        for chat in self.chats.values():
            chat.valid = False
        await self._close_all(INVALID)

    async def send_raw(self, text: str) -> None:
        """A text frame as is (e.g. malformed) to every live chat socket."""
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.send_text(text)

    def save_outage(self, down: bool = True) -> None:
        self.save_down = down

    def reset(self) -> None:
        self.tokens.clear()
        self.chats.clear()
        self.inits.clear()
        self.saved.clear()
        self.answered.clear()
        self.down = self.save_down = False
        self.save_failures, self.save_error, self.save_delay = 0, None, 0.0
        self.save_requests = self.stored = 0


def state_of(conn) -> State:
    return conn.app.state.sandbox


# ---- REST ----------------------------------------------------------------------------------


def _detail(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _not_json(request: Request) -> Response | None:
    """DRF's answer to a body in another content type than its parser's (JSON): 415."""
    given = request.headers.get("content-type", "")
    if given.split(";")[0].strip().lower() == "application/json":
        return None
    return _detail(415, f'Unsupported media type "{given}" in request.')


async def _json_body(request: Request) -> dict | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def authentication(request: Request) -> Response:
    state = state_of(request)
    refused = _not_json(request)
    if refused is not None:
        return refused
    body = await _json_body(request)
    if body is None:
        return _detail(400, "JSON parse error.")
    missing = {k: ["This field is required."] for k in ("email", "password") if not body.get(k)}
    if missing:
        return JSONResponse(missing, status_code=400)
    known = state.accounts.get(body["email"]) if isinstance(body["email"], str) else None
    given = body["password"] if isinstance(body["password"], str) else ""
    if known is None or not secrets.compare_digest(known.encode(), given.encode()):
        return JSONResponse({"non_field_errors": ["Unable to log in with provided credentials."]}, 400)
    return JSONResponse({"token_key": state.token_for(body["email"])})


async def init_websocket(request: Request) -> Response:
    state = state_of(request)
    # The guide puts the token in the query (our access log redacts it); a header works too.
    token = request.query_params.get("token") or _header_token(request) or ""
    email = state.tokens.get(token)
    if email is None:
        return _detail(401, "Invalid token.")
    if state.down:
        return _detail(503, "Service unavailable.")
    if not request.query_params.get("topic_id", "").strip():
        return _detail(400, "topic_id is required.")
    params = {k: request.query_params[k] for k in ("topic_id", "face_id", "liku_id", "language")
              if k in request.query_params}  # fmt: skip
    blob = json.dumps({**params, "nonce": secrets.token_hex(16), "issued": int(time.time())})
    data = base64.urlsafe_b64encode(blob.encode()).decode()
    issued = f"conv_{secrets.token_hex(8)}" if state.conversation_ids == "server" else ""
    state.new_chat(data, Chat(email, params, conversation_id=issued))
    state.record_init({"email": email, **params})
    return PlainTextResponse(data)


def _header_token(request: Request) -> str | None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    return key.strip() if scheme == "Token" else None


def _token_email(request: Request) -> str | None:
    return state_of(request).tokens.get(_header_token(request) or "")


async def save_transcript(request: Request) -> Response:
    state = state_of(request)
    if not request.headers.get("authorization"):
        return _detail(401, "Authentication credentials were not provided.")
    email = _token_email(request)
    if email is None:
        return _detail(401, "Invalid token.")
    state.save_requests += 1
    fault = state.save_fault()
    if fault is not None:
        return fault
    refused = _not_json(request)
    if refused is not None:
        return refused
    body = await _json_body(request)
    if body is None:
        return _detail(400, "JSON parse error.")
    missing = {k: ["This field is required."] for k in ("connection_data", "topic_id", "conversation_id")
               if not str(body.get(k) or "").strip()}  # fmt: skip
    if missing:
        return JSONResponse(missing, status_code=400)
    chat = state.chat(body["connection_data"]) if isinstance(body["connection_data"], str) else None
    if chat is None or chat.email != email:
        return _field_error("connection_data", "Invalid connection data.")
    if str(body["topic_id"]) != chat.params["topic_id"]:
        return _field_error("topic_id", "Does not match the connection data.")
    problem = _conversation_problem(state, chat, str(body["conversation_id"]))
    if problem:
        return _field_error("conversation_id", problem)
    key = f"{email}:{request.headers[IDEMPOTENCY_HEADER]}" if request.headers.get(IDEMPOTENCY_HEADER) else ""
    if key in state.answered:  # the same save again (a client that lost our answer): not stored twice
        return JSONResponse(state.answered[key])
    chat.conversation_id = str(body["conversation_id"])
    record = {"conversation_id": chat.conversation_id, "topic_id": chat.params["topic_id"],
              "email": email, "messages": list(chat.messages), "transcript": body.get("transcript"),
              "idempotency_key": request.headers.get(IDEMPOTENCY_HEADER, "")}  # fmt: skip
    state.save(record)
    answer = {"status": "saved", "conversation_id": record["conversation_id"],
              "messages": len(record["messages"]), "save": state.stored}  # fmt: skip
    state.remember(key, answer)
    if state.save_delay:  # stored, but the answer is late: a client may die waiting for it
        await asyncio.sleep(state.save_delay)
    return JSONResponse(answer)


def _field_error(name: str, message: str) -> JSONResponse:
    return JSONResponse({name: [message]}, status_code=400)


def _conversation_problem(state: State, chat: Chat, conversation_id: str) -> str:
    """Why `conversation_id` cannot be saved with `chat`'s connection data ("" when it can): it must
    be the chat's own (issued, or bound by an earlier save), and never another chat's."""
    owner = next((c for c in state.chats.values() if c.conversation_id == conversation_id), None)
    if owner is chat or (owner is None and not chat.conversation_id):
        return ""  # its own, or a first save binding a new id ("client")
    if owner is None and state.conversation_ids == "server":
        return "Unknown conversation."  # the server issued no such id
    return "Does not match the connection data."


async def saved(request: Request) -> Response:
    """Sandbox only: what this account saved, so tests and demos can check it (others' stay private)."""
    email = _token_email(request)
    if email is None:
        return _detail(401, "Invalid token.")
    return JSONResponse([s for s in state_of(request).saved if s["email"] == email])


# ---- chat-stream ---------------------------------------------------------------------------


async def chat_stream(ws: WebSocket) -> None:
    state = state_of(ws)
    if state.down:
        await ws.close(1011)  # before accept: the handshake fails
        return
    await ws.accept()
    state.sockets.add(ws)
    try:
        chat = await _handshake(ws, state)
        if chat is not None:
            if state.confirmation != "silent":
                await ws.send_text(json.dumps(_confirmation(chat)))
            await _converse(ws, chat, state)
    except WebSocketDisconnect:
        pass
    finally:
        state.sockets.discard(ws)


async def _handshake(ws: WebSocket, state: State) -> Chat | None:
    """The chat named by the first frame; anything else closes 4000 (and gives None)."""
    try:
        message = await asyncio.wait_for(ws.receive(), FIRST_FRAME_TIMEOUT)
    except TimeoutError:
        message = {}
    if message.get("type") == "websocket.disconnect":
        return None
    chat = _chat_of(message.get("text"), state)
    if chat is None:
        await ws.close(INVALID, "Invalid connection data")
    return chat


def _confirmation(chat: Chat) -> dict:
    message = {"type": "connection_established"}
    if chat.conversation_id:  # issued by the server ("server" variant): the id to save under
        message["conversation_id"] = chat.conversation_id
    return message


def _chat_of(text: str | None, state: State) -> Chat | None:
    if text is None:  # binary (audio) before the connection data
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return None
    data = body.get("connection_data") if isinstance(body, dict) else None
    chat = state.chat(data) if isinstance(data, str) else None
    return chat if chat is not None and chat.valid else None


async def _converse(ws: WebSocket, chat: Chat, state: State) -> None:
    # The topic in the language asked for where it is written in it; the voice follows the script.
    script = await _script(state, chat.params["topic_id"], chat.params.get("language", ""))
    agent = Agent(script, language=script.language, hangover_ms=TURN_SILENCE_MS, greet=not chat.greeted)
    chat.greeted, chat.voice = True, agent.voice
    started = state.confirmation != "silent"  # a silent server says nothing before it hears audio
    if started:
        await agent.start()
    speaker = asyncio.create_task(_speak(ws, agent, chat, state))
    carry = b""
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") and len(chat.frame_sizes) < 16:  # a sample is all tests need
                chat.frame_sizes.add(len(message["bytes"]))
            data = carry + (message.get("bytes") or b"")
            cut = len(data) - len(data) % 2
            data, carry = data[:cut], data[cut:]  # any frame size: whole samples go to the agent
            if data and not started:
                started = True
                await agent.start()
            if data:
                agent.feed(data)
    finally:
        await agent.close()
        speaker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await speaker


async def _speak(ws: WebSocket, agent: Agent, chat: Chat, state: State) -> None:
    """The agent's events on Liku's wire: transcripts as JSON, audio as 24 kHz binary."""
    resampler: Resampler | None = None
    ids: dict[str, str] = {}
    try:
        async for event in agent.events():
            if isinstance(event, Audio):
                if resampler is None or resampler.in_rate != event.rate:
                    resampler = Resampler(event.rate, OUTPUT_RATE)
                await _send_audio(ws, resampler.process(event.pcm))
            elif isinstance(event, Interrupted) and resampler is not None:
                resampler.reset()
            elif isinstance(event, Transcript):
                if event.role == "agent" and event.final and resampler is not None:
                    await _send_audio(ws, resampler.flush())
                messages = _transcript_messages(event, ids, state)
                for message in messages:
                    await ws.send_text(json.dumps(message))
                if messages and event.final:
                    chat.add({"role": messages[0]["type"], "text": event.text})
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client went away


async def _send_audio(ws: WebSocket, pcm: bytes) -> None:
    if pcm:
        await ws.send_bytes(pcm)


def _transcript_messages(event: Transcript, ids: dict[str, str], state: State) -> list[dict]:
    """The guide's messages for one transcript: the user's, or the reply in the chosen forms."""
    words = state.statuses
    if event.role == "user":
        ident = ids.setdefault(event.id, f"msg_{secrets.token_hex(8)}")
        return [_with_status({"type": "user_transcript", "text": event.text, "message_id": ident},
                             words["final"] if event.final else words["partial"])]  # fmt: skip
    if not event.final:  # the assistant's text comes once, after its audio
        return []
    message_id = f"msg_{secrets.token_hex(8)}"
    response_id = ids.setdefault(event.id, f"resp_{secrets.token_hex(8)}")
    transcript = {"type": "assistant_transcript", "text": event.text, "message_id": message_id,
                  "response_id": response_id}  # fmt: skip
    transcript = _with_status(transcript, words["cut_short"] if event.interrupted else words["final"])
    message = {"type": "assistant_message", "text": event.text, "message_id": message_id}
    return {"both": [transcript, message], "transcript": [transcript], "message": [message]}[state.replies]


def _with_status(message: dict, status: str | None) -> dict:
    return message if status is None else {**message, "status": status}


async def _script(state: State, topic_id: str, language: str = "") -> Script:
    def named(_script, options: dict) -> bool:
        return str((options.get("liku") or {}).get("topic_id", "")).strip() == topic_id

    return await find_script(state.scripts, named, language) or GENERIC


def make_app(secret: str, *, scripts: Scripts | None = None, replies: str = "both",
             confirmation: str = "message", conversation_ids: str = "client",
             statuses: dict | None = None, save_failures: int = 0, save_error: tuple[int, str] | None = None,
             save_delay: float = 0.0) -> SandboxApp:  # fmt: skip
    """A fresh Liku sandbox whose account password is derived from `secret`; state: `app.state`.

    Variants where the guide is silent: `replies` "both" (assistant_transcript then
    assistant_message, as the guide lists them), "transcript" or "message"; `confirmation`
    "message" ({"type": "connection_established"}) or "silent" (nothing until audio comes);
    `conversation_ids` "client" or "server" (see the module doc); `statuses` overrides the words
    of STATUSES ("partial", "final", "cut_short"; a final of None sends no status). The save
    API's faults (`save_failures`, `save_error`, `save_delay`) start as given (see the module doc)."""
    if replies not in REPLIES or confirmation not in ("message", "silent") or \
            conversation_ids not in ("client", "server"):  # fmt: skip
        raise ValueError("unknown Liku sandbox variant")
    state = State(accounts={EMAIL: password(secret)}, scripts=scripts, replies=replies,
                  confirmation=confirmation, conversation_ids=conversation_ids,
                  statuses={**STATUSES, **(statuses or {})}, save_failures=save_failures,
                  save_error=save_error, save_delay=save_delay)  # fmt: skip
    asgi = Starlette(
        routes=[
            Route("/api/liku/authentication/", authentication, methods=["POST"]),
            Route("/api/init-websocket", init_websocket, methods=["GET"]),
            Route("/api/save-transcript", save_transcript, methods=["POST"]),
            Route("/api/_sandbox/saved", saved, methods=["GET"]),
            WebSocketRoute("/chat-stream", chat_stream),
        ]
    )
    asgi.state.sandbox = state
    return SandboxApp(asgi, state)
