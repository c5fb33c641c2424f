from django import forms
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Count
from django.http import FileResponse, HttpResponseRedirect
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from sessions import exports, review, turntaking
from sessions.models import (
    ApiToken,
    CompareRun,
    Conversation,
    LikuAccount,
    ReviewEvent,
    Tag,
    Topic,
    TranscriptSave,
    Turn,
)
from sessions.outbox_admin import save_transcripts_again
from sessions.upstreams import registry
from sessions.waterfall import STEPS, steps, summary


@admin.register(Topic)
class TopicAdmin(admin.ModelAdmin):
    list_display = [
        "title",
        "slug",
        "default_language",
        "languages_offered",
        "is_active",
        "providers_configured",
    ]
    list_filter = ["is_active", "default_language"]
    search_fields = ["title", "slug", "description"]
    prepopulated_fields = {"slug": ["title"]}
    fieldsets = [
        (None, {"fields": ["title", "slug", "description", "is_active"]}),
        ("Agent", {"fields": ["persona", "greeting", "default_language"]}),
        ("Offline agent knowledge", {"fields": ["phrases", "faq"]}),
        (
            "Other languages",
            {
                "fields": ["translations"],
                "description": "The greeting, persona, FAQ, phrases and fallback line in each other "
                "language the topic offers; checked on save. The pick page offers a language only when "
                "the topic has it here (or as its default language). FAQ keywords may mix languages: "
                "speech recognition is English only, so English keywords let a spoken question find a "
                "translated answer.",
            },
        ),
        (
            "Providers",
            {
                "fields": ["provider_options"],
                "description": "Keyed by provider; checked on save. " + registry.options_help(),
            },
        ),
    ]

    @admin.display(description="Languages")
    def languages_offered(self, obj):
        return ", ".join(obj.languages())

    @admin.display(description="Provider options")
    def providers_configured(self, obj):
        return ", ".join(sorted(obj.provider_options)) or "—"


# Review fields: a small box for a correction, the tags as checkboxes (there are a handful).
REVIEW_WIDGETS = {
    models.TextField: {"widget": forms.Textarea(attrs={"rows": 2, "cols": 40})},
    models.ManyToManyField: {"widget": forms.CheckboxSelectMultiple},
}


class TurnInline(admin.TabularInline):
    """The turns as said; staff edit only the correction and the tags (audited, see save_formset)."""

    model = Turn
    fields = [
        "sequence",
        "role",
        "text",
        "corrected_text",
        "tags",
        "interrupted",
        "start_ms",
        "end_ms",
        "reply_latency",
        "waterfall",
        "vendor_timings",
    ]
    readonly_fields = [f for f in fields if f not in ("corrected_text", "tags")]
    formfield_overrides = REVIEW_WIDGETS
    extra = 0

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("tags")

    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="Reply latency (our VAD)")
    def reply_latency(self, obj):
        """The primary figure, with what it is measured from (sessions/latency.py)."""
        return "—" if obj.latency_ms is None else f"{obj.latency_ms} ms {obj.latency_basis}"

    @admin.display(description="Waterfall from the end of speech")
    def waterfall(self, obj):
        """Transcript, first audio sent, played at the ear, reply length (sessions/waterfall.py)."""
        figures = steps(obj.timings)
        return "; ".join(f"{label} {figures[key]} ms" for key, label in STEPS if key in figures) or "—"

    @admin.display(description="Reported by the provider")
    def vendor_timings(self, obj):
        return "; ".join(f"{label} {value}" for label, value in obj.vendor_figures()) or "—"


