"""Turn-taking figures of one call: pure functions over the call's timeline.

The relay records a timeline (sessions/waterfall.py, `CallTimeline.turn_taking_input()`), every
moment in ms from the call start on the server's clock:

- ``user``: ``[start, end]`` stretches of the user's speech, from our own VAD on the uplink (when the
  audio reached us);
- ``agent``: ``[start, end, how]`` stretches of agent audio *at the ear*, from the page's playback
  reports (``how`` is ``"drained"`` when the reply played out, ``"cleared"`` when the page flushed it
  at a barge-in, ``"open"`` when the call ended while it played). Without playback reports (a peer
  that sends none) they are the server's own estimate of what the page plays (``agent_source``
  ``"server"``);
- ``words``: ``[at, n]``: a final user transcript of ``n`` words arrived at ``at``;
- ``end_ms``: the call's length.

`figures()` turns it into what Conversation.metrics["turn_taking"] stores.
"""

from __future__ import annotations

DEAD_AIR_MS = 3000  # silence this long or longer, with nobody speaking, is dead air
FALSE_BARGE_IN_WORDS = 2  # a barge-in after which the user said fewer words stopped the agent for nothing


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def talk_over_ms(user: list, agent: list) -> float:
    """Time both sides spoke at once."""
    return sum(overlap(u[:2], a[:2]) for u in user for a in agent)


def _inside(moment: float, stretch) -> bool:
    return stretch[0] < moment < stretch[1]


def user_interruptions(user: list, agent: list) -> list[tuple[float, list]]:
    """(user start, agent stretch) for each user stretch that began while the agent was audible."""
    out = []
    for u in user:
        hit = next((a for a in agent if _inside(u[0], a)), None)
        if hit is not None:
            out.append((u[0], hit))
    return out


def agent_interruptions(user: list, agent: list) -> int:
    """Agent stretches that began while the user was speaking."""
    return sum(1 for a in agent if any(_inside(a[0], u) for u in user))


def dead_air(user: list, agent: list, end_ms: float, threshold_ms: float = DEAD_AIR_MS) -> list[float]:
    """Lengths of the silences of `threshold_ms` or more between 0 and `end_ms` with nobody speaking."""
    busy = sorted([s[0], s[1]] for s in [*user, *agent] if s[1] > s[0])
    gaps, cursor = [], 0.0
    for start, end in busy:
        if start - cursor >= threshold_ms:
            gaps.append(start - cursor)
        cursor = max(cursor, end)
    if end_ms - cursor >= threshold_ms:
        gaps.append(end_ms - cursor)
    return gaps


def words_after(words: list, start: float, until: float) -> int:
    """Words of the user's final transcripts that arrived in [start, until)."""
    return sum(n for at, n in words if start <= at < until)


def barge_ins(timeline: dict) -> list[dict]:
    """Each time the user cut the agent off: the user started while the agent was audible and the page
    then flushed the agent's audio. `ms` runs from the user's start to the page going silent; `words`
    counts what the user said before the agent next spoke (or the call ended)."""
    user, agent = timeline.get("user", []), timeline.get("agent", [])
    end = timeline.get("end_ms", 0)
    out = []
    for start, stretch in user_interruptions(user, agent):
        if len(stretch) < 3 or stretch[2] != "cleared":
            continue
        following = [a[0] for a in agent if a[0] >= stretch[1]]
        until = min(following) if following else end + 1
        out.append({"at_ms": round(start), "ms": round(stretch[1] - start),
                    "words": words_after(timeline.get("words", []), start, until)})  # fmt: skip
    return out


def figures(timeline: dict) -> dict:
    """What Conversation.metrics["turn_taking"] stores."""
    user, agent = timeline.get("user", []), timeline.get("agent", [])
    gaps = dead_air(user, agent, timeline.get("end_ms", 0))
    cuts = barge_ins(timeline)
    return {
        "agent_source": timeline.get("agent_source", "ear"),
        "user_turns": len(user),
        "agent_turns": len(agent),
        "user_interruptions": len(user_interruptions(user, agent)),
        "agent_interruptions": agent_interruptions(user, agent),
        "talk_over_ms": round(talk_over_ms(user, agent)),
        "dead_air_count": len(gaps),
        "dead_air_ms": round(sum(gaps)),
        "barge_ins": len(cuts),
        "barge_in_ms": [c["ms"] for c in cuts],
        "false_barge_ins": sum(1 for c in cuts if c["words"] < FALSE_BARGE_IN_WORDS),
    }


# Labels of the figures, in the order the pages show them (the detail page, the admin, the comparison).
LABELS = [
    ("user_interruptions", "Interruptions by the user"),
    ("agent_interruptions", "Interruptions by the agent"),
    ("talk_over_ms", "Talk-over"),
    ("dead_air_count", "Dead air (silences of 3 s or more)"),
    ("dead_air_ms", "Dead air, total"),
    ("barge_ins", "Barge-ins"),
    ("false_barge_ins", "False barge-ins (fewer than 2 words)"),
]


def rows(figures_: dict) -> list[tuple[str, str]]:
    """(label, value) of stored figures for the pages."""
    out = []
    for key, label in LABELS:
        value = figures_.get(key)
        if value is None:
            continue
        out.append((label, f"{value} ms" if key.endswith("_ms") else str(value)))
    times = figures_.get("barge_in_ms") or []
    if times:
        out.append(("Barge-in time (user starts → page silent)", ", ".join(f"{t} ms" for t in times)))
    return out
