import datetime
import json
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from sessions.models import Conversation, Turn


def converse(user, topic, provider="local", text="", when=None):
    conv = Conversation.objects.create(
        user=user, provider=provider, topic=topic, voice="en-us+f3", language="en",
        created_at=when or timezone.now(),
    )  # fmt: skip
    if text:
        Turn.objects.create(conversation=conv, sequence=1, role="user", text=text)
    return conv


@pytest.mark.parametrize("name", ["pick", "history"])
def test_pages_require_login(client, db, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_login_with_password_then_pick_page(client, user, topic):
    page = client.get(reverse("login"))
    assert b'name="username"' in page.content
    response = client.post(reverse("login"), {"username": "alice", "password": "pw-alice-123"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("pick")
    assert b"Start a conversation" in response.content


def test_logged_out_visitors_get_a_landing_page_and_users_the_pick_page(client, user):
    page = client.get("/")
    assert page.status_code == 200
    assert (
        b"Talk to real-time voice AI services" in page.content and b"Log in to start talking" in page.content
    )
    client.force_login(user)
    assert client.get("/")["Location"] == reverse("pick")


def test_wrong_password_is_refused(client, user):
    response = client.post(reverse("login"), {"username": "alice", "password": "nope"})
    assert b"didn't match" in response.content


def test_logout(alice):
    response = alice.post(reverse("logout"))
    assert response.status_code == 302
    assert alice.get(reverse("pick")).status_code == 302


def test_pick_page_shows_every_provider_and_how_it_runs(alice, topic):
    html = alice.get(reverse("pick")).content.decode()
    for label in ["Built-in offline agent", "Liku voice chat", "Speechmatics Flow", "Lokutor", "Retell AI"]:
        assert label in html
    assert 'data-mode="offline"' in html
    # Providers whose client is not built yet say so, naming what would configure them.
    assert "LOKUTOR_API_KEY" in html
    assert "Restaurant booking" in html


def test_pick_goes_to_the_talk_page_for_the_settings_and_creates_nothing(alice, user, topic):
    """Continue leaves no "Created" conversation behind: the talk page has the settings, Start creates."""
    data = {"provider": "local", "topic": topic.pk, "voice": "en-us+f3", "language": "en"}
    response = alice.post(reverse("pick"), data)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("talk_new") + "?")
    page = alice.get(response["Location"])
    assert page.status_code == 200
    assert not Conversation.objects.exists()
    config = page_config(page.content.decode())
    assert config["draft"] == {"provider": "local", "topic": topic.pk, "voice": "en-us+f3", "language": "en"}
    assert config["wsPath"] == "" and config["createUrl"] == reverse("api_conversations")


def test_start_creates_the_conversation_from_the_talk_page_settings(alice, user, topic):
    """What talk-flow.js does on Start: post the page's settings to the API on the session."""
    data = {"provider": "local", "topic": topic.pk, "voice": "en-us+f3", "language": "en"}
    config = page_config(alice.get(alice.post(reverse("pick"), data)["Location"]).content.decode())
    response = alice.post(config["createUrl"], json.dumps(config["draft"]), content_type="application/json",
                          headers={"X-CSRFToken": config["csrfToken"]})  # fmt: skip
    assert response.status_code == 201
    conv = Conversation.objects.get(user=user)
    assert response.json()["ws_path"] == conv.ws_path
    assert (conv.provider, conv.voice, conv.language, conv.status) == ("local", "en-us+f3", "en", "created")


def test_a_talk_page_for_invalid_settings_shows_the_pick_form_with_the_problem(alice, topic):
    query = {"provider": "local", "topic": topic.pk, "voice": "F1", "language": "en"}
    response = alice.get(reverse("talk_new"), query)
    assert response.status_code == 400
    assert "does not offer the voice" in response.content.decode()


def test_new_conversation_link_presets_the_pick_form(alice, topic):
    html = alice.get(
        reverse("pick"), {"provider": "lokutor", "voice": "F2", "language": "en"}
    ).content.decode()
    assert re.search(r'value="lokutor"\s+checked', html)
    assert not re.search(r'value="local"\s+checked', html)


def page_config(html: str) -> dict:
    match = re.search(r'<script id="talk-config" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("voice", "F1", "does not offer the voice"),
        ("language", "ko", "does not speak"),
        ("voice", "es+f3", "has no voice"),
        ("provider", "skype", "Select a valid choice"),
        ("voice", "", "This field is required"),
    ],
)
def test_pick_rejects_bad_combinations(alice, topic, field, value, message):
    data = {"provider": "local", "topic": topic.pk, "voice": "en-us+f3", "language": "en", field: value}
    response = alice.post(reverse("pick"), data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Conversation.objects.exists()


def test_history_lists_only_own_conversations(alice, user, other_user, topic):
    mine = converse(user, topic, text="a table for two")
    theirs = converse(other_user, topic, text="secret plans")
    html = alice.get(reverse("history")).content.decode()
    assert str(mine.id) in html
    assert str(theirs.id) not in html


def test_history_is_paginated(alice, user, topic):
    now = timezone.now()
    convs = [converse(user, topic, when=now - datetime.timedelta(minutes=i)) for i in range(25)]
    first = alice.get(reverse("history")).content.decode()
    second = alice.get(reverse("history"), {"page": 2}).content.decode()
    assert first.count('class="conversation-row"') == 20
    assert second.count('class="conversation-row"') == 5
    assert str(convs[0].id) in first and str(convs[24].id) in second
    assert "Page 2 of 2" in second


def test_history_filters_and_search(alice, user, topic):
    from sessions.models import Topic

    other_topic = Topic.objects.create(title="Clinic", slug="clinic", persona="p", greeting="g")
    old = converse(
        user, topic, provider="local", text="book a table", when=timezone.now() - datetime.timedelta(days=10)
    )
    liku = converse(user, topic, provider="liku", text="parking please")
    clinic = converse(user, other_topic, provider="local", text="a doctor please")

    def ids(**params):
        html = alice.get(reverse("history"), params).content.decode()
        return {c for c in (old, liku, clinic) if str(c.id) in html}

    assert ids(provider="liku") == {liku}
    assert ids(topic="clinic") == {clinic}
    assert ids(q="PLEASE") == {liku, clinic}
    assert ids(**{"from": (timezone.now() - datetime.timedelta(days=1)).date().isoformat()}) == {liku, clinic}
    assert ids(to=(timezone.now() - datetime.timedelta(days=5)).date().isoformat()) == {old}


@pytest.mark.parametrize(
    "params",
    [{"page": "abc"}, {"page": "999"}, {"from": "yesterday"}, {"to": "2024-13-45"}, {"provider": "<x>"},
     {"topic": "nope"}, {"q": "x" * 5000}, {"page": "-1"}],
)  # fmt: skip
def test_odd_history_filters_are_ignored_never_500(alice, user, topic, params):
    converse(user, topic, text="hello")
    assert alice.get(reverse("history"), params).status_code == 200


def test_conversation_detail_shows_turns_in_order(alice, user, topic):
    conv = converse(user, topic)
    Turn.objects.create(conversation=conv, sequence=2, role="agent", text="Second line", interrupted=True)
    Turn.objects.create(conversation=conv, sequence=1, role="user", text="First line", start_ms=120)
    html = alice.get(reverse("conversation", args=[conv.id])).content.decode()
    assert html.index("First line") < html.index("Second line")
    assert "interrupted" in html
    assert 'data-at-ms="120"' in html and "<time>0:00</time>" in html  # m:ss from the start (issue 10)


def test_another_users_conversation_is_404(alice, other_user, topic):
    theirs = converse(other_user, topic)
    assert alice.get(reverse("conversation", args=[theirs.id])).status_code == 404
    assert alice.get(reverse("talk", args=[theirs.id])).status_code == 404


def test_talk_page_renders_config_without_secrets(alice, user, topic, settings):
    settings.PROVIDERS = {**settings.PROVIDERS, "local": {"llm": {"api_key": "sk-very-secret-key"}}}
    conv = converse(user, topic)
    html = alice.get(reverse("talk", args=[conv.id])).content.decode()
    assert conv.ws_path in html
    assert "sk-very-secret-key" not in html


def test_pick_page_says_sandbox_or_real_service_per_provider(alice, topic, settings):
    def badge(html, key):
        block = html.split(f'value="{key}"', 1)[1]
        return block.split('data-mode="', 1)[1].split('"', 1)[0]

    html = alice.get(reverse("pick")).content.decode()
    assert badge(html, "lokutor") == "sandbox"
    # The variable's name is only in the small "how to connect the real service" note.
    note = html.split('value="lokutor"', 1)[1].split("</li>", 1)[0]
    assert "How to connect the real service" in note and "Set LOKUTOR_API_KEY" in note
    assert ">Sandbox</span>" in note
    settings.PROVIDERS = {**settings.PROVIDERS, "lokutor": {"url": "", "api_key": "k-123"}}
    html = alice.get(reverse("pick")).content.decode()
    assert badge(html, "lokutor") == "real"
    assert "k-123" not in html


def test_conversation_page_says_when_the_user_side_is_not_transcribed(alice, user, topic):
    aivoco = converse(user, topic, provider="aivoco")
    local = converse(user, topic, provider="local")
    note = "sends no transcript of what the user says"
    assert note in alice.get(reverse("conversation", args=[aivoco.id])).content.decode()
    assert note not in alice.get(reverse("conversation", args=[local.id])).content.decode()


def test_the_pick_page_names_variables_only_in_the_how_to_connect_note(alice, topic, monkeypatch):
    from sessions.upstreams import registry

    key = registry.Var.secret("FUTURE_API_KEY")
    future = registry.Provider(
        "future", "Future voice", "sessions.upstreams.future.FutureUpstream", {"default": "Its voice"},
        ("en",), variables=(key,), configured_by=(("api_key",),),
    )  # fmt: skip
    monkeypatch.setitem(registry.PROVIDERS, "future", future)  # listed, its client not built yet
    html = alice.get(reverse("pick")).content.decode()
    item = html.split('value="future"', 1)[1].split("</li>", 1)[0]
    visible, note = item.split('<details class="how-to-connect">')
    assert ">Unavailable</span>" in visible and "Not available on this server." in visible
    assert "FUTURE_API_KEY" not in visible and "FUTURE_API_KEY" in note
    assert 'data-mode="unavailable"' in visible  # the code stays an attribute, for styling


def test_the_talk_page_loads_the_model_the_server_runs_for_its_vad(alice, topic):
    """The talk page names its VAD's worker, wasm and model; the model is the server's own file,
    cacheable (the page loads it on every visit)."""
    from playground.engine import vad

    page = alice.get(reverse("talk_new"), {"provider": "local", "topic": topic.pk, "voice": "en-us",
                                           "language": "en"}).content.decode()  # fmt: skip
    model_url = re.search(r'data-vad-model="([^"]+)"', page).group(1)
    assert re.search(r'data-vad-worker="[^"]+vad-worker[^"]*\.js"', page)
    assert re.search(r'data-vad-wasm="[^"]+ort-wasm-simd-threaded[^"]*\.wasm"', page)
    response = alice.get(model_url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == vad.model_path().read_bytes()
    assert "public" in response["Cache-Control"] and "max-age=86400" in response["Cache-Control"]