class TranscriptSaveInline(admin.TabularInline):
    model = TranscriptSave
    fields = ["status", "attempts", "last_error", "requested_by", "created_at", "next_attempt_at", "sent_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class ProviderFilter(admin.SimpleListFilter):
    title = "provider"
    parameter_name = "provider"

    def lookups(self, request, model_admin):
        return [(p.key, p.label) for p in registry.PROVIDERS.values()]

    def queryset(self, request, queryset):
        return queryset.filter(provider=self.value()) if self.value() else queryset


class TagFilter(admin.SimpleListFilter):
    """Conversations with at least one turn carrying the tag (a subquery: one row per conversation)."""

    title = "tag"
    parameter_name = "tag"

    def lookups(self, request, model_admin):
        return list(Tag.objects.values_list("slug", "label"))

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        tagged = Turn.objects.filter(tags__slug=self.value()).values("conversation_id")
        return queryset.filter(id__in=tagged)


class ReviewEventLabels:
    """An audit entry's field and values by their labels ("Review status: Unreviewed -> Reviewed")."""

    @admin.display(description="Field", ordering="field")
    def field_label(self, obj):
        return review.FIELD_LABELS.get(obj.field, obj.field)

    @admin.display(description="Old")
    def old_value(self, obj):
        return review.shown_value(obj.field, obj.old)

    @admin.display(description="New")
    def new_value(self, obj):
        return review.shown_value(obj.field, obj.new)


class ReviewFieldFilter(admin.SimpleListFilter):
    title = "field"
    parameter_name = "field"

    def lookups(self, request, model_admin):
        return list(review.FIELD_LABELS.items())

    def queryset(self, request, queryset):
        return queryset.filter(field=self.value()) if self.value() else queryset


class ReviewEventInline(ReviewEventLabels, admin.TabularInline):
    """The audit trail of this conversation's review, newest first."""

    model = ReviewEvent
    fields = ["at", "user", "turn", "field_label", "old_value", "new_value"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name = "review change"
    verbose_name_plural = "review history"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


def review_status_action(status: Conversation.ReviewStatus):
    """A bulk action setting the review status, each change audited."""

    @admin.action(description=f"Mark as {status.label.lower()}", permissions=["change"])
    def action(modeladmin, request, queryset):
        for conversation in queryset:
            review.set_status(conversation, status, request.user)
        modeladmin.message_user(request, f"{len(queryset)} conversation(s) marked {status.label.lower()}.")

    action.__name__ = f"mark_{status.value}"
    return action


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    """The review tool: staff set the review status here and correct and tag the turns inline.

    Calls are made on the site, never here, so there is no Add; the call's own fields are read only."""

    list_display = [
        "created_at",
        "user",
        "provider_name",
        "topic",
        "status",
        "review_status",
        "turn_count",
        "reply_p50",
        "end_reason",
    ]
    list_filter = [ProviderFilter, "status", "review_status", TagFilter, "user", "created_at", "topic"]
    search_fields = ["turns__text", "turns__corrected_text", "user__username", "id"]
    date_hierarchy = "created_at"
    call_fields = [
        "id",
        "user",
        "provider_name",
        "topic",
        "voice_name",
        "language_name",
        "status",
        "created_at",
        "started_at",
        "ended_at",
        "end_reason",
        "provider_refs",
        "latency_percentiles",
        "turn_taking",
        "metrics",
        "review_player",
    ]
    readonly_fields = call_fields
    fieldsets = [
        ("Review", {"fields": ["review_status"]}),
        ("Call", {"fields": call_fields}),
    ]
    inlines = [TurnInline, TranscriptSaveInline, ReviewEventInline]
    actions = [
        *(review_status_action(s) for s in Conversation.ReviewStatus),
        "export_bundle",
        save_transcripts_again,
    ]

    class Media:  # the recording synced to the turns (templates/sessions/_turns.html)
        css = {"all": ["css/review.css"]}
        js = ["js/player.js"]

    @admin.display(description="Recording and turns")
    def review_player(self, obj):
        url = reverse("conversation_recording", args=[obj.id]) if obj.recording else ""
        links = render_to_string("sessions/_downloads.html", {"conversation": obj, "recording_url": url})
        turns = render_to_string("sessions/_turns.html", {"conversation": obj, "rows": exports.timeline(obj),
                                                           "recording_url": url})  # fmt: skip
        return mark_safe(links + turns)  # both templates escape what they show

    @admin.action(description="Export selected conversations (ZIP, a folder each)")
    def export_bundle(self, request, queryset):
        archive = exports.bundle(queryset.select_related("topic"))
        return FileResponse(archive, as_attachment=True, filename="conversations.zip",
                            content_type="application/zip")  # fmt: skip

    def get_queryset(self, request):
        # distinct: a search or filter across turns joins a row per matching turn, which would
        # multiply a plain count ("table": 13 turns shown as 52).
        turns = Count("turns", distinct=True)
        return super().get_queryset(request).select_related("user", "topic").annotate(n_turns=turns)

    def has_add_permission(self, request):
        return False

    @admin.display(description="Turns", ordering="n_turns")
    def turn_count(self, obj):
        return obj.n_turns

    @admin.display(description="Provider", ordering="provider")
    def provider_name(self, obj):
        return obj.provider_label

    @admin.display(description="Voice")
    def voice_name(self, obj):
        return obj.voice_label

    @admin.display(description="Language")
    def language_name(self, obj):
        return obj.language_label

    @admin.display(description="Reply p50 (our VAD)")
    def reply_p50(self, obj):
        """Median reply latency, from the end of the user's speech our VAD heard (or typed text)."""
        value = (obj.metrics or {}).get("latency_p50_ms")
        return "—" if value is None else f"{value} ms"

    @admin.display(description="Latency percentiles (P50 / P90 / P99)")
    def latency_percentiles(self, obj):
        table = summary([steps(t.timings) for t in obj.turns.filter(role="agent").exclude(timings={})])
        return (
            "; ".join(
                f"{label}: {p['p50']} / {p['p90']} / {p['p99']} ms"
                for key, label in STEPS
                if (p := table[key])["n"]
            )
            or "—"
        )

    @admin.display(description="Turn-taking")
    def turn_taking(self, obj):
        return (
            "; ".join(
                f"{label}: {value}"
                for label, value in turntaking.rows((obj.metrics or {}).get("turn_taking") or {})
            )
            or "—"
        )

    def get_search_results(self, request, queryset, search_term):
        # Searching across turns joins many rows per conversation; keep one row each.
        queryset, _ = super().get_search_results(request, queryset, search_term)
        return queryset, True

    def save_model(self, request, obj, form, change):
        before = {"review_status": form.initial.get("review_status", obj.review_status)}
        super().save_model(request, obj, form, change)
        review.record(request.user, obj, before, {"review_status": obj.review_status})

    def save_formset(self, request, form, formset, change):
        """Turn corrections and tags, each change written to the audit trail."""
        if formset.model is not Turn:
            return super().save_formset(request, form, formset, change)
        changed = [f.instance for f in formset.forms if f.instance.pk and f.has_changed()]
        stored = Turn.objects.prefetch_related("tags").in_bulk([t.pk for t in changed])
        before = {pk: review.turn_snapshot(turn) for pk, turn in stored.items()}
        super().save_formset(request, form, formset, change)
        for turn in changed:
            review.record(request.user, form.instance, before[turn.pk], review.turn_snapshot(turn), turn)

    def get_urls(self):
        accuracy = path(
            "accuracy/",
            self.admin_site.admin_view(self.accuracy_view),
            name="voice_sessions_conversation_accuracy",
        )
        return [accuracy, *super().get_urls()]

    def accuracy_view(self, request):
        """Word error rate per provider on the reviewed user turns of the conversations the list
        shows (its filters and search apply: the page is linked with them)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            conversations = self.get_changelist_instance(request).get_queryset(request)
        except IncorrectLookupParameters:  # a hand-edited query: show all, as the list does
            return HttpResponseRedirect(request.path)
        rows = [
            {"provider": registry.label(key), "key": key, "percent": f"{figures['wer']:.1%}", **figures}
            for key, figures in review.provider_accuracy(conversations).items()
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Transcription accuracy per provider",
            "rows": rows,
            "filtered": bool(request.GET),
        }
        return TemplateResponse(request, "admin/voice_sessions/conversation/accuracy.html", context)


class HasCorrectionFilter(admin.SimpleListFilter):
    title = "correction"
    parameter_name = "corrected"

    def lookups(self, request, model_admin):
        return [("yes", "Corrected"), ("no", "Not corrected")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.exclude(corrected_text="")
        if self.value() == "no":
            return queryset.filter(corrected_text="")
        return queryset


class TurnProviderFilter(ProviderFilter):
    def queryset(self, request, queryset):
        return queryset.filter(conversation__provider=self.value()) if self.value() else queryset


@admin.register(Turn)
class TurnAdmin(admin.ModelAdmin):
    """Every turn of every conversation, to review across calls (all wrong-language turns, say)."""

    list_display = ["conversation", "sequence", "role", "text", "corrected_text", "tag_list", "interrupted"]
    list_filter = [
        TurnProviderFilter,
        "role",
        "tags",
        HasCorrectionFilter,
        "interrupted",
        "conversation__review_status",
        "created_at",
    ]
    search_fields = ["text", "corrected_text"]
    list_select_related = ["conversation__topic"]
    fields = ["conversation", "sequence", "role", "text", "corrected_text", "tags", "interrupted"]
    fields += ["start_ms", "end_ms", "latency_ms", "timings", "provider_ids", "data", "created_at"]
    readonly_fields = [f for f in fields if f not in ("corrected_text", "tags")]
    formfield_overrides = REVIEW_WIDGETS

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("tags")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Tags")
    def tag_list(self, obj):
        return ", ".join(tag.label for tag in obj.tags.all()) or "—"

    def save_model(self, request, obj, form, change):
        obj.review_before = review.turn_snapshot(Turn.objects.get(pk=obj.pk))
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)  # the tags are saved here
        turn = form.instance
        review.record(request.user, turn.conversation, turn.review_before, review.turn_snapshot(turn), turn)


class ViewOnlyAdmin(admin.ModelAdmin):
    """Records the code writes and staff only read: no Add, no Save, no Delete."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(TranscriptSave)
class TranscriptSaveAdmin(ViewOnlyAdmin):
    """Saves of transcripts to the provider, as the outbox keeps them; read only."""

    list_display = [
        "conversation",
        "status",
        "attempts",
        "last_error",
        "requested_by",
        "created_at",
        "updated_at",
    ]
    list_filter = ["status", "created_at"]
    search_fields = ["conversation__id", "last_error"]
    list_select_related = ["conversation__topic", "requested_by"]


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    """Tags for turns: the built-in ones and staff's own."""

    list_display = ["label", "slug", "builtin", "turn_count"]
    prepopulated_fields = {"slug": ["label"]}

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(n_turns=Count("turns", distinct=True))

    @admin.display(description="Turns", ordering="n_turns")
    def turn_count(self, obj):
        return obj.n_turns

    def has_delete_permission(self, request, obj=None):
        return obj is None or not obj.builtin

    def get_readonly_fields(self, request, obj=None):
        return ["slug"] if obj and obj.builtin else []  # the built-in slugs are what filters link by

    def get_prepopulated_fields(self, request, obj=None):
        return {} if obj and obj.builtin else self.prepopulated_fields


@admin.register(ReviewEvent)
class ReviewEventAdmin(ReviewEventLabels, ViewOnlyAdmin):
    """The audit trail of every review change; written by sessions/review.py, never edited."""

    list_display = ["at", "user", "conversation", "turn", "field_label", "old_value", "new_value"]
    list_filter = [ReviewFieldFilter, "user", "at"]
    fields = ["at", "user", "conversation", "turn", "field_label", "old_value", "new_value"]
    readonly_fields = fields
    search_fields = ["old", "new", "conversation__id"]
    list_select_related = ["user", "conversation__topic", "turn"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Adding a token issues a key and shows it once, on the page the add answers with.

    Only its hash is stored; the key goes into no message, cookie or log line."""

    list_display = ["user", "name", "created_at", "last_used_at"]
    readonly_fields = ["key_hash", "created_at", "last_used_at"]

    def get_fields(self, request, obj=None):
        return ["user", "name"] if obj is None else ["user", "name", *self.readonly_fields]

    def save_model(self, request, obj, form, change):
        if not change:
            key = ApiToken.new_key()
            obj.key_hash = ApiToken.hash(key)
            obj.issued_key = key  # for response_add only; never stored
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj, post_url_continue=None):
        context = {**self.admin_site.each_context(request), "token": obj, "key": obj.issued_key,
                   "opts": self.opts, "title": "API token issued"}  # fmt: skip
        response = TemplateResponse(request, "admin/voice_sessions/apitoken/issued.html", context)
        add_never_cache_headers(response)
        return response


@admin.register(LikuAccount)
class LikuAccountAdmin(admin.ModelAdmin):
    """Users the Liku login created (sessions/auth_liku.py); only it creates them."""

    list_display = ["email", "user", "created_at"]
    search_fields = ["email"]
    readonly_fields = ["user", "email", "created_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # nothing here is editable: a view page, without Save buttons


@admin.register(CompareRun)
class CompareRunAdmin(admin.ModelAdmin):
    """A/B comparison runs: read only here; started and read on their own staff pages."""

    list_display = ("id", "topic", "providers", "status", "done_steps", "total_steps", "created_at", "report")
    list_filter = ("status",)

    @admin.display(description="Report")
    def report(self, obj):
        return format_html('<a href="{}">side by side</a>', reverse("abrun_detail", args=[obj.pk]))

    def has_add_permission(self, request):
        return False  # a run is started from /compare/runs/new/, which speaks the utterances

    def has_change_permission(self, request, obj=None):
        return False
