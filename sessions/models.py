"""Conversations and what was said in them. Each turn is written as it arrives."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils import timezone

from playground.engine.script import FALLBACKS, FAQ, Script

# What a topic may say per language, beside its default-language fields.
TRANSLATED_FIELDS = ("greeting", "persona", "faq", "phrases", "fallback")


class Topic(models.Model):
    title = models.CharField(max_length=120)
    slug = models.SlugField(unique=True)
    description = models.TextField(blank=True)
    persona = models.TextField(help_text="System prompt: who the agent is and how it speaks.")
    greeting = models.CharField(max_length=300)
    default_language = models.CharField(max_length=10, default="en")
    phrases = models.JSONField(
        default=list, blank=True, help_text="Sentences users are expected to say (a list of strings)."
    )
    faq = models.JSONField(
        default=list,
        blank=True,
        help_text='A list of {"question": …, "answer": …, "keywords": […]} for the offline agent.',
    )
    translations = models.JSONField(
        default=dict,
        blank=True,
        help_text="The topic in other languages, keyed by language code: "
        '{"es": {"greeting": …, "persona": …, "faq": […], "phrases": […], "fallback": …}}. '
        "Each language needs its greeting; a missing persona, FAQ or phrases falls back to the "
        "default language's, a missing fallback to the built-in line of that language.",
    )
    provider_options = models.JSONField(
        default=dict,
        blank=True,
        help_text='Per provider options, e.g. {"liku": {"topic_id": 55, "face_id": 1, "liku_id": 33}}.',
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title

    def save(self, *args, **kwargs):
        self.full_clean()  # options are validated on every save, not only in forms
        super().save(*args, **kwargs)

    def clean(self) -> None:
        errors = {}
        if not isinstance(self.phrases, list) or not all(isinstance(p, str) for p in self.phrases):
            errors["phrases"] = "Phrases must be a list of strings."
        problem = _faq_problem(self.faq)
        if problem:
            errors["faq"] = problem
        problem = _translations_problem(self.translations, self.default_language)
        if problem:
            errors["translations"] = problem
        from sessions.upstreams import registry

        problem = registry.validate_options(self.provider_options)
        if problem:
            errors["provider_options"] = problem
        if errors:
            raise ValidationError(errors)

    def options_for(self, provider: str) -> dict:
        return dict(self.provider_options.get(provider) or {})

    def languages(self) -> list[str]:
        """The languages this topic can be held in: its default language first, then the others sorted
        (PostgreSQL's jsonb does not keep the order in which they were written)."""
        return [self.default_language, *sorted(c for c in self.translations if c != self.default_language)]

    def to_script(self, language: str = "") -> Script:
        """The offline agent's script in `language` (default: the topic's default language).

        A field the translation lacks comes from the default language; a language the
        topic lacks altogether gives the default-language script (the pick form refuses it).
        The phrases are the language's own followed by the default language's: they train the
        speech recogniser, which hears English only, so a user of a Spanish conversation who
        speaks rather than types says what an English-speaking user would.
        """
        if language not in self.languages():
            language = self.default_language
        own = self.translations.get(language, {}) if language != self.default_language else {}
        faq = tuple(
            FAQ(item["question"], item["answer"], tuple(item.get("keywords", ())))
            for item in own.get("faq") or self.faq
        )
        return Script(
            slug=self.slug,
            title=self.title,
            persona=own.get("persona") or self.persona,
            greeting=own.get("greeting") or self.greeting,
            language=language,
            faq=faq,
            phrases=tuple(dict.fromkeys([*own.get("phrases", ()), *self.phrases])),
            fallback=own.get("fallback") or FALLBACKS.get(language, FALLBACKS["en"]),
        )


def _translations_problem(translations, default_language: str) -> str:
    from sessions.upstreams.registry import LANGUAGE_NAMES

    if not isinstance(translations, dict):
        return 'Translations must be an object keyed by language code, e.g. {"es": {…}}.'
    for code, content in translations.items():
        if code not in LANGUAGE_NAMES:
            return f"Unknown language {code!r} (known: {', '.join(LANGUAGE_NAMES)})."
        where = f"{LANGUAGE_NAMES[code]} ({code})"
        if code == default_language:
            return f"{where} is the topic's default language: edit the main fields instead."
        problem = _translation_problem(content)
        if problem:
            return f"{where}: {problem}"
    return ""


def _translation_problem(content) -> str:
    if not isinstance(content, dict):
        return "must be an object."
    unknown = set(content) - set(TRANSLATED_FIELDS)
    if unknown:
        return f"unknown field(s) {', '.join(sorted(unknown))} (allowed: {', '.join(TRANSLATED_FIELDS)})."
    if not isinstance(content.get("greeting"), str) or not content["greeting"].strip():
        return "needs a 'greeting' (without it the agent would greet in the default language)."
    for name in ("persona", "fallback"):
        if not isinstance(content.get(name, ""), str):
            return f"'{name}' must be text."
    phrases = content.get("phrases", [])
    if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
        return "'phrases' must be a list of strings."
    return _faq_problem(content.get("faq", []))


def _faq_problem(faq) -> str:
    if not isinstance(faq, list):
        return "FAQ must be a list."
    for i, item in enumerate(faq):
        if not isinstance(item, dict) or not isinstance(item.get("question"), str):
            return f"FAQ entry {i + 1} needs a text 'question'."
        if not isinstance(item.get("answer"), str):
            return f"FAQ entry {i + 1} needs a text 'answer'."
        if not isinstance(item.get("keywords", []), list):
            return f"FAQ entry {i + 1}: 'keywords' must be a list."
    return ""


class Worker(models.Model):
    """A server process that owns live calls. It heartbeats while it lives; a call whose owner
    stopped heartbeating is swept as failed (sessions/liveness.py). Times are the database's clock,
    so processes on hosts with skewed clocks agree."""

    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}"


