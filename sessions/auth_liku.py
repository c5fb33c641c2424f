"""Log in with a Liku account (enabled by LIKU_LOGIN=1; see playground/settings.py).

The login form's username is the Liku email. The backend checks email and
password against Liku's authentication endpoint (`POST {api}/api/liku/authentication/`,
the same URL our Liku client uses) and, when Liku accepts, logs in a local user
named after the email (created on first login, without a usable local password).

Liku's `token_key` stays on the server: the backend hangs it on the user object
and, once Django's `login()` has rotated the session, `keep_token` puts it in the
server-side session under SESSION_KEY. The conversation consumer reads it from
there and hands it to the Liku client as `config["user_token"]`, so the user's
calls run on their own Liku account. It never reaches a page or a script, and
logging out (which flushes the session) forgets it.

A local account whose username is that email and which has its own password is
never taken over by a Liku login.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import BaseBackend
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

from sessions.upstreams import liku, registry
from sessions.upstreams.base import UpstreamError

log = logging.getLogger(__name__)

SESSION_KEY = "liku_token"


class LikuBackend(BaseBackend):
    def authenticate(self, request, username=None, password=None, email=None, **kwargs):
        email = (email or username or "").strip()
        if "@" not in email or not password:
            return None
        url = liku.endpoints(registry.upstream_config("liku")).login
        try:
            token = async_to_sync(liku.authenticate)(url, email, password)
        except UpstreamError as exc:
            log.info("Liku login refused: %s", exc.message)
            return None
        user = self._user_for(email)
        if user is None or not getattr(user, "is_active", False):
            return None
        user.liku_token = token  # for keep_token, after login() has rotated the session
        return user

    def get_user(self, user_id):
        user = get_user_model()._default_manager.filter(pk=user_id).first()
        return user if user is not None and user.is_active else None

    @staticmethod
    def _user_for(email: str):
        model = get_user_model()
        user, created = model._default_manager.get_or_create(
            username=email.lower()[:150], defaults={"email": email}
        )
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        elif user.has_usable_password():
            log.warning("Liku login for %s refused: a local account with a password has that name", email)
            return None
        return user


@receiver(user_logged_in, dispatch_uid="liku-token-into-session")
def keep_token(sender, request, user, **kwargs):
    """Liku's token goes into the server-side session, never into anything sent to the browser."""
    token = getattr(user, "liku_token", None)
    if token and request is not None and hasattr(request, "session"):
        request.session[SESSION_KEY] = token
