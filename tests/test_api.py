"""POST /api/conversations/ for scripts: token or session (with CSRF), JSON errors."""

import json

import pytest
from django.test import Client

from sessions.models import ApiToken, Conversation

URL = "/api/conversations/"


def post(client, body, **headers):
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(URL, data, content_type="application/json", headers=headers)


@pytest.fixture
def body(topic):
    return {"provider": "local", "topic": topic.pk, "voice": "en-us+f3", "language": "en"}


def test_token_creates_a_conversation(client, user, body):
    key = ApiToken.issue(user)
    response = post(client, body, Authorization=f"Token {key}")
    assert response.status_code == 201
    data = response.json()
    conv = Conversation.objects.get(id=data["id"])
    assert conv.user == user
    assert data["ws_path"] == f"/ws/conversations/{conv.id}/"
    assert (data["provider"], data["voice"], data["language"]) == ("local", "en-us+f3", "en")


def test_bad_token_and_no_auth_are_401(client, db, body):
    assert post(client, body, Authorization="Token nope").status_code == 401
    response = post(client, body)
    assert response.status_code == 401 and response.json() == {"error": "authentication required"}


def test_session_needs_csrf(user, body):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    assert post(browser, body).status_code == 403
    browser.get("/talk/")  # sets the CSRF cookie, as a page visit would
    token = browser.cookies["csrftoken"].value
    assert post(browser, body, **{"X-CSRFToken": token}).status_code == 201


def test_field_errors_come_back_as_json(client, user, body):
    key = ApiToken.issue(user)
    response = post(client, {**body, "voice": "F3", "topic": 999999}, Authorization=f"Token {key}")
    assert response.status_code == 400
    fields = response.json()["fields"]
    assert "topic" in fields
    assert not Conversation.objects.exists()
    response = post(client, "[1, 2", Authorization=f"Token {key}")
    assert response.status_code == 400 and "JSON object" in response.json()["error"]
    response = post(client, {**body, "voice": "F3"}, Authorization=f"Token {key}")
    assert response.json()["fields"]["voice"] == ["Built-in offline agent does not offer the voice 'F3'."]


def test_topic_may_be_named_by_slug(client, user, body, topic):
    key = ApiToken.issue(user)
    response = post(client, {**body, "topic": topic.slug}, Authorization=f"Token {key}")
    assert response.status_code == 201 and response.json()["topic"] == topic.slug
    response = post(client, {**body, "topic": "no-such-topic"}, Authorization=f"Token {key}")
    assert "topic" in response.json()["fields"]


def test_only_post(client, user):
    key = ApiToken.issue(user)
    assert client.get(URL, headers={"Authorization": f"Token {key}"}).status_code == 405
