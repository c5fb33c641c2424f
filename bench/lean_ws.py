"""A lean WebSocket client and echo peer for the load generator of bench/capacity.py.

The capacity benchmark's clients and echo peer run on the same 2 cores as the workers it measures,
so every core-percent they use is taken from the workers. websockets' asyncio connections cost
about twice what its sans-I/O protocol alone costs per message (an assembler queue, a lock and an
async context manager per send); here the sans-I/O protocol (websockets.client.ClientProtocol,
websockets.server.ServerProtocol, the same parser and framer) is driven from plain asyncio
protocols, with each received message handed to a callback. Benchmarks only: no fragmentation
(the peers here send whole messages), no ping timers. The client offers permessage-deflate, as
browsers do (the server it measures should decline it); the echo peer declines it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.uri import parse_uri


class _Driver(asyncio.Protocol):
    """Feeds a sans-I/O protocol from a transport and writes out what it has to send."""

    def __init__(self, protocol, on_message: Callable[[bytes | str], None] | None = None):
        self.protocol, self.on_message = protocol, on_message
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            self.on_event(event)
        self.flush()

    def on_event(self, event) -> None:
        if isinstance(event, Frame) and event.opcode in (Opcode.BINARY, Opcode.TEXT):
            data = bytes(event.data) if event.opcode is Opcode.BINARY else event.data.decode()
            if self.on_message is not None:
                self.on_message(data)

    def flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.transport.write(chunk)
            else:  # the protocol's end of data: half-close, as websockets does
                self.transport.close()

    def eof_received(self) -> None:
        self.protocol.receive_eof()
        self.flush()

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class Client(_Driver):
    """One client connection: `await Client.connect(url)`, then `send(data)`; messages go to
    `on_message` (set it any time)."""

    def __init__(self, url: str, origin: str | None, headers: dict):
        super().__init__(ClientProtocol(parse_uri(url), origin=origin, max_size=2**20,
                                        extensions=enable_client_permessage_deflate(None)))  # fmt: skip
        self.url, self.headers = url, headers
        self.opened = asyncio.get_running_loop().create_future()

    @classmethod
    async def connect(cls, url: str, origin: str | None = None, headers: dict | None = None) -> Client:
        uri = parse_uri(url)
        client = cls(url, origin, headers or {})
        await asyncio.get_running_loop().create_connection(lambda: client, uri.host, uri.port)
        await asyncio.wait_for(asyncio.shield(client.opened), 60)
        return client

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        request = self.protocol.connect()
        for name, value in self.headers.items():
            request.headers[name] = value
        self.protocol.send_request(request)
        self.flush()

    def on_event(self, event) -> None:
        if isinstance(event, Response):
            error = self.protocol.handshake_exc
            if error is not None:
                self.opened.set_exception(error)
            else:
                self.opened.set_result(None)
            return
        super().on_event(event)

    def connection_lost(self, exc) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"{self.url}: closed before the handshake"))
        super().connection_lost(exc)

    def send(self, data: bytes) -> None:
        self.protocol.send_binary(data)
        self.flush()

    def send_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        self.flush()

    async def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.protocol.send_close(1000)
            self.flush()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), 5)
        except TimeoutError:
            self.transport.abort()


class _Echo(_Driver):
    """The echo peer's side of one connection: every message goes straight back."""

    def __init__(self):
        super().__init__(ServerProtocol(max_size=2**20), self.echo)

    def on_event(self, event) -> None:
        if isinstance(event, Request):
            self.protocol.send_response(self.protocol.accept(event))
            return
        super().on_event(event)

    def echo(self, data: bytes | str) -> None:
        if isinstance(data, bytes):
            self.protocol.send_binary(data)
        else:
            self.protocol.send_text(data.encode())


async def serve_echo(host: str, port: int) -> asyncio.Server:
    """An echo peer listening on host:port (loopback)."""
    return await asyncio.get_running_loop().create_server(_Echo, host, port)
