"""The talk page, ready for stakeholders (issue 11.6), and presenter mode in the browser (11.5).

Headless Chromium with the fake microphone (tests/test_browser.py's fixtures): no conversation
until Start, the next step after a call, labels instead of codes, focus, a phone's width,
contrast of small grey text, the landing page, and the "Share live view" link opened by a viewer.
"""

import json

import pytest

from tests import test_browser
from tests.test_browser import TALK_PAGE, log_in, wait_for_js, watch_csp

# The browser with the fake microphone, as test_browser.py sets it up (module-scoped fixtures).
microphone, chromium, browser = test_browser.microphone, test_browser.chromium, test_browser.browser

pytestmark = [pytest.mark.slow, pytest.mark.browser]
PHONE = {"width": 390, "height": 844}


def conversations(server) -> int:
    """How many conversation rows the deployment's database holds."""
    code = "from sessions.models import Conversation as C; print(C.objects.count())"
    return int(server.manage("shell", "-c", code).strip().splitlines()[-1])


def continue_to_talk(page, server, provider="local"):
    log_in(page, server)
    page.check(f"input[name=provider][value={provider}]")
    page.select_option("#id_topic", label="Restaurant booking")
    page.click("button.primary")
    page.wait_for_url(TALK_PAGE)


def focused(page) -> str:
    return page.evaluate("document.activeElement && document.activeElement.id")


def wait_ended(page):
    wait_for_js(page, "document.querySelector('#talk').dataset.state === 'ended'", timeout=15000)


def test_start_creates_the_conversation_and_the_call_ends_with_a_next_step(server, browser):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    before = conversations(server)
    continue_to_talk(page, server)
    meta = page.locator(".talk-meta").inner_text()
    assert "Voice: American English" in meta and "Language: English" in meta
    assert "en-us" not in meta and "Language: en" not in meta  # labels, not codes
    assert conversations(server) == before  # Continue created nothing

    page.click("#talk-start")
    assert focused(page) == "talk-stop"  # Start is disabled now; the focus is on what comes next
    page.locator('li.turn[data-role="agent"][data-final="true"]').first.wait_for(timeout=30000)
    assert conversations(server) == before + 1
    first = page.evaluate("talkState.conversationId")
    page.click("#talk-stop")
    wait_ended(page)

    assert page.locator("#talk-next").is_visible()
    assert focused(page) == "talk-new"
    assert page.get_attribute("#talk-open-history", "href") == f"/history/{first}/"
    assert "provider=local" in page.get_attribute("#talk-new", "href")
    assert page.locator("#talk-start").is_enabled()  # disabled only while a call runs
    assert page.evaluate(CONTRAST) == []  # the transcript, notes and figures of a call included

    page.click("#talk-start")  # another call from the same page: a new conversation, a clean slate
    wait_for_js(page, "window.talkState.ready !== null", timeout=30000)
    assert page.locator("#talk-next").is_hidden()
    second = page.evaluate("talkState.conversationId")
    assert second and second != first
    page.click("#talk-stop")
    wait_ended(page)
    assert conversations(server) == before + 2

    page.click("#talk-open-history")
    page.wait_for_url(f"**/history/{second}/")
    facts = page.locator(".facts").first.inner_text()
    assert "Built-in offline agent" in facts and "American English" in facts and "en-us" not in facts
    assert errors == []


def overflow(page) -> int:
    """How far the page is wider than the viewport (0: nothing to scroll sideways)."""
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")


def wider(page) -> list[str]:
    """The elements that reach past the viewport's right edge, to say what overflows."""
    return page.evaluate("""() => [...document.querySelectorAll('body *')]
      .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5
        || (e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX === 'visible'))
      .map((e) => `${e.tagName}.${e.className} ${e.textContent.trim().slice(0, 40)}`)""")


def test_nothing_overflows_a_phone_and_tool_calls_are_readable_cards(server, browser):
    """Aivoco's sandbox calls a tool: its card, the no-text note and the next step fit in 390 px."""
    page = browser.new_page(viewport=PHONE)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    continue_to_talk(page, server, provider="aivoco")
    assert overflow(page) == 0
    note = page.locator("#talk-no-text").inner_text()
    assert "takes speech only" in note and "no text box" in note
    assert page.locator("#talk-text").count() == 0
    page.click("#talk-start")
    card = page.locator(".tool-card").first
    card.wait_for(timeout=40000)
    text = card.inner_text()
    assert "Tool call" in text and "{" not in text.split("\n")[0]  # a title in words, not JSON
    assert overflow(page) == 0
    box = card.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    page.click("#talk-stop")
    wait_ended(page)
    assert overflow(page) == 0
    detail = page.get_attribute("#talk-open-history", "href")  # with the tool call's turn
    for path in ["/talk/", "/history/", detail]:
        page.goto(server.url + path)
        assert overflow(page) == 0, (path, wider(page))
    assert errors == []


