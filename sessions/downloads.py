"""A conversation's recording and exports, for its owner and staff only: anyone else gets 404, as for
a conversation that does not exist (a 403 would confirm the id)."""

from __future__ import annotations

import re

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404

from sessions import exports
from sessions.models import Conversation

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK = 64 * 1024


def viewable(request, conversation_id) -> Conversation:
    """The conversation if the user may see it (owner or staff), else 404."""
    conversation = get_object_or_404(Conversation.objects.select_related("topic"), id=conversation_id)
    if conversation.user_id != request.user.pk and not request.user.is_staff:
        raise Http404("No such conversation.")
    return conversation


def _attachment(name: str, conversation: Conversation) -> str:
    stem, _, ext = name.rpartition(".")
    return f'attachment; filename="{stem}-{conversation.id}.{ext}"'


@login_required
def export(request, conversation_id, fmt):
    if fmt not in exports.FORMATS:
        raise Http404("No such format.")
    conversation = viewable(request, conversation_id)
    content_type, name = exports.FORMATS[fmt]
    if fmt == "zip":
        response = FileResponse(exports.bundle([conversation]), content_type=content_type)
    else:
        response = HttpResponse(exports.render(conversation, fmt), content_type=content_type)
    response["Content-Disposition"] = _attachment(name, conversation)
    response["Cache-Control"] = "private, no-store"
    return response


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) of a single `Range: bytes=…` within `size`; None for no or an unusable range."""
    match = _RANGE.match(header.strip())
    if not match or (not match[1] and not match[2]):
        return None
    if match[1]:
        first = int(match[1])
        last = min(int(match[2]), size - 1) if match[2] else size - 1
    else:  # the last N bytes
        first, last = max(0, size - int(match[2])), size - 1
    return (first, last) if first <= last < size else None


def _stream(file, first: int, length: int):
    try:
        file.seek(first)
        while length > 0:
            data = file.read(min(CHUNK, length))
            if not data:
                break
            length -= len(data)
            yield data
    finally:
        file.close()


@login_required
def recording(request, conversation_id):
    """The WAV, with byte ranges (an <audio> element seeks by asking for them). While the call is
    on it grows: each response covers the file as it is now."""
    conversation = viewable(request, conversation_id)
    if not conversation.recording:
        raise Http404("This conversation was not recorded.")
    try:
        file = conversation.recording.open("rb")
        size = conversation.recording.size
    except FileNotFoundError:
        raise Http404("The recording is missing from storage.") from None
    wanted = _byte_range(request.headers.get("Range", ""), size)
    first, last = wanted or (0, size - 1)
    response = StreamingHttpResponse(_stream(file, first, last - first + 1), content_type="audio/wav",
                                     status=206 if wanted else 200)  # fmt: skip
    if wanted:
        response["Content-Range"] = f"bytes {first}-{last}/{size}"
    response["Content-Length"] = str(last - first + 1)
    response["Accept-Ranges"] = "bytes"
    response["Cache-Control"] = "private, no-store"
    if request.GET.get("download"):
        response["Content-Disposition"] = _attachment("recording.wav", conversation)
    return response
