from django.apps import AppConfig


class VoiceSessionsConfig(AppConfig):
    # `sessions` is also django.contrib.sessions' label; Django refuses two apps with one label.
    name = "sessions"
    label = "voice_sessions"
    verbose_name = "Voice sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Under `daphne` its reactor exists by now (under `runserver` not yet: playground/asgi.py
        # attaches then): heartbeat and sweep from startup, end live calls cleanly on SIGTERM
        # (sessions/liveness.py). Elsewhere this does nothing.
        from sessions.liveness import liveness

        liveness.attach_to_daphne()
