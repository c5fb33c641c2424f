"""The outbox worker: deliver queued transcript saves to the providers (sessions/outbox.py).

Runs until SIGTERM or SIGINT (a delivery under way is finished and recorded first), or for one
round with --once. Any number may run at once, on one database (see sessions/outbox.py).
"""

import asyncio
import signal

from django.core.management.base import BaseCommand, CommandError

from sessions import outbox


class Command(BaseCommand):
    help = "Deliver pending transcript saves to the providers' save APIs (the outbox worker)."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="deliver what is due now, then exit")
        parser.add_argument("--interval", type=float, default=2.0,
                            help="seconds between rounds when nothing is due (default 2)")  # fmt: skip

    def handle(self, *args, once=False, interval=2.0, **options):
        if not 0.01 <= interval <= 3600:
            raise CommandError("--interval must be between 0.01 and 3600 seconds")
        asyncio.run(self._run(once, interval))

    async def _run(self, once: bool, interval: float) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        worker = outbox.worker_name()
        self.stdout.write(f"savetranscripts {worker}: running (interval {interval:g} s)")
        self.stdout.flush()
        await outbox.run(once=once, interval=interval, stop=stop, worker=worker, report=self._report)
        self.stdout.write(f"savetranscripts {worker}: stopped")

    def _report(self, counts: dict) -> None:
        summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
        self.stdout.write(f"delivered: {summary}")
        self.stdout.flush()