# Contrast of every piece of small text (under 18.66 px bold / 24 px) that is visible and not
# disabled: its computed colour over the first opaque background behind it, opacity included.
CONTRAST = """() => {
  const rgba = (s) => (s.match(/[\\d.]+/g) || [0, 0, 0, 0]).map(Number).concat([1]).slice(0, 4);
  const channel = (c) => (c /= 255) <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  const lum = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const blend = (fg, bg, a) => fg.slice(0, 3).map((c, i) => c * a + bg[i] * (1 - a));
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const bg = rgba(getComputedStyle(e).backgroundColor);
      if (bg[3] > 0.99) return bg;
    }
    return [255, 255, 255, 1];
  };
  const failures = [];
  for (const el of document.body.querySelectorAll('*')) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length || el.closest(':disabled, [hidden], option, select')) continue;
    const style = getComputedStyle(el);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (large || style.visibility === 'hidden') continue;
    let alpha = rgba(style.color)[3];
    for (let e = el; e; e = e.parentElement) alpha *= Number(getComputedStyle(e).opacity);
    const bg = background(el);
    const fg = blend(rgba(style.color), bg, alpha);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const what = `${el.tagName}.${el.className} "${el.textContent.trim().slice(0, 30)}"`;
    if (ratio < 4.5) failures.push(`${what} ${ratio.toFixed(2)}`);
  }
  return failures;
}"""


def test_small_text_meets_the_contrast_minimum(server, browser):
    page = browser.new_page()
    page.goto(server.url + "/")
    found = {"/": page.evaluate(CONTRAST)}
    continue_to_talk(page, server)
    found["talk"] = page.evaluate(CONTRAST)
    page.goto(server.url + "/talk/")
    page.click("summary")  # a how-to-connect note, opened
    found["/talk/"] = page.evaluate(CONTRAST)
    page.goto(server.url + "/history/")
    found["/history/"] = page.evaluate(CONTRAST)
    assert all(not failures for failures in found.values()), found


def test_logged_out_visitors_see_what_the_playground_is(server, browser):
    page = browser.new_page(viewport=PHONE)
    csp = watch_csp(page)
    response = page.goto(server.url + "/")
    assert response.status == 200 and page.url == server.url + "/"  # no bare redirect to the login
    assert page.locator("h1").inner_text() == "Voice Playground"
    assert "voice AI" in page.locator(".lead").inner_text()
    assert overflow(page) == 0
    page.click("text=Log in to start talking")
    page.wait_for_url("**/login/")
    assert csp == []


def test_the_pick_page_shows_labels_topic_descriptions_and_a_small_how_to_connect_note(server, browser):
    page = browser.new_page()
    log_in(page, server)
    badge = page.locator("input[value=lokutor] ~ .badge").inner_text()
    assert badge == "Sandbox"
    lokutor = page.locator("li.provider", has=page.locator("input[value=lokutor]"))
    assert "LOKUTOR_API_KEY" not in lokutor.locator("small").first.inner_text()  # only in the note
    assert lokutor.locator("details.how-to-connect").count() == 1
    assert not lokutor.locator("details.how-to-connect small").is_visible()  # small, and folded
    page.select_option("#id_topic", label="Restaurant booking")
    assert (
        page.locator("#topic-description").inner_text()
        == "Book a table at Bella Vista, an Italian restaurant."
    )
    voices = page.eval_on_selector_all("#id_voice option", "options => options.map(o => o.textContent)")
    assert voices and not any("+" in v or v.startswith("en-") for v in voices)


def test_the_owner_shares_a_live_view_and_a_viewer_follows_it(server, browser):
    """Share live view: a link and its QR code; the link opens a read-only view without a login."""
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    continue_to_talk(page, server)
    assert page.locator("#talk-share").is_disabled()  # nothing to share before the call
    page.click("#talk-start")
    page.locator('li.turn[data-role="agent"]').first.wait_for(timeout=30000)
    page.click("#talk-share")
    page.locator("#talk-share-panel").wait_for(state="visible", timeout=10000)
    url = page.input_value("#talk-share-url")
    assert "/watch/" in url
    wait_for_js(page, "document.querySelector('#talk-share-qr').naturalWidth > 0", timeout=5000)
    wait_for_js(page, "talkState.presenting === true", timeout=5000)

    audience = browser.new_context(viewport=PHONE)  # another person on a phone: no session
    viewer = audience.new_page()
    csp = watch_csp(viewer)
    viewer.on("pageerror", lambda exc: errors.append(str(exc)))
    viewer.goto(url)
    viewer.locator('#audience-transcript li.turn[data-role="agent"]').first.wait_for(timeout=15000)
    viewer.locator('#audience-transcript li.turn[data-role="user"][data-final="true"]').first.wait_for(
        timeout=40000
    )
    assert (
        "table" in viewer.locator('#audience-transcript li.turn[data-role="user"]').first.inner_text().lower()
    )
    assert overflow(viewer) == 0
    page.locator("#talk-p50").wait_for(timeout=30000)  # a reply with its latency
    page.click("#talk-stop")
    wait_for_js(viewer, "window.audienceState.state === 'ended'", timeout=15000)
    received = json.dumps(viewer.evaluate("window.audienceState.received"))
    # Someone who opens the link later sees the replies' latency chips and the talker's P50.
    late = audience.new_page()
    late.on("pageerror", lambda exc: errors.append(str(exc)))
    late.goto(url)
    wait_for_js(late, "window.audienceState.state === 'ended'", timeout=15000)
    talker_p50 = page.locator("#talk-p50").inner_text()
    late_p50 = late.locator("#talk-p50").inner_text() if late.locator("#talk-p50").count() else None
    chips = late.locator("#audience-transcript .turn-latency").count()
    audience.close()
    assert '"join"' not in received and "ready" not in received
    assert late_p50 == talker_p50 and chips >= 1
    assert csp == [] and errors == []
