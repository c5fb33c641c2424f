"""The built-in offline agent as an upstream: a thin wrapper over `playground.engine.agent.Agent`.

Everything runs in this process: VAD (silero), speech to text (pocketsphinx
with a language model built from the topic), FAQ or LLM responder, and
espeak-ng speech at 22 050 Hz. Speech recognition is English only (the one
acoustic model that ships with pocketsphinx); other languages are spoken and
can be typed to.

`session.config` may hold:

* ``"llm"``: ``{"base_url", "model", "api_key"}`` of an OpenAI-compatible
  server; without it (or when it fails) the topic's FAQ answers.
* ``"hangover_ms"``: silence that ends a user turn (default 500 ms; see bench/agent_latency.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from playground.engine import events as engine
from playground.engine import tts
from playground.engine.agent import Agent

from .base import (
    Audio,
    Capabilities,
    Client,
    Error,
    Event,
    Interrupted,
    Session,
    Status,
    Transcript,
    UpstreamError,
)

LANGUAGES: dict[str, str] = dict(tts.LANGUAGES)
_AGENT_OPTIONS = ("hangover_ms", "start_threshold", "lead_ms", "words_per_minute")


def catalogue(piper_dir: str | None = None) -> dict[str, list[tuple[str, str]]]:
    """Voices offered per language code: {language: [(voice_key, label), ...]}, default first.

    Piper voices (`<piper_dir>/<language>*.onnx`) are listed only when the piper command is installed.
    """
    return {language: tts.voices_for(language, piper_dir) for language in LANGUAGES}


class LocalAgent(Client):
    input_rate = 16000
    capabilities = Capabilities(accepts_text=True, user_transcripts=True, barge_in_signal=True,
                                saves_transcript=False)  # fmt: skip

    def __init__(self, session: Session):
        config = session.config or {}
        options = {key: config[key] for key in _AGENT_OPTIONS if key in config}
        self.agent = Agent(
            session.topic,
            voice=session.voice,
            language=session.language,
            llm=config.get("llm") or None,
            **options,
        )

    async def connect(self) -> None:
        try:
            await self.agent.start()
        except Exception as exc:  # missing espeak-ng, broken model files: nothing a retry fixes
            await self.agent.close()
            message = f"offline agent could not start: {exc}"
            raise UpstreamError(message, permanent=True, code="local.start") from exc

    async def send_audio(self, pcm: bytes) -> None:
        self.agent.feed(pcm)

    async def send_text(self, text: str) -> None:
        await self.agent.send_text(text)

    async def events(self) -> AsyncIterator[Event]:
        async for event in self.agent.events():
            yield to_upstream(event)

    async def close(self) -> None:
        await self.agent.close()

    @property
    def last_timings(self) -> dict[str, float]:
        """Latency breakdown of the last answered turn (see Agent._record)."""
        return self.agent.last_timings


def to_upstream(event: engine.AgentEvent) -> Event:
    """The engine's event in the relay's vocabulary (sessions.upstreams.base)."""
    match event:
        case engine.Transcript():
            return Transcript(event.role, event.text, event.final, event.id, event.start_ms, event.end_ms,
                              event.interrupted)  # fmt: skip
        case engine.Audio():
            return Audio(event.pcm, event.rate)
        case engine.Status():
            return Status(event.state)
        case engine.Interrupted():
            return Interrupted()
        case engine.Failure():
            return Error(f"local.{event.where}", event.message)  # <provider>.<reason>, as every client
    raise TypeError(f"unknown engine event {event!r}")
