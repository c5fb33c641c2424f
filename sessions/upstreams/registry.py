"""The providers: key -> label, client module, voices, languages, and how each is configured.

Client modules are imported lazily (`load`), so a provider whose client needs a
heavy library costs nothing until someone talks to it.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
from dataclasses import dataclass, field

from django.conf import settings

from sessions.upstreams.base import DEFAULT_CAPABILITIES, Capabilities

LANGUAGE_NAMES = {
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "de": "German",
    "ko": "Korean",
    "it": "Italian",
    "pt": "Portuguese",
}


@dataclass(frozen=True)
class Provider:
    key: str
    label: str
    path: str  # dotted path of the Upstream class
    voices: dict[str, str]
    languages: tuple[str, ...]
    credentials: tuple[str, ...] = ()  # environment variables that switch it to the real service
    option_keys: frozenset[str] = field(default_factory=frozenset)  # allowed keys in Topic.provider_options
    sandbox: str = ""  # dotted path of its sandbox module ("" = needs none)
    hidden: bool = False  # for benchmarks and tests: offered only when configured
    language_voices: dict[str, tuple[str, ...]] | None = None  # when voices depend on the language

    def voices_for(self, language: str) -> list[str]:
        if self.language_voices is None:
            return list(self.voices)
        return list(self.language_voices.get(language, ()))


def _local() -> Provider:
    """The offline agent speaks with espeak-ng, whose voices depend on the language."""
    from playground.engine import tts

    by_language = {lang: tts.voices_for(lang) for lang in tts.LANGUAGES}
    return Provider(
        "local",
        "Built-in offline agent",
        "sessions.upstreams.local.LocalAgent",
        {key: label for voices in by_language.values() for key, label in voices},
        tuple(by_language),
        language_voices={lang: tuple(key for key, _ in voices) for lang, voices in by_language.items()},
    )


PROVIDERS: dict[str, Provider] = {
    p.key: p
    for p in [
        _local(),
        Provider(
            "liku",
            "Liku voice chat",
            "sessions.upstreams.liku.LikuUpstream",
            {"default": "Topic's own voice"},
            ("en", "ko"),
            credentials=("LIKU_TOKEN", "LIKU_EMAIL"),
            option_keys=frozenset({"topic_id", "face_id", "liku_id", "language"}),
            sandbox="playground.sandbox.liku",
        ),
        Provider(
            "flow",
            "Speechmatics Flow",
            "sessions.upstreams.flow.FlowUpstream",
            {"default": "Template's voice"},
            ("en",),
            credentials=("SPEECHMATICS_API_KEY",),
            option_keys=frozenset({"template_id", "template_variables", "tools"}),
            sandbox="playground.sandbox.flow",
        ),
        Provider(
            "lokutor",
            "Lokutor",
            "sessions.upstreams.lokutor.LokutorUpstream",
            {f"{g}{n}": f"{'Female' if g == 'F' else 'Male'} {n}" for g in "FM" for n in range(1, 6)},
            ("en", "es", "fr", "pt", "ko"),
            credentials=("LOKUTOR_API_KEY",),
            option_keys=frozenset({"tools", "rates"}),
            sandbox="playground.sandbox.lokutor",
        ),
        Provider(
            "retell",
            "Retell AI",
            "sessions.upstreams.retell.RetellUpstream",
            {"default": "Agent's voice"},
            ("en",),
            credentials=("RETELL_API_KEY",),
            option_keys=frozenset({"agent_id"}),
            sandbox="playground.sandbox.retell",
        ),
        Provider(
            "aivoco",
            "Aivoco speech-to-speech",
            "sessions.upstreams.aivoco.AivocoUpstream",
            {"female": "Female", "male": "Male"},
            ("en",),
            credentials=("AIVOCO_API_KEY",),
            option_keys=frozenset({"functions"}),
            sandbox="playground.sandbox.aivoco",
        ),
        Provider(
            "echo",
            "Loopback echo (benchmarks)",
            "sessions.upstreams.echo.EchoUpstream",
            {"default": "Your own voice"},
            ("en",),
            credentials=("ECHO_URL",),
            hidden=True,
        ),
    ]
}

DEFAULT = "local"


def get(key: str) -> Provider:
    return PROVIDERS[key]


def label(key: str) -> str:
    provider = PROVIDERS.get(key)
    return provider.label if provider else key


def load(key: str):
    """The provider's Upstream class, imported on first use."""
    module, _, name = PROVIDERS[key].path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _importable(module: str) -> bool:
    # find_spec locates the module without importing it (and its heavy libraries).
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def capabilities(key: str) -> Capabilities:
    """What the provider's client declares it can do (see Capabilities in base.py); the documented
    defaults for a provider whose client is not built yet. Imports the client."""
    try:
        return load(key).capabilities
    except (KeyError, ImportError):
        return DEFAULT_CAPABILITIES


