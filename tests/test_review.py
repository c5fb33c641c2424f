"""Review: corrections, tags, review status, their audit trail, filters and accuracy per provider,
through the real admin as a logged-in staff user (and the history page as its owner) sees them."""

from html.parser import HTMLParser

import pytest
from django.urls import reverse

from sessions import review
from sessions.models import Conversation, ReviewEvent, Tag, Turn


class FormScraper(HTMLParser):
    """The values a browser would submit from the page's main form: what staff see is what we post."""

    def __init__(self):
        super().__init__()
        self.data: dict[str, list[str]] = {}
        self._textarea = self._select = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name and a.get("type") not in ("submit", "button", "file"):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self.data.setdefault(name, []).append(
                a.get("value") or ("on" if a.get("type") == "checkbox" else "")
            )
        elif tag == "textarea" and name:
            self._textarea = name
            self.data.setdefault(name, []).append("")
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and "selected" in a:
            self.data.setdefault(self._select, []).append(a.get("value", ""))

    def handle_endtag(self, tag):
        if tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea][-1] += data.lstrip("\n") if not self.data[self._textarea][-1] else data


def scrape(html: str) -> dict[str, list[str]]:
    scraper = FormScraper()
    scraper.feed(html)
    return scraper.data


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def make_conversation(user, topic, provider="liku", voice="default", turns=(), status="unreviewed"):
    conv = Conversation.objects.create(
        user=user, provider=provider, topic=topic, voice=voice, language="en", review_status=status
    )
    for i, (role, text, corrected) in enumerate(turns, start=1):
        Turn.objects.create(conversation=conv, sequence=i, role=role, text=text, corrected_text=corrected)
    return conv


def change_url(conv):
    return reverse("admin:voice_sessions_conversation_change", args=[conv.pk])


def test_the_built_in_tags_come_with_the_migration(db):
    assert set(Tag.objects.filter(builtin=True).values_list("label", flat=True)) == {
        "Wrong language", "Echo", "Hallucination", "Missed barge-in", "False barge-in",
    }  # fmt: skip


def test_staff_add_tags_of_their_own_and_the_built_in_ones_stay(staff_client, db):
    add = reverse("admin:voice_sessions_tag_add")
    assert staff_client.post(add, {"label": "Cut off", "slug": "cut-off"}).status_code == 302
    assert Tag.objects.get(slug="cut-off").builtin is False
    echo = Tag.objects.get(slug="echo")
    page = staff_client.get(reverse("admin:voice_sessions_tag_change", args=[echo.pk])).content.decode()
    assert 'name="label"' in page and 'name="slug"' not in page and "Delete" not in page
    mine = Tag.objects.get(slug="cut-off")
    assert staff_client.get(reverse("admin:voice_sessions_tag_delete", args=[mine.pk])).status_code == 200
    assert staff_client.get(reverse("admin:voice_sessions_tag_delete", args=[echo.pk])).status_code == 403


