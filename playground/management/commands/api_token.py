"""Issue an API token for scripts (benchmarks, comparisons); the key is printed once."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from sessions.models import ApiToken


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print it (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="script")

    def handle(self, *args, username, name, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}.")
        self.stdout.write(ApiToken.issue(user, name))
