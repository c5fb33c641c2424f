"""Settings come from the environment; a bad value stops startup naming the variable."""

import ast
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db.utils import ConnectionHandler

from playground import config
from sessions.upstreams import registry

ROOT = Path(__file__).resolve().parent.parent


def test_database_defaults_to_sqlite_file():
    db = config.database({}, "/tmp/x.sqlite3")
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == "/tmp/x.sqlite3"


def test_database_url_is_parsed_with_no_persistent_connections():
    db = config.database({"DATABASE_URL": "postgres://u:p@127.0.0.1:5432/pg"}, "unused")
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["HOST"], db["PORT"], db["CONN_MAX_AGE"]) == ("pg", "127.0.0.1", 5432, 0)


def _write_after_reading(db, table: str, row: int, before_write=lambda: None) -> None:
    """What `transaction.atomic()` does on `db` (a Django connection): a transaction that reads,
    then writes."""
    db.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
    try:
        with db.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {table}")
            before_write()
            cursor.execute(f"INSERT INTO {table} VALUES (%s)", [row])
        db.commit()
    except Exception:
        db.rollback()
        raise
    finally:
        db.set_autocommit(True)


@pytest.mark.parametrize("url", [None, "sqlite:///{path}"])
def test_two_connections_to_the_sqlite_file_both_write_after_reading(tmp_path, url, django_db_blocker):
    """Two workers (here two connections, as settings.py configures them) read and then write at
    the same moment: the second waits for the first instead of failing with "database is locked"
    (seen as a 500 on a login under load)."""
    with django_db_blocker.unblock():  # our own connections to a file of our own, not the test database
        path = tmp_path / "db.sqlite3"
        env = {"DATABASE_URL": url.format(path=path)} if url else {}
        settings = config.database(env, str(path))
        databases = ConnectionHandler({"default": settings, "second": settings})  # each thread its own
        first = databases["default"]
        with first.cursor() as cursor:
            cursor.execute("CREATE TABLE turns (n integer)")
        reading, errors = threading.Event(), []

        def other_worker():
            reading.wait(5)
            second = databases["second"]
            try:
                _write_after_reading(second, "turns", 2)
            except Exception as exc:
                errors.append(exc)
            finally:
                second.close()

        worker = threading.Thread(target=other_worker)
        worker.start()
        # The other worker's transaction begins while ours is between its read and its write.
        _write_after_reading(first, "turns", 1, before_write=lambda: (reading.set(), time.sleep(0.3)))
        worker.join(10)
        with first.cursor() as cursor:
            cursor.execute("SELECT n FROM turns ORDER BY n")
            rows = [n for (n,) in cursor.fetchall()]
        first.close()
    assert errors == [] and rows == [1, 2]


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


STRONG_KEY = secrets.token_urlsafe(50)


def test_secret_key_required_without_debug():
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY"):
        config.secret_key({}, debug=False)
    assert config.secret_key({"SECRET_KEY": STRONG_KEY}, debug=False) == STRONG_KEY


@pytest.mark.parametrize(
    "weak",
    ["s3cre", "x" * 49, "ab" * 40, "django-insecure-" + secrets.token_urlsafe(50)],
    ids=["5 characters", "49 characters", "2 different characters", "django-insecure prefix"],
)
def test_weak_secret_key_refused_without_debug(weak):
    """What `check --deploy` calls weak (security.W009) stops a production start."""
    with pytest.raises(ImproperlyConfigured, match=r"^SECRET_KEY is too weak"):
        config.secret_key({"SECRET_KEY": weak}, debug=False)
    assert config.secret_key({"SECRET_KEY": weak}, debug=True) == weak  # a developer's choice


def test_secret_key_from_a_file(tmp_path):
    path = tmp_path / "secret_key"
    path.write_text(STRONG_KEY + "\n")
    env = {"SECRET_KEY_FILE": str(path)}
    assert config.secret_key(env, False, config.read_secret_file(env, "SECRET_KEY_FILE")) == STRONG_KEY
    path.write_text("short\n")
    with pytest.raises(ImproperlyConfigured, match=r"^SECRET_KEY_FILE is too weak"):
        config.secret_key(env, False, config.read_secret_file(env, "SECRET_KEY_FILE"))
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY_FILE"):
        config.read_secret_file({"SECRET_KEY_FILE": str(tmp_path / "missing")}, "SECRET_KEY_FILE")
    with pytest.raises(ImproperlyConfigured, match="not both"):
        config.secret_key({"SECRET_KEY": STRONG_KEY}, False, STRONG_KEY)