class Conversation(models.Model):
    class Status(models.TextChoices):
        CREATED = "created", "Created"
        CONNECTING = "connecting", "Connecting"
        ACTIVE = "active", "Active"
        ENDED = "ended", "Ended"
        FAILED = "failed", "Failed"

    class ReviewStatus(models.TextChoices):
        UNREVIEWED = "unreviewed", "Unreviewed"
        IN_REVIEW = "in_review", "In review"
        REVIEWED = "reviewed", "Reviewed"
        NEEDS_ATTENTION = "attention", "Needs attention"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    provider = models.CharField(max_length=20)
    topic = models.ForeignKey(Topic, on_delete=models.PROTECT, related_name="conversations")
    voice = models.CharField(max_length=40)
    language = models.CharField(max_length=10)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.CREATED)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=200, blank=True)
    provider_refs = models.JSONField(default=dict, blank=True, help_text="Connection data, call ids, …")
    metrics = models.JSONField(default=dict, blank=True)
    worker = models.ForeignKey(
        Worker, null=True, blank=True, on_delete=models.SET_NULL, related_name="calls",
        help_text="The server process that claimed the call (sessions/liveness.py).",
    )  # fmt: skip
    review_status = models.CharField(
        max_length=16, choices=ReviewStatus.choices, default=ReviewStatus.UNREVIEWED, db_index=True,
        help_text="Set by staff. Reviewed: every user turn was checked, so the uncorrected ones count "
        "as right in the per-provider accuracy (sessions/review.py).",
    )  # fmt: skip
    recording = models.FileField(
        upload_to="recordings/", max_length=200, blank=True,
        help_text="Stereo 16 kHz WAV, the user left and the agent as played right (sessions/recording.py).",
    )  # fmt: skip

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="conv_user_created"),
            models.Index(fields=["provider", "-created_at"], name="conv_provider_created"),
            models.Index(fields=["status"], name="conv_status"),
        ]

    def __str__(self) -> str:
        # Shown in admin titles, breadcrumbs and lists: the provider's label, never its key.
        return f"{self.topic} with {self.provider_label} ({self.created_at:%Y-%m-%d %H:%M})"

    def get_absolute_url(self) -> str:
        return reverse("conversation", args=[self.id])

    @property
    def ws_path(self) -> str:
        return f"/ws/conversations/{self.id}/"

    @property
    def provider_label(self) -> str:
        from sessions.upstreams import registry

        return registry.label(self.provider)

    @property
    def voice_label(self) -> str:
        from sessions.upstreams import registry

        return registry.voice_label(self.provider, self.voice)

    @property
    def language_label(self) -> str:
        from sessions.upstreams import registry

        return registry.LANGUAGE_NAMES.get(self.language, self.language)

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.ended_at:
            return (self.ended_at - self.started_at).total_seconds()
        return None


