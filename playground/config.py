"""Parsing of environment settings: pure functions, so they can be tested.

Every function takes the environment mapping and returns a value or raises
ImproperlyConfigured naming the variable, so a bad deployment stops at startup
with a message that says what to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

import dj_database_url
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


def database(env: Mapping[str, str], sqlite_path: str) -> dict:
    raw = env.get("DATABASE_URL", "").strip()
    if not raw:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": sqlite_path, "CONN_MAX_AGE": 0}
    try:
        config = dj_database_url.parse(raw, conn_max_age=0)
    except Exception as exc:  # dj-database-url raises several types for bad input
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL ({exc})") from None
    if not config.get("ENGINE"):
        raise ImproperlyConfigured(f"DATABASE_URL has an unknown scheme (got {raw!r})")
    return config


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


def secret_key(env: Mapping[str, str], debug: bool) -> str:
    key = env.get("SECRET_KEY", "")
    if key:
        return key
    if not debug:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    # Only for local development: stable per checkout so logins survive restarts.
    return "dev-only-insecure-key-do-not-use-in-production"


def providers(env: Mapping[str, str]) -> dict[str, dict]:
    """Per provider its credentials and base URL. Empty credentials mean: use the sandbox."""
    http = ("http", "https")
    ws = ("ws", "wss")
    llm_url = env_url(env, "LLM_BASE_URL", http)
    if llm_url and not env.get("LLM_MODEL", "").strip():
        raise ImproperlyConfigured("LLM_MODEL must be set when LLM_BASE_URL is set")
    return {
        "local": {
            "llm": {
                "base_url": llm_url,
                "model": env.get("LLM_MODEL", "").strip(),
                "api_key": env.get("LLM_API_KEY", ""),
            },
        },
        "liku": {
            "api_url": env_url(env, "LIKU_API_URL", http),
            "chat_url": env_url(env, "LIKU_CHAT_URL", http + ws),
            "email": env.get("LIKU_EMAIL", ""),
            "password": env.get("LIKU_PASSWORD", ""),
            "token": env.get("LIKU_TOKEN", ""),
        },
        "flow": {
            "url": env_url(env, "FLOW_URL", ws + http),
            "api_key": env.get("SPEECHMATICS_API_KEY", ""),
            "livekit_url": env_url(env, "LIVEKIT_URL", ws + http),
            "livekit_api_key": env.get("LIVEKIT_API_KEY", ""),
            "livekit_api_secret": env.get("LIVEKIT_API_SECRET", ""),
        },
        "lokutor": {
            "url": env_url(env, "LOKUTOR_URL", ws + http),
            "api_key": env.get("LOKUTOR_API_KEY", ""),
        },
        "retell": {
            "api_url": env_url(env, "RETELL_API_URL", http),
            "api_key": env.get("RETELL_API_KEY", ""),
        },
        "aivoco": {
            "url": env_url(env, "AIVOCO_URL", http + ws),
            "api_key": env.get("AIVOCO_API_KEY", ""),
            "voice_spelling": env_choice(env, "AIVOCO_VOICE_SPELLING", ("seed", "demo", "cli")),
        },
        "echo": {"url": env_url(env, "ECHO_URL", ws)},
    }
