import pytest
from django.urls import reverse

from sessions.models import Conversation, TranscriptSave, Turn


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def conversation(user, topic):
    conv = Conversation.objects.create(
        user=user, provider="liku", topic=topic, voice="default", language="en"
    )
    Turn.objects.create(conversation=conv, sequence=1, role="user", text="I want a window seat")
    Turn.objects.create(conversation=conv, sequence=2, role="agent", text="Certainly")
    TranscriptSave.objects.create(conversation=conv, status="failed", attempts=2, last_error="HTTP 503")
    return conv


def rows(response):
    return response.content.decode().count('class="field-provider_name"')


def test_conversation_list_filters_and_search(staff_client, conversation, user, topic):
    other = Conversation.objects.create(
        user=user, provider="local", topic=topic, voice="en-us+f3", language="en"
    )
    Turn.objects.create(conversation=other, sequence=1, role="user", text="an aisle seat")
    url = reverse("admin:voice_sessions_conversation_changelist")
    html = staff_client.get(url).content.decode()
    for word in ["By provider", "By status", "By user", "Liku voice chat"]:
        assert word in html
    assert rows(staff_client.get(url)) == 2
    assert rows(staff_client.get(url, {"q": "window seat"})) == 1
    assert rows(staff_client.get(url, {"q": "seat"})) == 2  # one row per conversation, not per turn
    assert rows(staff_client.get(url, {"q": "balcony"})) == 0
    assert rows(staff_client.get(url, {"provider": "liku"})) == 1
    assert rows(staff_client.get(url, {"provider": "liku", "status__exact": "ended"})) == 0


def test_conversation_page_shows_turns_and_saves_read_only(staff_client, conversation):
    html = staff_client.get(
        reverse("admin:voice_sessions_conversation_change", args=[conversation.pk])
    ).content
    html = html.decode()
    assert "I want a window seat" in html and "Certainly" in html
    assert "HTTP 503" in html
    assert 'name="turns-0-text"' not in html  # the provider's text is kept: only a correction is editable


def test_topic_admin_validates_provider_options(staff_client, topic):
    url = reverse("admin:voice_sessions_topic_change", args=[topic.pk])
    assert staff_client.get(url).status_code == 200
    data = {
        "title": topic.title, "slug": topic.slug, "description": "", "is_active": "on", "persona": "p",
        "greeting": "g", "default_language": "en", "phrases": "[]", "faq": "[]",
        "provider_options": '{"liku": {"colour": "red"}}',
    }  # fmt: skip
    response = staff_client.post(url, data)
    assert response.status_code == 200
    assert "Unknown option(s) for liku: colour" in response.content.decode()
    data["provider_options"] = '{"liku": {"topic_id": "77"}}'
    assert staff_client.post(url, data).status_code == 302
    topic.refresh_from_db()
    assert topic.provider_options == {"liku": {"topic_id": "77"}}


@pytest.mark.parametrize("name", ["voice_sessions_topic_add", "voice_sessions_apitoken_changelist", "index"])
def test_other_admin_pages_render(staff_client, db, name):
    assert staff_client.get(reverse(f"admin:{name}")).status_code == 200


def test_admin_is_for_staff_only(alice):
    response = alice.get(reverse("admin:voice_sessions_conversation_changelist"))
    assert response.status_code == 302


def test_adding_an_api_token_issues_a_key_shown_once(staff_client, user, client):
    """The add form takes user and name; the answer shows the key once; the key then works."""
    import re

    from sessions.models import ApiToken

    url = reverse("admin:voice_sessions_apitoken_add")
    form = staff_client.get(url).content.decode()
    assert 'name="user"' in form and 'name="name"' in form and 'name="key_hash"' not in form
    keys = []
    for name in ["bench", "compare"]:  # a second add used to collide on an empty hash (500)
        response = staff_client.post(url, {"user": user.pk, "name": name})
        assert response.status_code == 200
        assert response.headers["Cache-Control"].startswith("max-age=0")
        keys.append(re.search(r'id="api-token-key"[^>]*>([0-9a-f]{40})<', response.content.decode())[1])
    assert keys[0] != keys[1]
    assert sorted(ApiToken.objects.filter(user=user).values_list("name", flat=True)) == ["bench", "compare"]
    assert ApiToken.objects.get(name="bench").key_hash == ApiToken.hash(keys[0])
    token = ApiToken.objects.get(name="bench")
    change = staff_client.get(reverse("admin:voice_sessions_apitoken_change", args=[token.pk]))
    change = change.content.decode()
    assert keys[0] not in change and 'name="key_hash"' not in change
    body = {"provider": "local", "topic": "nope", "voice": "en-us+f3", "language": "en"}
    answer = client.post("/api/conversations/", body, content_type="application/json",
                         headers={"Authorization": f"Token {keys[1]}"})  # fmt: skip
    assert answer.status_code == 400  # authenticated: the token works; only the topic is wrong


def test_reply_latency_is_labelled_with_the_vendor_figures_beside_it(staff_client, conversation):
    """The primary figure says what it is measured from; what the vendor reported sits beside it."""
    timings = {"v": 1, "from": "vad", "speech_end_ms": 3000, "user_final_ms": 3450, "first_audio_ms": 3640,
               "vendor": {"transcript_to_audio_ms": 190}}  # fmt: skip
    Turn.objects.filter(conversation=conversation, sequence=2).update(latency_ms=640, timings=timings)
    Conversation.objects.filter(id=conversation.id).update(metrics={"latency_p50_ms": 640})
    change = reverse("admin:voice_sessions_conversation_change", args=[conversation.pk])
    html = staff_client.get(change).content.decode()
    assert "Reply latency (our VAD)" in html
    assert "640 ms after you stopped speaking (our VAD)" in html
    assert "the provider&#x27;s transcript of your words came +450 ms" in html
    assert "reply after the provider&#x27;s transcript of your words 190 ms" in html
    changelist = staff_client.get(reverse("admin:voice_sessions_conversation_changelist")).content.decode()
    assert "Reply p50 (our VAD)" in changelist and "640 ms" in changelist


