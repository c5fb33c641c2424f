"""JSON API for scripts: create a conversation, get its WebSocket path."""

from __future__ import annotations

import json

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from sessions.auth import token_from_header, user_for_token
from sessions.forms import PickForm
from sessions.limits import conversation_refusal
from sessions.models import Conversation, Topic


def _check_csrf(request) -> bool:
    """Session-authenticated calls need the CSRF token, exactly as a form post would."""
    reason = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
    return reason is None


def _authenticate(request):
    """(user, error response): a token header wins; otherwise the session, with CSRF."""
    key = token_from_header(request.headers.get("Authorization", ""))
    if key:
        user = user_for_token(key)
        if user is None:
            return None, JsonResponse({"error": "invalid token"}, status=401)
        return user, None
    if not request.user.is_authenticated:
        return None, JsonResponse({"error": "authentication required"}, status=401)
    if not _check_csrf(request):
        return None, JsonResponse({"error": "CSRF check failed"}, status=403)
    return request.user, None


def _body_too_big(request) -> JsonResponse | None:
    """Django refuses a body over DATA_UPLOAD_MAX_MEMORY_SIZE when it is first read; say so in JSON
    (its own answer would be the HTML 400 page)."""
    try:
        request.body  # noqa: B018 (reading it is the check)
    except RequestDataTooBig:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return JsonResponse({"error": f"the body is too large: at most {limit} bytes"}, status=413)
    return None


def _payload(request) -> dict | None:
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
        except ValueError:
            return None
        return data if isinstance(data, dict) else None
    return request.POST.dict()


def _topic_by_slug(data: dict) -> dict:
    """Scripts may name the topic by slug as well as by id."""
    topic = data.get("topic")
    if isinstance(topic, str) and not topic.isdigit():
        found = Topic.objects.filter(slug=topic).values_list("pk", flat=True).first()
        data = {**data, "topic": found if found is not None else topic}
    return data


@csrf_exempt  # checked in _authenticate, only where a session cookie authenticates
@require_POST
def create_conversation(request):
    too_big = _body_too_big(request)
    if too_big:
        return too_big
    user, problem = _authenticate(request)
    if problem:
        return problem
    data = _payload(request)
    if data is None:
        return JsonResponse({"error": "the body must be a JSON object"}, status=400)
    form = PickForm(_topic_by_slug(data))
    if not form.is_valid():
        errors = {field: [str(m) for m in messages] for field, messages in form.errors.items()}
        return JsonResponse({"error": "invalid fields", "fields": errors}, status=400)
    reason, wait = conversation_refusal(request, user)
    if reason:
        return JsonResponse({"error": reason}, status=429, headers={"Retry-After": str(wait)})
    conversation = Conversation.objects.create(user=user, **form.cleaned_data)
    body = {
        "id": str(conversation.id),
        "ws_path": conversation.ws_path,
        "provider": conversation.provider,
        "topic": conversation.topic.slug,
        "voice": conversation.voice,
        "language": conversation.language,
        "status": conversation.status,
    }
    return JsonResponse(body, status=201)
