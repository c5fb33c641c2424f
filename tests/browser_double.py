"""The browser side of the relay, as a peer: collects what the relay sends."""

from __future__ import annotations

import asyncio

from sessions.relay import DOWNLINK_JOIN, Browser

FRAME_24K = 960  # bytes of 20 ms at the relay's default output rate


def whole_frames(size: int) -> bool:
    """An agent audio message of `size` bytes is 1 to DOWNLINK_JOIN whole 20 ms frames at 24 kHz."""
    return size % FRAME_24K == 0 and FRAME_24K <= size <= DOWNLINK_JOIN * FRAME_24K


class BrowserPeer:
    def __init__(self):
        self.messages: list[dict] = []
        self.audio: list[bytes] = []
        self.closed_with: int | None = None
        self._changed = asyncio.Event()

    @property
    def audio_ms(self) -> float:
        """How much agent audio arrived, in ms at the relay's default output rate (24 kHz): the relay
        sends it in messages of 20 to 80 ms, so a count of messages is no measure of time."""
        return sum(map(len, self.audio)) / 48

    @property
    def browser(self) -> Browser:
        return Browser(send_json=self._json, send_bytes=self._bytes)

    async def _json(self, message: dict) -> None:
        self.messages.append(message)
        self._wake()

    async def _bytes(self, data: bytes) -> None:
        self.audio.append(data)
        self._wake()

    async def on_end(self, code: int) -> None:
        self.closed_with = code
        self._wake()

    def _wake(self):
        self._changed.set()
        self._changed = asyncio.Event()

    def of_type(self, kind: str) -> list[dict]:
        return [m for m in self.messages if m["type"] == kind]

    async def wait_for(self, predicate, timeout: float = 5.0):
        async def loop():
            while True:
                found = predicate(self)
                if found:
                    return found
                # Also poll: some conditions (what a peer received) do not wake us.
                try:
                    await asyncio.wait_for(self._changed.wait(), 0.05)
                except TimeoutError:
                    pass

        return await asyncio.wait_for(loop(), timeout)

    async def message(self, kind: str, timeout: float = 5.0, **match) -> dict:
        def find(peer):
            for m in peer.of_type(kind):
                if all(m.get(k) == v for k, v in match.items()):
                    return m
            return None

        return await self.wait_for(find, timeout)
