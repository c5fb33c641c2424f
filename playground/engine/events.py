"""What the offline agent says: its own small vocabulary, independent of any upstream interface.

`sessions/upstreams/local.py` translates these into the relay's events; the sandboxes put them
on each vendor's wire. The engine imports nothing from `sessions/`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Transcript:
    """Text of one side. `start_ms`/`end_ms`: offsets into the input stream where known;
    `interrupted`: an agent turn cut short by barge-in, `text` being what was spoken."""

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
    """The agent stopped speaking because the user talked over it."""


@dataclass(frozen=True)
class Failure:
    """A step failed (`where`: "stt", "reply"); the agent goes on listening."""

    where: str
    message: str


AgentEvent = Transcript | Audio | Status | Interrupted | Failure