def test_staff_correct_and_tag_a_turn_and_set_the_status_in_the_admin(staff_client, staff, user, topic):
    """The original text stays; the correction, tags and status are saved and each change audited."""
    conv = make_conversation(
        user, topic, turns=[("user", "I want a tabel for too", ""), ("agent", "Sure", "")]
    )
    mine = Tag.objects.create(slug="noisy-room", label="Noisy room")
    echo = Tag.objects.get(slug="echo")
    page = staff_client.get(change_url(conv)).content.decode()
    assert "I want a tabel for too" in page
    assert 'name="turns-0-text"' not in page  # the provider's text is not editable
    assert 'name="turns-0-corrected_text"' in page and "Noisy room" in page and "Missed barge-in" in page
    data = scrape(page)
    data["review_status"] = ["reviewed"]
    data["turns-0-corrected_text"] = ["I want a table for two"]
    data["turns-0-tags"] = [str(echo.pk), str(mine.pk)]
    response = staff_client.post(change_url(conv), data)
    assert response.status_code == 302, response.content.decode()[:3000]

    turn = conv.turns.get(sequence=1)
    assert turn.text == "I want a tabel for too"
    assert turn.corrected_text == "I want a table for two" == turn.reviewed_text
    assert sorted(t.slug for t in turn.tags.all()) == ["echo", "noisy-room"]
    conv.refresh_from_db()
    assert conv.review_status == "reviewed"
    events = {e.field: e for e in ReviewEvent.objects.filter(conversation=conv)}
    assert set(events) == {"review_status", "corrected_text", "tags"}
    assert all(e.user == staff for e in events.values())
    assert (events["corrected_text"].old, events["corrected_text"].new) == ("", "I want a table for two")
    assert (events["tags"].old, events["tags"].new) == ("", "echo, noisy-room")
    assert (events["review_status"].old, events["review_status"].new) == ("unreviewed", "reviewed")
    assert events["corrected_text"].turn == turn and events["review_status"].turn is None

    # Saving the page again unchanged writes nothing more; the history shows on the page.
    page = staff_client.get(change_url(conv)).content.decode()
    assert staff_client.post(change_url(conv), scrape(page)).status_code == 302
    assert ReviewEvent.objects.filter(conversation=conv).count() == 3
    page = staff_client.get(change_url(conv)).content.decode()
    assert "Review history" in page and "I want a table for two" in page
    # The history names fields, statuses and tags by their labels, as the rest of the page does.
    history = page[page.index("Review history") :]
    assert "Echo, Noisy room" in history and "echo, noisy-room" not in history
    assert "changed the correction at" in history and "changed corrected_text" not in history
    assert "Review status" in history and "Unreviewed" in history and ">unreviewed<" not in history
    audit = staff_client.get(reverse("admin:voice_sessions_reviewevent_changelist")).content.decode()
    assert "Echo, Noisy room" in audit and ">corrected_text<" not in audit and ">Correction<" in audit


def test_the_turn_page_edits_correction_and_tags_with_an_audit(staff_client, staff, user, topic):
    conv = make_conversation(user, topic, turns=[("user", "hola", "")])
    turn = conv.turns.get()
    url = reverse("admin:voice_sessions_turn_change", args=[turn.pk])
    data = scrape(staff_client.get(url).content.decode())
    data["corrected_text"] = ["hello"]
    data["tags"] = [str(Tag.objects.get(slug="wrong-language").pk)]
    assert staff_client.post(url, data).status_code == 302
    turn.refresh_from_db()
    assert (turn.text, turn.reviewed_text) == ("hola", "hello")
    changes = ReviewEvent.objects.filter(turn=turn).values_list("field", "old", "new", "user")
    assert sorted(changes) == [
        ("corrected_text", "", "hello", staff.pk),
        ("tags", "", "wrong-language", staff.pk),
    ]
    audit = staff_client.get(reverse("admin:voice_sessions_reviewevent_changelist")).content.decode()
    assert "Wrong language" in audit and "hello" in audit and "staff" in audit
    assert (
        'name="_save"'
        not in staff_client.get(
            reverse("admin:voice_sessions_reviewevent_change", args=[ReviewEvent.objects.first().pk])
        ).content.decode()
    )


def test_review_functions_audit_changes_made_outside_the_admin(staff, user, topic):
    conv = make_conversation(user, topic, turns=[("user", "to", "")])
    turn = conv.turns.get()
    review.correct(turn, "two", staff)
    review.set_tags(turn, Tag.objects.filter(slug="echo"), staff)
    review.set_status(conv, Conversation.ReviewStatus.NEEDS_ATTENTION, staff)
    review.set_status(conv, Conversation.ReviewStatus.NEEDS_ATTENTION, staff)  # no change, no entry
    rows = list(ReviewEvent.objects.order_by("id").values_list("field", "old", "new"))
    assert rows == [
        ("corrected_text", "", "two"),
        ("tags", "", "echo"),
        ("review_status", "unreviewed", "attention"),
    ]


