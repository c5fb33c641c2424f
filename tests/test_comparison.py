"""The provider comparison page, the detail page's waterfall and the admin, for a known set of
conversations with hand-computed figures."""

import csv
import datetime
import io
import json
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from sessions.models import Conversation, Topic, Turn


def timed(speech_end, first_audio, played=None, reply=None, user_final=None, version=2) -> dict:
    t = {"v": version, "from": "vad", "speech_end_ms": speech_end, "first_audio_ms": speech_end + first_audio}
    if played is not None:
        t["played_ms"] = speech_end + played
    if reply is not None:
        t["reply_ms"] = reply
    if user_final is not None:
        t["user_final_ms"] = speech_end + user_final
    return t


def call(user, topic, provider, latencies, turn_taking=None, days_ago=0, played_extra=90):
    conv = Conversation.objects.create(
        user=user, provider=provider, topic=topic, voice="v", language="en",
        created_at=timezone.now() - datetime.timedelta(days=days_ago), status="ended",
        metrics={"turn_taking": turn_taking or {}},
    )  # fmt: skip
    for n, latency in enumerate(latencies, start=1):
        timings = timed(n * 10000, latency, played=latency + played_extra, reply=2000, user_final=150)
        Turn.objects.create(conversation=conv, sequence=n, role="agent", text="ok", latency_ms=latency,
                            timings=timings)  # fmt: skip
    return conv


@pytest.fixture
def calls(user, topic):
    other = Topic.objects.create(title="Hotel desk", slug="hotel", persona="p", greeting="g")
    tt = {"barge_in_ms": [300, 500], "barge_ins": 2, "false_barge_ins": 1, "user_interruptions": 3,
          "agent_interruptions": 1, "talk_over_ms": 700, "dead_air_count": 2}  # fmt: skip
    call(user, topic, "local", [100, 200, 300, 400], tt)
    call(user, topic, "local", [500], {"barge_in_ms": [100], "barge_ins": 1, "talk_over_ms": 50})
    call(user, other, "local", [900, 1000])
    call(user, topic, "liku", [600, 700, 800])
    call(user, topic, "liku", [5000], days_ago=90)  # outside the default 30 days
    return other


def rows_of(html: str) -> dict:
    """(provider, topic) -> {heading: cell} from the page's table."""
    table = re.search(r'<table class="wf-table compare-table".*?</table>', html, re.S).group(0)
    headings = re.findall(r'<th scope="col" data-key="[^"]+">([^<]*)</th>', table)
    out = {}
    for tr in re.findall(r"<tr><th scope=\"row\">.*?</tr>", table, re.S):
        cells = re.findall(r"<t[hd][^>]*>([^<]*)</t[hd]>", tr)
        row = dict(zip(headings, cells, strict=True))
        out[(row["Provider"], row["Topic"])] = row
    return out


def test_the_page_is_for_staff(alice, db):
    assert alice.get(reverse("compare")).status_code == 403
    alice.logout()
    assert alice.get(reverse("compare")).status_code == 302


def test_figures_per_provider_and_topic(client, staff, calls):
    client.force_login(staff)
    html = client.get(reverse("compare")).content.decode()
    rows = rows_of(html)
    local_all = rows[("Built-in offline agent", "All topics")]
    # local latencies: 100 200 300 400 500 900 1000 -> nearest rank P50 = 4th = 400, P90 = 7th, P99 = 7th
    assert (local_all["Latency P50 (ms)"], local_all["Latency P90 (ms)"], local_all["Latency P99 (ms)"]) == (
        "400", "1000", "1000")  # fmt: skip
    assert local_all["Played P50 (ms)"] == "490" and local_all["Conversations"] == "3"
    assert local_all["Barge-ins"] == "3" and local_all["Barge-in P50 (ms)"] == "300"
    assert local_all["Talk-over (ms)"] == "750" and local_all["False barge-ins"] == "1"
    assert local_all["WER"] == "—"  # nothing reviewed yet
    restaurant = rows[("Built-in offline agent", "Restaurant booking")]
    assert restaurant["Replies timed"] == "5" and restaurant["Latency P50 (ms)"] == "300"
    assert rows[("Built-in offline agent", "Hotel desk")]["Latency P50 (ms)"] == "900"
    liku = rows[("Liku voice chat", "All topics")]
    assert liku["Replies timed"] == "3" and liku["Latency P99 (ms)"] == "800"  # the 90-day-old call is out
    plot = json.loads(
        re.search(r'<script id="compare-data" type="application/json">(.*?)</script>', html).group(1)
    )
    assert {p["label"]: p["latencies"] for p in plot["providers"]} == {
        "Built-in offline agent": [100, 200, 300, 400, 500, 900, 1000],
        "Liku voice chat": [600, 700, 800],
    }
    assert (plot["human_gap_ms"], plot["slow_ms"]) == (200, 800)


