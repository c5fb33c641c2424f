"""How long a test script's own event loop could not run, and when.

A script in the talk page's place stamps what it observes (a frame sent, the first agent audio, a
`clear`) when its loop gets to it. On a loaded machine (CI runs two test processes on two cores)
a stamp is late by the stall just before it, while the server's figures are right. A comparison
between the two allows exactly that stall, measured, and on an idle machine nothing.
"""

from __future__ import annotations

import asyncio
import time


class Stalls:
    """A probe that sleeps 5 ms at a time and notes how late it woke. Use as `async with Stalls()
    as stalls:` around what is observed; the block owns the probe's task."""

    STEP_S = 0.005

    def __init__(self):
        self.wakes: list[tuple[float, float]] = []  # (when it woke, how late)
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Stalls:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            asked = time.monotonic() + self.STEP_S
            await asyncio.sleep(self.STEP_S)
            now = time.monotonic()
            self.wakes.append((now, now - asked))

    def near(self, *moments: float, span_s: float = 0.25) -> float:
        """The longest stall that ended within `span_s` of any of `moments`, in ms."""
        return 1000 * max(
            (late for woke, late in self.wakes if any(abs(woke - m) <= span_s for m in moments)), default=0.0
        )