def test_tls_proxy_settings():
    """Plain http unless BEHIND_TLS_PROXY=1; then redirect, HSTS, and the proxy's header."""
    off = config.tls_proxy({})
    assert (off["SECURE_SSL_REDIRECT"], off["SECURE_HSTS_SECONDS"]) == (False, 0)
    assert off["SECURE_PROXY_SSL_HEADER"] is None
    on = config.tls_proxy({"BEHIND_TLS_PROXY": "1"})
    assert on["SECURE_SSL_REDIRECT"] is True
    assert on["SECURE_HSTS_SECONDS"] == 31536000
    assert on["SECURE_PROXY_SSL_HEADER"] == ("HTTP_X_FORWARDED_PROTO", "https")
    assert (on["SECURE_HSTS_INCLUDE_SUBDOMAINS"], on["SECURE_HSTS_PRELOAD"]) == (False, False)
    tuned = config.tls_proxy({
        "BEHIND_TLS_PROXY": "1", "SECURE_HSTS_SECONDS": "3600", "SECURE_SSL_REDIRECT": "0",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1", "SECURE_HSTS_PRELOAD": "1",
    })  # fmt: skip
    assert (tuned["SECURE_HSTS_SECONDS"], tuned["SECURE_SSL_REDIRECT"]) == (3600, False)
    assert (tuned["SECURE_HSTS_INCLUDE_SUBDOMAINS"], tuned["SECURE_HSTS_PRELOAD"]) == (True, True)
    with pytest.raises(ImproperlyConfigured, match="SECURE_SSL_REDIRECT"):
        config.tls_proxy({"SECURE_SSL_REDIRECT": "1"})  # Daphne alone: every request would redirect
    with pytest.raises(ImproperlyConfigured, match="SECURE_HSTS_SECONDS"):
        config.tls_proxy({"BEHIND_TLS_PROXY": "1", "SECURE_HSTS_SECONDS": "a year"})


@pytest.mark.parametrize("raw,expected", [("1", True), ("off", False), ("Yes", True), ("", False)])
def test_booleans(raw, expected):
    assert config.env_bool({"DEBUG": raw}, "DEBUG", default=True) is expected


def test_bad_boolean_names_the_variable():
    with pytest.raises(ImproperlyConfigured, match="DEBUG"):
        config.env_bool({"DEBUG": "maybe"}, "DEBUG", default=True)


def test_provider_urls_are_checked():
    specs = registry.variables()
    with pytest.raises(ImproperlyConfigured, match="LOKUTOR_URL"):
        config.providers({"LOKUTOR_URL": "not a url"}, specs)
    with pytest.raises(ImproperlyConfigured, match="LLM_MODEL"):
        config.providers({"LLM_BASE_URL": "http://127.0.0.1:9/v1"}, specs)
    providers = config.providers({"LIKU_TOKEN": "t", "AIVOCO_URL": "https://example.test/"}, specs)
    assert providers["liku"]["token"] == "t"
    assert providers["aivoco"]["url"] == "https://example.test"


def _start(env_extra, *command):
    """`manage.py check` (or `command`) as production starts it: DEBUG unset, a strong SECRET_KEY."""
    unset = ("DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY_FILE")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update({"DJANGO_SETTINGS_MODULE": "playground.settings", "SECRET_KEY": STRONG_KEY}, **env_extra)
    return subprocess.run(
        [sys.executable, "manage.py", *(command or ["check"])],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _settings(env_extra, *names):
    """The values of settings `names` in a freshly started process."""
    code = f"from django.conf import settings; print(repr([getattr(settings, n) for n in {list(names)!r}]))"
    result = _start(env_extra, "shell", "-c", code)
    assert result.returncode == 0, result.stderr
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


def test_debug_is_off_and_cookies_secure_by_default():
    names = ("DEBUG", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT")
    assert _settings({}, *names) == [False, True, True, False]
    assert _settings({"SECURE_COOKIES": "0"}, *names) == [False, False, False, False]
    assert _settings({"DEBUG": "1"}, *names) == [True, False, False, False]
    behind = _settings({"BEHIND_TLS_PROXY": "1"}, "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS")
    assert behind == [True, 31536000]


def test_no_setting_holds_the_environment():
    """Django's debug page lists every UPPERCASE setting; an environ object would list every key."""
    from django.conf import settings

    for name in dir(settings):
        if name.isupper():
            value = getattr(settings, name)
            assert value is not os.environ and not isinstance(value, type(os.environ)), name


def test_startup_with_a_short_secret_key_in_production():
    result = _start({"SECRET_KEY": "s3cre"})
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "ImproperlyConfigured: SECRET_KEY is too weak" in last
    assert "s3cre" not in result.stderr  # the error names the variable, never the value


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
        "LLM_BASE_URL", "LLM_MODEL", "LLM_API_KEY", "SECRET_KEY_FILE", "SECURE_COOKIES", "BEHIND_TLS_PROXY",
        "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD",
        "STATIC_ROOT", "DIRECT_MEDIA_ORIGINS",
        "LLM_BASE_URL", "LLM_MODEL", "LLM_API_KEY", "CONVERSATIONS_PER_MINUTE", "LIVE_CALLS_PER_USER",
        "TEXT_TURNS_PER_SECOND", "LOGIN_FAILURE_LIMIT", "LOGIN_LOCKOUT_MINUTES",
    ]:  # fmt: skip
        assert f"{name}=" in listed, name
        assert f"`{name}`" in readme, name
