from django.contrib import admin
from django.db.models import Count
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers

from sessions.models import ApiToken, Conversation, LikuAccount, Topic, TranscriptSave, Turn
from sessions.outbox_admin import save_transcripts_again
from sessions.upstreams import registry


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


class TurnInline(admin.TabularInline):
    model = Turn
    fields = [
        "sequence",
        "role",
        "text",
        "interrupted",
        "start_ms",
        "end_ms",
        "reply_latency",
        "vendor_timings",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="Reply latency (our VAD)")
    def reply_latency(self, obj):
        """The primary figure, with what it is measured from (sessions/latency.py)."""
        return "—" if obj.latency_ms is None else f"{obj.latency_ms} ms {obj.latency_basis}"

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


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "user",
        "provider",
        "topic",
        "status",
        "turn_count",
        "reply_p50",
        "end_reason",
    ]
    list_filter = [ProviderFilter, "status", "user", "created_at", "topic"]
    search_fields = ["turns__text", "user__username", "id"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "id",
        "user",
        "provider",
        "topic",
        "voice",
        "language",
        "status",
        "created_at",
        "started_at",
        "ended_at",
        "end_reason",
        "provider_refs",
        "metrics",
    ]
    inlines = [TurnInline, TranscriptSaveInline]
    actions = [save_transcripts_again]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user", "topic").annotate(n_turns=Count("turns"))

    @admin.display(description="Turns", ordering="n_turns")
    def turn_count(self, obj):
        return obj.n_turns

    @admin.display(description="Reply p50 (our VAD)")
    def reply_p50(self, obj):
        """Median reply latency, from the end of the user's speech our VAD heard (or typed text)."""
        value = (obj.metrics or {}).get("latency_p50_ms")
        return "—" if value is None else f"{value} ms"

    def get_search_results(self, request, queryset, search_term):
        # Searching across turns joins many rows per conversation; keep one row each.
        queryset, _ = super().get_search_results(request, queryset, search_term)
        return queryset, True


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