class Turn(models.Model):
    class Role(models.TextChoices):
        USER = "user", "User"
        AGENT = "agent", "Agent"
        TOOL = "tool", "Tool"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="turns")
    sequence = models.PositiveIntegerField()
    role = models.CharField(max_length=8, choices=Role.choices)
    text = models.TextField(blank=True)
    final = models.BooleanField(default=True)
    start_ms = models.IntegerField(null=True, blank=True, help_text="Offset from the conversation start.")
    end_ms = models.IntegerField(null=True, blank=True)
    provider_ids = models.JSONField(default=dict, blank=True)
    interrupted = models.BooleanField(default=False)
    latency_ms = models.IntegerField(
        null=True, blank=True,
        help_text="Reply latency: the end of the user's speech as our own VAD heard it arrive (or a typed "
        "turn's arrival) to the first agent audio sent to the browser.",
    )  # fmt: skip
    timings = models.JSONField(
        default=dict, blank=True,
        help_text="How latency_ms was measured and what the vendor reported beside it: moments as ms "
        "offsets from the call start (speech_end_ms, user_final_ms, first_audio_ms), `from` (vad or "
        "text), and the vendor's own figures under `vendor`. See sessions/latency.py.",
    )  # fmt: skip
    data = models.JSONField(default=dict, blank=True, help_text="Tool call name, arguments and result.")
    created_at = models.DateTimeField(default=timezone.now)
    corrected_text = models.TextField(
        blank=True,
        help_text="Staff's correction of what was said; blank = none. `text` keeps what the provider sent.",
    )
    tags = models.ManyToManyField("Tag", blank=True, related_name="turns")

    class Meta:
        ordering = ["conversation", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "sequence"], name="turn_unique_sequence"),
        ]

    def __str__(self) -> str:
        return f"{self.sequence}. {self.role}: {self.text[:60]}"

    @property
    def reviewed_text(self) -> str:
        """What was said as far as we know: staff's correction if any, else the provider's text."""
        return self.corrected_text or self.text

    # What the vendor's own fields in `timings["vendor"]` mean, for the pages (others show by name).
    VENDOR_TIMING_LABELS = {
        "speech_end_ms": "the provider's own end of your speech",
        "transcript_to_audio_ms": "reply after the provider's transcript of your words",
        "speech_end_to_audio_ms": "the agent's own figure, end of speech to its first audio",
    }

    @property
    def latency_basis(self) -> str:
        """What `latency_ms` is measured from, in words."""
        if self.timings.get("from") == "text":
            return "after your typed text arrived"
        return "after you stopped speaking (our VAD)"

    def vendor_figures(self) -> list[tuple[str, str]]:
        """The vendor-reported timings beside `latency_ms`, as (label, "N ms") for the pages: moments
        relative to our end of speech, the vendor's own figures as it gave them."""
        timings, out = self.timings or {}, []
        end = timings.get("speech_end_ms")
        if end is not None and timings.get("user_final_ms") is not None:
            heard = timings["user_final_ms"] - end
            out.append(("the provider's transcript of your words came", f"{heard:+d} ms"))
        for key, value in (timings.get("vendor") or {}).items():
            if key == "speech_end_ms":
                if end is not None:
                    out.append((self.VENDOR_TIMING_LABELS[key], f"{value - end:+d} ms from ours"))
            elif isinstance(value, int | float):
                out.append((self.VENDOR_TIMING_LABELS.get(key, key.replace("_", " ")), f"{value:.0f} ms"))
        return out


class TranscriptSave(models.Model):
    """One save of a conversation's transcript through its provider's save API: the outbox.

    A row is queued (`pending`) when a call ends or someone asks; the worker
    (sessions/outbox.py, `manage.py savetranscripts`) claims it (`sending`, under a lease),
    calls the provider and records the outcome (`saved`, or `failed` with the message once
    retrying cannot help). `payload` is the snapshot that is sent and `digest` its version."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SAVED = "saved", "Saved"
        FAILED = "failed", "Failed"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="saves")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    response = models.JSONField(default=dict, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Who asked for this save; empty when the call's end queued it.",
    )  # fmt: skip
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    # The outbox (sessions/outbox.py). Times are the database's clock, as the worker sets them.
    next_attempt_at = models.DateTimeField(default=timezone.now, help_text="Not tried again before this.")
    lease_until = models.DateTimeField(
        null=True, blank=True, help_text="While sending: another worker may take it over after this."
    )
    claimed_by = models.CharField(max_length=120, blank=True, help_text="The worker that last claimed it.")
    sent_at = models.DateTimeField(null=True, blank=True)
    payload = models.JSONField(default=dict, blank=True, help_text="The snapshot that is sent.")
    digest = models.CharField(max_length=64, blank=True, help_text="SHA-256 of the payload: its version.")
    idempotency_key = models.CharField(max_length=64, blank=True)
    # The requesting user's own provider credentials (e.g. their Liku token), server side only,
    # for as long as the save is not done; emptied when it is saved or failed.
    credentials = models.JSONField(default=dict, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="save_status_created"),
            models.Index(fields=["status", "next_attempt_at"], name="save_status_due"),
        ]

    def __str__(self) -> str:
        return f"Save #{self.pk} of {self.conversation_id}: {self.get_status_display()}"

    @property
    def unchanged_since(self):
        """The id of the earlier save of the same version, when this one was not sent again."""
        return (self.response or {}).get("unchanged_since")


class ApiToken(models.Model):
    """A token for scripts (benchmarks, comparisons) to use the JSON API. Only its hash is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=80, blank=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user} {self.name}".strip()

    @staticmethod
    def hash(key: str) -> str:
        import hashlib

        return hashlib.sha256(key.encode()).hexdigest()

    @classmethod
    def issue(cls, user, name: str = "") -> str:
        """Create a token and return its key; the key itself is never stored."""
        key = cls.new_key()
        cls.objects.create(user=user, name=name, key_hash=cls.hash(key))
        return key

    @staticmethod
    def new_key() -> str:
        import secrets

        return secrets.token_hex(20)