def hears_user(key: str) -> bool:
    """Whether the provider sends a transcript of what the user says (Aivoco does not)."""
    return capabilities(key).user_transcripts


def has_credentials(key: str) -> bool:
    config = settings.PROVIDERS.get(key, {})
    checks = {
        "liku": lambda c: bool(c.get("token") or (c.get("email") and c.get("password")) or c.get("login")),
        "flow": lambda c: bool(c.get("api_key")),
        "lokutor": lambda c: bool(c.get("api_key")),
        "retell": lambda c: bool(c.get("api_key")),
        "aivoco": lambda c: bool(c.get("api_key")),
        "echo": lambda c: bool(c.get("url")),
    }
    return checks.get(key, lambda c: False)(config)


def mode(key: str) -> tuple[str, str]:
    """How the provider would run now: ("real"|"sandbox"|"offline"|"unavailable", explanation)."""
    provider = PROVIDERS[key]
    names = " or ".join(provider.credentials)
    if not _importable(provider.path.rpartition(".")[0]):
        return "unavailable", f"its client is not built yet (it will be configured by {names})"
    if key == "local":
        if not shutil.which("espeak-ng"):
            return "unavailable", "needs the espeak-ng program (apt-get install espeak-ng)"
        return "offline", "runs on this server, no account needed"
    if has_credentials(key):
        return "real", "talks to the real service"
    if provider.sandbox and _importable(provider.sandbox):
        return "sandbox", f"runs against its sandbox; set {names} for the real service"
    return "unavailable", f"set {names} to use it"


def upstream_config(key: str) -> dict:
    """The settings a provider's client gets: the real service's when its credentials are
    set, else the URLs and sandbox credentials of its emulator on our own server."""
    config = dict(settings.PROVIDERS.get(key, {}))
    provider = PROVIDERS[key]
    if key == "local" or has_credentials(key) or not provider.sandbox:
        return {**config, "sandbox": False}
    module = importlib.import_module(provider.sandbox)
    base = f"{settings.SANDBOX_BASE_URL}/sandbox/{key}"
    return {**config, **module.client_config(base, settings.SECRET_KEY), "sandbox": True}


def offered() -> list[Provider]:
    """What the pick page lists: every provider but hidden ones that are not configured."""
    return [p for p in PROVIDERS.values() if not p.hidden or mode(p.key)[0] != "unavailable"]


def validate_options(options) -> str:
    """An error message for bad Topic.provider_options, or ""."""
    if not isinstance(options, dict):
        return "Provider options must be an object keyed by provider."
    for key, value in options.items():
        if key not in PROVIDERS:
            return f"Unknown provider {key!r} (known: {', '.join(PROVIDERS)})."
        if not isinstance(value, dict):
            return f"Options for {key} must be an object."
        unknown = set(value) - PROVIDERS[key].option_keys
        if unknown:
            allowed = ", ".join(sorted(PROVIDERS[key].option_keys)) or "none"
            return f"Unknown option(s) for {key}: {', '.join(sorted(unknown))} (allowed: {allowed})."
    liku = options.get("liku", {})
    if liku and not str(liku.get("topic_id", "")).strip():
        return "Liku options need a topic_id."
    return ""
