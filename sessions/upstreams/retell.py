"""Retell AI as an upstream: a web call whose response system is our own LLM WebSocket.

Written from Retell's "Setup WebSocket Server" guide (shared/seeds/retell-llm-websocket-setup.txt)
and shared/protocols.md section 4.

* **The call.** ``POST {RETELL_API_URL}/v2/create-web-call`` with ``Authorization: Bearer
  <RETELL_API_KEY>`` and the topic's ``agent_id`` answers ``access_token`` and ``call_id``. The
  call id goes into the conversation's ``provider_refs`` (the relay stores `refs`), which is what
  lets Retell's dial of ``/llm-websocket/<call_id>`` in (sessions/retell_llm.py). The access token
  is never kept.
* **Turns.** Our LLM WebSocket is authoritative for them: it hands what it learns to this client
  through the channel-layer group of the call id (`retell_llm.group_name`), as ``transcript``
  (role, text, final, index, interrupted), ``tool`` and ``closed`` items, which `events()` yields
  as `Transcript`, `ToolCall` and (direct media) `Ended`. The relay stores them.
* **Real service: direct media.** Retell's web calls carry audio over WebRTC between the page and
  Retell: `events()` first yields ``Join(transport="retell", url="", token=access_token,
  call_id)``, which the relay hands to the owner's page; the page starts the call with
  ``retell-client-js-sdk`` and forwards its events (`forward`): ``{"event": "agent_start_talking"}``
  and ``agent_stop_talking`` (status, for timing), ``update`` (ignored for turns: the LLM socket
  has them), ``call_ended`` (the call is over) and ``error`` (``message``, shown).
* **Sandbox: relayed.** Against the sandbox (playground/sandbox/retell.py) the call runs relayed on
  the sandbox's own audio socket, ``/audio-websocket/<call_id>?sample_rate=16000&enable_update=true``
  (its transport, not Retell's: real web-call audio is WebRTC): our PCM up, the agent's PCM down,
  ``"clear"`` on barge-in, JSON ``agent_start_talking``/``agent_stop_talking``, ``update`` and the
  sandbox's ``violation`` (what the LLM server got wrong: a recoverable ``retell.violation``).
  create-web-call names the LLM server for the sandbox to dial (its own extra field
  ``llm_websocket_url``): the topic's option ``llm_websocket_url`` (any server: then the turns come
  from the audio socket's ``update`` events), else ours, ``RETELL_LLM_URL`` (default
  ``ws://<SANDBOX_BASE_URL's host>/llm-websocket``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import replace

import httpx
import websockets
from channels.layers import get_channel_layer
from django.conf import settings

from sessions.retell_llm import TranscriptBook, group_name, settled

from .base import (
    Audio,
    Capabilities,
    Client,
    Ended,
    Error,
    Interrupted,
    Join,
    Session,
    Status,
    ToolCall,
    Transcript,
    UpstreamError,
    scrub,
)

DEFAULT_API_URL = "https://api.retellai.com"
RATE = 16000
HTTP_TIMEOUT = 10.0
OPEN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
LLM_CLOSE_WAIT = 2.0  # after the sandbox hangs up: how long the LLM socket's last turns may take


class RetellUpstream(Client):
    capabilities = Capabilities(accepts_text=False, user_transcripts=True, barge_in_signal=True)
    input_rate = RATE

    def __init__(self, session: Session):
        self.session = session
        config, options = session.config, session.options
        self.sandbox = bool(config.get("sandbox"))
        self.api_url = (config.get("api_url") or DEFAULT_API_URL).rstrip("/")
        self.key = config.get("api_key") or ""
        self.agent_id = str(options.get("agent_id") or "")
        self.external_llm = options.get("llm_websocket_url") or ""
        self.llm_url = self.external_llm or config.get("llm_url") or _our_llm_url()
        if not self.sandbox:
            self.capabilities = replace(RetellUpstream.capabilities, direct_media=True)
        self.call_id = ""
        self._token = ""
        self._audio = None
        self._layer = None
        self._channel = ""
        self._queue: asyncio.Queue = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()
        self._llm_closed = asyncio.Event()
        self._book = TranscriptBook()  # turns from the sandbox's `update` events (another LLM server)
        self._finals: set[int] = set()  # transcript indices already given as final
        self._closed = False

    @property
    def refs(self) -> dict:
        return {"call_id": self.call_id, "agent_id": self.agent_id} if self.call_id else {}

    # ---- connect -----------------------------------------------------------------------------

    async def connect(self) -> None:
        if not self.agent_id:
            raise UpstreamError("The topic names no Retell agent_id.", permanent=True, code="retell.config")
        call = await self._create_web_call()
        self.call_id, self._token = call["call_id"], call["access_token"]
        self._layer = get_channel_layer()
        if self._layer is not None:
            self._channel = await self._layer.new_channel()
            await self._layer.group_add(group_name(self.call_id), self._channel)
            self._own(self._read_group())

    async def _create_web_call(self) -> dict:
        body = {"agent_id": self.agent_id}
        if self.sandbox:
            body["llm_websocket_url"] = self.llm_url
        headers = {"Authorization": f"Bearer {self.key}"}
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
                response = await http.post(f"{self.api_url}/v2/create-web-call", json=body, headers=headers)
        except httpx.HTTPError as exc:
            message = scrub(f"Retell could not be reached: {exc!r}", self.key)
            raise UpstreamError(message, code="retell.unreachable") from None
        if response.status_code in (401, 403):
            raise UpstreamError("Retell refused the API key.", permanent=True, code="retell.auth")
        if response.status_code == 404:
            message = f"Retell does not know the agent {self.agent_id!r}."
            raise UpstreamError(message, permanent=True, code="retell.unknown_agent")
        if response.status_code >= 300:
            message = scrub(f"Retell answered {response.status_code}: {response.text}", self.key)
            raise UpstreamError(message, code="retell.http")
        return _call_of(response)

    # ---- events ------------------------------------------------------------------------------

    async def events(self):
        if self.sandbox:
            await self._open_audio()
        else:
            yield Join(transport="retell", url="", token=self._token, call_id=self.call_id)
        while (event := await self._queue.get()) is not None:
            if isinstance(event, UpstreamError):
                raise event
            yield event

    async def _open_audio(self) -> None:
        scheme, rest = self.api_url.split("://", 1)
        url = f"{'wss' if scheme == 'https' else 'ws'}://{rest}/audio-websocket/{self.call_id}"
        try:
            self._audio = await websockets.connect(f"{url}?sample_rate={RATE}&enable_update=true",
                                                   open_timeout=OPEN_TIMEOUT, max_size=2**20,
                                                   compression=None)  # fmt: skip
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            message = scrub(f"The Retell audio socket failed: {exc!r}")
            raise UpstreamError(message, code="retell.audio") from None
        self._own(self._read_audio())

    async def _read_audio(self) -> None:
        try:
            async for message in self._audio:
                await self._on_audio_message(message)
            await self._hung_up(self._audio.close_code, self._audio.close_reason or "")
        except websockets.ConnectionClosed as exc:
            await self._hung_up(exc.rcvd.code if exc.rcvd else 1006, exc.rcvd.reason if exc.rcvd else "")

    async def _on_audio_message(self, message) -> None:
        if isinstance(message, bytes):
            if message:
                self._queue.put_nowait(Audio(message[: len(message) // 2 * 2], RATE))
            return
        if message == "clear":
            self._queue.put_nowait(Interrupted())
            return
        if message == "pong":
            return
        try:
            data = json.loads(message)
        except ValueError:
            data = None
        if isinstance(data, dict):
            self._on_sandbox_event(data)

    def _on_sandbox_event(self, data: dict) -> None:
        kind = data.get("event_type")
        if kind == "agent_start_talking":
            self._queue.put_nowait(Status("speaking"))
        elif kind == "agent_stop_talking":
            self._queue.put_nowait(Status("listening"))
        elif kind == "violation":
            self._queue.put_nowait(Error("retell.violation", scrub(str(data.get("message", "")))))
        elif kind == "update" and self.external_llm:
            for turn in self._book.update(data.get("transcript"), settled("update_only", data)):
                self._queue.put_nowait(self._transcript(turn))

    async def _hung_up(self, code: int | None, reason: str) -> None:
        if self._closed:
            return
        if code == 1000:
            if not self.external_llm:  # our LLM socket's last turns first (it closes before the audio)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._llm_closed.wait(), LLM_CLOSE_WAIT)
            for turn in self._book.flush():
                self._queue.put_nowait(self._transcript(turn))
            said = "the agent ended the call" if reason == "end_call" else f"Retell ended the call ({reason})"
            self._queue.put_nowait(Ended(said))
        else:
            message = scrub(f"Retell closed the call ({code} {reason}).".replace(" )", ")"))
            self._queue.put_nowait(UpstreamError(message, code="retell.closed"))

    # ---- what our LLM socket learnt ----------------------------------------------------------

    async def _read_group(self) -> None:
        while True:
            message = await self._layer.receive(self._channel)
            item = message.get("item") or {}
            kind = item.get("kind")
            if kind == "transcript" and not self.external_llm and item["index"] not in self._finals:
                # A socket Retell dialled again reports the whole call anew: a final turn stays stored once.
                if item["final"]:
                    self._finals.add(item["index"])
                self._queue.put_nowait(self._transcript(item))
            elif kind == "tool":
                self._queue.put_nowait(ToolCall(item["id"], item["name"], item.get("arguments") or {},
                                                item.get("result")))  # fmt: skip
            elif kind == "closed":
                self._llm_closed.set()
                if not self.sandbox and item.get("ended"):
                    self._queue.put_nowait(Ended("the agent ended the call"))

    def _transcript(self, item: dict) -> Transcript:
        ident = f"{self.call_id}:{item['index']}"
        return Transcript(item["role"], item["text"], bool(item["final"]), id=ident,
                          interrupted=bool(item.get("interrupted")))  # fmt: skip

    # ---- the page's SDK events (direct media) ------------------------------------------------

    async def forward(self, message: dict) -> None:
        kind = (message.get("event") or message.get("event_type")) if isinstance(message, dict) else None
        if kind == "agent_start_talking":
            self._queue.put_nowait(Status("speaking"))
        elif kind == "agent_stop_talking":
            self._queue.put_nowait(Status("listening"))
        elif kind == "call_ended":
            self._queue.put_nowait(Ended("the call ended"))
        elif kind == "error":
            self._queue.put_nowait(Error("retell.sdk", scrub(str(message.get("message", "")), self._token)))
        # `update` and anything else: the LLM socket has the turns already.

    # ---- media and the end -------------------------------------------------------------------

    async def send_audio(self, pcm: bytes) -> None:
        if self._audio is None or self._closed:
            return  # before the audio socket opened (a few ms): nothing to hear yet
        try:
            await self._audio.send(pcm)
        except websockets.ConnectionClosed:
            pass  # the reader reports how the call ended

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._audio is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._audio.close(), CLOSE_TIMEOUT)
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT)
        if self._layer is not None and self._channel:
            with contextlib.suppress(Exception):
                await self._layer.group_discard(group_name(self.call_id), self._channel)
        self._queue.put_nowait(None)

    def _own(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _call_of(response: httpx.Response) -> dict:
    try:
        call = response.json()
    except ValueError:
        call = None
    if not (isinstance(call, dict) and isinstance(call.get("call_id"), str) and call["call_id"]
            and isinstance(call.get("access_token"), str)):  # fmt: skip
        message = "Retell's create-web-call answer had no call_id or access_token."
        raise UpstreamError(message, code="retell.http")
    return call


def _our_llm_url() -> str:
    """Our LLM WebSocket on this deployment, as the sandbox reaches it."""
    scheme, rest = settings.SANDBOX_BASE_URL.split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest.split('/', 1)[0]}/llm-websocket"
