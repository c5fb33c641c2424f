from django.apps import AppConfig


class VoiceSessionsConfig(AppConfig):
    # `sessions` is also django.contrib.sessions' label; Django refuses two apps with one label.
    name = "sessions"
    label = "voice_sessions"
    verbose_name = "Voice sessions"
    default_auto_field = "django.db.models.BigAutoField"
