"""Limits per user (README "Limits", docs/protocol.md): new conversations, live calls, typed
turns, failed logins. Each limit is a setting; each refusal says the limit.

Where each one is counted, so that it holds across server processes:

- new conversations: django-ratelimit over Django's cache (Redis when REDIS_URL is set);
- live calls: the Conversation rows themselves (CONNECTING/ACTIVE), in the database;
- typed turns: per connection, in the process that holds the connection;
- failed logins: django-axes, in the database (settings.AXES_*; the answer is `login_locked_out`).
"""

from __future__ import annotations

import time
from collections import deque

from django.conf import settings
from django.shortcuts import render
from django_ratelimit.core import get_usage

from sessions.models import Conversation

LIVE = (Conversation.Status.CONNECTING, Conversation.Status.ACTIVE)


# ---- new conversations (POST /api/conversations/: the talk page's Start, scripts) ------------


def conversation_refusal(request, user) -> tuple[str, int]:
    """Counts one new conversation for `user`: ('', 0) to go ahead, else (why, seconds to wait).

    The talk page's Start and scripts count together: one budget per user, whichever way they come."""
    limit = settings.CONVERSATIONS_PER_MINUTE
    usage = get_usage(request, group="new-conversation", key=lambda _group, _request: str(user.pk),
                      rate=f"{limit}/m", increment=True)  # fmt: skip
    if usage is None or not usage["should_limit"]:
        return "", 0
    wait = usage["time_left"] if usage["time_left"] > 0 else 60  # -1: the cache did not answer
    return f"Too many new conversations: at most {limit} a minute. Try again in {wait} s.", wait


# ---- live calls (the conversation socket's claim) ----------------------------------------------


async def over_live_call_limit(user_id: int, conversation_id) -> str:
    """After the socket claimed `conversation_id`: the reason to refuse it, or ''.

    Counting after the claim, not before, keeps the limit when sockets of one user race across
    processes: each sees the others' claims, so at worst two step back, never one too many go
    ahead. A refused claim is undone (the conversation is `created` again, to retry later)."""
    limit = settings.LIVE_CALLS_PER_USER
    live = await Conversation.objects.filter(user_id=user_id, status__in=LIVE).acount()
    if live <= limit:
        return ""
    await Conversation.objects.filter(id=conversation_id, status=Conversation.Status.CONNECTING).aupdate(
        status=Conversation.Status.CREATED, worker=None
    )
    return f"Too many live calls: at most {limit} at a time per user. End another call first."


# ---- typed turns (the conversation socket's text messages) ------------------------------------


class TurnRate:
    """At most `limit` events in any `period` seconds: a sliding window, per connection."""

    def __init__(self, limit: int, period: float = 1.0):
        self.limit, self.period = limit, period
        self.times: deque[float] = deque()

    def allow(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        while self.times and now - self.times[0] >= self.period:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True


def text_turn_refusal() -> str:
    return (f"Too many text turns: at most {settings.TEXT_TURNS_PER_SECOND} a second. "
            "This one was dropped.")  # fmt: skip


# ---- failed logins (django-axes) ---------------------------------------------------------------


def login_locked_out(request, original_response=None, credentials=None):
    """AXES_LOCKOUT_CALLABLE: the login page's answer while locked out, status 429."""
    minutes = round(settings.AXES_COOLOFF_TIME.total_seconds() / 60)
    message = (f"Too many failed logins: at most {settings.AXES_FAILURE_LIMIT} attempts. Logging in as this "
               f"user from here is locked for {minutes} minutes; try again later.")  # fmt: skip
    response = render(request, "limited.html", {"title": "Too many failed logins", "message": message},
                      status=429)  # fmt: skip
    response["Retry-After"] = str(minutes * 60)
    return response
