"""The upstream interface every provider client implements, and its events.

A provider module translates its wire protocol into these events and nothing
else leaks out; the relay only ever sees this module's types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class UpstreamError(Exception):
    """The one error type of every upstream. `permanent` means: do not retry."""

    def __init__(self, message: str, permanent: bool = False, code: str = "upstream"):
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.code = code


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
    code: str
    message: str
    permanent: bool = False


@dataclass(frozen=True)
class Ended:
    reason: str


Event = Transcript | Audio | Status | Interrupted | ToolCall | Error | Ended


@dataclass(frozen=True)
class Session:
    """What an upstream needs to know about the conversation it serves."""

    conversation_id: str
    topic: Any  # playground.engine.script.Script
    voice: str
    language: str
    options: dict[str, Any] = field(default_factory=dict)  # the topic's options for this provider
    config: dict[str, Any] = field(default_factory=dict)  # settings.PROVIDERS[key]


@runtime_checkable
class Upstream(Protocol):
    input_rate: int
    accepts_text: bool

    async def connect(self) -> None: ...  # handshake; raises UpstreamError

    async def send_audio(self, pcm: bytes) -> None: ...  # s16le mono at input_rate

    async def send_text(self, text: str) -> None: ...  # a typed user turn

    def events(self) -> AsyncIterator[Event]: ...  # one reader; ends when upstream ends

    async def close(self) -> None: ...  # idempotent, bounded (about 2 s)
