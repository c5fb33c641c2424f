"""Our custom-LLM WebSocket for Retell: ``/llm-websocket/<call_id>``, the response system of a call.

Written from Retell's "Setup WebSocket Server" guide (shared/seeds/retell-llm-websocket-setup.txt)
and shared/protocols.md section 4. Retell dials ``<the agent's LLM URL>/<call_id>``; every frame is
JSON text, Retell's discriminated by ``interaction_type``, ours by ``response_type``.

* **Access.** Retell sends no credentials: only a call id we created (a conversation of provider
  ``retell``, not ended, whose ``provider_refs`` hold it) is accepted, anything else refused at the
  handshake; with ``RETELL_LLM_ALLOWED_IPS`` set, only those source addresses (the seed names
  Retell's, 100.20.5.228). The socket sends no Origin, so it is routed beside the browser sockets,
  not through their Origin check (playground/asgi.py); ALLOWED_HOSTS still applies.
* **Opening.** We speak first: ``config`` (``auto_reconnect``, ``call_details``), then
  ``response_id`` 0 with the topic's greeting, or empty content when the topic's Retell option
  ``user_speaks_first`` is set. A reconnect (Retell's, after 5 s of silence) gets both again.
* **Incoming.** ``ping_pong`` is echoed; ``call_details`` kept; ``update_only`` updates the turns;
  ``response_required``/``reminder_required`` are answered by the offline agent's responder (the
  topic's FAQ, or the OpenAI-compatible LLM when LLM_BASE_URL is set) as streamed ``response``
  chunks, the last with ``content_complete``; a newer ``response_id`` abandons the older answer.
  Frames that are not JSON objects are ignored.
* **Ending.** When the user's last words meet the topic's closing condition (one of its Retell
  option ``end_call_phrases``, default "goodbye" and "bye"), the final chunk carries ``end_call``.
* **Tools.** A user turn that asks for one of the topic's demo functions (Retell option
  ``functions``; sessions/functions.py) is answered after ``tool_call_invocation`` and
  ``tool_call_result`` (Retell's bookkeeping) with what the function returned.

The relay is the single writer of a live call's turns, so this socket writes none: what it learns
(user and agent transcripts from Retell's lists, tool calls, its own end) goes as messages to the
channel-layer group of the call id (`group_name`), which the call's `RetellUpstream` turns into
events. With no live call in the group the socket answers all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import time
import uuid

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from playground.engine.responder import LLMConfig, Responder
from playground.engine.text import words
from sessions import functions

log = logging.getLogger(__name__)

END_CALL_PHRASES = ("goodbye", "bye")
REMINDER = "Are you still there? I am happy to help whenever you are ready."
BOOKING_WORDS = {"table", "book", "booking", "available", "availability", "reserve", "reservation"}
NUMBERS = {
    w: n for n, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())
}


def group_name(call_id: str) -> str:
    """The channel-layer group of one Retell call (group names allow only a few characters)."""
    return "retell-" + hashlib.sha256(call_id.encode()).hexdigest()[:40]


# ---- pure parts: Retell's transcript lists -> turns; the closing condition; tools ---------------


class TranscriptBook:
    """Turns out of Retell's transcripts, which repeat the whole call each time: each utterance
    (by its index) is shown while it grows and given once as final, when something follows it or
    the turn is known to be over."""

    def __init__(self):
        self.shown: dict[int, tuple[str, str, bool]] = {}
        self.sent_text: dict[int, str] = {}  # what we answered at that index (to spot interruptions)

    def update(self, transcript, settled: bool) -> list[dict]:
        """The turns to report for `transcript`; `settled`: its last utterance is complete too."""
        if not isinstance(transcript, list):
            return []
        out = []
        for index, utterance in enumerate(transcript):
            final = index < len(transcript) - 1 or settled
            turn = self._turn(index, utterance, final)
            if turn:
                out.append(turn)
        return out

    def _turn(self, index: int, utterance, final: bool) -> dict | None:
        if not isinstance(utterance, dict) or utterance.get("role") not in ("user", "agent"):
            return None
        role, text = utterance["role"], utterance.get("content")
        previous = self.shown.get(index)
        if not isinstance(text, str) or (previous and previous[2]) or previous == (role, text, final):
            return None
        self.shown[index] = (role, text, final)
        if not text.strip():
            return None
        sent = self.sent_text.get(index, "")
        cut = final and role == "agent" and bool(sent) and len(text.strip()) < len(sent.strip())
        return {"role": role, "text": text, "final": final, "index": index, "interrupted": cut}

    def flush(self) -> list[dict]:
        """At the end of the call: every utterance still growing, as final."""
        return [{"role": r, "text": t, "final": True, "index": i, "interrupted": False}
                for i, (r, t, f) in sorted(self.shown.items()) if not f and t.strip()]  # fmt: skip


def settled(kind: str, message: dict) -> bool:
    """Whether the last utterance of this message's transcript is over."""
    if kind in ("response_required", "reminder_required"):
        return True
    transcript = message.get("transcript")
    last = transcript[-1] if isinstance(transcript, list) and transcript else None
    role = last.get("role") if isinstance(last, dict) else None
    return (message.get("turntaking"), role) in (("user_turn", "agent"), ("agent_turn", "user"))


