"""Filters for the conversation page and admin review: tool call arguments and results as readable
key/value pairs instead of a JSON blob."""

import json

from django import template

register = template.Library()


def _show(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, indent=1 if isinstance(value, dict | list) else None)


@register.filter
def readable_items(value) -> list[tuple[str, str]]:
    """A dict as (key, value shown as text) pairs; anything else as one pair with no key."""
    if value is None or value == {} or value == "":
        return []
    if isinstance(value, dict):
        return [(str(key), _show(item)) for key, item in value.items()]
    return [("", _show(value))]
