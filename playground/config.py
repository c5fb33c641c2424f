"""Parsing of environment settings: pure functions, so they can be tested.

Every function takes the environment mapping and returns a value or raises
ImproperlyConfigured naming the variable, so a bad deployment stops at startup
with a message that says what to fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.checks.security.base import (
    SECRET_KEY_INSECURE_PREFIX,
    SECRET_KEY_MIN_LENGTH,
    SECRET_KEY_MIN_UNIQUE_CHARACTERS,
)
from django.core.exceptions import ImproperlyConfigured

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of 1/0, true/false, yes/no, on/off (got {raw!r})")


def env_int(env: Mapping[str, str], name: str, default: int, lo: int = 0, hi: int = 10**9) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number (got {raw!r})") from None
    if not lo <= value <= hi:
        raise ImproperlyConfigured(f"{name} must be between {lo} and {hi} (got {value})")
    return value


def env_list(env: Mapping[str, str], name: str, default: list[str]) -> list[str]:
    raw = env.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


DIRECT_MEDIA_ORIGINS = ("wss://*.livekit.cloud", "https://*.livekit.cloud")  # Flow's and Retell's rooms
_CSP_SOURCE_SCHEMES = ("wss", "ws", "https", "http")


def direct_media_origins(env: Mapping[str, str]) -> list[str]:
    """DIRECT_MEDIA_ORIGINS: where the talk page may connect for direct media (LiveKit's signalling
    WebSocket and its HTTP calls), added to the CSP's connect-src. Space- or comma-separated CSP
    sources with a scheme, e.g. `wss://*.livekit.cloud`; "none" adds nothing."""
    raw = env.get("DIRECT_MEDIA_ORIGINS")
    if raw is None or not raw.strip():
        return list(DIRECT_MEDIA_ORIGINS)
    if raw.strip().lower() == "none":
        return []
    sources = raw.replace(",", " ").split()
    for source in sources:
        scheme, _, rest = source.partition("://")
        if scheme not in _CSP_SOURCE_SCHEMES or not rest or any(c in source for c in ";'\"\\"):
            raise ImproperlyConfigured(
                f"DIRECT_MEDIA_ORIGINS: {source!r} is not a source like wss://*.livekit.cloud "
                f"(schemes: {', '.join(_CSP_SOURCE_SCHEMES)})"
            )
    return sources


def env_choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first when unset)."""
    value = env.get(name, "").strip() or choices[0]
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def env_url(env: Mapping[str, str], name: str, schemes: tuple[str, ...], default: str = "") -> str:
    raw = env.get(name, "").strip() or default
    if not raw:
        return ""
    parts = urlsplit(raw)
    if parts.scheme not in schemes or not parts.netloc:
        raise ImproperlyConfigured(f"{name} must be a {'/'.join(schemes)} URL with a host (got {raw!r})")
    return raw.rstrip("/")


def heartbeat(env: Mapping[str, str]) -> tuple[int, int]:
    """(HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT) in seconds: how often a process heartbeats and sweeps,
    and how long a silent owner's calls stay live before the sweep fails them."""
    interval = env_int(env, "HEARTBEAT_INTERVAL", 5, lo=1, hi=300)
    timeout = env_int(env, "HEARTBEAT_TIMEOUT", 3 * interval, lo=2, hi=3600)
    if timeout < 2 * interval:
        raise ImproperlyConfigured(
            f"HEARTBEAT_TIMEOUT ({timeout}) must be at least twice HEARTBEAT_INTERVAL ({interval}), "
            "or one late heartbeat fails live calls"
        )
    return interval, timeout


# A transaction on SQLite that reads and then writes while another connection (a thread, another
# worker) is writing fails at once with "database is locked": SQLite will not wait there, as both
# could wait for each other. Begun IMMEDIATE it takes the write lock first and waits for it (up to
# `timeout` seconds) instead. The calls' writes are few and short, so serialising them costs nothing.
SQLITE_OPTIONS = {"transaction_mode": "IMMEDIATE", "timeout": 5}


def database(env: Mapping[str, str], sqlite_path: str) -> dict:
    raw = env.get("DATABASE_URL", "").strip()
    if not raw:
        config = {"ENGINE": "django.db.backends.sqlite3", "NAME": sqlite_path, "CONN_MAX_AGE": 0}
    else:
        try:
            config = dj_database_url.parse(raw, conn_max_age=0)
        except Exception as exc:  # dj-database-url raises several types for bad input
            raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL ({exc})") from None
        if not config.get("ENGINE"):
            raise ImproperlyConfigured(f"DATABASE_URL has an unknown scheme (got {raw!r})")
    if config["ENGINE"] == "django.db.backends.sqlite3":
        config["OPTIONS"] = {**SQLITE_OPTIONS, **config.get("OPTIONS", {})}
    return config


def workers(env: Mapping[str, str]) -> int:
    """bin/serve's worker processes: WORKERS; else every core with REDIS_URL, and one without it (the
    in-memory channel layer's groups and the local-memory cache do not cross processes)."""
    cores = os.cpu_count() or 1
    return env_int(env, "WORKERS", cores if env.get("REDIS_URL", "").strip() else 1, lo=1, hi=256)


def channel_layers(env: Mapping[str, str]) -> dict:
    url = env_url(env, "REDIS_URL", ("redis", "rediss", "unix"))
    if not url:
        return {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [url], "prefix": env.get("REDIS_PREFIX", "playground")},
        }
    }


