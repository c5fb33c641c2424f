"""A/B comparison: the same utterances played into several providers (sessions/abtest.py).

End to end the run is a WebSocket client of a real Daphne process speaking the browser
protocol, against the offline agent and vendor sandboxes; the pages are driven over HTTP and
in headless Chromium.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import time
import wave

import numpy as np
import pytest

from sessions import abtest
from sessions.models import CompareItem, CompareRun, Conversation

# ---- input audio -----------------------------------------------------------------------------


def _wav(samples: np.ndarray, rate: int, width: int) -> bytes:
    """A WAV file of float samples (frames x channels) at `rate`, `width` bytes a sample."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 1:
            data = (samples * 127 + 128).astype(np.uint8).tobytes()
        elif width == 2:
            data = (samples * 32767).astype("<i2").tobytes()
        else:  # 24 bit: the low three bytes of each 32-bit sample
            ints = (samples * 8388607).astype("<i4").reshape(-1, 1).view(np.uint8).reshape(-1, 4)
            data = ints[:, :3].tobytes()
        w.writeframes(data)
    return out.getvalue()


def _tone(rate: int, seconds: float, channels: int) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = 0.5 * np.sin(2 * np.pi * 440 * t)
    return np.repeat(mono[:, None], channels, axis=1)


@pytest.mark.parametrize(
    ("rate", "channels", "width"), [(44100, 2, 3), (8000, 1, 1), (48000, 2, 2), (16000, 1, 2)]
)
def test_an_uploaded_wav_of_any_rate_and_channels_becomes_16_khz_mono(rate, channels, width):
    """A 1 s 440 Hz tone keeps its length and pitch, whatever its format."""
    pcm = abtest.pcm_from_wav(_wav(_tone(rate, 1.0, channels), rate, width))
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    assert abs(len(samples) - 16000) <= 40
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * 16000 / len(samples) - 440) < 3
    assert 0.3 < np.max(np.abs(samples)) < 0.6


def test_a_file_that_is_not_a_wav_is_refused_with_a_reason():
    with pytest.raises(abtest.CompareError, match="not a PCM WAV"):
        abtest.pcm_from_wav(b"ID3 this is an mp3")


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))
    assert [abtest.percentile(values, p) for p in (50, 90, 99)] == [50, 90, 99]
    assert abtest.percentile([700], 99) == 700
    assert abtest.percentile([], 50) is None


def test_the_server_waterfall_is_measured_from_the_end_of_speech():
    """Offsets from the call start become ms after the end of the user's speech; durations of a
    later timings version are kept as they are."""
    timings = {"v": 2, "from": "vad", "speech_end_ms": 5000, "user_final_ms": 5300, "first_audio_ms": 5650,
               "played_ms": 5760, "reply_ms": 2400, "vendor": {"x": 1}}  # fmt: skip
    assert abtest.server_waterfall(timings) == {"from": "vad", "user_final_ms": 300, "first_audio_ms": 650,
                                                "played_ms": 760, "reply_ms": 2400}  # fmt: skip


def test_the_simulated_playback_reports_its_starts_and_stops_as_the_page_does():
    """200 ms of 24 kHz audio: playback starts once 80 ms are buffered, drains 20 ms a tick, and
    reports a start at sample 0 and a drained stop at 4800; a clear mid-reply is a `cleared`
    stop, and the dropped samples keep their indexes."""
    playback = abtest.Playback(24000)
    playback.receive(4800 * 2, now=10.0)
    for tick in range(12):
        playback.advance(20, now=10.0 + tick * 0.02)
    report = playback.report()
    assert report["edges"] == [{"kind": "start", "how": "", "sample": 0, "ago_ms": 0},
                               {"kind": "stop", "how": "drained", "sample": 4800, "ago_ms": 0}]  # fmt: skip
    assert (report["played_ms"], report["buffered_ms"], report["underruns"]) == (200, 0, 1)
    playback.receive(2400 * 2, now=11.0)
    playback.advance(20, now=11.0)
    playback.clear()
    assert [(e["kind"], e["how"], e["sample"]) for e in playback.report()["edges"]] == [
        ("start", "", 4800), ("stop", "cleared", 5280)
    ]  # fmt: skip
    playback.receive(480 * 2, now=11.1)
    playback.advance(20, now=11.2)  # less than the start buffer, but nothing more has come for 100 ms
    assert playback.report()["edges"][0] == {"kind": "start", "how": "", "sample": 7200, "ago_ms": 0}


