"""The provider comparison page (staff): latency percentiles, barge-in times and turn-taking figures
per provider and topic over a date range, a plot of each provider's latency distribution, and CSV.

Figures come from what each call stored: Turn.timings (sessions/waterfall.py) and
Conversation.metrics["turn_taking"] (sessions/turntaking.py). The word error rate comes from the
reviews (`accuracy()` below).
"""

from __future__ import annotations

import csv
import datetime
from collections import defaultdict
from dataclasses import dataclass, field

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from sessions import review
from sessions.models import Conversation, Topic, Turn
from sessions.upstreams import registry
from sessions.views import _date
from sessions.waterfall import percentiles, steps

DEFAULT_DAYS = 30
MAX_CONVERSATIONS = 5000  # the newest in the range; the page says when more were left out
HUMAN_GAP_MS = 200  # the typical gap between turns in human conversation
SLOW_MS = 800  # past this a reply feels slow
ALL_TOPICS = "All topics"


def accuracy(conversations) -> dict:
    """Word error rate per provider over `conversations` from staff reviews (sessions/review.py):
    {provider: {"wer", "turns", "words"}}; a provider with nothing reviewed shows "—"."""
    return review.provider_accuracy(conversations)


@dataclass
class Group:
    """One row of the table: a provider, over one topic or all of them."""

    provider: str
    topic: str
    conversations: int = 0
    latencies: list = field(default_factory=list)  # first agent audio at the server
    played: list = field(default_factory=list)
    transcripts: list = field(default_factory=list)
    replies: list = field(default_factory=list)
    barge_in_ms: list = field(default_factory=list)
    counts: dict = field(default_factory=lambda: defaultdict(int))
    wer: float | None = None

    def add_steps(self, figures: dict) -> None:
        for key, into in (("first_audio", self.latencies), ("played", self.played),
                          ("user_final", self.transcripts), ("reply", self.replies)):  # fmt: skip
            if key in figures:
                into.append(figures[key])

    def add_turn_taking(self, figures: dict) -> None:
        self.barge_in_ms += figures.get("barge_in_ms") or []
        for key in COUNTED:
            value = figures.get(key)
            if isinstance(value, int | float):
                self.counts[key] += value

    def row(self) -> dict:
        latency, played = percentiles(self.latencies), percentiles(self.played)
        return {
            "provider": self.provider,
            "provider_label": registry.label(self.provider),
            "topic": self.topic,
            "conversations": self.conversations,
            "replies": latency["n"],
            "latency_p50": latency["p50"],
            "latency_p90": latency["p90"],
            "latency_p99": latency["p99"],
            "played_p50": played["p50"],
            "played_p90": played["p90"],
            "transcript_p50": percentiles(self.transcripts)["p50"],
            "reply_p50": percentiles(self.replies)["p50"],
            "barge_ins": len(self.barge_in_ms),
            "barge_in_p50": percentiles(self.barge_in_ms)["p50"],
            "barge_in_p90": percentiles(self.barge_in_ms)["p90"],
            **{key: self.counts.get(key, 0) for key in COUNTED},
            "wer": self.wer,
        }


COUNTED = ["user_interruptions", "agent_interruptions", "talk_over_ms", "dead_air_count", "false_barge_ins"]

# (key, heading) of the table and the CSV, in order.
COLUMNS = [
    ("provider_label", "Provider"),
    ("topic", "Topic"),
    ("conversations", "Conversations"),
    ("replies", "Replies timed"),
    ("latency_p50", "Latency P50 (ms)"),
    ("latency_p90", "Latency P90 (ms)"),
    ("latency_p99", "Latency P99 (ms)"),
    ("played_p50", "Played P50 (ms)"),
    ("played_p90", "Played P90 (ms)"),
    ("transcript_p50", "Transcript P50 (ms)"),
    ("reply_p50", "Reply length P50 (ms)"),
    ("barge_ins", "Barge-ins"),
    ("barge_in_p50", "Barge-in P50 (ms)"),
    ("barge_in_p90", "Barge-in P90 (ms)"),
    ("false_barge_ins", "False barge-ins"),
    ("user_interruptions", "User interruptions"),
    ("agent_interruptions", "Agent interruptions"),
    ("talk_over_ms", "Talk-over (ms)"),
    ("dead_air_count", "Dead air (≥ 3 s)"),
    ("wer", "WER"),
]