class LikuAccount(models.Model):
    """Marks a user as created by the Liku login (sessions/auth_liku.py), and only such a user.

    The Liku backend logs in only users that carry this mark; a local account with the same
    name (a superuser made with `createsuperuser --noinput`, say) is never adopted."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="liku_account"
    )
    email = models.EmailField(unique=True, help_text="The Liku email, lower case.")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.email


class Tag(models.Model):
    """A label staff put on turns. The built-in ones (wrong language, echo, …) come from migration
    0006; staff add their own in the admin."""

    slug = models.SlugField(max_length=40, unique=True)
    label = models.CharField(max_length=80)
    builtin = models.BooleanField(default=False, editable=False)

    class Meta:
        ordering = ["-builtin", "label"]

    def __str__(self) -> str:
        return self.label


class ReviewEvent(models.Model):
    """One review change: who changed which field of a conversation or turn, from what to what, when.

    Written by sessions/review.py for every correction, tag change and status change, whether
    made in the admin or elsewhere; never edited."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="review_events")
    turn = models.ForeignKey(
        Turn, null=True, blank=True, on_delete=models.SET_NULL, related_name="review_events"
    )
    field = models.CharField(max_length=20)
    old = models.TextField(blank=True)
    new = models.TextField(blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]

    # What staff see for `field`: labels, not the stored keys (sessions/review.py, the admin).
    FIELD_LABELS = {"corrected_text": "Correction", "tags": "Tags", "review_status": "Review status"}

    def __str__(self) -> str:
        field = self.FIELD_LABELS.get(self.field, self.field).lower()
        return f"{self.user} changed the {field} at {self.at:%Y-%m-%d %H:%M}"


class CompareRun(models.Model):
    """One A/B comparison: the same utterances played into several providers, one conversation each
    (sessions/abtest.py runs it; `manage.py compare`)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    topic = models.ForeignKey(Topic, on_delete=models.PROTECT, related_name="+")
    language = models.CharField(max_length=10, default="en")
    providers = models.JSONField(default=list, help_text="Provider keys, in the order they are run.")
    utterances = models.JSONField(
        default=list, blank=True,
        help_text='What is said, in order: [{"text": …, "audio": <storage name of its 16 kHz WAV>}].',
    )  # fmt: skip
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    cancel_requested = models.BooleanField(default=False)
    done_steps = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"comparison {self.pk}: {self.topic} with {', '.join(self.providers)}"

    @property
    def percent(self) -> int:
        return round(100 * self.done_steps / self.total_steps) if self.total_steps else 0

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED, self.Status.CANCELLED)


class CompareItem(models.Model):
    """One utterance as one provider heard and answered it, within a CompareRun."""

    run = models.ForeignKey(CompareRun, on_delete=models.CASCADE, related_name="items")
    index = models.PositiveIntegerField(help_text="The utterance's place in the run, from 0.")
    provider = models.CharField(max_length=20)
    conversation = models.ForeignKey(Conversation, null=True, blank=True, on_delete=models.SET_NULL)
    utterance = models.TextField(blank=True)
    user_text = models.TextField(blank=True, help_text="The provider's final transcript of the utterance.")
    reply_text = models.TextField(blank=True)
    timings = models.JSONField(
        default=dict, blank=True,
        help_text="The waterfall, ms from the end of the utterance: as the server measured it "
        "(the reply Turn's timings) and as the client heard it. See sessions/abtest.py.",
    )  # fmt: skip
    clip = models.FileField(upload_to="compare/clips/", blank=True)
    error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["run", "index", "id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "index", "provider"], name="compare_item_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.index} {self.provider}"
