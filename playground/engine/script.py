"""What the offline agent knows about a topic, free of Django models."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FAQ:
    question: str
    answer: str
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class Script:
    slug: str
    title: str
    persona: str
    greeting: str
    language: str = "en"
    faq: tuple[FAQ, ...] = ()
    phrases: tuple[str, ...] = ()  # things users are expected to say (for the language model)
    fallback: str = "Sorry, I did not catch that. Could you say it another way?"
    functions: tuple[dict, ...] = field(default_factory=tuple)  # demo function definitions
