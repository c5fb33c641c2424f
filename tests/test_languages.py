"""The chosen language is honoured: topics per language, the pick page and form, the talk page note."""

import io
import json
import re

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.urls import reverse

from playground.demo_topics import TOPICS
from playground.engine.agent import Agent
from playground.engine.responder import Responder
from playground.engine.script import FALLBACKS
from sessions.models import Conversation, Topic

SPANISH = {
    "greeting": "Hola, ¿en qué puedo ayudarle?",
    "persona": "Eres una anfitriona.",
    "phrases": ["quisiera reservar una mesa"],
    "faq": [{"question": "reservar una mesa", "answer": "¿Para cuántas personas?", "keywords": ["reservar"]}],
    "fallback": "Perdone, ¿cómo dice?",
}


@pytest.fixture
def bilingual(topic):
    topic.translations = {"es": SPANISH}
    topic.save()
    return topic


def test_to_script_gives_the_topic_in_the_chosen_language(bilingual):
    script = bilingual.to_script("es")
    assert (script.language, script.greeting) == ("es", SPANISH["greeting"])
    assert script.persona == "Eres una anfitriona."
    assert script.faq[0].answer == "¿Para cuántas personas?" and script.faq[0].keywords == ("reservar",)
    # typed in Spanish, spoken in English (speech recognition is English only)
    assert script.phrases == ("quisiera reservar una mesa", "I would like to book a table")
    assert script.fallback == "Perdone, ¿cómo dice?"
    english = bilingual.to_script("en")
    assert (english.language, english.greeting) == ("en", "Hello, how can I help?")
    assert english.fallback == FALLBACKS["en"]
    assert bilingual.to_script().greeting == "Hello, how can I help?"  # no language: the default one


def test_a_missing_field_falls_back_to_the_default_language(topic):
    topic.translations = {"es": {"greeting": "Hola"}}
    topic.save()
    script = topic.to_script("es")
    assert script.greeting == "Hola"
    assert script.persona == "You are a host."
    assert script.faq[0].answer == "For how many people?"
    assert script.phrases == ("I would like to book a table",)
    assert script.fallback == FALLBACKS["es"]  # the built-in line of the language, not the English one


def test_a_language_the_topic_lacks_gives_the_default_script(bilingual):
    assert bilingual.languages() == ["en", "es"]
    script = bilingual.to_script("fr")
    assert (script.language, script.greeting) == ("en", "Hello, how can I help?")


@pytest.mark.parametrize(
    "translations,message",
    [
        (["es"], "must be an object keyed by language"),
        ({"xx": {"greeting": "x"}}, "Unknown language 'xx'"),
        ({"en": {"greeting": "Hi"}}, "English (en) is the topic's default language"),
        ({"es": "Hola"}, "Spanish (es): must be an object"),
        ({"es": {"persona": "p"}}, "Spanish (es): needs a 'greeting'"),
        ({"es": {"greeting": "  "}}, "Spanish (es): needs a 'greeting'"),
        ({"es": {"greeting": "Hola", "saludo": "x"}}, "unknown field(s) saludo"),
        ({"es": {"greeting": "Hola", "phrases": "hola"}}, "'phrases' must be a list of strings"),
        ({"es": {"greeting": "Hola", "fallback": 3}}, "'fallback' must be text"),
        ({"es": {"greeting": "Hola", "faq": [{"question": "q"}]}}, "Spanish (es): FAQ entry 1 needs a text"),
    ],
)
def test_translations_are_validated_on_save(topic, translations, message):
    topic.translations = translations
    with pytest.raises(ValidationError) as caught:
        topic.save()
    assert message in str(caught.value.message_dict["translations"])


@pytest.mark.parametrize("data", TOPICS, ids=[t["slug"] for t in TOPICS])
def test_demo_topics_answer_every_question_in_every_language(data):
    """Each FAQ question of each language finds its own answer, and the English question the
    translated answer (speech recognition hears English only)."""
    topic = Topic(**data)
    topic.full_clean(validate_unique=False)
    assert topic.languages() == ["en", "es", "fr"]
    english = topic.to_script("en")
    for language in topic.languages():
        script = topic.to_script(language)
        assert script.greeting == (
            data["translations"][language]["greeting"] if language != "en" else data["greeting"]
        )
        responder = Responder(script)
        for asked, own in zip(english.faq, script.faq, strict=True):
            assert responder.faq_answer(own.question) == own.answer, (language, own.question)
            assert responder.faq_answer(asked.question) == own.answer, (language, asked.question)


def test_a_spanish_script_speaks_with_a_spanish_voice():
    """The script carries the language: an agent built from it alone picks the language's voice."""
    script = Topic(**TOPICS[0]).to_script("es")
    assert Agent(script).voice == "es"
    assert Agent(script, voice="es-419+f3").voice == "es-419+f3"
    assert Agent(script, voice="en-us+f3").voice == "es"  # an English voice cannot speak it


