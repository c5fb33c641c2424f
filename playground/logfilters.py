"""Keep credentials out of logged URLs.

Some vendors' protocols put a credential in the query string (Liku's
``init-websocket?token=``, Lokutor's ``/ws/agent?api_key=``), and our server serves their
sandboxes, so request lines carrying them reach our logs: Daphne's ``runserver`` logs every
request through the ``django.channels.server`` logger, uvicorn (a sandbox run alone) through
``uvicorn.access``, and the ``daphne`` command writes its access log straight to a stream
(`playground.serve` runs it with the same redaction). `RedactQuery`, installed on our log
handlers in settings.LOGGING, replaces such values with ``***``.
"""

from __future__ import annotations

import logging
import re

SECRET_PARAMS = ("token", "api_key", "apikey", "key", "auth_key", "access_token", "auth", "password",
                 "secret", "signature", "sig", "jwt", "session_token")  # fmt: skip
_NAMES = "|".join(SECRET_PARAMS)
_QUERY_SECRET = re.compile(rf"([?&;](?:{_NAMES})=)[^&;#\s\"']*", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with the value of every credential-like query parameter replaced by ***."""
    return _QUERY_SECRET.sub(r"\1***", text)


class RedactQuery(logging.Filter):
    """Rewrites a record whose message carries a credential in a URL query; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the handler's business, not ours
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True
