"""Presenter mode pages: the owner's share link (with its QR code) and the audience's live view."""

from __future__ import annotations

import segno
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from sessions import audience
from sessions.models import Conversation

SHAREABLE = (Conversation.Status.CREATED, Conversation.Status.CONNECTING, Conversation.Status.ACTIVE)


@login_required
@require_POST
def share(request, conversation_id):
    """A signed live-view link to the owner's call, and its QR code as an SVG data URL (drawn
    here with segno: the page loads nothing from elsewhere)."""
    conversation = get_object_or_404(Conversation, id=conversation_id, user=request.user)
    if conversation.status not in SHAREABLE:
        return JsonResponse({"error": "This conversation has ended: nothing live to share."}, status=410)
    url = request.build_absolute_uri(reverse("watch", args=[audience.make_token(conversation.id)]))
    qr = segno.make(url, error="m").svg_data_uri(scale=4, dark="#111827", light="#ffffff")
    return JsonResponse({"url": url, "qr": qr, "expires_in": settings.AUDIENCE_LINK_TTL})


def watch(request, token):
    """The audience's read-only live view. No login: the signed link is the permission."""
    try:
        conversation_id = audience.read_token(token)
    except signing.SignatureExpired:
        return _refused(request, 410, "This live view link has expired. Ask the presenter for a new one.")
    except signing.BadSignature:
        return _refused(request, 403, "This live view link is not valid. Ask the presenter for a new one.")
    conversation = get_object_or_404(Conversation.objects.select_related("topic"), id=conversation_id)
    config = {
        "wsPath": f"/ws/audience/{token}/",
        "outputRate": settings.PLAYBACK_RATE,
        "startMs": settings.PLAYBACK_START_MS,
    }
    context = {"conversation": conversation, "audience_config": config}
    return render(request, "sessions/audience.html", context)


def _refused(request, status: int, message: str):
    return render(request, "sessions/audience_refused.html", {"message": message}, status=status)
