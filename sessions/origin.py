"""The WebSocket handshake's Origin check: the server's own origin, or CSRF_TRUSTED_ORIGINS.

Channels' AllowedHostsOriginValidator compares only the Origin's host with ALLOWED_HOSTS, so a
page on `http://127.0.0.1:9999` (any other program on the machine) could open a socket to a
server on :8000 with the user's cookies. Here the Origin must equal the server's own origin,
scheme and port included, as the request shows it: the Host header and the connection's
scheme (`https` behind a TLS proxy when SECURE_PROXY_SSL_HEADER says so), or be listed in
CSRF_TRUSTED_ORIGINS (where `https://*.example.com` admits subdomains, as for CSRF). The Host
itself must be in ALLOWED_HOSTS. A handshake without Origin or Host is refused; scripts send
`Origin: <the server's URL>` as a browser would.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

DEFAULT_PORTS = {"http": 80, "https": 443}


class OriginValidator:
    """ASGI middleware for websocket scopes: refuses the handshake (403) from any other origin."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.app(scope, receive, send)


def origin_allowed(scope) -> bool:
    headers = _headers(scope)
    host, origin = headers.get("host", ""), headers.get("origin", "")
    if not host or not origin or not _host_allowed(host):
        return False
    own = _origin(f"{_scheme(scope, headers)}://{host}")
    claimed = _origin(origin)
    return claimed is not None and (claimed == own or _trusted(claimed))


def _headers(scope) -> dict[str, str]:
    pairs = scope.get("headers", [])
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in pairs}


def _host_allowed(host: str) -> bool:
    domain, _port = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:  # as Django's own HTTP check does
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)


def _scheme(scope, headers: dict[str, str]) -> str:
    """http or https, as the browser sees this server."""
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name, secure = proxy
        header = name.removeprefix("HTTP_").replace("_", "-").lower()
        if header in headers:
            return "https" if headers[header].split(",")[0].strip() == secure else "http"
    return "https" if scope.get("scheme") in ("wss", "https") else "http"


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the default port filled in, or None if `url` is no origin."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or port is None:
        return None
    return parts.scheme, parts.hostname.lower(), port


def _trusted(claimed: tuple[str, str, int]) -> bool:
    return any(_matches(entry, claimed) for entry in settings.CSRF_TRUSTED_ORIGINS)


def _matches(entry: str, claimed: tuple[str, str, int]) -> bool:
    """`entry` from CSRF_TRUSTED_ORIGINS; `https://*.example.com` admits example.com's subdomains."""
    if "*" not in entry:
        return _origin(entry) == claimed
    pattern = _origin(entry.replace("*", "wildcard", 1))
    if pattern is None:
        return False
    scheme, host, port = claimed
    domain = pattern[1].removeprefix("wildcard")  # ".example.com"
    return (pattern[0], pattern[2]) == (scheme, port) and is_same_domain(host, domain)