# ---- the report and its exports ------------------------------------------------------------


@pytest.fixture
def finished_run(staff, topic, tmp_path, settings):
    """A run as `execute` leaves it: two utterances, two providers, clips stored."""
    settings.MEDIA_ROOT = tmp_path
    run = CompareRun.objects.create(
        created_by=staff,
        topic=topic,
        providers=["local", "lokutor"],
        status=CompareRun.Status.DONE,
        total_steps=4,
        done_steps=4,
        utterances=[
            {"text": "book a table", "audio": ""},
            {"text": 'when, "exactly", do you open?', "audio": ""},
        ],
    )
    for i in range(2):
        for n, key in enumerate(run.providers):
            conversation = Conversation.objects.create(
                user=staff, provider=key, topic=topic, voice="v", language="en"
            )
            item = CompareItem(
                run=run,
                index=i,
                provider=key,
                conversation=conversation,
                utterance=run.utterances[i]["text"],
                user_text=f"heard {i}",
                reply_text=f"reply {i}",
                timings={
                    "latency_ms": 600 + 100 * n + i,
                    "client": {"first_audio_ms": 590 + i},
                    "server": {"user_final_ms": 200, "first_audio_ms": 600 + 100 * n + i},
                },
            )
            item.clip.save(
                f"{i}-{key}.wav", abtest.ContentFile(abtest.wav_bytes(bytes(4800), 24000)), save=False
            )
            item.save()
    return run


def test_the_report_exports_round_trip_as_csv_and_json(finished_run):
    """Reading an export back gives the report's rows: every utterance with every provider."""
    rows = abtest.rows(finished_run)
    assert [(r["index"], r["provider"]) for r in rows] == [
        (0, "local"),
        (0, "lokutor"),
        (1, "local"),
        (1, "lokutor"),
    ]
    read = list(csv.DictReader(io.StringIO(abtest.export_csv(finished_run))))
    assert read == [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows]
    assert read[2]["utterance"] == 'when, "exactly", do you open?'
    exported = json.loads(json.dumps(abtest.export_json(finished_run)))
    assert exported["rows"] == rows
    local = exported["summary"][0]
    assert (local["provider"], local["answered"], local["p50_ms"], local["p99_ms"]) == ("local", 2, 600, 601)


