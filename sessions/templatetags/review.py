"""Filters for the conversation page and admin review: tool call arguments and results as readable
key/value pairs instead of a JSON blob."""

import json

from django import template

register = template.Library()


def _scalar(value) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _show(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(_scalar(item) for item in value):
        return ", ".join("—" if item is None else _show(item) for item in value)  # "12:00, 12:30"
    return json.dumps(value, ensure_ascii=False, indent=1 if isinstance(value, dict | list) else None)


@register.filter
def readable_items(value) -> list[tuple[str, str]]:
    """A dict as (key, value shown as text) pairs; anything else as one pair with no key."""
    if value is None or value == {} or value == "":
        return []
    if isinstance(value, dict):
        return [(str(key), _show(item)) for key, item in value.items()]
    return [("", _show(value))]
