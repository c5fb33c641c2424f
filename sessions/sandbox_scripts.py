"""The site's topics as the sandboxes see them: (engine Script, provider_options) pairs.

The sandboxes import nothing from `sessions/`; the site hands them this catalogue (playground/asgi.py)
so a sandbox can act out one of our topics (its greeting, FAQ and phrases) when the client names it.
"""

from __future__ import annotations

from playground.engine.script import Script

from .models import Topic


def topic_scripts(language: str = "") -> list[tuple[Script, dict]]:
    """Every active topic, as a script and its provider options (a database read); the script in
    `language` where the topic has it, else in the topic's default language (see Topic.to_script)."""
    topics = Topic.objects.filter(is_active=True)
    return [(topic.to_script(language), dict(topic.provider_options or {})) for topic in topics]