def test_a_bulk_action_sets_the_review_status_with_an_audit(staff_client, staff, user, topic):
    first, second = (make_conversation(user, topic) for _ in range(2))
    untouched = make_conversation(user, topic)
    url = reverse("admin:voice_sessions_conversation_changelist")
    assert "Mark as needs attention" in staff_client.get(url).content.decode()
    data = {"action": "mark_attention", "_selected_action": [first.pk, second.pk]}
    response = staff_client.post(url, data, follow=True)
    assert "2 conversation(s) marked needs attention." in response.content.decode()
    statuses = dict(Conversation.objects.values_list("id", "review_status"))
    assert statuses == {first.pk: "attention", second.pk: "attention", untouched.pk: "unreviewed"}
    events = ReviewEvent.objects.values_list("conversation", "field", "old", "new", "user")
    assert sorted(events) == sorted(
        (c.pk, "review_status", "unreviewed", "attention", staff.pk) for c in (first, second)
    )


def rows_of(html):
    return html.count('class="field-provider_name"')


def test_admin_filters_by_review_status_and_tag(staff_client, user, topic):
    tagged = make_conversation(user, topic, turns=[("user", "a", ""), ("user", "b", "")], status="reviewed")
    for turn in tagged.turns.all():  # two tagged turns: still one row
        turn.tags.add(Tag.objects.get(slug="hallucination"))
    make_conversation(user, topic, turns=[("user", "c", "")], status="attention")
    url = reverse("admin:voice_sessions_conversation_changelist")
    html = staff_client.get(url).content.decode()
    assert "By review status" in html and "By tag" in html and "Hallucination" in html
    assert rows_of(html) == 2
    assert rows_of(staff_client.get(url, {"review_status__exact": "reviewed"}).content.decode()) == 1
    assert rows_of(staff_client.get(url, {"review_status__exact": "attention"}).content.decode()) == 1
    one = staff_client.get(url, {"tag": "hallucination"}).content.decode()
    assert rows_of(one) == 1 and 'field-turn_count">2<' in one
    assert rows_of(staff_client.get(url, {"tag": "echo"}).content.decode()) == 0
    turns = reverse("admin:voice_sessions_turn_changelist")
    tag_pk = Tag.objects.get(slug="hallucination").pk
    assert (
        staff_client.get(turns, {"tags__id__exact": tag_pk}).content.decode().count('class="field-sequence"')
        == 2
    )


def test_history_filters_by_review_status_and_tag(alice, user, other_user, topic):
    reviewed = make_conversation(user, topic, turns=[("user", "a", "")], status="reviewed")
    reviewed.turns.get().tags.add(Tag.objects.get(slug="echo"))
    make_conversation(user, topic, turns=[("user", "b", "")])
    theirs = make_conversation(other_user, topic, turns=[("user", "c", "")], status="reviewed")
    theirs.turns.get().tags.add(Tag.objects.get(slug="echo"))
    url = reverse("history")
    page = alice.get(url).content.decode()
    assert 'name="review"' in page and 'name="tag"' in page and "False barge-in" in page
    assert page.count('class="conversation-row"') == 2
    for params in ({"review": "reviewed"}, {"tag": "echo"}, {"review": "reviewed", "tag": "echo"}):
        page = alice.get(url, params).content.decode()
        assert page.count('class="conversation-row"') == 1, params
        assert reviewed.get_absolute_url() in page and "Reviewed" in page
    assert "No conversations match" in alice.get(url, {"review": "attention"}).content.decode()
    assert alice.get(url, {"review": "bogus"}).content.decode().count('class="conversation-row"') == 2


def test_history_search_finds_a_turn_by_its_correction(alice, user, topic):
    """The conversation page shows a corrected turn's correction: searching for it finds the call."""
    conv = make_conversation(user, topic, turns=[("user", "a tabel for too", "a table for two")])
    make_conversation(user, topic, turns=[("user", "opening hours", "")])
    for query in ("table for two", "tabel"):
        page = alice.get(reverse("history"), {"q": query}).content.decode()
        assert page.count('class="conversation-row"') == 1 and conv.get_absolute_url() in page, query


