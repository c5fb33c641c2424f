"""The WebSocket Origin check over a real Daphne (issue 7.7): the server's own origin, scheme and
port included, and CSRF_TRUSTED_ORIGINS; nothing else."""

import asyncio
from urllib.parse import urlsplit

import pytest
import websockets

from tests.server import start_server

pytestmark = pytest.mark.slow

UNKNOWN = "/ws/conversations/00000000-0000-0000-0000-000000000000/"


@pytest.fixture(scope="module")
def server():
    yield from start_server({"CSRF_TRUSTED_ORIGINS": "https://play.example.com,https://*.example.org"})


def handshake(server, origin: str) -> int:
    """The close code the server sent after accepting, or the HTTP status it refused with."""

    async def attempt():
        headers = {"Authorization": f"Token {server.token}"}
        try:
            async with websockets.connect(server.ws_url + UNKNOWN, additional_headers=headers,
                                          origin=origin) as ws:  # fmt: skip
                with pytest.raises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
                return ws.close_code
        except websockets.InvalidStatus as refused:
            return refused.response.status_code

    return asyncio.run(attempt())


def test_own_origin_is_accepted(server):
    assert handshake(server, server.url) == 4404  # accepted: the consumer then says "no such conversation"


@pytest.mark.parametrize("origin", ["https://play.example.com", "https://voice.example.org"])
def test_csrf_trusted_origins_are_accepted(server, origin):
    assert handshake(server, origin) == 4404


def test_other_port_scheme_or_host_is_refused(server):
    port = urlsplit(server.url).port
    for origin in [f"http://127.0.0.1:{port + 1}", f"https://127.0.0.1:{port}", f"http://localhost:{port}",
                   f"http://evil.example:{port}", "http://play.example.com", "https://play.example.com:8443",
                   "null"]:  # fmt: skip
        assert handshake(server, origin) == 403, origin


def test_an_unknown_socket_path_is_refused_cleanly(server):
    """Not a 500 with a traceback (Channels' router raises for an unknown path): a refused handshake."""

    async def attempt():
        headers = {"Authorization": f"Token {server.token}"}
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(server.ws_url + "/ws/nothing/", additional_headers=headers,
                                          origin=server.url):  # fmt: skip
                pass
        return refused.value.response.status_code

    assert asyncio.run(attempt()) == 403
