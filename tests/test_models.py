import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from sessions.models import ApiToken, Conversation, Topic, Turn


def make_topic(**overrides):
    fields = dict(title="T", slug="t", persona="p", greeting="hi")
    fields.update(overrides)
    return Topic.objects.create(**fields)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "options,message",
    [
        ({"nosuch": {}}, "Unknown provider"),
        ({"liku": {"colour": "red", "topic_id": "1"}}, "Unknown option(s) for liku: colour"),
        ({"liku": {"face_id": "1"}}, "need a topic_id"),
        ({"lokutor": "F1"}, "must be an object"),
        ([], "must be an object keyed by provider"),
    ],
)
def test_provider_options_are_validated_on_save(options, message):
    with pytest.raises(ValidationError) as caught:
        make_topic(provider_options=options)
    assert message in str(caught.value.message_dict["provider_options"])


@pytest.mark.django_db
def test_faq_must_have_questions_and_answers():
    with pytest.raises(ValidationError) as caught:
        make_topic(faq=[{"question": "q"}])
    assert "needs a text 'answer'" in str(caught.value.message_dict["faq"])


def test_topic_becomes_an_engine_script(topic):
    script = topic.to_script()
    assert script.slug == "restaurant"
    assert script.greeting == "Hello, how can I help?"
    assert script.faq[0].answer == "For how many people?"
    assert script.faq[0].keywords == ("book",)
    assert script.phrases == ("I would like to book a table",)


def test_conversation_defaults(topic, user):
    conv = Conversation.objects.create(
        user=user, provider="local", topic=topic, voice="en-us+f3", language="en"
    )
    assert conv.status == Conversation.Status.CREATED
    assert conv.ws_path == f"/ws/conversations/{conv.id}/"
    assert conv.provider_label == "Built-in offline agent"
    assert conv.get_absolute_url() == f"/history/{conv.id}/"


def test_turn_sequence_is_unique_per_conversation(topic, user):
    conv = Conversation.objects.create(
        user=user, provider="local", topic=topic, voice="en-us+f3", language="en"
    )
    Turn.objects.create(conversation=conv, sequence=1, role="user", text="hello")
    with pytest.raises(IntegrityError):
        Turn.objects.create(conversation=conv, sequence=1, role="agent", text="hi")


def test_api_token_stores_only_a_hash(user):
    key = ApiToken.issue(user, "bench")
    token = ApiToken.objects.get(user=user)
    assert key not in token.key_hash
    assert token.key_hash == ApiToken.hash(key)
