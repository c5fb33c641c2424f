"""How long the admin's accuracy page takes to compute, by the number of reviewed turns.

Builds a throwaway test database (SQLite by default; DATABASE_URL for PostgreSQL), fills it with
conversations for three providers whose user turns carry corrections, and times
`sessions.review.provider_accuracy()` (the query plus jiwer), then the admin's conversation list
searched across turns (the distinct turn count). Prints one line per size.

Run:  .venv/bin/python bench/review_accuracy.py [--turns 1000 10000] [--per-conversation 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

WORDS = "i would like to book a table for two people at eight tonight please".split()
PROVIDERS = ("liku", "lokutor", "local")


def fill(n_turns: int, per_conversation: int) -> None:
    from sessions.models import Conversation, Topic, Turn

    user = get_user_model().objects.get(username="bench")
    topic = Topic.objects.get(slug="bench")
    turns = []
    for c in range(n_turns // per_conversation):
        conv = Conversation.objects.create(user=user, provider=PROVIDERS[c % 3], topic=topic, voice="default",
                                           language="en")  # fmt: skip
        for i in range(per_conversation):
            said = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(8))
            heard = said.replace("table", "tabel") if i % 4 == 0 else said
            turns.append(Turn(conversation=conv, sequence=i, role="user", text=heard, corrected_text=said))
    Turn.objects.bulk_create(turns, batch_size=1000)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--per-conversation", type=int, default=20)
    args = parser.parse_args()
    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0)
    try:
        from sessions.models import Topic, Turn
        from sessions.review import provider_accuracy

        staff = get_user_model().objects.create_superuser("bench", password="pw-bench-123")
        Topic.objects.create(title="Bench", slug="bench", persona="p", greeting="g")
        client = Client()
        client.force_login(staff)
        total = 0
        for size in sorted(args.turns):
            fill(size - total, args.per_conversation)
            total = Turn.objects.count()
            accuracy = timed(provider_accuracy)
            search = timed(lambda: client.get("/admin/voice_sessions/conversation/", {"q": "table"}))
            wer = {k: round(v["wer"], 3) for k, v in provider_accuracy().items()}
            print(f"{connection.vendor}: {total} reviewed turns: provider_accuracy {accuracy:.0f} ms, "
                  f"admin list search {search:.0f} ms; wer {wer}")  # fmt: skip
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
