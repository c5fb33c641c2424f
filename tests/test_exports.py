"""Exports and downloads: every format round-trips what was stored, the JSON fits its schema, no
secret gets out, and only the owner and staff can fetch any of it."""

import csv
import io
import json
import re
import zipfile

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from django.utils import timezone

from sessions import exports
from sessions.models import Conversation, Turn
from sessions.recording import wav_header

pytestmark = pytest.mark.django_db

SECRET = "sekret-token-5b1f"
TICKET = "liku-chat-ticket-9c2e"  # Liku's per-call connection_data: it opens the chat stream
FORMATS = list(exports.FORMATS)


def read(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.fixture
def conversation(user, topic, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    liku = {**settings.PROVIDERS.get("liku", {}), "token": SECRET, "password": "pw-" + SECRET}
    settings.PROVIDERS = {**settings.PROVIDERS, "liku": liku}
    started = timezone.now()
    conv = Conversation.objects.create(
        user=user, provider="liku", topic=topic, voice="en-us+f3", language="en", status="ended",
        started_at=started, ended_at=started + timezone.timedelta(seconds=9),
        end_reason="stopped by the user",
        provider_refs={"socket": f"wss://liku.invalid/ws?token={SECRET}", "call_id": "c-1",
                       "connection_data": TICKET},
        metrics={"latencies_ms": [640, 700], "latency_p50_ms": 700, "frames_in": 400},
    )  # fmt: skip
    rows = [
        dict(sequence=1, role="agent", text="Hello, how can I help?", start_ms=200, end_ms=1800),
        dict(sequence=2, role="user", text="A table --> for <two> & more", start_ms=2500, end_ms=4100),
        dict(sequence=3, role="tool", text="book_table", created_at=started + timezone.timedelta(seconds=5),
             data={"id": "t1", "name": "book_table", "arguments": {"people": 2, "time": "19:00"},
                   "result": {"ok": True, "table": 7}}),
        dict(sequence=4, role="agent", text="one two three four five six seven eight nine ten",
             start_ms=5200, end_ms=6000, interrupted=True, latency_ms=640,
             timings={"v": 1, "from": "vad", "speech_end_ms": 4100},
             data={"heard": "one two three", "played_ms": 600, "audio_ms": 2000}),
    ]  # fmt: skip
    for row in rows:
        Turn.objects.create(conversation=conv, **row)
    pcm = b"\x01\x00\x02\x00" * 16000  # 1 s of stereo
    conv.recording.save(f"{conv.id}.wav", ContentFile(wav_header(16000) + pcm))
    return conv


def test_the_json_export_fits_its_schema_and_round_trips(alice, conversation):
    response = alice.get(reverse("conversation_export", args=[conversation.id, "json"]))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert f"conversation-{conversation.id}.json" in response["Content-Disposition"]
    data = json.loads(response.content)
    assert exports.problems(data) == []
    assert data["schema_version"] == 1 == exports.schema()["properties"]["schema_version"]["const"]
    stored = list(
        conversation.turns.values("sequence", "role", "text", "interrupted", "start_ms", "latency_ms")
    )
    assert [{key: turn[key] for key in stored[0]} for turn in data["turns"]] == stored
    heard = data["turns"][3]
    assert (heard["heard"], heard["played_ms"], heard["audio_ms"]) == ("one two three", 600, 2000)
    tool = {"id": "t1", "name": "book_table", "arguments": {"people": 2, "time": "19:00"},
            "result": {"ok": True, "table": 7}}  # fmt: skip
    assert data["turns"][2]["tool"] == tool
    assert data["turns"][2]["at_ms"] == 5000  # a tool call: when it was stored
    assert [e["type"] for e in data["events"]][:3] == ["started", "agent_turn", "user_turn"]
    assert "interrupted" in [e["type"] for e in data["events"]] and data["events"][-1]["type"] == "ended"
    assert data["timings"]["latencies_ms"] == [640, 700]
    assert data["conversation"]["recording"] == {
        "file": "recording.wav",
        "rate": 16000,
        "channels": ["user", "agent"],
    }
    assert data["configuration"]["topic"]["provider_options"] == {"topic_id": "55"}
    # Exported again, it is the same document (but for the export time).
    again = json.loads(exports.to_json(conversation))
    assert {**again, "exported_at": None} == {**data, "exported_at": None}


def test_the_schema_check_finds_what_is_wrong(conversation):
    data = exports.as_dict(conversation)
    del data["turns"][0]["role"]
    data["turns"][1]["sequence"] = "2"
    data["events"][0]["type"] = "party"
    data["surprise"] = 1
    found = exports.problems(data)
    assert "$.turns[0]: missing 'role'" in found
    assert "$.turns[1].sequence: expected integer, got str" in found
    assert any(p.startswith("$.events[0].type: 'party' is not one of") for p in found)
    assert "$: unexpected 'surprise'" in found


def test_no_secret_gets_into_any_export(alice, conversation):
    for fmt in FORMATS:
        body = read(alice.get(reverse("conversation_export", args=[conversation.id, fmt])))
        parts = [body]
        if fmt == "zip":
            with zipfile.ZipFile(io.BytesIO(body)) as archive:
                parts = [archive.read(name) for name in archive.namelist()]
        for part in parts:
            assert SECRET.encode() not in part, fmt
            assert TICKET.encode() not in part, fmt
    data = exports.as_dict(conversation)
    assert "token" not in data["configuration"]["provider_settings"]
    assert "password" not in data["configuration"]["provider_settings"]
    assert data["configuration"]["provider_refs"]["socket"] == "wss://liku.invalid/ws?token=***"
    assert data["configuration"]["provider_refs"]["call_id"] == "c-1"  # the other references stay
    assert conversation.provider_refs["connection_data"] == TICKET  # kept on the server (the outbox)


def test_csv_text_and_captions_round_trip(alice, conversation):
    def get(fmt):
        return alice.get(reverse("conversation_export", args=[conversation.id, fmt])).content.decode()

    rows = list(csv.DictReader(io.StringIO(get("csv"))))
    assert [(r["sequence"], r["role"], r["text"]) for r in rows] == [
        (str(t.sequence), t.role, t.text) for t in conversation.turns.all()
    ]
    assert rows[1]["at"] == "0:02" and rows[3]["heard"] == "one two three" and rows[3]["latency_ms"] == "640"
    assert json.loads(rows[2]["tool_arguments"]) == {"people": 2, "time": "19:00"}
    text = get("txt")
    # The heading names the voice and the language as the pages do, not by their codes.
    assert text.splitlines()[0].startswith(
        f"{conversation.topic.title} with Liku voice chat (en-us+f3, English), "
    )
    assert "[0:02] User: A table --> for <two> & more" in text
    assert '[0:05] Tool book_table({"people": 2, "time": "19:00"}) -> {"ok": true, "table": 7}' in text
    assert "[interrupted; heard: one two three]" in text
    vtt = get("vtt")
    assert vtt.startswith("WEBVTT\n")
    cues = re.findall(r"(\d+)\n(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})\n<v (\w+)>(.*)\n", vtt)
    assert cues == [
        ("1", "00:00:00.200", "00:00:01.800", "Agent", "Hello, how can I help?"),
        ("2", "00:00:02.500", "00:00:04.100", "User", "A table --&gt; for &lt;two&gt; &amp; more"),
        ("4", "00:00:05.200", "00:00:06.000", "Agent", "one two three"),  # what was heard
    ]


def test_the_zip_holds_the_recording_and_every_format(alice, conversation):
    response = alice.get(reverse("conversation_export", args=[conversation.id, "zip"]))
    assert response["Content-Type"] == "application/zip"
    assert f'filename="conversation-{conversation.id}.zip"' in response["Content-Disposition"]
    body = read(response)
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert sorted(archive.namelist()) == ["captions.vtt", "conversation.json", "recording.wav",
                                              "transcript.csv", "transcript.txt"]  # fmt: skip
        assert archive.read("recording.wav") == conversation.recording.open("rb").read()
        assert exports.problems(json.loads(archive.read("conversation.json"))) == []


def test_the_admin_exports_several_conversations_a_folder_each(client, staff, conversation, user, topic):
    other = Conversation.objects.create(user=user, provider="local", topic=topic, voice="v", language="en")
    Turn.objects.create(conversation=other, sequence=1, role="user", text="Hi")
    client.force_login(staff)
    url = reverse("admin:voice_sessions_conversation_changelist")
    response = client.post(url, {"action": "export_bundle", "_selected_action": [conversation.id, other.id]})
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(read(response))) as archive:
        folders = {name.split("/")[0] for name in archive.namelist()}
        assert {folder[-36:] for folder in folders} == {str(conversation.id), str(other.id)}
        assert any(name.endswith(f"{conversation.id}/recording.wav") for name in archive.namelist())
        assert any(name.endswith(f"{other.id}/conversation.json") for name in archive.namelist())


def urls(conv) -> list[str]:
    return [*(reverse("conversation_export", args=[conv.id, fmt]) for fmt in FORMATS),
            reverse("conversation_recording", args=[conv.id]),
            reverse("conversation_recording", args=[conv.id]) + "?download=1"]  # fmt: skip


def test_strangers_get_404_for_every_export_and_the_recording(client, other_user, conversation):
    client.force_login(other_user)
    for url in urls(conversation):
        assert client.get(url).status_code == 404, url
    client.logout()
    for url in urls(conversation):
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"], url


def test_the_owner_and_staff_get_every_download(client, staff, alice, conversation):
    for viewer in (alice, None):
        if viewer is None:
            client.force_login(staff)
            viewer = client
        for url in urls(conversation):
            assert viewer.get(url).status_code == 200, url
    assert client.get(reverse("conversation_export", args=[conversation.id, "exe"])).status_code == 404


def test_the_recording_is_served_in_byte_ranges(alice, conversation):
    url = reverse("conversation_recording", args=[conversation.id])
    whole = b"".join(alice.get(url).streaming_content)
    assert len(whole) == 44 + 64000 and whole[:4] == b"RIFF"
    part = alice.get(url, HTTP_RANGE="bytes=40-47")
    assert part.status_code == 206 and part["Content-Range"] == f"bytes 40-47/{len(whole)}"
    assert b"".join(part.streaming_content) == whole[40:48]
    tail = alice.get(url, HTTP_RANGE="bytes=-4")
    assert b"".join(tail.streaming_content) == whole[-4:]
    assert alice.get(url, HTTP_RANGE="bytes=99999999-").status_code == 200  # unusable: the whole file


def test_the_page_shows_the_player_the_heard_part_and_tool_cards(alice, conversation):
    html = alice.get(reverse("conversation", args=[conversation.id])).content.decode()
    assert f'src="/history/{conversation.id}/recording.wav"' in html and "data-player" in html
    assert "<time>0:05</time>" in html and 'data-at-ms="5200"' in html
    assert "Heard:</span> one two three" in html and "Generated:</span> one two three four" in html
    assert "<dt>people</dt><dd><pre>2</pre></dd>" in html and "<dt>table</dt><dd><pre>7</pre></dd>" in html
    assert "reply 640 ms" in html
    for fmt in FORMATS:
        assert reverse("conversation_export", args=[conversation.id, fmt]) in html


def test_a_tool_result_listing_plain_values_reads_as_a_line(alice, conversation):
    """A booking tool's alternatives show as "12:00, 12:30", not as a JSON block of a line each."""
    result = {"available": False, "alternatives": ["12:00", "12:30"], "rooms": [{"id": 1}]}
    data = {"id": "t2", "name": "check_availability", "arguments": {"party_size": 2}, "result": result}
    Turn.objects.create(
        conversation=conversation, sequence=5, role="tool", text="check_availability", data=data
    )
    html = alice.get(reverse("conversation", args=[conversation.id])).content.decode()
    assert "<dt>alternatives</dt><dd><pre>12:00, 12:30</pre></dd>" in html
    assert "<dt>available</dt><dd><pre>false</pre></dd>" in html
    assert "&quot;id&quot;: 1" in html  # a list of objects stays JSON


def test_the_admin_review_shows_the_player(client, staff, conversation):
    client.force_login(staff)
    html = client.get(
        reverse("admin:voice_sessions_conversation_change", args=[conversation.id])
    ).content.decode()
    assert "data-player" in html and "js/player.js" in html and "Heard:</span> one two three" in html


def test_a_user_turn_is_placed_where_its_audio_began(conversation):
    """A provider times user turns from the first audio the user sent; the relay notes when that was."""
    conversation.metrics = {**conversation.metrics, "input_offset_ms": 300}
    conversation.save()
    rows = exports.timeline(conversation)
    assert [row["at_ms"] for row in rows] == [200, 2800, 5000, 5200]  # only the user's moves


def test_a_reviewed_turn_exports_its_correction_tags_and_original(alice, staff, conversation):
    from sessions import review
    from sessions.models import Tag

    turn = conversation.turns.get(sequence=2)
    review.correct(turn, "A table for two and more", staff)
    review.set_tags(turn, [Tag.objects.get(slug="echo")], staff)

    def get(fmt):
        return alice.get(reverse("conversation_export", args=[conversation.id, fmt])).content.decode()

    document = json.loads(get("json"))
    assert exports.problems(document) == []
    user_turn = document["turns"][1]
    assert user_turn["text"] == "A table --> for <two> & more"  # the provider's, kept
    assert user_turn["corrected_text"] == "A table for two and more" and user_turn["tags"] == ["echo"]
    row = list(csv.DictReader(io.StringIO(get("csv"))))[1]
    assert (row["text"], row["corrected_text"], row["tags"]) == (
        user_turn["text"],
        "A table for two and more",
        "echo",
    )
    assert (
        "User: A table for two and more [corrected; the provider's text: A table --> for <two> & more]"
        in get("txt")
    )
    assert "<v User>A table for two and more\n" in get("vtt")
    page = alice.get(reverse("conversation", args=[conversation.id])).content.decode()
    assert "A table for two and more" in page and "the provider sent" in page