@pytest.fixture
def reviewed_turns(user, topic):
    """The hand-computed example. After normalisation (lower case, no punctuation):

    liku, corrected turns of an unreviewed conversation:
      ref "i would like a table for two" (7)  hyp "i would like the table for"  1 sub + 1 del = 2
      ref "book please" (2)                   hyp "book please"                 0 (only case/punctuation)
    liku, a conversation marked Reviewed:
      ref "hello there" (2, uncorrected)      hyp "hello there"                 0
      ref "a window seat please" (4)          hyp "a window seat seat please"   1 ins
    => liku: 3 errors / 15 words = 0.2, 4 turns.
    local: ref "yes" (1) hyp "" -> 1 del => 1.0, 1 turn.
    Not counted: uncorrected user turns of unreviewed conversations, agent turns, an empty reference.
    """
    make_conversation(user, topic, "liku", turns=[
        ("user", "I would like the table for", "I would like a table for two."),
        ("agent", "Certainly.", "Certainly!!! Of course"),
        ("user", "Book, please!", "book please"),
        ("user", "not reviewed at all", ""),
    ])  # fmt: skip
    make_conversation(user, topic, "liku", status="reviewed", turns=[
        ("user", "Hello there", ""),
        ("user", "A window seat seat please", "A window seat, please"),
        ("user", "", ""),
    ])  # fmt: skip
    make_conversation(
        user, topic, "local", voice="en-us+f3", turns=[("user", "", "Yes."), ("user", "uh", "")]
    )
    make_conversation(user, topic, "lokutor", turns=[("user", "what I heard", "")])


def test_word_error_rate_matches_the_hand_computed_example(reviewed_turns):
    assert review.provider_accuracy() == {
        "liku": {"wer": pytest.approx(3 / 15), "turns": 4, "words": 15},
        "local": {"wer": pytest.approx(1.0), "turns": 1, "words": 1},
    }
    only_local = Conversation.objects.filter(provider="local")
    assert review.provider_accuracy(only_local) == {"local": {"wer": 1.0, "turns": 1, "words": 1}}
    assert (
        review.normalise("  Don\u2019t  STOP—the well-known Café, OK? ") == "dont stop the well known café ok"
    )


def test_the_admin_shows_accuracy_per_provider_with_labels(staff_client, reviewed_turns):
    changelist = staff_client.get(reverse("admin:voice_sessions_conversation_changelist")).content.decode()
    url = reverse("admin:voice_sessions_conversation_accuracy")
    assert f'href="{url}' in changelist and "Accuracy per provider" in changelist
    page = staff_client.get(url).content.decode()
    assert "Liku voice chat" in page and "Built-in offline agent" in page and "Lokutor" not in page
    liku = page[page.index('data-provider="liku"') :]
    liku = liku[: liku.index("</tr>")]
    assert "20.0%" in liku and 'class="turns">4<' in liku and 'class="words">15<' in liku
    filtered = staff_client.get(url, {"provider": "local"}).content.decode()
    assert "Built-in offline agent" in filtered and "Liku voice chat" not in filtered
    assert "100.0%" in filtered
    bad = staff_client.get(url, {"created_at__gte": "not a date"})
    assert bad.status_code == 302 and bad.headers["Location"] == url


def test_accuracy_page_is_for_staff_only(alice):
    response = alice.get(reverse("admin:voice_sessions_conversation_accuracy"))
    assert response.status_code == 302 and "/login/" in response.headers["Location"]


