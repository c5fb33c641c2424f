"""The admin's "Save transcripts again" action (ConversationAdmin.actions): one save queued per
selected conversation whose provider has a save API, for the outbox worker (sessions/outbox.py)."""

from django.contrib import admin, messages

from sessions import outbox
from sessions.models import Conversation


@admin.action(description="Save transcripts again with the provider")
def save_transcripts_again(modeladmin, request, queryset):
    # Staff carry no provider token of their own: the worker saves with the service credentials.
    queued, unsupported = [], 0
    for conv in Conversation.objects.filter(pk__in=queryset.values("pk")).select_related("topic"):
        if conv.provider_refs and outbox.provider_saves(conv.provider):
            queued.append(outbox.enqueue(conv, requested_by=request.user).id)
        else:
            unsupported += 1
    if queued:
        modeladmin.message_user(request, f"{len(queued)} transcript save(s) queued.", messages.SUCCESS)
    if unsupported:
        why = "their provider has no save API, or the call never reached it"
        modeladmin.message_user(request, f"{unsupported} conversation(s) skipped: {why}.", messages.WARNING)
