"""Settings, read once from the environment (see .env.example and the README)."""

import os
from pathlib import Path

from playground import config

BASE_DIR = Path(__file__).resolve().parent.parent
ENV = os.environ

DEBUG = config.env_bool(ENV, "DEBUG", default=True)
SECRET_KEY = config.secret_key(ENV, DEBUG)
ALLOWED_HOSTS = config.env_list(ENV, "ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = config.env_list(ENV, "CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",  # first, so that `runserver` serves ASGI (WebSockets included)
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "playground",
    "sessions.apps.VoiceSessionsConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "playground.urls"
ASGI_APPLICATION = "playground.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": config.database(ENV, str(BASE_DIR / "var" / "db.sqlite3"))}
CONN_MAX_AGE = 0  # under ASGI each request may run on another thread: no persistent connections
CHANNEL_LAYERS = config.channel_layers(ENV)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "pick"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = ENV.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "var" / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing root
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

if not DEBUG:
    SESSION_COOKIE_SECURE = config.env_bool(ENV, "SECURE_COOKIES", default=True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# Per provider its credentials and base URL; empty credentials mean its sandbox.
PROVIDERS = config.providers(ENV)
# Liku: LIKU_LOGIN=1 checks logins against Liku's authentication API (email as username) and runs
# each such user's calls on their own Liku token, kept in the server-side session (sessions/auth_liku.py).
LIKU_LOGIN = config.env_bool(ENV, "LIKU_LOGIN", default=False)
PROVIDERS["liku"]["login"] = LIKU_LOGIN
PROVIDERS["liku"]["chunk_bytes"] = config.env_int(ENV, "LIKU_CHUNK_BYTES", 4096, lo=2, hi=65536)
if LIKU_LOGIN:
    AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend", "sessions.auth_liku.LikuBackend"]
# Vendor emulators under /sandbox/<vendor>/, used by providers without credentials.
SANDBOXES_ENABLED = config.env_bool(ENV, "SANDBOXES_ENABLED", default=True)
# Where the sandboxes live when a provider has no credentials: our own server.
SANDBOX_BASE_URL = config.env_url(ENV, "SANDBOX_BASE_URL", ("http", "https"), "http://127.0.0.1:8000")

# The browser protocol (docs/protocol.md).
PLAYBACK_RATE = config.env_int(ENV, "PLAYBACK_RATE", 24000, lo=8000, hi=48000)
PLAYBACK_START_MS = config.env_int(ENV, "PLAYBACK_START_MS", 80, lo=0, hi=2000)
UPSTREAM_CLOSE_TIMEOUT = 2.0
# Each process heartbeats every HEARTBEAT_INTERVAL s; calls of a process silent for HEARTBEAT_TIMEOUT s
# are failed by the sweep ("server stopped"). See sessions/liveness.py.
HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT = config.heartbeat(ENV)
# SIGTERM: how long live calls get to end (ended message, close frame) before the process exits.
SHUTDOWN_TIMEOUT = 5.0

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": ENV.get("LOG_LEVEL", "INFO")},
    # httpx logs every request URL at INFO; Liku's init-websocket carries the token in its query.
    "loggers": {"daphne": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}
