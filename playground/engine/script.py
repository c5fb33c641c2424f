"""What the offline agent knows about a topic, free of Django models."""

from __future__ import annotations

from dataclasses import dataclass

# What the agent says when no FAQ answer fits, per language (a topic may write its own).
FALLBACKS: dict[str, str] = {
    "en": "Sorry, I did not catch that. Could you say it another way?",
    "es": "Perdone, no le he entendido. ¿Puede decirlo de otra manera?",
    "fr": "Pardon, je n'ai pas compris. Pouvez-vous le dire autrement ?",
    "de": "Entschuldigung, das habe ich nicht verstanden. Können Sie es anders sagen?",
}


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
    fallback: str = FALLBACKS["en"]
