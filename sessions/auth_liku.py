"""Log in with a Liku account (enabled by LIKU_LOGIN=1; see playground/settings.py).

The login form's username is the Liku email. The backend checks email and
password against Liku's authentication endpoint (`POST {api}/api/liku/authentication/`,
the same URL our Liku client uses) and, when Liku accepts, logs in a local user
named after the email (created on first login, without a usable local password).

Liku's `token_key` stays on the server: the backend hangs it on the user object
and, once Django's `login()` has rotated the session, `keep_token` puts it in the
server-side session under SESSION_KEY (the registry entry's `user_token_key`). The
conversation consumer reads it from there and hands it to the Liku client as
`config["user_token"]`, so the user's calls run on their own Liku account. It never
reaches a page or a script, and logging out (which flushes the session) forgets it.

Only users the Liku login created itself are Liku users: each carries a `LikuAccount`
mark. A local account whose username is that email and has no such mark is never taken
over, whatever its password state (a superuser made with `createsuperuser --noinput` has
no usable password, and adopting it gave /admin/ to whoever holds the Liku account). A
Liku user is never staff: a marked user that someone made staff is refused here too.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import BaseBackend
from django.contrib.auth.signals import user_logged_in
from django.db import IntegrityError, transaction
from django.dispatch import receiver

from sessions.models import LikuAccount
from sessions.upstreams import liku, registry
from sessions.upstreams.base import UpstreamError

log = logging.getLogger(__name__)

SESSION_KEY = registry.get("liku").user_token_key  # where the consumer looks for it


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
        """Only a Liku user: a session this backend opened never maps to a local account."""
        account = LikuAccount.objects.select_related("user").filter(user_id=user_id).first()
        return account.user if account is not None and _may_log_in(account.user) else None

    @staticmethod
    def _user_for(email: str):
        """The Liku user for `email`, created on first login; None if a local account has the name."""
        email = email.lower()
        account = LikuAccount.objects.select_related("user").filter(email=email).first()
        if account is None:
            account = _create_account(email)
        if account is None:
            log.warning("Liku login for %s refused: a local account has that name", email)
            return None
        return account.user if _may_log_in(account.user) else None


def _may_log_in(user) -> bool:
    return user.is_active and not user.is_staff and not user.is_superuser


def _create_account(email: str) -> LikuAccount | None:
    """A new user marked as Liku's, or None when the username is taken by a local account."""
    model = get_user_model()
    username = email[:150]
    if model._default_manager.filter(username=username).exists():
        return LikuAccount.objects.filter(email=email).first()  # a first login that just won a race
    try:
        with transaction.atomic():
            user = model(username=username, email=email, is_staff=False, is_superuser=False)
            user.set_unusable_password()
            user.save()
            return LikuAccount.objects.create(user=user, email=email)
    except IntegrityError:  # another process created the user or the account meanwhile
        return LikuAccount.objects.select_related("user").filter(email=email).first()


@receiver(user_logged_in, dispatch_uid="liku-token-into-session")
def keep_token(sender, request, user, **kwargs):
    """Liku's token goes into the server-side session, never into anything sent to the browser."""
    token = getattr(user, "liku_token", None)
    if token and request is not None and hasattr(request, "session"):
        request.session[SESSION_KEY] = token