def closing(text: str, phrases) -> bool:
    """The topic's closing condition: the user said one of `phrases` (words or word sequences)."""
    said = " " + " ".join(words(text)) + " "
    return any(f" {' '.join(words(p))} " in said for p in phrases if words(p))


def wanted_function(text: str, allowed: list[str]) -> tuple[str, dict] | None:
    """(demo function, arguments) a user turn asks for, or None: booking words ask for a table,
    "time" for the clock (never outside the topic's own functions)."""
    said = words(text)
    if BOOKING_WORDS & set(said) and "check_availability" in allowed:
        party, hour = 2, 19
        for before, word in itertools.pairwise(said):
            if word in NUMBERS and before == "for":
                party = NUMBERS[word]
            elif word in NUMBERS and before == "at":
                hour = NUMBERS[word] + (12 if NUMBERS[word] < 12 else 0)  # "at seven": the evening
        day = "tomorrow" if "tomorrow" in said else "today"
        return "check_availability", {"date": day, "time": f"{hour:02d}:00", "party_size": party}
    if "time" in said and "current_time" in allowed:
        return "current_time", {}
    return None


def spoken(name: str, result: dict) -> str:
    if result.get("status") == "failed":
        return f"Sorry, I could not do that: {result.get('error') or 'the function failed'}."
    if name == "current_time":
        return f"It is {result.get('time')} now."
    if result.get("available"):
        return f"Good news, there is a table for {result['party_size']} at {result['time']}."
    others = ", ".join(result.get("alternatives") or [])
    return f"Sorry, there is no table for {result.get('party_size')} at {result.get('time')}." + (
        f" I could offer {others} instead." if others else ""
    )


# ---- the consumer ----------------------------------------------------------------------------


@database_sync_to_async
def _find_call(call_id: str):
    """(script, Retell options) of the live conversation that made `call_id`, or None."""
    from sessions.models import Conversation

    live = (Conversation.Status.CREATED, Conversation.Status.CONNECTING, Conversation.Status.ACTIVE)
    mine = Conversation.objects.select_related("topic").filter(provider="retell", status__in=live)
    conversation = mine.filter(provider_refs__call_id=call_id).first()
    if conversation is None:
        return None
    topic = conversation.topic
    return topic.to_script(conversation.language), topic.options_for("retell")


def address_allowed(scope) -> bool:
    allowed = settings.PROVIDERS.get("retell", {}).get("llm_allowed_ips") or ""
    addresses = {a.strip() for a in allowed.split(",") if a.strip()}
    client = (scope.get("client") or ("",))[0]
    return not addresses or client in addresses


