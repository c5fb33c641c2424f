import shutil

import pytest
from django.contrib.auth import get_user_model

from sessions.models import Topic
from tests.engine.speech import Speech


@pytest.fixture(scope="session")
def server():
    """One real Daphne process (own database, sandboxes mounted) for the end-to-end tests."""
    from tests.server import start_server

    yield from start_server()


@pytest.fixture
def topic(db):
    return Topic.objects.create(
        title="Restaurant booking",
        slug="restaurant",
        persona="You are a host.",
        greeting="Hello, how can I help?",
        phrases=["I would like to book a table"],
        faq=[{"question": "book a table", "answer": "For how many people?", "keywords": ["book"]}],
        provider_options={"liku": {"topic_id": "55"}},
    )


@pytest.fixture
def user(db):
    return get_user_model().objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def other_user(db):
    return get_user_model().objects.create_user("bob", password="pw-bob-123")


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_superuser("staff", password="pw-staff-123")


@pytest.fixture
def alice(client, user):
    client.force_login(user)
    return client


@pytest.fixture
async def close_thread_connections():
    """The async ORM opens connections in asgiref's worker thread; close them before the
    database is flushed, or PostgreSQL waits on them (and can't drop the test database)."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    await sync_to_async(connections.close_all)()


@pytest.fixture(scope="session")
def speech(tmp_path_factory):
    """flite speech as 16 kHz PCM (tests/engine/speech.py), made once per test process."""
    if not (shutil.which("flite") and shutil.which("sox")):
        pytest.skip("flite and sox are needed to make test speech")
    return Speech(tmp_path_factory.mktemp("speech"))
