"""In headless Chromium: the latency chips on the talk page (with the real playback worklet's
reports), and the provider comparison page on a phone, with its plot drawn."""

import json
import re

import pytest

from tests.test_browser import TALK_PAGE, browser, chromium, log_in, microphone, wait_for_js, watch_csp  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_each_reply_gets_a_latency_chip_and_the_call_a_running_p50(server, browser):  # noqa: F811
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    csp = watch_csp(page)
    log_in(page, server)
    page.check("input[name=provider][value=local]")
    page.select_option("#id_topic", label="Restaurant booking")
    page.click("button.primary")
    page.wait_for_url(TALK_PAGE)
    page.click("#talk-start")

    answer = page.locator('li.turn[data-role="agent"][data-final="true"]', has_text="how many people")
    answer.first.wait_for(timeout=45000)
    chip = answer.first.locator(".turn-latency")
    chip.wait_for(timeout=10000)
    shown = int(chip.get_attribute("data-latency-ms"))
    assert chip.inner_text() == f"{shown} ms"
    # The played step comes from the real worklet's report of when it started playing the reply.
    wait_for_js(
        page, "Object.values(window.talkState.waterfalls).some(w => typeof w.played === 'number')", 15000
    )
    waterfalls = page.evaluate("window.talkState.waterfalls")
    timed = [w for w in waterfalls.values() if "played" in w]
    assert all(w["played"] >= w["first_audio"] for w in timed), waterfalls
    assert "played +" in answer.first.locator(".turn-waterfall").inner_text()
    p50 = page.locator("#talk-p50")
    assert p50.inner_text().startswith("P50 ") and int(p50.get_attribute("data-p50-ms")) > 0

    page.click("#talk-stop")
    wait_for_js(page, "document.querySelector('#talk').dataset.state === 'ended'", timeout=10000)
    assert errors == [] and csp == []


# Conversations with known latencies, made in the server's own database.
KNOWN_CALLS = """
from django.contrib.auth import get_user_model
from sessions.models import Conversation, Topic, Turn
user = get_user_model().objects.get(username="demo")
topic = Topic.objects.get(slug="restaurant-booking")
for provider, latencies in {"local": [180, 240, 320, 410, 650], "liku": [520, 610, 700, 880, 1250]}.items():
    conv = Conversation.objects.create(user=user, provider=provider, topic=topic, status="ended",
                                       metrics={"turn_taking": {"barge_in_ms": [250], "barge_ins": 1}})
    for n, ms in enumerate(latencies, start=1):
        t = {"v": 2, "from": "vad", "speech_end_ms": n * 9000, "first_audio_ms": n * 9000 + ms,
             "played_ms": n * 9000 + ms + 90, "reply_ms": 1800}
        Turn.objects.create(conversation=conv, sequence=n, role="agent", text="ok", latency_ms=ms, timings=t)
    print(conv.id)
"""


def test_the_comparison_page_fits_a_phone_and_draws_its_plot(server, browser):  # noqa: F811
    made = re.findall(r"^[0-9a-f-]{36}$", server.manage("shell", "-c", KNOWN_CALLS), re.M)
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    csp = watch_csp(page)
    log_in(page, server)
    page.click("nav >> text=Compare")
    page.wait_for_url("**/compare/")
    # Two marker lines and a line per provider: at least these two (the server's other tests may
    # have made calls with other providers).
    wait_for_js(page, "Number(document.getElementById('compare-chart').dataset.drawn) >= 4", 10000)
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    # A Chart.js chart of both providers and the two marker lines, with pixels drawn on the canvas.
    labels = page.evaluate(
        "Chart.getChart(document.getElementById('compare-chart')).data.datasets.map(d => d.label)"
    )
    assert "Built-in offline agent" in labels and "Liku voice chat" in labels
    assert any("200 ms" in label for label in labels) and "800 ms" in labels
    painted = page.evaluate("""(() => {
        const c = document.getElementById('compare-chart');
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++;
        return n;
    })()""")
    assert painted > 1000, painted
    data = json.loads(page.locator("#compare-data").text_content())
    liku = next(p for p in data["providers"] if p["label"] == "Liku voice chat")
    assert {520, 610, 700, 880, 1250} <= set(liku["latencies"])
    # The detail page of one of them, with its waterfall and turn-taking figures, fits the phone too.
    page.goto(f"{server.url}/history/{made[0]}/")
    page.locator("#waterfall").wait_for()
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    assert errors == [] and csp == []
    context.close()
