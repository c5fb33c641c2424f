"""Liku login never takes over a local account (issue 7.5): only users it created are Liku users."""

import asyncio

import pytest
import uvicorn
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import call_command

from playground.sandbox import liku as sandbox
from sessions.models import LikuAccount

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("close_thread_connections")]

SECRET = "liku-accounts-test-secret"
PASSWORD = sandbox.password(SECRET)


@pytest.fixture
def box():
    """A fresh Liku sandbox (its state: `box.state`)."""
    return sandbox.make_app(SECRET)


@pytest.fixture
async def liku_login(settings, box):
    """The Liku sandbox on loopback, and the Liku login switched on against it."""
    server = uvicorn.Server(uvicorn.Config(box, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="off", timeout_graceful_shutdown=1))  # fmt: skip
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    settings.AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend",  # as settings.py has it
                                        "django.contrib.auth.backends.ModelBackend",
                                        "sessions.auth_liku.LikuBackend"]  # fmt: skip
    liku = {"api_url": url, "chat_url": "ws" + url[4:], "email": "", "password": "", "token": "",
            "login": True}  # fmt: skip
    settings.PROVIDERS = {**settings.PROVIDERS, "liku": liku}
    yield url
    server.should_exit = True
    await asyncio.wait_for(task, 5)


async def log_in(client, password=PASSWORD):
    return await client.post("/login/", {"username": sandbox.EMAIL, "password": password})


async def logged_in(client) -> bool:
    return (await client.get("/talk/")).status_code == 200


async def test_a_superuser_made_without_password_is_not_taken_over(liku_login, box, async_client):
    """`createsuperuser --noinput` leaves no usable password; Liku credentials must not open it."""
    await sync_to_async(call_command)("createsuperuser", "--noinput", username=sandbox.EMAIL,
                                      email=sandbox.EMAIL, verbosity=0)  # fmt: skip
    response = await log_in(async_client)
    assert response.status_code == 200 and "didn't match" in response.content.decode()
    assert not await logged_in(async_client)
    assert (await async_client.get("/admin/")).status_code == 302  # to the admin's login page
    assert box.state.tokens  # Liku itself did accept the credentials
    assert not await LikuAccount.objects.aexists()


async def test_an_unmarked_local_account_is_not_adopted(liku_login, async_client):
    @sync_to_async
    def local_user():
        user = get_user_model()(username=sandbox.EMAIL)
        user.set_unusable_password()
        user.save()

    await local_user()
    assert (await log_in(async_client)).status_code == 200
    assert not await logged_in(async_client)


async def test_a_liku_user_is_created_marked_never_staff_and_logs_in_again(liku_login, async_client):
    assert (await log_in(async_client)).status_code == 302
    account = await LikuAccount.objects.select_related("user").aget(email=sandbox.EMAIL)
    assert not account.user.is_staff and not account.user.is_superuser
    assert not account.user.has_usable_password()
    await async_client.post("/logout/")
    assert not await logged_in(async_client)
    assert (await log_in(async_client)).status_code == 302
    assert await logged_in(async_client)
    assert await get_user_model().objects.acount() == 1


async def test_a_liku_user_made_staff_is_refused(liku_login, async_client):
    assert (await log_in(async_client)).status_code == 302
    await async_client.post("/logout/")
    await get_user_model().objects.filter(username=sandbox.EMAIL).aupdate(is_staff=True)
    assert (await log_in(async_client)).status_code == 200
    assert not await logged_in(async_client)


async def test_a_locked_out_login_never_reaches_liku(liku_login, box, async_client, settings):
    """Axes answers before the Liku backend: no outbound Liku login once locked out."""
    settings.AXES_FAILURE_LIMIT = 3
    statuses = [(await log_in(async_client, password="wrong")).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    locked = await log_in(async_client)
    assert locked.status_code == 429 and "at most 3 attempts" in locked.content.decode()
    assert not box.state.tokens  # Liku never saw the right password
    assert not await logged_in(async_client)


def test_the_migration_marks_earlier_liku_users_only():
    """Users the old Liku login created (email name, no password, logged in, not staff) are marked;
    a `createsuperuser --noinput` superuser and a never-used passwordless account are not."""
    import importlib

    from django.apps import apps
    from django.utils import timezone

    migration = importlib.import_module("sessions.migrations.0003_liku_accounts")
    model = get_user_model()

    def make(username, logged_in=True, **flags):
        user = model(username=username, last_login=timezone.now() if logged_in else None, **flags)
        user.set_unusable_password()
        user.save()

    make("earlier@liku.test")
    make("admin@example.test", is_staff=True, is_superuser=True)
    make("never@example.test", logged_in=False)
    model.objects.create_user("local@example.test", password="pw-local-123", last_login=timezone.now())
    migration.mark_earlier_liku_users(apps, None)
    assert list(LikuAccount.objects.values_list("email", flat=True)) == ["earlier@liku.test"]
