"""The providers: one entry per provider holds everything the site knows about it.

An entry (`Provider`) says: its label and client class; its voices and languages; the
environment variables that configure it and the config keys they fill (`Var`: read once by
`playground/settings.py` through `playground.config.provider_config`); which of those keys
switch it from its sandbox to the real service (`configured_by`); its sandbox module; the
options a topic may give it (`Option`, checked by `validate_options`); the session key under
which a user's own token is kept; and, through its mode, whether what the user says is
heard by our English-only offline engine. Everything else (the pick page, the client's
config, the admin's help, the consumer, the talk page) derives from the entry.

This module reads no settings at import (settings.py imports it for the variables), and
client modules are imported lazily (`load`), so a provider whose client needs a heavy
library costs nothing until someone talks to it.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass

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

HTTP = ("http", "https")
WS = ("ws", "wss")


@dataclass(frozen=True)
class Var:
    """One environment variable of a provider and the config key it fills.

    `kind`: "text", "secret" (a credential: never shown), "url" (with one of `schemes` and a
    host), "bool", "int" (`default`, between `lo` and `hi`) or "choice" (one of `choices`, the
    first when unset). `key` may be dotted ("llm.model") for a nested dict. `required_with`:
    another variable which, when set, makes this one required."""

    name: str
    key: str
    kind: str = "text"
    schemes: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    default: int | bool = 0
    lo: int = 0
    hi: int = 10**9
    required_with: str = ""

    @classmethod
    def url(cls, name: str, key: str, schemes: tuple[str, ...]) -> Var:
        return cls(name, key, "url", schemes=schemes)

    @classmethod
    def secret(cls, name: str, key: str = "api_key") -> Var:
        return cls(name, key, "secret")

    @classmethod
    def flag(cls, name: str, key: str, default: bool = False) -> Var:
        return cls(name, key, "bool", default=default)

    @classmethod
    def number(cls, name: str, key: str, default: int, lo: int, hi: int) -> Var:
        return cls(name, key, "int", default=default, lo=lo, hi=hi)

    @classmethod
    def choice(cls, name: str, key: str, choices: tuple[str, ...]) -> Var:
        return cls(name, key, "choice", choices=choices)


def _is_id(value) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


# Kinds of topic options: (check, what the admin is told a value must be).
OPTION_KINDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "id": (_is_id, "a number or text"),
    "text": (lambda v: isinstance(v, str), "text"),
    "names": (lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v), "a list of names"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "object": (lambda v: isinstance(v, dict), "an object"),
    "switch": (lambda v: isinstance(v, (bool, dict)), "true, false or an object"),
}


@dataclass(frozen=True)
class Option:
    """A key a topic may set in `provider_options[provider]`, of one of OPTION_KINDS."""

    name: str
    kind: str = "text"
    required: bool = False  # needed whenever the topic gives the provider any options

    def problem(self, provider: str, options: dict) -> str:
        value = options.get(self.name)
        if value is None or (self.kind in ("id", "text") and _is_id(value) and str(value).strip() == ""):
            return f"Options for {provider} need a {self.name}." if self.required else ""
        check, what = OPTION_KINDS[self.kind]
        return "" if check(value) else f"Option {self.name} for {provider} must be {what}."

    def describe(self) -> str:
        return f"{self.name} ({OPTION_KINDS[self.kind][1]}{', required' if self.required else ''})"


@dataclass(frozen=True)
class Provider:
    key: str
    label: str
    path: str  # dotted path of the Upstream class
    voices: dict[str, str]
    languages: tuple[str, ...]
    variables: tuple[Var, ...] = ()  # its environment variables, parsed into settings.PROVIDERS[key]
    # Config keys that switch it to the real service: any group whose keys are all set.
    configured_by: tuple[tuple[str, ...], ...] = ()
    options: tuple[Option, ...] = ()  # what Topic.provider_options[key] may hold
    sandbox: str = ""  # dotted path of its sandbox module ("" = needs none)
    user_token_key: str = ""  # session key of a user's own token (kept by the login), "" = none
    offline: bool = False  # runs in this process on our engine: no account, no sandbox
    programs: tuple[str, ...] = ()  # programs it needs on this machine
    hidden: bool = False  # for benchmarks and tests: offered only when configured
    language_voices: dict[str, tuple[str, ...]] | None = None  # when voices depend on the language
    # Keys of Conversation.provider_refs that work as credentials (a per-call ticket): kept on the
    # server for the provider's own use (the save-transcript outbox), left out of every export.
    secret_refs: tuple[str, ...] = ()

    def voices_for(self, language: str) -> list[str]:
        if self.language_voices is None:
            return list(self.voices)
        return list(self.language_voices.get(language, ()))

    @property
    def option_keys(self) -> frozenset[str]:
        return frozenset(o.name for o in self.options)

    def configured(self, config: Mapping) -> bool:
        """Whether `config` (its settings.PROVIDERS entry) has the credentials of the real service."""
        return any(all(config.get(k) for k in group) for group in self.configured_by)

    def credentials(self) -> str:
        """The variables that configure the real service, as a sentence ("A, or B and C")."""
        names = {v.key: f"{v.name}=1" if v.kind == "bool" else v.name for v in self.variables}
        return ", or ".join(" and ".join(names.get(k, k) for k in group) for group in self.configured_by)

    def english_only(self, mode: str) -> bool:
        """Whether, run in `mode`, what the user says is recognised by our offline engine, which
        hears English only (pocketsphinx ships en-us): the offline agent, and a vendor's sandbox
        (backed by the engine); a real service hears every language it offers."""
        return mode in ("offline", "sandbox")

    def options_problem(self, options) -> str:
        """What is wrong with a topic's options for this provider, or ""."""
        if not isinstance(options, dict):
            return f"Options for {self.key} must be an object."
        unknown = set(options) - self.option_keys
        if unknown:
            allowed = ", ".join(sorted(self.option_keys)) or "none"
            return f"Unknown option(s) for {self.key}: {', '.join(sorted(unknown))} (allowed: {allowed})."
        if not options:
            return ""
        return next((p for p in (o.problem(self.key, options) for o in self.options) if p), "")


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
        variables=(
            Var.url("LLM_BASE_URL", "llm.base_url", HTTP),
            Var("LLM_MODEL", "llm.model", required_with="LLM_BASE_URL"),
            Var.secret("LLM_API_KEY", "llm.api_key"),
        ),
        offline=True,
        programs=("espeak-ng",),
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
            variables=(
                Var.url("LIKU_API_URL", "api_url", HTTP),
                Var.url("LIKU_CHAT_URL", "chat_url", HTTP + WS),
                Var("LIKU_EMAIL", "email"),
                Var.secret("LIKU_PASSWORD", "password"),
                Var.secret("LIKU_TOKEN", "token"),
                Var.flag("LIKU_LOGIN", "login"),  # users log in with their Liku account (auth_liku.py)
                Var.number("LIKU_CHUNK_BYTES", "chunk_bytes", 4096, lo=2, hi=65536),
                # Where the guide is silent (liku.py): how long silence after connection_data counts
                # as confirmed, and the status words of partial and cut-short turns.
                Var.number("LIKU_CONFIRM_WAIT_MS", "confirm_wait_ms", 1000, lo=0, hi=30000),
                Var("LIKU_PARTIAL_STATUSES", "partial_statuses"),
                Var("LIKU_CUT_SHORT_STATUSES", "cut_short_statuses"),
                # The save API documents no idempotency key: the header we send one in (liku.py).
                Var("LIKU_IDEMPOTENCY_HEADER", "idempotency_header"),
            ),
            configured_by=(("token",), ("email", "password"), ("login",)),
            options=(
                Option("topic_id", "id", required=True),
                Option("face_id", "id"),
                Option("liku_id", "id"),
                Option("language"),  # the language picked for the conversation comes first
            ),
            sandbox="playground.sandbox.liku",
            user_token_key="liku_token",
            secret_refs=("connection_data",),  # the chat's ticket: it opens the chat stream
        ),
        Provider(
            "flow",
            "Speechmatics Flow",
            "sessions.upstreams.flow.FlowUpstream",
            {"default": "Template's voice"},
            ("en",),
            variables=(
                Var.url("FLOW_URL", "url", WS + HTTP),
                Var.secret("SPEECHMATICS_API_KEY"),
                # websocket: relayed through us; livekit: the browser joins the vendor's room (direct media)
                Var.choice("FLOW_TRANSPORT", "transport", ("websocket", "livekit")),
                # Flow documents no close codes: "code=type" pairs over the Realtime API's table
                Var("FLOW_CLOSE_CODES", "close_codes"),
                Var.url("LIVEKIT_URL", "livekit_url", WS + HTTP),
                Var.secret("LIVEKIT_API_KEY", "livekit_api_key"),
                Var.secret("LIVEKIT_API_SECRET", "livekit_api_secret"),
            ),
            configured_by=(("api_key",),),
            options=(
                Option("template_id", required=True),
                Option("template_variables", "object"),
                Option("tools", "list"),
                Option("quiet_tools", "names"),
            ),
            sandbox="playground.sandbox.flow",
        ),
        Provider(
            "lokutor",
            "Lokutor",
            "sessions.upstreams.lokutor.LokutorUpstream",
            {f"{g}{n}": f"{'Female' if g == 'F' else 'Male'} {n}" for g in "FM" for n in range(1, 6)},
            ("en", "es", "fr", "pt", "ko"),
            variables=(Var.url("LOKUTOR_URL", "url", WS + HTTP), Var.secret("LOKUTOR_API_KEY")),
            configured_by=(("api_key",),),
            options=(Option("tools", "list"), Option("rates", "switch")),
            sandbox="playground.sandbox.lokutor",
        ),
        Provider(
            "retell",
            "Retell AI",
            "sessions.upstreams.retell.RetellUpstream",
            {"default": "Agent's voice"},
            ("en",),
            variables=(
                Var.url("RETELL_API_URL", "api_url", HTTP),
                Var.secret("RETELL_API_KEY"),
                # Our LLM WebSocket as the sandbox dials it (default: SANDBOX_BASE_URL's host).
                Var.url("RETELL_LLM_URL", "llm_url", WS),
                Var("RETELL_LLM_ALLOWED_IPS", "llm_allowed_ips"),  # comma-separated; unset: any
            ),
            configured_by=(("api_key",),),
            options=(
                Option("agent_id"),
                Option("llm_websocket_url"),  # another LLM server for the sandbox to dial
                Option("user_speaks_first", "switch"),
                Option("functions", "names"),  # the demo functions (sessions/functions.py) it may call
                Option("end_call_phrases", "names"),  # what ends the call (default: goodbye, bye)
            ),
            sandbox="playground.sandbox.retell",
        ),
        Provider(
            "aivoco",
            "Aivoco speech-to-speech",
            "sessions.upstreams.aivoco.AivocoUpstream",
            {"female": "Female", "male": "Male"},
            ("en",),
            variables=(
                Var.url("AIVOCO_URL", "url", HTTP + WS),
                Var.secret("AIVOCO_API_KEY"),
                Var.choice("AIVOCO_VOICE_SPELLING", "voice_spelling", ("seed", "demo", "cli")),
            ),
            configured_by=(("api_key",),),
            options=(Option("functions", "names"),),  # the demo functions (sessions/functions.py) it may call
            sandbox="playground.sandbox.aivoco",
        ),
        Provider(
            "echo",
            "Loopback echo (benchmarks)",
            "sessions.upstreams.echo.EchoUpstream",
            {"default": "Your own voice"},
            ("en",),
            variables=(Var.url("ECHO_URL", "url", WS),),
            configured_by=(("url",),),
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


def voice_label(key: str, voice: str) -> str:
    """The name the pick page shows for a provider's voice (the key when unknown)."""
    provider = PROVIDERS.get(key)
    return provider.voices.get(voice, voice) if provider else voice


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


def variables() -> dict[str, tuple[Var, ...]]:
    """Per provider its environment variables: what settings.py parses into PROVIDERS."""
    return {p.key: p.variables for p in PROVIDERS.values()}


def has_credentials(key: str) -> bool:
    return PROVIDERS[key].configured(settings.PROVIDERS.get(key, {}))


def mode(key: str) -> tuple[str, str]:
    """How the provider would run now: ("real"|"sandbox"|"offline"|"unavailable", explanation)."""
    provider = PROVIDERS[key]
    names = provider.credentials()
    if not _importable(provider.path.rpartition(".")[0]):
        return "unavailable", f"its client is not built yet (it will be configured by {names})"
    if provider.offline:
        missing = [program for program in provider.programs if not shutil.which(program)]
        if missing:
            return "unavailable", f"needs the {missing[0]} program (apt-get install {missing[0]})"
        return "offline", "runs on this server, no account needed"
    if has_credentials(key):
        return "real", "talks to the real service"
    if provider.sandbox and _importable(provider.sandbox):
        return "sandbox", f"runs against its sandbox; set {names} for the real service"
    return "unavailable", f"set {names} to use it"


def english_only(key: str) -> bool:
    """Whether the provider, as it would run now, hears English only (see Provider.english_only)."""
    return PROVIDERS[key].english_only(mode(key)[0])


def upstream_config(key: str) -> dict:
    """The settings a provider's client gets: the real service's when its credentials are
    set, else the URLs and sandbox credentials of its emulator on our own server."""
    config = dict(settings.PROVIDERS.get(key, {}))
    provider = PROVIDERS[key]
    if provider.offline or has_credentials(key) or not provider.sandbox:
        return {**config, "sandbox": False}
    module = importlib.import_module(provider.sandbox)
    base = f"{settings.SANDBOX_BASE_URL}/sandbox/{key}"
    return {**config, **module.client_config(base, settings.SECRET_KEY), "sandbox": True}


def offered() -> list[Provider]:
    """What the pick page lists: every provider but hidden ones that are not configured."""
    return [p for p in PROVIDERS.values() if not p.hidden or mode(p.key)[0] != "unavailable"]


def validate_options(options) -> str:
    """An error message for bad Topic.provider_options, or "": each provider's options are
    checked against its entry's schema (known keys, required keys, value kinds)."""
    if not isinstance(options, dict):
        return "Provider options must be an object keyed by provider."
    for key, value in options.items():
        if key not in PROVIDERS:
            return f"Unknown provider {key!r} (known: {', '.join(PROVIDERS)})."
        problem = PROVIDERS[key].options_problem(value)
        if problem:
            return problem
    return ""


def options_help() -> str:
    """What each provider's topic options are, for the admin."""
    return "; ".join(
        f"{p.key}: {', '.join(o.describe() for o in p.options)}" for p in PROVIDERS.values() if p.options
    )
