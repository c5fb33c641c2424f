"""What the agent says back: FAQ retrieval, or an OpenAI-compatible LLM when configured.

The reply is an async iterator of text pieces, so speech output can start on
the first clause. The LLM path falls back to the FAQ answer on any failure
before its first token (connect error, HTTP error, timeout), so a broken or
slow LLM costs at most `LLMConfig.timeout` and never a silent agent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import unicodedata
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .script import FAQ, Script
from .text import words

log = logging.getLogger(__name__)

_STOP = frozenset(
    # English
    "a an the i me my we our you your it its is are was be to of in on at for and or do does did can "
    "could would will shall should may might have has had there this that what which how please "
    "want like just so if with about any some am im i'm i'd i'll "
    # Spanish (accents folded: "qué" is "que")
    "el la lo los las un una unos unas de del al y e o u que en por para con se te le les nos mi mis "
    "tu tus su sus es son esta estan estoy ser hay yo usted ustedes quiero quisiera queria puedo puede "
    "pueden podria tiene tienen tengo "
    # French (elisions such as "l'" and "qu'" are cut off first)
    "le les des du et ou est ce ca au aux pour avec je vous nous il elle sur dans ai avez voudrais "
    "veux pouvez peux suis sont".split()
)
_ELISION = re.compile(r"^(?:l|d|j|n|s|c|m|t|qu)'(?=[a-z])")  # French "l'heure" is "heure"
MIN_SCORE = 0.2  # below this cosine similarity the FAQ does not answer the question


def fold(text: str) -> str:
    """`text` without accents, so that "¿Qué horario tienen?" and "que horario" are the same words."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def terms(text: str) -> list[str]:
    """Content words, accents folded and crudely stemmed, so that "tables" matches "table" and
    "booking" matches "book" (the English suffixes also cover most Spanish and French plurals)."""
    out = []
    for word in words(fold(text)):
        word = _ELISION.sub("", word)
        if word in _STOP:
            continue
        for suffix in ("ing", "es", "s", "ed"):
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                word = word[: -len(suffix)]
                break
        out.append(word)
    return out


class FaqIndex:
    """TF-IDF over each FAQ's question and keywords (keywords count double: they were chosen)."""

    def __init__(self, faq: tuple[FAQ, ...]):
        self.faq = faq
        docs = [Counter(terms(f.question) + 2 * terms(" ".join(f.keywords))) for f in faq]
        df = Counter(t for d in docs for t in d)
        self._idf = {t: math.log((1 + len(docs)) / (1 + n)) + 1 for t, n in df.items()}
        self._vectors = [self._weigh(d) for d in docs]

    def _weigh(self, counts: Counter) -> dict[str, float]:
        vec = {t: c * self._idf.get(t, 0.0) for t, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        return {t: v / norm for t, v in vec.items()}

    def ranked(self, text: str) -> list[tuple[float, FAQ]]:
        query = self._weigh(Counter(terms(text)))
        scores = [
            (sum(w * vec.get(t, 0.0) for t, w in query.items()), f)
            for vec, f in zip(self._vectors, self.faq, strict=True)
        ]
        return sorted(scores, key=lambda s: -s[0])

    def best(self, text: str) -> FAQ | None:
        ranked = self.ranked(text)
        return ranked[0][1] if ranked and ranked[0][0] >= MIN_SCORE else None


@dataclass(frozen=True)
class LLMConfig:
    base_url: str
    model: str
    api_key: str = ""
    timeout: float = 5.0  # connect + first token; later tokens each get the same read timeout

    @classmethod
    def from_dict(cls, data: dict | None) -> LLMConfig | None:
        if not data or not data.get("base_url") or not data.get("model"):
            return None
        return cls(
            data["base_url"].rstrip("/"),
            data["model"],
            data.get("api_key") or "",
            float(data.get("timeout", 5.0)),
        )


_DONE = object()


def parse_sse_line(line: str):
    """The text delta of one SSE line, "" for lines without text, or _DONE at `data: [DONE]`."""
    if not line.startswith("data:"):
        return ""
    payload = line[5:].strip()
    if payload == "[DONE]":
        return _DONE
    try:
        choices = json.loads(payload).get("choices") or [{}]
        return (choices[0].get("delta") or {}).get("content") or ""
    except (ValueError, AttributeError, TypeError, IndexError):
        return ""


def system_prompt(script: Script) -> str:
    facts = "\n".join(f"Q: {f.question}\nA: {f.answer}" for f in script.faq)
    return f"{script.persona}\n\nAnswer in one to three short spoken sentences, no lists or markup." + (
        f"\n\nFacts you can rely on:\n{facts}" if facts else ""
    )


class Responder:
    """Answers user turns for one conversation; `aclose()` releases the HTTP client."""

    def __init__(self, script: Script, llm: LLMConfig | None = None):
        self.script = script
        self.index = FaqIndex(script.faq)
        self.llm = llm
        self._client = None

    def faq_answer(self, text: str) -> str:
        match = self.index.best(text)
        return match.answer if match else self.script.fallback

    async def reply(self, history: list[dict]) -> AsyncIterator[str]:
        """Text pieces answering the last user message of `history` (OpenAI-style messages)."""
        question = next((m["content"] for m in reversed(history) if m["role"] == "user"), "")
        if self.llm is None:
            yield self.faq_answer(question)
            return
        stream = self._stream(history)
        try:
            try:
                async with asyncio.timeout(self.llm.timeout):  # connect + first token share one deadline
                    first = await anext(stream, None)
            except Exception as exc:  # any LLM failure before speech: the FAQ still answers
                log.warning("LLM failed before its first token (%r); answering from the FAQ", exc)
                first = None
            if first is None:
                yield self.faq_answer(question)
                return
            yield first
            try:
                async for piece in stream:
                    yield piece
            except Exception as exc:  # half a reply was already spoken: just stop there
                log.warning("LLM stream broke off (%r)", exc)
        finally:
            await stream.aclose()

    async def _stream(self, history: list[dict]) -> AsyncIterator[str]:
        import httpx

        cfg = self.llm
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(cfg.timeout))
        headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
        body = {
            "model": cfg.model,
            "stream": True,
            "messages": [{"role": "system", "content": system_prompt(self.script)}, *history],
        }
        async with self._client.stream(
            "POST", f"{cfg.base_url}/chat/completions", json=body, headers=headers
        ) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                piece = parse_sse_line(line)
                if piece is _DONE:
                    return
                if piece:
                    yield piece

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
