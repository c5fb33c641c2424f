"""`{% conversation_waterfall conversation as wf %}`: what templates/sessions/_waterfall.html shows.

A tag rather than view context, so the detail page (and any other page showing a conversation)
needs only the one include line."""

from django import template

from sessions import turntaking
from sessions.waterfall import STEPS, steps, summary

register = template.Library()

SCALE_MIN_MS = 1000  # the bars' full width is at least this, so small figures look small


@register.simple_tag
def conversation_waterfall(conversation) -> dict:
    turns = [t for t in conversation.turns.all() if t.role == "agent" and t.timings]
    rows = [(t, steps(t.timings)) for t in turns]
    rows = [(t, s) for t, s in rows if s]
    scale = max([SCALE_MIN_MS, *(max(s.get("played", 0), s.get("first_audio", 0)) for _, s in rows)])
    return {
        "rows": [_row(t, s, scale) for t, s in rows],
        "summary": [(label, summary([s for _, s in rows])[key]) for key, label in STEPS],
        "turn_taking": turntaking.rows((conversation.metrics or {}).get("turn_taking") or {}),
        "scale_ms": scale,
    }


def _row(turn, figures: dict, scale: float) -> dict:
    """One reply: its figures and the bars (x and width out of 1000) of the SVG waterfall."""

    def x(ms):
        return round(max(0, min(ms, scale)) * 1000 / scale)

    bars = []
    for key, cls in (("user_final", "wf-transcript"), ("first_audio", "wf-server")):
        if key in figures:
            bars.append({"cls": cls, "x": 0, "w": max(2, x(figures[key]))})
    if "played" in figures and "first_audio" in figures:
        start = x(figures["first_audio"])
        bars.append({"cls": "wf-ear", "x": start, "w": max(2, x(figures["played"]) - start)})
    return {"turn": turn, "steps": figures, "bars": bars}