def test_demo_command_updates_existing_topics(db):
    Topic.objects.create(slug="restaurant-booking", title="Old", persona="p", greeting="Old greeting")
    call_command("demo", password="pw-demo-123", stdout=io.StringIO())
    call_command("demo", password="pw-demo-123", stdout=io.StringIO())  # and again: no duplicates
    topic = Topic.objects.get(slug="restaurant-booking")
    assert topic.greeting.startswith("Hello, this is Bella Vista")
    assert topic.languages() == ["en", "es", "fr"]
    assert topic.to_script("es").greeting == "Hola, le atiende Bella Vista. ¿En qué puedo ayudarle?"
    assert Topic.objects.count() == len(TOPICS)


# ---- the pick page and form ------------------------------------------------------------------


def page_data(html: str, element_id: str):
    """What the page's script reads: a json_script element."""
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))


def test_pick_page_tells_its_script_each_topics_languages(alice, bilingual):
    other = Topic.objects.create(
        title="Clinic", slug="clinic", persona="p", greeting="g", default_language="es"
    )
    Topic.objects.create(title="Hidden", slug="hidden", persona="p", greeting="g", is_active=False)
    html = alice.get(reverse("pick")).content.decode()
    assert page_data(html, "topic-languages") == {str(bilingual.pk): ["en", "es"], str(other.pk): ["es"]}
    local = next(p for p in page_data(html, "provider-catalogue") if p["key"] == "local")
    assert ["es", "Spanish"] in local["languages"]


def test_pick_form_refuses_a_language_the_topic_lacks(alice, topic):
    data = {"provider": "local", "topic": topic.pk, "voice": "es+f3", "language": "es"}
    response = alice.post(reverse("pick"), data)
    assert response.status_code == 200
    message = "Restaurant booking has no Spanish content (it is written in English)."
    assert message in response.content.decode()
    assert not Conversation.objects.exists()


def test_pick_form_accepts_a_language_the_topic_has(alice, user, bilingual):
    data = {"provider": "local", "topic": bilingual.pk, "voice": "es+f3", "language": "es"}
    response = alice.post(reverse("pick"), data)
    assert response.status_code == 302
    talk = alice.get(response["Location"]).content.decode()
    assert "Language: Spanish" in talk
    assert not Conversation.objects.exists()  # created by Start, not by the form


def test_the_api_refuses_a_language_the_topic_lacks(client, user, bilingual):
    from sessions.models import ApiToken

    key = ApiToken.issue(user)
    body = {"provider": "local", "topic": "restaurant", "voice": "de", "language": "de"}
    response = client.post(
        "/api/conversations/",
        body,
        content_type="application/json",
        headers={"Authorization": f"Token {key}"},
    )
    assert response.status_code == 400
    assert response.json()["fields"]["language"] == [
        "Restaurant booking has no German content (it is written in English, Spanish)."
    ]


def test_languages_are_the_default_then_the_others_sorted(topic):
    topic.translations = {"fr": {"greeting": "Bonjour"}, "de": {"greeting": "Hallo"}}
    topic.save()
    topic.refresh_from_db()
    assert topic.languages() == ["en", "de", "fr"]


def test_a_language_the_provider_lacks_is_reported_once(alice, bilingual):
    data = {"provider": "local", "topic": bilingual.pk, "voice": "en-us+f3", "language": "ko"}
    html = alice.post(reverse("pick"), data).content.decode()
    assert "does not speak" in html and "has no Korean content" not in html


# ---- the talk page ---------------------------------------------------------------------------


ENGLISH_ONLY = "Speech recognition is English only here: speak English or type your turns in Spanish."


@pytest.mark.parametrize(
    "provider,language,api_key,note",
    [
        ("local", "es", "", ENGLISH_ONLY),
        ("local", "en", "", ""),
        ("lokutor", "es", "", ENGLISH_ONLY),  # its sandbox hears with our engine
        ("lokutor", "es", "k-123", ""),  # the real service hears Spanish
    ],
)
def test_talk_page_says_where_speech_recognition_is_english_only(
    alice, user, bilingual, settings, provider, language, api_key, note
):
    settings.PROVIDERS = {**settings.PROVIDERS, "lokutor": {"url": "", "api_key": api_key}}
    conv = Conversation.objects.create(
        user=user, provider=provider, topic=bilingual, voice="es", language=language
    )
    html = alice.get(reverse("talk", args=[conv.id])).content.decode()
    if note:
        assert note in html
    else:
        assert "Speech recognition is English only" not in html


# ---- the admin -------------------------------------------------------------------------------


def test_staff_edit_translations_in_the_admin(client, staff, topic):
    client.force_login(staff)
    url = reverse("admin:voice_sessions_topic_change", args=[topic.pk])
    data = {
        "title": topic.title,
        "slug": topic.slug,
        "description": "",
        "is_active": "on",
        "persona": "p",
        "greeting": "g",
        "default_language": "en",
        "phrases": "[]",
        "faq": "[]",
        "provider_options": "{}",
        "translations": '{"es": {"persona": "Eres una anfitriona."}}',
    }
    response = client.post(url, data)
    assert response.status_code == 200
    assert "Spanish (es): needs a &#x27;greeting&#x27;" in response.content.decode()
    data["translations"] = json.dumps({"es": SPANISH})
    assert client.post(url, data).status_code == 302
    topic.refresh_from_db()
    assert topic.to_script("es").greeting == SPANISH["greeting"]
    listing = client.get(reverse("admin:voice_sessions_topic_changelist")).content.decode()
    assert "en, es" in listing
