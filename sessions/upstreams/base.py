"""The upstream interface every provider client implements, its events, and its contract.

A provider module translates its wire protocol into these events and nothing
else leaks out; the relay only ever sees this module's types.

The contract
------------

**Capabilities** are declared, never discovered: every client class has a
class attribute ``capabilities = Capabilities(...)``; the relay, the registry
and the pages read that and nothing else. `Capabilities` documents each one and
its default. A client that has provider ids worth keeping (connection data,
call ids) returns them from ``refs`` (default: none), one whose protocol reports its own
latency figures returns them from ``last_timings`` (default: none); a client that declares
``saves_transcript`` implements the class method ``async save_transcript(request: SaveRequest)
-> dict``: it saves a transcript with the provider WITHOUT a live call (the outbox worker,
sessions/outbox.py, calls it, maybe long after the call), from what `SaveRequest` carries. It
raises `UpstreamError` with ``permanent=True`` when trying again cannot help (the provider
refused the request: HTTP 4xx other than 408/429, nothing to save, no credentials) and
``permanent=False`` for what may pass (5xx, timeouts, connection errors); the worker retries
only the latter. It sends ``request.idempotency_key`` where the provider takes one, so a save
repeated after a worker died mid-request is not stored twice.

**Errors** follow one rule:

* A problem the call survives (a malformed message skipped, a reconnect under
  way, a provider's warning) is *yielded* by ``events()`` as ``Error(code,
  message)``. The relay shows it (``fatal: false``) and the call goes on.
* A problem that ends the call is *raised* as `UpstreamError`, from
  ``connect()``, ``send_audio()``/``send_text()`` or out of ``events()``, after
  whatever retrying the client does itself (Liku reconnects first). The relay
  shows it (``fatal: true``), marks the conversation failed and closes 4500.
  ``UpstreamError.permanent`` only tells the client's own retry logic that
  trying again cannot help; for the relay every raised error ends the call.
* An ``Ended`` event is the provider ending the call cleanly. ``events()``
  finishing without one (other than after our own ``close()``) is the
  provider hanging up unexpectedly: the call is marked failed.
* Anything else a client raises is a bug: the relay logs it with its
  traceback, tells the browser ``internal`` (nothing more) and fails the call.

Codes are ``<provider>.<reason>`` (``liku.auth``, ``lokutor.rate_limited``,
``aivoco.auth_failed``, ``echo.closed``) and reach the browser unchanged; a
``connect()`` the relay gives up waiting for is ``<provider>.timeout``.
Messages are shown to the user: pass anything that may echo a key, token or
URL through `scrub` first.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable
from urllib.parse import quote, quote_plus

MESSAGE_LIMIT = 300
# Query values that look like credentials, whatever the secret: ?token=…, &api_key=…
_SECRET_QUERY = re.compile(r"([?&](?:token|key|api_?key|access_token|password|secret)=)[^&\s'\"#]+", re.I)


def scrub(text: str, *secrets: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text` fit to show a user: every non-empty secret (also URL-encoded) and every
    credential-looking query value replaced by ``***``, and at most `limit` characters."""
    text = str(text)
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(form, "***")
    text = _SECRET_QUERY.sub(r"\1***", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class UpstreamError(Exception):
    """The one error type of every upstream: raised, it ends the call (see the module docstring).

    `code` is ``<provider>.<reason>``; `permanent` tells the client's own retry logic not to retry."""

    def __init__(self, message: str, permanent: bool = False, code: str = "upstream"):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.code = code


@dataclass(frozen=True)
class Capabilities:
    """What a provider client can do; each default is what a client that says nothing gets."""

    # Takes a typed user turn (`send_text`). Without it the relay refuses typed text with
    # `text_unsupported` and the talk page hides the text box.
    accepts_text: bool = False
    # Sends transcripts of what the user said. Without them the relay's own VAD marks the end of
    # the user's turn (for latency and un-muting after a barge-in) and the page says so.
    user_transcripts: bool = True
    # Says itself when the user talked over the agent (`Interrupted`). Without it the relay runs
    # its own VAD on the user's audio and clears the browser when the user starts speaking.
    barge_in_signal: bool = True
    # Has the class method `async save_transcript(SaveRequest) -> dict` (a provider save API): a
    # call that ended queues a save, which the outbox worker delivers (sessions/outbox.py).
    saves_transcript: bool = False
    # Media goes between the browser and the vendor over WebRTC (Flow over LiveKit, Retell web
    # calls), not through us: `connect()` makes the call, `events()` yields a `Join` that the relay
    # hands to the owner's page, `send_audio` is never called, and the vendor messages the page
    # forwards (data-channel messages, SDK events) arrive through `forward()`. A client whose
    # transport depends on its configuration sets `self.capabilities` in `__init__`.
    direct_media: bool = False

    def as_dict(self) -> dict[str, bool]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


DEFAULT_CAPABILITIES = Capabilities()


@dataclass(frozen=True)
class Transcript:
    """Text of one side. `start_ms`/`end_ms` are offsets into the user's input
    stream where known, so the relay can time the reply from the real end of
    speech; `interrupted` marks an agent turn cut short by barge-in, whose
    `text` is then only what was actually spoken."""

    role: str  # "user" | "agent"
    text: str
    final: bool
    id: str = ""
    start_ms: int | None = None
    end_ms: int | None = None
    interrupted: bool = False


@dataclass(frozen=True)
class Audio:
    pcm: bytes  # s16le mono
    rate: int


@dataclass(frozen=True)
class Status:
    state: str  # "listening" | "thinking" | "speaking"


@dataclass(frozen=True)
class Interrupted:
    """The upstream stopped speaking because the user talked over it."""


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    result: Any = None


@dataclass(frozen=True)
class Error:
    """A problem the call survives (see the module docstring): shown, and the call goes on."""

    code: str  # <provider>.<reason>
    message: str  # shown to the user: scrubbed


@dataclass(frozen=True)
class Ended:
    reason: str


@dataclass(frozen=True)
class Join:
    """Direct media: what the owner's page needs to join the vendor's call, sent to it as `join`.
    Short-lived credentials the server fetched with its own keys; never a provider key."""

    transport: str  # "livekit" | "retell"
    url: str  # the LiveKit server ("" for Retell, whose SDK knows its own)
    token: str = field(repr=False)  # LiveKit room token, or Retell's web-call access token: never logged
    call_id: str = ""
    # Shown to the user beside the call, e.g. that a sandbox's room has no LiveKit server behind it.
    note: str = ""


Event = Transcript | Audio | Status | Interrupted | ToolCall | Error | Ended | Join


@dataclass(frozen=True)
class Session:
    """What an upstream needs to know about the conversation it serves."""

    conversation_id: str
    topic: Any  # playground.engine.script.Script
    voice: str
    language: str
    options: dict[str, Any] = field(default_factory=dict)  # the topic's options for this provider
    config: dict[str, Any] = field(default_factory=dict)  # settings.PROVIDERS[key]


@dataclass(frozen=True)
class SaveRequest:
    """What a provider's `save_transcript` gets: everything to save one transcript without a call."""

    conversation_id: str
    refs: dict[str, Any]  # the provider's ids for the call (`Upstream.refs`, kept with the conversation)
    options: dict[str, Any]  # the topic's options for this provider
    turns: tuple[dict, ...]  # {"sequence", "role", "text"} in order; the text as reviewed
    idempotency_key: str  # the same for every attempt at one version of one transcript
    config: dict[str, Any] = field(
        default_factory=dict, repr=False
    )  # settings.PROVIDERS[key] + the user's own


@runtime_checkable
class Upstream(Protocol):
    """What the relay calls. Clients may subclass `Client` for the defaults of the optional parts."""

    input_rate: int
    capabilities: ClassVar[Capabilities]

    @property
    def refs(self) -> dict: ...  # the provider's ids for this call, kept server side ({} if none)

    @property
    def last_timings(self) -> dict: ...  # the provider's own latency figures for its latest reply ({})

    async def connect(self) -> None: ...  # handshake; raises UpstreamError

    async def send_audio(self, pcm: bytes) -> None: ...  # s16le mono at input_rate

    async def send_text(self, text: str) -> None: ...  # a typed user turn

    def events(self) -> AsyncIterator[Event]: ...  # one reader; ends when upstream ends

    async def close(self) -> None: ...  # idempotent, bounded (about 2 s)


class Client:
    """Defaults of the optional parts of `Upstream`, for clients to inherit."""

    capabilities: ClassVar[Capabilities] = DEFAULT_CAPABILITIES

    @property
    def refs(self) -> dict:
        return {}

    @property
    def last_timings(self) -> dict:
        """The provider's own latency figures (ms) for its latest reply, where its protocol reports
        any; the relay stores them beside its own measurement (sessions/latency.py), never instead."""
        return {}

    async def send_text(self, text: str) -> None:
        # The relay never calls this unless `capabilities.accepts_text`; a guard, not a path.
        message = "This provider does not take typed turns."
        raise UpstreamError(message, permanent=True, code="text_unsupported")

    async def forward(self, message: dict) -> None:
        """A vendor message the page forwarded (direct media only): parse it into `events()`."""