def test_searching_does_not_inflate_the_turn_count(staff_client, user, topic):
    """A search joins one row per matching turn; the count stays the conversation's own."""
    import re

    conv = Conversation.objects.create(
        user=user, provider="liku", topic=topic, voice="default", language="en"
    )
    for i in range(13):
        text = "a table for two" if i % 3 == 0 else "hello"  # 5 turns match "table"
        Turn.objects.create(conversation=conv, sequence=i, role="user", text=text)
    url = reverse("admin:voice_sessions_conversation_changelist")
    for params in [{}, {"q": "table"}, {"q": "hello"}, {"q": "table", "provider": "liku"}]:
        html = staff_client.get(url, params).content.decode()
        assert re.findall(r'class="field-turn_count">(\d+)<', html) == ["13"], params
    ordered = staff_client.get(url, {"q": "table", "o": "7"}).content.decode()  # sorted by turns
    assert re.findall(r'class="field-turn_count">(\d+)<', ordered) == ["13"]


def test_provider_and_voice_show_as_labels(staff_client, user, topic):
    conv = Conversation.objects.create(
        user=user, provider="local", topic=topic, voice="en-us+f3", language="en"
    )
    changelist = staff_client.get(reverse("admin:voice_sessions_conversation_changelist")).content.decode()
    assert 'class="field-provider_name">Built-in offline agent<' in changelist
    page = staff_client.get(
        reverse("admin:voice_sessions_conversation_change", args=[conv.pk])
    ).content.decode()
    assert "Built-in offline agent" in page and "American English, female" in page
    assert "en-us+f3" not in page
    # The language by name, and the conversation's title (page heading, breadcrumbs, the lists of
    # saves and review events) with the provider's label, not "Topic with local".
    assert '<div class="readonly">English</div>' in page
    assert f"{topic.title} with Built-in offline agent (" in page and f"{topic.title} with local" not in page
    TranscriptSave.objects.create(conversation=conv, status="failed", attempts=2)
    saves = staff_client.get(reverse("admin:voice_sessions_transcriptsave_changelist")).content.decode()
    assert f"{topic.title} with Built-in offline agent (" in saves and "with local" not in saves


def test_read_only_pages_offer_no_save_and_no_add(staff_client, conversation):
    from sessions.models import LikuAccount

    changelist = staff_client.get(reverse("admin:voice_sessions_conversation_changelist")).content.decode()
    assert "Add conversation" not in changelist
    assert staff_client.get(reverse("admin:voice_sessions_conversation_add")).status_code == 403
    save = TranscriptSave.objects.get(conversation=conversation)
    page = staff_client.get(
        reverse("admin:voice_sessions_transcriptsave_change", args=[save.pk])
    ).content.decode()
    assert "HTTP 503" in page and 'name="_save"' not in page and 'name="_continue"' not in page
    assert (
        staff_client.post(
            reverse("admin:voice_sessions_transcriptsave_change", args=[save.pk]), {"status": "saved"}
        ).status_code
        == 403
    )
    account = LikuAccount.objects.create(user=conversation.user, email="alice@example.com")
    page = staff_client.get(
        reverse("admin:voice_sessions_likuaccount_change", args=[account.pk])
    ).content.decode()
    assert "alice@example.com" in page and 'name="_save"' not in page
    # The conversation page is where staff review: there a Save button belongs.
    page = staff_client.get(reverse("admin:voice_sessions_conversation_change", args=[conversation.pk]))
    assert 'name="_save"' in page.content.decode()


def test_turns_and_saves_have_list_pages_with_filters(staff_client, conversation, user, topic):
    other = Conversation.objects.create(
        user=user, provider="local", topic=topic, voice="en-us", language="en"
    )
    Turn.objects.create(
        conversation=other, sequence=1, role="user", text="an aisle seat", corrected_text="a aisle seat"
    )
    TranscriptSave.objects.create(conversation=other, status="saved", attempts=1)
    turns = reverse("admin:voice_sessions_turn_changelist")
    html = staff_client.get(turns).content.decode()
    for word in ["By provider", "By role", "By tags", "By correction", "By review status"]:
        assert word in html, word
    count = 'class="field-sequence"'
    assert html.count(count) == 3
    assert staff_client.get(turns, {"role__exact": "agent"}).content.decode().count(count) == 1
    assert staff_client.get(turns, {"provider": "local"}).content.decode().count(count) == 1
    assert staff_client.get(turns, {"corrected": "yes"}).content.decode().count(count) == 1
    assert staff_client.get(turns, {"q": "window"}).content.decode().count(count) == 1
    assert "Add turn" not in html
    saves = reverse("admin:voice_sessions_transcriptsave_changelist")
    html = staff_client.get(saves).content.decode()
    assert "By status" in html and "HTTP 503" in html and "Add transcript save" not in html
    row = 'class="field-attempts"'
    assert html.count(row) == 2
    failed = staff_client.get(saves, {"status__exact": "failed"}).content.decode()
    assert failed.count(row) == 1 and "HTTP 503" in failed
