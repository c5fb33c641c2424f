"""Fail the live calls of server processes that stopped heartbeating (sessions/liveness.py)."""

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.management.base import BaseCommand

from sessions.liveness import sweep


class Command(BaseCommand):
    help = 'Mark calls whose server process stopped heartbeating as failed ("server stopped").'

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=int, default=None,
                            help=f"seconds without a heartbeat (default HEARTBEAT_TIMEOUT, "
                                 f"now {settings.HEARTBEAT_TIMEOUT})")  # fmt: skip

    def handle(self, *args, timeout=None, **options):
        swept = async_to_sync(sweep)(timeout)
        self.stdout.write(f"{swept} call(s) swept")
