"""Settings, read once from the environment (see .env.example and the README)."""

import os
from datetime import timedelta
from pathlib import Path

from csp.constants import NONE, SELF, WASM_UNSAFE_EVAL

from playground import config
from sessions.upstreams import registry  # the providers' variables (no settings read at import)

BASE_DIR = Path(__file__).resolve().parent.parent
# Lowercase, so not a setting: Django's debug page lists every UPPERCASE setting, and would
# list the whole environment (provider keys included) if it were one.
env = os.environ

# Off unless a developer opts in: DEBUG=1 shows tracebacks and settings to anyone who can cause an error.
DEBUG = config.env_bool(env, "DEBUG", default=False)
SECRET_KEY = config.secret_key(env, DEBUG, config.read_secret_file(env, "SECRET_KEY_FILE"))
ALLOWED_HOSTS = config.env_list(env, "ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = config.env_list(env, "CSRF_TRUSTED_ORIGINS", [])

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
    "csp",
    "axes",
    "django_ratelimit",  # its system check says whether the cache is shared across processes
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
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out login into the lockout page
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

DATABASES = {"default": config.database(env, str(BASE_DIR / "var" / "db.sqlite3"))}
CONN_MAX_AGE = 0  # under ASGI each request may run on another thread: no persistent connections
CHANNEL_LAYERS = config.channel_layers(env)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "pick"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# collectstatic writes here and WhiteNoise serves from here when DEBUG is off.
STATIC_ROOT = Path(env.get("STATIC_ROOT", "").strip() or BASE_DIR / "var" / "staticfiles")
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing root
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

# Uploaded and generated files (call recordings, A/B comparison clips and inputs): never served as
# static files; only the owner and staff download a recording, through sessions/downloads.py, and
# only staff a comparison's files, through sessions/abviews.py.
MEDIA_ROOT = Path(env.get("MEDIA_ROOT", "").strip() or BASE_DIR / "var" / "media")
# RECORDING=0: calls are not recorded (sessions/recording.py).
RECORDING = config.env_bool(env, "RECORDING", default=True)

# Cookies go over https only, unless SECURE_COOKIES=0 says the site is plain http (bin/run on
# this machine, the tests): a Secure cookie would never come back and nobody could log in.
SESSION_COOKIE_SECURE = config.env_bool(env, "SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# Behind a proxy that ends TLS (BEHIND_TLS_PROXY=1): https redirect and HSTS (see config.tls_proxy).
tls = config.tls_proxy(env)
SECURE_PROXY_SSL_HEADER = tls["SECURE_PROXY_SSL_HEADER"]
SECURE_SSL_REDIRECT = tls["SECURE_SSL_REDIRECT"]
SECURE_HSTS_SECONDS = tls["SECURE_HSTS_SECONDS"]
SECURE_HSTS_INCLUDE_SUBDOMAINS = tls["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
SECURE_HSTS_PRELOAD = tls["SECURE_HSTS_PRELOAD"]

# The pages load scripts, styles and audio worklets from our own origin only and run no inline
# script; 'self' also covers ws:/wss: to the same host (CSP level 3) for the conversation socket;
# the vendored SDKs (static/vendor/) are 'self' too.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        # 'wasm-unsafe-eval': the talk page's VAD compiles onnxruntime's WebAssembly (static/js/vad.js);
        # it allows WebAssembly only, not eval
        "script-src": [SELF, WASM_UNSAFE_EVAL],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        # Direct media (Flow over LiveKit, Retell web calls): the page joins the vendor's LiveKit room.
        "connect-src": [SELF, *config.direct_media_origins(env)],
        "media-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# Per provider its credentials, URLs and choices, from the variables its registry entry lists;
# empty credentials mean its sandbox.
PROVIDERS = config.providers(env, registry.variables())
# Liku: LIKU_LOGIN=1 checks logins against Liku's authentication API (email as username) and runs
# each such user's calls on their own Liku token, kept in the server-side session (sessions/auth_liku.py).
LIKU_LOGIN = PROVIDERS["liku"]["login"]
# Axes first: a locked-out login is refused before any backend runs, the Liku one (an outbound
# login to Liku per attempt) included.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    *(["sessions.auth_liku.LikuBackend"] if LIKU_LOGIN else []),
]
# Vendor emulators under /sandbox/<vendor>/, used by providers without credentials.
SANDBOXES_ENABLED = config.env_bool(env, "SANDBOXES_ENABLED", default=True)
# Where the sandboxes live when a provider has no credentials: our own server.
SANDBOX_BASE_URL = config.env_url(env, "SANDBOX_BASE_URL", ("http", "https"), "http://127.0.0.1:8000")

# The browser protocol (docs/protocol.md).
PLAYBACK_RATE = config.env_int(env, "PLAYBACK_RATE", 24000, lo=8000, hi=48000)
PLAYBACK_START_MS = config.env_int(env, "PLAYBACK_START_MS", 80, lo=0, hi=2000)
UPSTREAM_CLOSE_TIMEOUT = 2.0
# Presenter mode (sessions/audience.py): how long a shared live-view link may be opened, in seconds.
AUDIENCE_LINK_TTL = config.env_int(env, "AUDIENCE_LINK_TTL", 3600, lo=60, hi=7 * 86400)
# Each process heartbeats every HEARTBEAT_INTERVAL s; calls of a process silent for HEARTBEAT_TIMEOUT s
# are failed by the sweep ("server stopped"). See sessions/liveness.py.
HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT = config.heartbeat(env)
# SIGTERM: how long live calls get to end (ended message, close frame) before the process exits.
SHUTDOWN_TIMEOUT = 5.0
# bin/serve (playground/supervisor.py, README "Capacity"): worker processes on one port, and their server.
WORKERS = config.workers(env)
SERVER = config.env_choice(env, "SERVER", ("daphne", "uvicorn"))

# The transcript-save outbox (sessions/outbox.py; README "Saving transcripts (the outbox)"): a
# worker that died mid-save loses its claim after the lease (keep it above the providers' HTTP
# timeouts, 10 s); a failing save is retried after BACKOFF_MS, doubling up to BACKOFF_MAX_S (with
# jitter), at most MAX_ATTEMPTS times.
TRANSCRIPT_SAVE_LEASE_S = config.env_int(env, "TRANSCRIPT_SAVE_LEASE_S", 60, lo=1, hi=86_400)
TRANSCRIPT_SAVE_MAX_ATTEMPTS = config.env_int(env, "TRANSCRIPT_SAVE_MAX_ATTEMPTS", 10, lo=1, hi=1000)
TRANSCRIPT_SAVE_BACKOFF_MS = config.env_int(env, "TRANSCRIPT_SAVE_BACKOFF_MS", 2000, lo=1, hi=3_600_000)
TRANSCRIPT_SAVE_BACKOFF_MAX_S = config.env_int(env, "TRANSCRIPT_SAVE_BACKOFF_MAX_S", 600, lo=1, hi=86_400)

# Limits per user (sessions/limits.py; README "Limits"; docs/protocol.md for the socket ones).
CONVERSATIONS_PER_MINUTE = config.env_int(env, "CONVERSATIONS_PER_MINUTE", 30, lo=1, hi=100_000)
LIVE_CALLS_PER_USER = config.env_int(env, "LIVE_CALLS_PER_USER", 3, lo=1, hi=10_000)
TEXT_TURNS_PER_SECOND = config.env_int(env, "TEXT_TURNS_PER_SECOND", 2, lo=1, hi=1000)
LOGIN_FAILURE_LIMIT = config.env_int(env, "LOGIN_FAILURE_LIMIT", 5, lo=1, hi=1000)
LOGIN_LOCKOUT_MINUTES = config.env_int(env, "LOGIN_LOCKOUT_MINUTES", 15, lo=1, hi=100_000)
# The rate limits count in the cache: Redis with REDIS_URL (shared by every process), else local
# memory (one process only, which django-ratelimit flags as E003; the embedded default is one).
CACHES = config.caches(env)
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]  # it only knows django-redis, not Django's own
if "locmem" in CACHES["default"]["BACKEND"]:
    SILENCED_SYSTEM_CHECKS.append("django_ratelimit.E003")
# Failed logins, counted in the database (django-axes) per username and client address.
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "sessions.limits.login_locked_out"
# The peer address only: X-Forwarded-For is whatever the client wrote, so trusting it would let
# every attempt come "from" a new address. (Behind a proxy all clients share its address; the
# lock is per username there too.)
AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]
AXES_DISABLE_ACCESS_LOG = True  # failures are counted either way; successes need no table row

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Request lines (runserver's django.channels.server, uvicorn.access) may carry a credential in
    # the query (Liku's init-websocket?token=, Lokutor's ?api_key=): redacted on the way out.
    "filters": {"redact_query": {"()": "playground.logfilters.RedactQuery"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["redact_query"]}},
    "root": {"handlers": ["console"], "level": env.get("LOG_LEVEL", "INFO")},
    # httpx logs every request URL at INFO; Liku's init-websocket carries the token in its query.
    "loggers": {"daphne": {"level": "WARNING"}, "httpx": {"level": "WARNING"}},
}
