"""History of a user's own conversations, and one conversation's turns."""

import datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import FileResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET, require_POST

from playground.engine import vad
from sessions import exports, outbox
from sessions.models import Conversation, Tag, Topic, Turn
from sessions.upstreams import registry

PAGE_SIZE = 20


def _date(value: str) -> datetime.date | None:
    try:
        return datetime.date.fromisoformat(value)
    except (TypeError, ValueError):
        return None  # odd filter values are ignored, never an error


def filter_conversations(queryset, params):
    """Apply the history filters; values that make no sense are ignored."""
    provider = params.get("provider", "")
    if provider in registry.PROVIDERS:
        queryset = queryset.filter(provider=provider)
    topic = params.get("topic", "")
    if topic:
        queryset = queryset.filter(topic__slug=topic)
    since, until = _date(params.get("from")), _date(params.get("to"))
    if since:
        queryset = queryset.filter(created_at__date__gte=since)
    if until:
        queryset = queryset.filter(created_at__date__lte=until)
    review_status = params.get("review", "")
    if review_status in Conversation.ReviewStatus.values:
        queryset = queryset.filter(review_status=review_status)
    tag = params.get("tag", "")
    if tag:  # a subquery, so a conversation with several tagged turns is still one row
        queryset = queryset.filter(id__in=Turn.objects.filter(tags__slug=tag).values("conversation_id"))
    query = params.get("q", "").strip()[:200]
    if query:
        # What was said: the provider's words, or staff's correction of them (the page shows that).
        said = Q(turns__text__icontains=query) | Q(turns__corrected_text__icontains=query)
        matching = Conversation.objects.filter(said).values("id")
        queryset = queryset.filter(Q(id__in=matching))
    return queryset


@login_required
def history(request):
    own = Conversation.objects.filter(user=request.user).select_related("topic")
    filtered = filter_conversations(own, request.GET).annotate(turn_count=Count("turns"))
    # Aggregating queries ignore Meta.ordering, and pagination needs a stable order.
    filtered = filtered.order_by("-created_at", "id")
    page = Paginator(filtered, PAGE_SIZE).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    context = {
        "page": page,
        "providers": [(p.key, p.label) for p in registry.PROVIDERS.values()],
        "topics": Topic.objects.all(),
        "review_statuses": Conversation.ReviewStatus.choices,
        "tags": Tag.objects.all(),
        "params": request.GET,
        "querystring": params.urlencode(),
    }
    return render(request, "sessions/history.html", context)


@login_required
def conversation(request, conversation_id):
    conv = get_object_or_404(
        Conversation.objects.select_related("topic"), id=conversation_id, user=request.user
    )
    context = {
        "conversation": conv,
        "turns": conv.turns.all(),
        "rows": exports.timeline(conv),  # the turns as templates/sessions/_turns.html shows them
        "recording_url": reverse("conversation_recording", args=[conv.id]) if conv.recording else "",
        "saves": conv.saves.select_related("requested_by"),
        "can_resave": _can_resave(conv),
        "hears_user": registry.hears_user(conv.provider),
    }
    return render(request, "sessions/conversation.html", context)


def _can_resave(conv: Conversation) -> bool:
    """A finished call whose provider has a save-transcript API and that reached it (refs kept)."""
    finished = conv.status in (Conversation.Status.ENDED, Conversation.Status.FAILED)
    return finished and bool(conv.provider_refs) and outbox.provider_saves(conv.provider)


@login_required
@require_POST
def save_again(request, conversation_id):
    """The owner's "Save transcript again": queue a save for the outbox worker (sessions/outbox.py)."""
    conv = get_object_or_404(Conversation, id=conversation_id, user=request.user)
    if not _can_resave(conv):
        messages.error(request, "This conversation cannot be saved with its provider.")
    else:
        credentials = outbox.credentials_from_session(conv.provider, request.session)
        save = outbox.enqueue(conv, requested_by=request.user, credentials=credentials)
        messages.success(request, f"Transcript save #{save.id} queued: it is sent in the background.")
    return redirect(f"{conv.get_absolute_url()}#saves")


@cache_control(public=True, max_age=86400)
@require_GET
def vad_model(request):
    """Silero's ONNX file, the one our own VAD runs (playground/engine/vad.py), for the talk page's
    VAD (static/js/vad.js): one model file in the project, not a copy under static/."""
    return FileResponse(vad.model_path().open("rb"), content_type="application/octet-stream")
