"""Load the demo topics and (re)create the demo login, printing it."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from playground.demo_topics import TOPICS
from sessions.models import Topic


class Command(BaseCommand):
    help = "Load demo topics and create a demo user (staff) whose login is printed."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="", help="Default: a new random password each run.")

    def handle(self, *args, username, password, **options):
        for data in TOPICS:
            fields = {k: v for k, v in data.items() if k != "slug"}
            Topic.objects.update_or_create(slug=data["slug"], defaults=fields)
        password = password or secrets.token_urlsafe(9)
        user, _ = get_user_model().objects.get_or_create(username=username)
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        self.stdout.write(f"Loaded {len(TOPICS)} demo topics.")
        self.stdout.write(self.style.SUCCESS(f"Demo login: username {username!r}, password {password!r}"))