def test_the_range_and_filters_choose_the_calls(client, staff, calls):
    client.force_login(staff)
    since = (timezone.localdate() - datetime.timedelta(days=100)).isoformat()
    rows = rows_of(client.get(reverse("compare"), {"from": since, "provider": "liku"}).content.decode())
    assert set(rows) == {("Liku voice chat", "Restaurant booking"), ("Liku voice chat", "All topics")}
    assert rows[("Liku voice chat", "All topics")]["Latency P99 (ms)"] == "5000"
    rows = rows_of(client.get(reverse("compare"), {"topic": "hotel"}).content.decode())
    assert set(rows) == {("Built-in offline agent", "Hotel desk"), ("Built-in offline agent", "All topics")}


def test_csv_export_has_the_tables_figures(client, staff, calls):
    client.force_login(staff)
    response = client.get(reverse("compare"), {"format": "csv"})
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(response.content.decode())))
    local = next(r for r in table if r["Provider"] == "Built-in offline agent" and r["Topic"] == "All topics")
    assert local["Latency P50 (ms)"] == "400" and local["Barge-in P90 (ms)"] == "500" and local["WER"] == ""
    assert len(table) == 5  # local: 2 topics + all; liku: 1 topic + all


def test_the_word_error_rate_comes_from_reviewed_turns(client, staff, user, topic, calls):
    conv = Conversation.objects.filter(provider="liku").order_by("-created_at").first()
    Turn.objects.create(conversation=conv, sequence=9, role="user", text="a table for three please",
                        corrected_text="a table for two please")  # fmt: skip
    client.force_login(staff)
    rows = rows_of(client.get(reverse("compare")).content.decode())
    assert rows[("Liku voice chat", "All topics")]["WER"] == "0.2"  # 1 substitution in 5 words
    assert rows[("Built-in offline agent", "All topics")]["WER"] == "—"


def test_the_nav_links_the_page_for_staff_only(client, staff, alice, calls):
    assert reverse("compare") not in alice.get(reverse("history")).content.decode()
    client.force_login(staff)
    assert f'href="{reverse("compare")}"' in client.get(reverse("history")).content.decode()


def test_the_detail_page_shows_the_waterfall_and_turn_taking(alice, user, topic):
    tt = {"barge_in_ms": [300], "barge_ins": 1, "false_barge_ins": 0, "user_interruptions": 1}
    tt |= {"agent_interruptions": 0, "talk_over_ms": 300, "dead_air_count": 1, "dead_air_ms": 4000}
    conv = call(user, topic, "local", [640, 800], tt)
    v1 = timed(40000, 500, version=1)  # stored before v2: no played moment, no reply length
    Turn.objects.create(conversation=conv, sequence=3, role="agent", text="old", latency_ms=500, timings=v1)
    html = alice.get(reverse("conversation", args=[conv.id])).content.decode()
    assert 'id="waterfall"' in html
    row = re.search(r'<tr data-sequence="1">.*?</tr>', html, re.S).group(0)
    assert '<td data-step="user_final">150 ms</td>' in row and '<td data-step="played">730 ms</td>' in row
    assert '<td data-step="reply">2000 ms</td>' in row
    old = re.search(r'<tr data-sequence="3">.*?</tr>', html, re.S).group(0)
    assert '<td data-step="first_audio">500 ms</td>' in old and '<td data-step="played">—</td>' in old
    # first audio over 640, 800, 500: P50 640, P90 800
    cells = "<td>640 ms</td><td>800 ms</td><td>800 ms</td><td>3</td>"
    assert f"First agent audio at the server</th>{cells}" in html
    assert "<dt>Barge-ins</dt><dd>1</dd>" in html and "<dd>4000 ms</dd>" in html


def test_the_admin_shows_the_waterfall_and_turn_taking(client, staff, user, topic):
    conv = call(user, topic, "local", [640], {"barge_in_ms": [250], "barge_ins": 1, "talk_over_ms": 250})
    client.force_login(staff)
    html = client.get(reverse("admin:voice_sessions_conversation_change", args=[conv.id])).content.decode()
    assert "First agent audio played 730 ms" in html
    assert "First agent audio at the server: 640 / 640 / 640 ms" in html
    assert "Barge-in time (user starts → page silent): 250 ms" in html