def date_range(params) -> tuple[datetime.date, datetime.date]:
    """The chosen range, by default the last 30 days; odd values fall back to the default."""
    today = timezone.localdate()
    until = _date(params.get("to")) or today
    since = _date(params.get("from")) or until - datetime.timedelta(days=DEFAULT_DAYS)
    return (since, until) if since <= until else (until, since)


def conversations_in(params):
    since, until = date_range(params)
    queryset = Conversation.objects.filter(created_at__date__gte=since, created_at__date__lte=until)
    provider = params.get("provider", "")
    if provider in registry.PROVIDERS:
        queryset = queryset.filter(provider=provider)
    if params.get("topic"):
        queryset = queryset.filter(topic__slug=params["topic"])
    return queryset


def compare(conversations) -> dict:
    """Rows per provider and topic (then per provider over all topics), and the latencies to plot."""
    ids = list(conversations.order_by("-created_at").values_list("id", flat=True)[: MAX_CONVERSATIONS + 1])
    left_out = len(ids) > MAX_CONVERSATIONS
    ids = ids[:MAX_CONVERSATIONS]
    chosen = Conversation.objects.filter(id__in=ids)
    titles = dict(Topic.objects.values_list("id", "title"))
    groups: dict[tuple[str, str], Group] = {}

    def groups_of(provider: str, topic_id) -> list[Group]:
        keys = [(provider, titles.get(topic_id, "?")), (provider, ALL_TOPICS)]
        return [groups.setdefault(key, Group(*key)) for key in keys]

    for provider, topic_id, metrics in chosen.values_list("provider", "topic_id", "metrics"):
        for group in groups_of(provider, topic_id):
            group.conversations += 1
            group.add_turn_taking((metrics or {}).get("turn_taking") or {})
    turns = Turn.objects.filter(conversation_id__in=ids, role=Turn.Role.AGENT).exclude(timings={})
    for provider, topic_id, timings in turns.values_list(
        "conversation__provider", "conversation__topic_id", "timings"
    ):
        for group in groups_of(provider, topic_id):
            group.add_steps(steps(timings))
    _add_accuracy(chosen, groups, titles)
    ordered = sorted(groups.values(), key=lambda g: (g.provider, g.topic == ALL_TOPICS, g.topic))
    plot = {g.provider: sorted(g.latencies) for g in ordered if g.topic == ALL_TOPICS and g.latencies}
    return {
        "rows": [g.row() for g in ordered],
        "plot": {
            "providers": [{"label": registry.label(p), "latencies": values} for p, values in plot.items()],
            "human_gap_ms": HUMAN_GAP_MS,
            "slow_ms": SLOW_MS,
        },
        "left_out": left_out,
    }


def _add_accuracy(conversations, groups: dict, titles: dict) -> None:
    """The WER of each row, from the reviews (`accuracy()`), per topic and over all topics."""
    for (provider, topic), group in groups.items():
        if topic == ALL_TOPICS:
            figures = accuracy(conversations)
        else:
            topic_ids = [i for i, title in titles.items() if title == topic]
            figures = accuracy(conversations.filter(topic_id__in=topic_ids))
        wer = (figures.get(provider) or {}).get("wer")
        group.wer = round(wer, 3) if isinstance(wer, int | float) else None


def _cell(value) -> str:
    return "—" if value is None else str(value)


def csv_response(rows: list[dict], since, until) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="providers-{since}-{until}.csv"'
    writer = csv.writer(response)
    writer.writerow([heading for _, heading in COLUMNS])
    for row in rows:
        writer.writerow(["" if row[key] is None else row[key] for key, _ in COLUMNS])
    return response


def _ab_runs_url() -> str | None:
    """The A/B runs' page, where that feature is installed."""
    try:
        return reverse("abrun_list")
    except NoReverseMatch:
        return None


@login_required
def comparison(request):
    if not request.user.is_staff:
        raise PermissionDenied("The provider comparison is for staff.")
    since, until = date_range(request.GET)
    result = compare(conversations_in(request.GET))
    if request.GET.get("format") == "csv":
        return csv_response(result["rows"], since, until)
    params = request.GET.copy()
    params["format"] = "csv"
    context = {
        **result,
        "since": since,
        "until": until,
        "columns": COLUMNS,
        "table": [[_cell(row[key]) for key, _ in COLUMNS] for row in result["rows"]],
        "providers": [(p.key, p.label) for p in registry.PROVIDERS.values()],
        "topics": Topic.objects.all(),
        "params": request.GET,
        "csv_query": params.urlencode(),
        "ab_runs_url": _ab_runs_url(),
    }
    return render(request, "sessions/compare.html", context)