@pytest.mark.slow
@pytest.mark.browser
def test_staff_review_in_chromium_then_the_owner_filters_history_on_a_phone(server):
    """In headless Chromium: staff correct and tag a turn and mark the conversation reviewed on
    the admin page; the history page, 390 px wide, filters by tag and status without overflowing."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from tests.test_browser import BASE_ARGS, CHROMIUM, log_in, watch_csp

    conv = server.conversation()["id"]
    server.manage("shell", "-c", "from sessions.models import Turn; Turn.objects.create("
                  f"conversation_id='{conv}', sequence=1, role='user', text='a tabel for too')")  # fmt: skip
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BASE_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            csp = watch_csp(page)
            log_in(page, server)
            page.goto(f"{server.url}/admin/voice_sessions/conversation/{conv}/change/")
            page.fill("textarea[name='turns-0-corrected_text']", "a table for two")
            page.locator("input[name='turns-0-tags']").and_(page.get_by_label("Echo")).check()
            page.select_option("select[name='review_status']", "reviewed")
            page.click("input[name='_save']")
            page.wait_for_url("**/admin/voice_sessions/conversation/")
            page.goto(f"{server.url}/admin/voice_sessions/conversation/accuracy/")
            accuracy = page.locator("tr[data-provider='local']").inner_text()
            page.goto(f"{server.url}/history/")
            page.select_option("select[name='tag']", "echo")
            page.select_option("select[name='review']", "reviewed")
            page.click("form.filters button[type=submit]")
            page.wait_for_url("**/history/?*tag=echo*")
            rows = page.locator("tr.conversation-row").count()
            link = page.locator("tr.conversation-row a").get_attribute("href")
            # On the phone each row still shows its review status (it used to be cut off).
            status = page.locator("tr.conversation-row td.review-status")
            status_shown = status.is_visible() and status.inner_text()
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            page.select_option("select[name='review']", "attention")
            page.click("form.filters button[type=submit]")
            page.wait_for_url("**/history/?*review=attention*")
            none = page.locator("tr.conversation-row").count()
        finally:
            browser.close()
    assert "Built-in offline agent" in accuracy and "50.0%" in accuracy  # 2 of 4 words: tabel, too
    assert (rows, none) == (1, 0) and link == f"/history/{conv}/"
    assert status_shown == "Reviewed", status_shown
    assert overflow <= 0
    assert csp == []


# An agent turn with every latency figure, and provider refs holding a long unbroken token (as a
# Liku call keeps its connection data): the widest things the review page shows.
WIDE_CALL = """
from sessions.models import Conversation, Turn
conv = Conversation.objects.get(id="{conv}")
conv.provider_refs = {{"topic_id": "55", "connection_data": "eyJ0b3BpY19pZCI6ICI1NSJ9" * 12}}
conv.save(update_fields=["provider_refs"])
Turn.objects.create(conversation=conv, sequence=1, role="user", text="a table for two please")
timings = {{"v": 2, "from": "vad", "speech_end_ms": 4000, "user_final_ms": 4600, "first_audio_ms": 4620,
           "played_ms": 4660, "reply_ms": 3040, "vendor": {{"hangover_ms": 512, "stt_final_ms": 5,
           "responder_ms": 0.2, "tts_first_chunk_ms": 29, "turn_end_to_audio_ms": 34}}}}
Turn.objects.create(conversation=conv, sequence=2, role="agent", latency_ms=620, timings=timings,
                    text="Of course. For how many people, and at what time would you like to come?")
"""


def test_the_review_page_fits_a_desktop_window(server):
    """At 1280 px, the admin review page does not scroll sideways: the long refs wrap and the wide
    turns table scrolls in its own box (before, the page was 1507 px wide and the turns' text was
    squeezed to a word a line)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from tests.test_browser import BASE_ARGS, CHROMIUM, log_in, watch_csp

    conv = server.conversation()["id"]
    server.manage("shell", "-c", WIDE_CALL.format(conv=conv))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BASE_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            csp = watch_csp(page)
            log_in(page, server)
            page.goto(f"{server.url}/admin/voice_sessions/conversation/{conv}/change/")
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            text_width = page.locator("#turns-group td.field-text").first.bounding_box()["width"]
        finally:
            browser.close()
    assert overflow <= 0
    assert text_width > 150  # the words of a turn read as a line, not a column
    assert csp == []
