"""What every vendor test needs, in one place: a relay with the browser double in the talk page's
place, and the turns stored for a conversation. (The `speech` fixture is in conftest.py.)"""

from __future__ import annotations

import asyncio
import json
import re

from asgiref.sync import sync_to_async

from sessions.models import Conversation, Turn
from sessions.relay import Relay
from sessions.upstreams.base import Session
from tests.browser_double import BrowserPeer
from tests.engine.speech import silence
from tests.server import Call, call

TURN_FIELDS = ("role", "text", "final", "interrupted")


def start(conversation: Conversation, client, config: dict, *, options: dict | None = None, script=None,
          browser: BrowserPeer | None = None):  # fmt: skip
    """Run `client` (an Upstream class) for `conversation` through the relay: (relay, browser, task).

    The session is what the consumer would build: the topic in the conversation's language, its
    voice, and the topic's options for the provider unless `options` replaces them."""
    browser = browser or BrowserPeer()
    topic = conversation.topic
    session = Session(
        str(conversation.id),
        topic=topic.to_script(conversation.language) if script is None else script,
        voice=conversation.voice,
        language=conversation.language,
        options=topic.options_for(conversation.provider) if options is None else options,
        config=config,
    )
    relay = Relay(conversation.id, client(session), browser.browser, provider=conversation.provider,
                  on_end=browser.on_end)  # fmt: skip
    return relay, browser, asyncio.create_task(relay.run(), name=f"test-relay-{conversation.id}")


def stored(conversation, fields: tuple[str, ...] = TURN_FIELDS) -> list[tuple]:
    """The conversation's stored turns in order, as tuples of `fields`."""
    turns = Turn.objects.filter(conversation=conversation).order_by("sequence")
    return list(turns.values_list(*fields))


astored = sync_to_async(stored)


async def talk_over_daphne(server, ws_path: str, pcm: bytes, answer_timeout: float = 20) -> tuple[list, int]:
    """A browser's part over a real Daphne: open the conversation socket, wait out the greeting,
    speak `pcm` in real time, wait for the answer, stop. (JSON messages seen, bytes of audio)."""
    async with call(server, ws_path) as c:
        await c.until(lambda c: c.finals("agent"), 30)
        await c.say(silence(300) + pcm + silence(1200))
        await c.until(Call.answered, answer_timeout)
        await c.stop()
    return c.seen, c.audio


def server_key(server, vendor: str) -> str:
    """The sandbox API key of that server's deployment (derived from its SECRET_KEY)."""
    code = f"from django.conf import settings; from playground.sandbox import {vendor}; " \
           f"print({vendor}.api_key(settings.SECRET_KEY))"  # fmt: skip
    return server.manage("shell", "-c", code).strip().splitlines()[-1]


def press_start(client, talk_page: str) -> str:
    """What the talk page's Start does (static/js/talk-flow.js): create the conversation with the
    settings the page holds, through the same API call and CSRF token; its socket path."""
    found = re.search(r'<script id="talk-config" type="application/json">(.*?)</script>', talk_page, re.S)
    config = json.loads(found.group(1))
    csrf = {"X-CSRFToken": config["csrfToken"]}
    created = client.post(config["createUrl"], json=config["draft"], headers=csrf)
    assert created.status_code == 201, created.text
    return created.json()["ws_path"]