class RetellLLMConsumer(AsyncWebsocketConsumer):
    """One LLM WebSocket of one Retell call (Retell dials again on a reconnect: a new consumer)."""

    async def connect(self):
        self.call_id = self.scope["url_route"]["kwargs"]["call_id"]
        self.answer_task: asyncio.Task | None = None
        self.responder = None
        found = await _find_call(self.call_id) if address_allowed(self.scope) else None
        if found is None:
            log.info("retell llm: refused call id %r from %s", self.call_id[:40], self.scope.get("client"))
            await self.close()
            return
        self.script, self.options = found
        llm = LLMConfig.from_dict(settings.PROVIDERS.get("local", {}).get("llm"))
        self.responder = Responder(self.script, llm)
        self.book = TranscriptBook()
        self.details: dict = {}
        self.ended = False
        await self.accept()
        await self.open()

    async def open(self) -> None:
        """Config and the begin message (response_id 0): first thing, and again on every reconnect."""
        config = {"auto_reconnect": True, "call_details": True}
        await self.send_json({"response_type": "config", "config": config})
        greeting = "" if self.options.get("user_speaks_first") else self.script.greeting
        self.book.sent_text[0] = greeting
        await self.send_json({"response_type": "response", "response_id": 0, "content": greeting,
                              "content_complete": True})  # fmt: skip

    async def disconnect(self, code):
        await self._abandon()
        if self.responder is None:
            return
        # Partial turns stay partial: Retell may dial again and go on with them (the relay keeps what
        # is still partial when the call ends).
        await self.publish([{"kind": "closed", "ended": self.ended}])
        await self.responder.aclose()

    async def receive(self, text_data=None, bytes_data=None):
        try:
            message = json.loads(text_data) if text_data is not None else None
        except ValueError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("interaction_type"), str):
            return  # not JSON, or not Retell's: ignored
        kind = message["interaction_type"]
        if kind == "ping_pong":
            await self.send_json({"response_type": "ping_pong", "timestamp": int(time.time() * 1000)})
        elif kind == "call_details":
            self.details = message.get("call") if isinstance(message.get("call"), dict) else {}
        elif kind in ("update_only", "response_required", "reminder_required"):
            await self.on_transcript(kind, message)

    async def on_transcript(self, kind: str, message: dict) -> None:
        transcript = message.get("transcript") if isinstance(message.get("transcript"), list) else []
        turns = self.book.update(transcript, settled(kind, message))
        await self.publish([{"kind": "transcript", **t} for t in turns])
        if kind == "update_only":
            return  # no reply; a pending answer goes on (only a newer request supersedes it)
        number = message.get("response_id")
        if not isinstance(number, int) or isinstance(number, bool):
            return
        await self._abandon()
        self.answer_task = asyncio.create_task(self.answer(kind, number, transcript))

    async def _abandon(self) -> None:
        """A newer request came (or the socket closed): the older answer stops where it is."""
        task, self.answer_task = self.answer_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def answer(self, kind: str, number: int, transcript: list) -> None:
        user = next((u.get("content", "") for u in reversed(transcript)
                     if isinstance(u, dict) and u.get("role") == "user"), "")  # fmt: skip
        said: list[str] = []
        try:
            async for piece in self._pieces(kind, user, transcript):
                said.append(piece)
                await self._chunk(number, piece, False)
            self.book.sent_text[len(transcript)] = "".join(said)
            end = kind == "response_required" and closing(user, self._phrases())
            self.ended = self.ended or end
            await self._chunk(number, "", True, end_call=end)
        except asyncio.CancelledError:
            raise
        except Exception:  # a broken answer must not end the call: Retell asks again
            log.exception("retell llm: answering %s %s failed", kind, number)

    async def _pieces(self, kind: str, user: str, transcript: list):
        if kind == "reminder_required":
            yield REMINDER
            return
        wanted = wanted_function(user, list(self.options.get("functions") or []))
        if wanted is not None:
            yield spoken(wanted[0], await self._tool(*wanted))
            return
        async with contextlib.aclosing(self.responder.reply(_history(transcript))) as pieces:
            async for piece in pieces:
                yield piece

    async def _tool(self, name: str, arguments: dict) -> dict:
        ident = f"tool_{uuid.uuid4().hex[:16]}"
        await self.send_json({"response_type": "tool_call_invocation", "tool_call_id": ident, "name": name,
                              "arguments": json.dumps(arguments)})  # fmt: skip
        result = functions.call(name, arguments, allowed=self.options.get("functions") or [])
        ok = result.get("status") != "failed"
        await self.send_json({"response_type": "tool_call_result", "tool_call_id": ident,
                              "content": json.dumps(result), "successful": ok})  # fmt: skip
        await self.publish([{"kind": "tool", "id": ident, "name": name, "arguments": arguments,
                             "result": result}])  # fmt: skip
        return result

    def _phrases(self):
        phrases = self.options.get("end_call_phrases")
        return phrases if isinstance(phrases, list) else END_CALL_PHRASES

    async def _chunk(self, number: int, content: str, complete: bool, end_call: bool = False) -> None:
        message = {"response_type": "response", "response_id": number, "content": content,
                   "content_complete": complete}  # fmt: skip
        if end_call:
            message["end_call"] = True
        await self.send_json(message)

    async def send_json(self, message: dict) -> None:
        await self.send(text_data=json.dumps(message))

    async def publish(self, items: list[dict]) -> None:
        """Hand what we learnt to the call's RetellUpstream (if one is live, in any process)."""
        if not items or self.channel_layer is None:
            return
        for item in items:
            message = {"type": "retell.event", "item": item}
            await self.channel_layer.group_send(group_name(self.call_id), message)


def _history(transcript: list) -> list[dict]:
    """Retell's transcript as the responder's OpenAI-style history."""
    roles = {"user": "user", "agent": "assistant"}
    return [{"role": roles[u["role"]], "content": u.get("content", "")} for u in transcript
            if isinstance(u, dict) and u.get("role") in roles]  # fmt: skip
