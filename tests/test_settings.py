"""Settings come from the environment; a bad value stops startup naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from playground import config

ROOT = Path(__file__).resolve().parent.parent


def test_database_defaults_to_sqlite_file():
    db = config.database({}, "/tmp/x.sqlite3")
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == "/tmp/x.sqlite3"


def test_database_url_is_parsed_with_no_persistent_connections():
    db = config.database({"DATABASE_URL": "postgres://u:p@127.0.0.1:5432/pg"}, "unused")
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["HOST"], db["PORT"], db["CONN_MAX_AGE"]) == ("pg", "127.0.0.1", 5432, 0)


@pytest.mark.parametrize("bad", ["nonsense", "foo://host/db", "postgres://u:p@host:notaport/db"])
def test_bad_database_url_names_the_variable(bad):
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL"):
        config.database({"DATABASE_URL": bad}, "unused")


def test_channel_layer_follows_redis_url():
    assert config.channel_layers({})["default"]["BACKEND"].endswith("InMemoryChannelLayer")
    layer = config.channel_layers({"REDIS_URL": "redis://127.0.0.1:6379/0"})["default"]
    assert layer["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    assert layer["CONFIG"]["hosts"] == ["redis://127.0.0.1:6379/0"]


def test_bad_redis_url_names_the_variable():
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL"):
        config.channel_layers({"REDIS_URL": "127.0.0.1:6379"})


def test_secret_key_required_without_debug():
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY"):
        config.secret_key({}, debug=False)
    assert config.secret_key({"SECRET_KEY": "s3cret"}, debug=False) == "s3cret"


@pytest.mark.parametrize("raw,expected", [("1", True), ("off", False), ("Yes", True), ("", False)])
def test_booleans(raw, expected):
    assert config.env_bool({"DEBUG": raw}, "DEBUG", default=True) is expected


def test_bad_boolean_names_the_variable():
    with pytest.raises(ImproperlyConfigured, match="DEBUG"):
        config.env_bool({"DEBUG": "maybe"}, "DEBUG", default=True)


def test_provider_urls_are_checked():
    with pytest.raises(ImproperlyConfigured, match="LOKUTOR_URL"):
        config.providers({"LOKUTOR_URL": "not a url"})
    with pytest.raises(ImproperlyConfigured, match="LLM_MODEL"):
        config.providers({"LLM_BASE_URL": "http://127.0.0.1:9/v1"})
    providers = config.providers({"LIKU_TOKEN": "t", "AIVOCO_URL": "https://example.test/"})
    assert providers["liku"]["token"] == "t"
    assert providers["aivoco"]["url"] == "https://example.test"


def _start(env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "variable,value",
    [("DATABASE_URL", "definitely-not-a-url"), ("DEBUG", "perhaps"), ("PLAYBACK_RATE", "fast")],
)
def test_startup_stops_with_clear_error(variable, value):
    """`manage.py` refuses to start and its last line names the variable."""
    result = _start({variable: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert variable in result.stderr.strip().splitlines()[-1]


def test_startup_without_secret_key_in_production():
    result = _start({"DEBUG": "0", "SECRET_KEY": ""})
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_env_example_lists_every_variable():
    listed = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in [
        "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS",
        "LIKU_API_URL", "LIKU_CHAT_URL", "LIKU_EMAIL", "LIKU_PASSWORD", "LIKU_TOKEN", "FLOW_URL",
        "SPEECHMATICS_API_KEY", "LOKUTOR_URL", "LOKUTOR_API_KEY", "RETELL_API_URL", "RETELL_API_KEY",
        "AIVOCO_URL", "AIVOCO_API_KEY", "LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET",
        "LLM_BASE_URL", "LLM_MODEL", "LLM_API_KEY", "CONVERSATIONS_PER_MINUTE", "LIVE_CALLS_PER_USER",
        "TEXT_TURNS_PER_SECOND", "LOGIN_FAILURE_LIMIT", "LOGIN_LOCKOUT_MINUTES",
    ]:  # fmt: skip
        assert f"{name}=" in listed, name
        assert f"`{name}`" in readme, name
