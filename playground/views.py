"""The landing page; pick a provider and topic, then talk."""

from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static
from django.urls import reverse

from sessions.forms import PickForm
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
                "mode_label": MODE_LABELS[mode],
                "why": MODE_SUMMARIES[mode],
                "how_to_connect": how_to_connect(p, mode, why),
                "voices": list(p.voices.items()),
                "languages": [(c, registry.LANGUAGE_NAMES.get(c, c)) for c in p.languages],
                "voicesByLanguage": {c: p.voices_for(c) for c in p.languages},
            }
        )
    return rows


# What the pick page says of a provider's mode: words, never the mode's code or a variable's name.
MODE_LABELS = {"offline": "Offline", "sandbox": "Sandbox", "real": "Real service",
               "unavailable": "Unavailable"}  # fmt: skip
MODE_SUMMARIES = {
    "offline": "Runs on this server, no account needed.",
    "sandbox": "Runs against a built-in emulator of the service.",
    "real": "Talks to the real service.",
    "unavailable": "Not available on this server.",
}


def how_to_connect(provider, mode: str, why: str) -> str:
    """The configuration hint, for the small "how to connect the real service" note (the only place
    the pick page names an environment variable)."""
    if mode == "unavailable":
        return f"{why[:1].upper()}{why[1:]}."
    if mode != "sandbox" or not provider.credentials():
        return ""
    return f"Set {provider.credentials()} in the server's environment (see .env.example), then restart it."


def landing(request):
    """Logged-out visitors learn what this is; everyone else goes straight to the pick page."""
    if request.user.is_authenticated:
        return redirect("pick")
    return render(request, "landing.html", {"providers": [p.label for p in registry.offered()]})


def topic_descriptions() -> dict[str, str]:
    """Per active topic (by id, as the form's select has it), its description for the pick page."""
    return {str(t.pk): t.description for t in Topic.objects.filter(is_active=True)}


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
    """The choice of provider, topic, voice and language. Continuing creates nothing: it opens the
    talk page for those settings, and Start creates the conversation (`talk_new`)."""
    form = PickForm(request.POST or None, initial=_initial(request.GET))
    if request.method == "POST" and form.is_valid():
        return redirect(draft_url(form.cleaned_data))
    return _pick_page(request, form)


def _pick_page(request, form, status=200):
    catalogue = provider_catalogue()
    context = {
        "form": form,
        "providers": catalogue,
        "catalogue": catalogue,
        "topic_languages": topic_languages(),
        "topic_descriptions": topic_descriptions(),
    }
    return render(request, "pick.html", context, status=status)


def _initial(params) -> dict:
    """The pick form preset from a "New conversation" link (the last call's settings)."""
    return {k: params[k] for k in ("provider", "topic", "voice", "language") if params.get(k)}


def draft_url(data: dict) -> str:
    """The talk page for chosen, valid settings; no conversation exists until Start."""
    query = {"provider": data["provider"], "topic": data["topic"].pk, "voice": data["voice"],
             "language": data["language"]}  # fmt: skip
    return f"{reverse('talk_new')}?{urlencode(query)}"


@login_required
def talk_new(request):
    """The talk page for settings chosen on the pick page. Start posts them to the conversations API
    (session and CSRF, as the form would) and opens the new conversation's socket."""
    form = PickForm(request.GET)
    if not form.is_valid():
        return _pick_page(request, form, status=400)
    draft = Conversation(user=request.user, **form.cleaned_data)  # not saved: what Start will create
    return _talk_page(request, draft, created=False)


@login_required
def talk(request, conversation_id):
    """The talk page of a conversation created beforehand (the API, a "Talk now" link)."""
    conversation = get_object_or_404(Conversation, id=conversation_id, user=request.user)
    if conversation.status in (Conversation.Status.ENDED, Conversation.Status.FAILED):
        return redirect("conversation", conversation.id)
    return _talk_page(request, conversation, created=True)


ZERO = "00000000-0000-0000-0000-000000000000"  # stands for a conversation's id in URL templates


def _talk_page(request, conversation: Conversation, created: bool):
    accepts_text = registry.capabilities(conversation.provider).accepts_text
    settings_chosen = {"provider": conversation.provider, "topic": conversation.topic_id,
                       "voice": conversation.voice, "language": conversation.language}  # fmt: skip
    config = {
        "wsPath": conversation.ws_path if created else "",
        "conversationId": str(conversation.id) if created else "",
        "draft": settings_chosen,  # what Start (again) creates a conversation with
        "createUrl": reverse("api_conversations"),
        "csrfToken": get_token(request),
        "historyUrl": reverse("conversation", args=[ZERO]),
        "shareUrl": reverse("share", args=[ZERO]),
        "provider": conversation.provider,
        "providerLabel": conversation.provider_label,
        "acceptsText": accepts_text,
        "startMs": settings.PLAYBACK_START_MS,
    }
    context = {
        "conversation": conversation,
        "provider_label": conversation.provider_label,
        "accepts_text": accepts_text,
        "no_text_note": "" if accepts_text else no_text_note(conversation),
        "new_conversation_url": f"{reverse('pick')}?{urlencode(settings_chosen)}",
        "talk_config": config,
        "speech_note": speech_note(conversation),
    }
    return render(request, "sessions/talk.html", context)


def no_text_note(conversation: Conversation) -> str:
    """Why a provider's talk page has no text box."""
    return (f"{conversation.provider_label} takes speech only: its service has no way to receive typed "
            "text, so there is no text box. Speak to it instead.")  # fmt: skip


def favicon(request):
    """Browsers ask for /favicon.ico when a page names no icon (the admin, plain files)."""
    return redirect(static("favicon.svg"))
