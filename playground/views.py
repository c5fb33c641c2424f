"""Pick a provider and topic, then talk."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static

from sessions.forms import PickForm
from sessions.limits import conversation_refusal, too_many_page
from sessions.models import Conversation, Topic
from sessions.upstreams import registry


def provider_catalogue() -> list[dict]:
    """What the pick page shows and its script needs: per provider, voices, languages and mode."""
    rows = []
    for p in registry.offered():
        mode, why = registry.mode(p.key)
        rows.append(
            {
                "key": p.key,
                "label": p.label,
                "mode": mode,
                "why": why,
                "voices": list(p.voices.items()),
                "languages": [(c, registry.LANGUAGE_NAMES.get(c, c)) for c in p.languages],
                "voicesByLanguage": {c: p.voices_for(c) for c in p.languages},
            }
        )
    return rows


def topic_languages() -> dict[str, list[str]]:
    """Per active topic (by id, as the form's select has it), the languages it is written in."""
    return {str(t.pk): t.languages() for t in Topic.objects.filter(is_active=True)}


def speech_note(conversation: Conversation) -> str:
    """Where speech recognition cannot follow the chosen language, what the user should do instead:
    the provider, as it runs now, hears with our English-only engine (registry: Provider.english_only)."""
    if conversation.language == "en" or not registry.english_only(conversation.provider):
        return ""
    name = registry.LANGUAGE_NAMES.get(conversation.language, conversation.language)
    return f"Speech recognition is English only here: speak English or type your turns in {name}."


@login_required
def pick(request):
    form = PickForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        reason, wait = conversation_refusal(request, request.user)
        if reason:
            return too_many_page(request, reason, wait)
        conversation = Conversation.objects.create(user=request.user, **form.cleaned_data)
        return redirect("talk", conversation.id)
    catalogue = provider_catalogue()
    context = {
        "form": form,
        "providers": catalogue,
        "catalogue": catalogue,
        "topic_languages": topic_languages(),
    }
    return render(request, "pick.html", context)


@login_required
def talk(request, conversation_id):
    conversation = get_object_or_404(Conversation, id=conversation_id, user=request.user)
    if conversation.status in (Conversation.Status.ENDED, Conversation.Status.FAILED):
        return redirect("conversation", conversation.id)
    accepts_text = registry.capabilities(conversation.provider).accepts_text
    config = {
        "wsPath": conversation.ws_path,
        "conversationId": str(conversation.id),
        "provider": conversation.provider,
        "providerLabel": conversation.provider_label,
        "acceptsText": accepts_text,
        "startMs": settings.PLAYBACK_START_MS,
    }
    context = {
        "conversation": conversation,
        "ws_path": conversation.ws_path,
        "provider_label": conversation.provider_label,
        "accepts_text": accepts_text,
        "talk_config": config,
        "speech_note": speech_note(conversation),
    }
    return render(request, "sessions/talk.html", context)


def favicon(request):
    """Browsers ask for /favicon.ico when a page names no icon (the admin, plain files)."""
    return redirect(static("favicon.svg"))
