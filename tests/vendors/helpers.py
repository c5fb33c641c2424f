"""What every vendor test needs, in one place: a relay with the browser double in the talk page's
place, and the turns stored for a conversation. (The `speech` fixture is in conftest.py.)"""

from __future__ import annotations

import asyncio

from asgiref.sync import sync_to_async

from sessions.models import Conversation, Turn
from sessions.relay import Relay
from sessions.upstreams.base import Session
from tests.browser_double import BrowserPeer

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