def test_comparison_pages_are_for_staff_only(client, user, finished_run):
    """Anonymous visitors are sent to log in; a signed-in user who is not staff gets 403."""
    run = finished_run
    item = run.items.first()
    urls = [
        "/compare/runs/",
        "/compare/runs/new/",
        f"/compare/runs/{run.pk}/",
        f"/compare/runs/{run.pk}/status/",
        f"/compare/runs/{run.pk}/export.csv",
        f"/compare/runs/{run.pk}/export.json",
        f"/compare/runs/clips/{item.pk}.wav",
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"], url
    client.force_login(user)
    for url in urls:
        assert client.get(url).status_code == 403, url
    assert client.post(f"/compare/runs/{run.pk}/cancel/").status_code == 403
    assert client.post("/compare/runs/new/", {"providers": ["local"]}).status_code == 403
    assert not CompareRun.objects.exclude(pk=run.pk).exists()


def test_staff_read_the_side_by_side_report_and_download_it(client, staff, finished_run):
    client.force_login(staff)
    run = finished_run
    page = client.get(f"/compare/runs/{run.pk}/").content.decode()
    assert page.count('class="ab-cell"') == 4  # 2 utterances x 2 providers
    assert "reply 1" in page and "heard 0" in page and "first agent audio at the server" in page
    assert page.count("<audio") == 2 + 4  # each utterance as played, each reply
    export = client.get(f"/compare/runs/{run.pk}/export.csv")
    assert export["Content-Type"].startswith("text/csv") and "attachment" in export["Content-Disposition"]
    clip = client.get(f"/compare/runs/clips/{run.items.first().pk}.wav")
    with wave.open(io.BytesIO(b"".join(clip.streaming_content))) as w:
        assert (w.getframerate(), w.getnchannels(), w.getnframes()) == (24000, 1, 2400)
    assert client.get(f"/compare/runs/{run.pk}/export.xml").status_code == 404
    admin = client.get("/admin/voice_sessions/comparerun/").content.decode()
    assert f'href="/compare/runs/{run.pk}/"' in admin  # the admin lists runs and links to their report


def test_a_run_that_cannot_start_says_why(client, staff, topic):
    """No providers chosen: the form comes back with the reason, and no run is stored."""
    client.force_login(staff)
    response = client.post("/compare/runs/new/", {"topic": topic.pk, "texts": "hello"})
    assert response.status_code == 400
    assert "name at least one provider" in response.content.decode()
    assert not CompareRun.objects.exists()


def test_a_run_whose_process_stopped_shows_as_failed(staff, topic):
    run = CompareRun.objects.create(created_by=staff, topic=topic, providers=["local"], status="running")
    assert abtest.status(run)["status"] == "running"
    CompareRun.objects.filter(pk=run.pk).update(
        updated_at=run.updated_at - abtest.timezone.timedelta(minutes=5)
    )
    run.refresh_from_db()
    assert abtest.status(run) | {"error": ""} == {"id": run.pk, "status": "failed", "done": 0, "total": 0,
                                                  "percent": 0, "finished": True, "error": ""}  # fmt: skip


# ---- end to end over a real Daphne ---------------------------------------------------------


@pytest.fixture(scope="module")
def ab_server(tmp_path_factory):
    """A Daphne of its own whose clips go to a temporary MEDIA_ROOT."""
    from tests.server import start_server

    yield from start_server({"MEDIA_ROOT": str(tmp_path_factory.mktemp("media"))})


@pytest.mark.slow
def test_a_comparison_plays_the_script_into_each_provider_through_the_relay(ab_server):
    """`manage.py compare`: two script sentences into the offline agent and the Lokutor sandbox.
    The report has one row per utterance and provider, each with what the provider heard, its
    reply, its latency and a clip of the reply that plays as a WAV file."""
    out = ab_server.manage("compare", "--server", ab_server.url, "--providers", "local,lokutor",
                           "--topic", "restaurant", "--count", "2", "--user", "demo", "--json")  # fmt: skip
    report = json.loads(out)
    assert report["status"] == "done"
    rows = report["rows"]
    assert [(r["index"], r["provider"]) for r in rows] == [
        (0, "local"),
        (0, "lokutor"),
        (1, "local"),
        (1, "lokutor"),
    ]
    assert {r["utterance"] for r in rows} == {"I would like to book a table for two",
                                              "can I book a table for four people tonight"}  # fmt: skip
    for r in rows:
        assert r["error"] == "", r
        assert "table" in r["user_text"], r  # the provider's transcript of what was said
        assert "how many people" in r["reply_text"], r
        assert 0 < r["latency_ms"] < 5000 and 0 < r["client_first_audio_ms"] < 5000, r
        # the waterfall's moments are rounded offsets, the latency a rounded difference
        assert abs(r["first_audio_ms"] - r["latency_ms"]) <= 1 and r["user_final_ms"] is not None, r
        assert r["client_reply_ms"] > 1000, r  # the reply was heard to its end, not cut off
        # the simulated page's playback reports gave the server the moment the reply was played
        assert r["first_audio_ms"] < r["played_ms"] < r["first_audio_ms"] + 300, r
    summary = {s["provider"]: s for s in report["summary"]}
    assert summary["lokutor"]["mode"] == "sandbox" and summary["local"]["answered"] == 2
    client = ab_server.client()  # the demo user is staff
    for r in rows:
        clip = client.get(f"/compare/runs/clips/{r['item']}.wav")
        assert clip.status_code == 200 and clip.headers["content-type"] == "audio/wav"
        with wave.open(io.BytesIO(clip.content)) as w:
            assert w.getframerate() == 24000 and w.getnchannels() == 1
            assert 1.0 < w.getnframes() / 24000 <= abtest.CLIP_SECONDS
            assert (
                np.abs(np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")).max() > 1000
            )  # not silence
    # the conversations are ordinary ones: their turns are in the history
    page = client.get(f"/history/{rows[1]['conversation']}/").text
    assert "how many people" in page


def _poll_until_finished(client, run_url: str, limit_s: float = 300) -> list[dict]:
    seen = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        seen.append(client.get(f"{run_url}status/").json())
        if seen[-1]["finished"]:
            return seen
        time.sleep(0.5)
    raise AssertionError(f"the run did not finish: {seen[-1]}")


@pytest.mark.slow
def test_staff_start_a_comparison_from_the_page_and_it_runs_to_done(ab_server, tmp_path):
    """The new-run form takes an uploaded WAV file (44.1 kHz stereo, as a user might record it)
    and spawns the run; its status climbs to 100 % and done; the offline agent and the Liku
    sandbox both understood the recording and answered it."""
    from tests.engine.speech import flite_wav

    recording = tmp_path / "open-44k-stereo.wav"
    mono = flite_wav("what time do you open", tmp_path / "open.wav")
    subprocess.run(["sox", str(mono), "-r", "44100", "-c", "2", str(recording)], check=True)
    client = ab_server.client()
    form = client.get("/compare/runs/new/")
    topic_id = re.search(r'<option value="(\d+)"[^>]*>Restaurant', form.text).group(1)
    data = {"providers": ["local", "liku"], "topic": topic_id, "language": "en"}
    files = {"wavs": (recording.name, recording.read_bytes(), "audio/wav")}
    headers = {"X-CSRFToken": client.cookies["csrftoken"]}
    response = client.post("/compare/runs/new/", data=data, files=files, headers=headers)
    assert response.status_code == 302, response.text
    run_url = response.headers["Location"]
    seen = _poll_until_finished(client, run_url)
    assert seen[-1] | {"id": 0} == {"id": 0, "status": "done", "done": 2, "total": 2, "percent": 100,
                                    "finished": True, "error": ""}  # fmt: skip
    assert any(s["status"] == "running" for s in seen)
    report = client.get(f"{run_url}export.json").json()
    assert [(r["utterance"], r["provider"]) for r in report["rows"]] == [
        (recording.name, "local"), (recording.name, "liku")
    ], report  # fmt: skip
    for r in report["rows"]:
        assert "open" in r["user_text"] and "open every day" in r["reply_text"], r
    page = client.get(run_url).text
    assert page.count('class="ab-cell"') == 2 and page.count("open every day") == 2
    played = client.get(f"{run_url}input/0.wav")  # the input as it was played: 16 kHz mono
    with wave.open(io.BytesIO(played.content)) as w:
        assert (w.getframerate(), w.getnchannels()) == (16000, 1)


@pytest.mark.slow
def test_a_cancelled_run_stops_at_the_next_utterance(ab_server):
    """Cancel on the page: the run stops after the reply it is waiting for and says so."""
    client = ab_server.client()
    form = client.get("/compare/runs/new/")
    topic_id = re.search(r'<option value="(\d+)"[^>]*>Restaurant', form.text).group(1)
    data = {"providers": ["local", "lokutor"], "topic": topic_id, "texts": "what time do you open\nthank you"}
    headers = {"X-CSRFToken": client.cookies["csrftoken"]}
    run_url = client.post("/compare/runs/new/", data=data, headers=headers).headers["Location"]
    assert client.post(f"{run_url}cancel/", headers=headers).status_code == 302
    seen = _poll_until_finished(client, run_url)
    assert seen[-1]["status"] == "cancelled" and seen[-1]["done"] <= 1 < seen[-1]["total"] == 4, seen[-1]
    assert "Cancel</button>" not in client.get(run_url).text


@pytest.mark.slow
@pytest.mark.browser
def test_in_the_browser_a_run_started_from_the_page_shows_progress_then_the_report(ab_server):
    """Headless Chromium at phone width: the form starts a run, the progress bar moves under the
    page's CSP, and the finished report (with its reply players) replaces it; no page of the
    comparison overflows 390 px."""
    pytest.importorskip("playwright.sync_api")
    from playwright.sync_api import sync_playwright

    from tests.test_browser import BASE_ARGS, CHROMIUM, log_in, wait_for_js, watch_csp

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BASE_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            csp = watch_csp(page)
            log_in(page, ab_server)
            page.goto(f"{ab_server.url}/compare/runs/new/")
            page.check("input[name=providers][value=local]")
            page.select_option("#ab-topic", label="Restaurant booking")
            page.fill("#ab-texts", "what time do you open")
            page.click(".abrun-form button[type=submit]")
            page.wait_for_url("**/compare/runs/*/")
            widths = {"detail, running": page.evaluate("document.documentElement.scrollWidth")}
            page.wait_for_selector(".ab-cell audio", timeout=180_000)  # the page reloaded with the report
            wait_for_js(page, "document.querySelector('#abrun-progress progress').value === 100")
            assert "open every day" in page.inner_text(".ab-cell")
            assert page.inner_text("[data-state]") == "done"
            widths["detail, done"] = page.evaluate("document.documentElement.scrollWidth")
            for name in ("", "new/"):
                page.goto(f"{ab_server.url}/compare/runs/{name}")
                widths[name or "list"] = page.evaluate("document.documentElement.scrollWidth")
            assert all(w <= 390 for w in widths.values()), widths
            assert errors == [] and csp == []
        finally:
            browser.close()