def caches(env: Mapping[str, str]) -> dict:
    """Django's cache, which the rate limits count in (django-ratelimit).

    With REDIS_URL: Redis, shared by every process, so a limit holds across them. Without:
    local memory, which is per process: right for the embedded default (one process), not
    for several processes (set REDIS_URL there)."""
    url = env_url(env, "REDIS_URL", ("redis", "rediss", "unix"))
    if not url:
        return {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    prefix = env.get("REDIS_PREFIX", "playground")
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": f"{prefix}:cache",
        }
    }


def secret_key(env: Mapping[str, str], debug: bool, from_file: str = "") -> str:
    """SECRET_KEY, or the contents of the file SECRET_KEY_FILE names (read by the caller).

    Without DEBUG it must be strong by the measure of `check --deploy` (security.W009):
    sessions, CSRF tokens and the sandbox credentials derive from it."""
    key = env.get("SECRET_KEY", "")
    if key and from_file:
        raise ImproperlyConfigured("Set SECRET_KEY or SECRET_KEY_FILE, not both")
    name = "SECRET_KEY_FILE" if from_file else "SECRET_KEY"
    key = key or from_file
    if not key:
        if not debug:
            raise ImproperlyConfigured(
                "SECRET_KEY must be set when DEBUG is off, or SECRET_KEY_FILE "
                "(bin/run keeps one in var/secret_key)"
            )
        # Only for local development: stable per checkout so logins survive restarts.
        return "dev-only-insecure-key-do-not-use-in-production"
    if not debug and weak_secret_key(key):
        raise ImproperlyConfigured(
            f"{name} is too weak for DEBUG off: it needs at least {SECRET_KEY_MIN_LENGTH} characters, "
            f"{SECRET_KEY_MIN_UNIQUE_CHARACTERS} different ones, "
            f"and no '{SECRET_KEY_INSECURE_PREFIX}' prefix "
            "(generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(50))')"
        )
    return key


def weak_secret_key(key: str) -> bool:
    """What Django's deploy check calls weak (security.W009)."""
    return (
        len(key) < SECRET_KEY_MIN_LENGTH
        or len(set(key)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS
        or key.startswith(SECRET_KEY_INSECURE_PREFIX)
    )


def read_secret_file(env: Mapping[str, str], name: str) -> str:
    """The stripped contents of the file the variable `name` points at ("" when unset)."""
    path = env.get(name, "").strip()
    if not path:
        return ""
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        reason = f"{exc.strerror}: {path}"
        raise ImproperlyConfigured(f"{name} names a file that cannot be read ({reason})") from None
    if not value:
        raise ImproperlyConfigured(f"{name} names an empty file ({path})")
    return value


def tls_proxy(env: Mapping[str, str]) -> dict:
    """HTTPS settings for a deployment behind a proxy that ends TLS (BEHIND_TLS_PROXY=1).

    The proxy must set X-Forwarded-Proto (and strip it from clients): Django then knows which
    requests came over https, redirects the others and sends HSTS. Off, the app speaks plain
    http and none of this applies."""
    behind = env_bool(env, "BEHIND_TLS_PROXY", default=False)
    year = 365 * 24 * 3600
    settings = {
        "SECURE_SSL_REDIRECT": env_bool(env, "SECURE_SSL_REDIRECT", default=behind),
        "SECURE_HSTS_SECONDS": env_int(env, "SECURE_HSTS_SECONDS", year if behind else 0, hi=10 * year),
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": env_bool(env, "SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False),
        "SECURE_HSTS_PRELOAD": env_bool(env, "SECURE_HSTS_PRELOAD", default=False),
        "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https") if behind else None,
    }
    if settings["SECURE_SSL_REDIRECT"] and not behind:
        # Daphne itself speaks no TLS: without the proxy's header every request looks like http.
        raise ImproperlyConfigured("SECURE_SSL_REDIRECT needs BEHIND_TLS_PROXY=1 (Daphne serves plain http)")
    return settings


def env_var(env: Mapping[str, str], var) -> str | int | bool:
    """The value of one provider variable (a `sessions.upstreams.registry.Var`), parsed by its kind."""
    if var.kind == "url":
        value = env_url(env, var.name, var.schemes)
    elif var.kind == "bool":
        value = env_bool(env, var.name, default=bool(var.default))
    elif var.kind == "int":
        value = env_int(env, var.name, int(var.default), lo=var.lo, hi=var.hi)
    elif var.kind == "choice":
        value = env_choice(env, var.name, var.choices)
    elif var.kind == "secret":
        value = env.get(var.name, "")  # as written: a password may begin or end with a space
    else:
        value = env.get(var.name, "").strip()
    if var.required_with and env.get(var.required_with, "").strip() and not value:
        raise ImproperlyConfigured(f"{var.name} must be set when {var.required_with} is set")
    return value


def provider_config(env: Mapping[str, str], variables) -> dict:
    """A provider's config from its variables: each value under its key (a dotted key nests)."""
    config: dict = {}
    for var in variables:
        *path, last = var.key.split(".")
        target = config
        for part in path:
            target = target.setdefault(part, {})
        target[last] = env_var(env, var)
    return config


def providers(env: Mapping[str, str], variables: Mapping[str, tuple]) -> dict[str, dict]:
    """Per provider (key -> its variables, from the registry) its config: credentials, URLs and
    choices. Empty credentials mean: use the sandbox."""
    return {key: provider_config(env, specs) for key, specs in variables.items()}
