"""The conversation page in headless Chromium: the recording of a real call plays in the page, and
clicking a turn seeks the player to it and highlights it; nothing overflows a phone's width."""

import asyncio
import concurrent.futures
import json

import pytest

from tests.server import call
from tests.test_browser import BASE_ARGS, CHROMIUM, log_in, wait_for_js, watch_csp

pytestmark = [pytest.mark.slow, pytest.mark.browser]
playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def page_browser():
    with playwright.sync_playwright() as p:
        args = [*BASE_ARGS, "--autoplay-policy=no-user-gesture-required"]
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield browser
        browser.close()


def a_recorded_call(server) -> dict:
    """A call to the offline agent: its greeting, a typed question and the answer, then Stop."""
    conv = server.conversation()

    async def talk():
        async with call(server, conv["ws_path"]) as c:
            await c.until(lambda c: c.of("ready"), 30)
            await c.until(lambda c: c.finals("agent"), 30)  # the greeting, spoken
            await asyncio.sleep(1.0)
            await c.ws.send(json.dumps({"type": "text", "text": "I would like to book a table"}))
            await c.until(lambda c: len(c.finals("agent")) >= 2, 30)
            await asyncio.sleep(1.5)  # the answer plays
            await c.stop()

    # On a thread of its own: Playwright's sync API runs an event loop on this one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, talk()).result(120)
    return conv


def test_clicking_a_turn_seeks_the_player_and_highlights_the_turn(server, page_browser):
    conv = a_recorded_call(server)
    page = page_browser.new_page(viewport={"width": 390, "height": 800})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    csp = watch_csp(page)
    log_in(page, server)
    page.goto(f"{server.url}/history/{conv['id']}/")
    wait_for_js(page, "document.querySelector('audio[data-player]').readyState >= 1")  # metadata loaded
    duration = page.evaluate("document.querySelector('audio[data-player]').duration")
    turns = page.locator("li.turn[data-at-ms]")
    assert turns.count() >= 3  # greeting, question, answer
    at = [int(turns.nth(i).get_attribute("data-at-ms")) for i in range(turns.count())]
    assert at == sorted(at) and 0 < at[-1] / 1000 < duration
    last = turns.nth(turns.count() - 1)
    last.locator(".turn-head .who").click()
    wait_for_js(page, "document.querySelector('audio[data-player]').currentTime > 0")
    now = page.evaluate("document.querySelector('audio[data-player]').currentTime")
    assert at[-1] / 1000 - 0.05 <= now <= at[-1] / 1000 + 2.0  # sought there (and maybe playing on)
    wait_for_js(page, "document.querySelector('li.turn.playing') !== null")
    assert "playing" in last.get_attribute("class") and last.get_attribute("aria-current") == "true"
    assert page.locator("li.turn.playing").count() == 1
    # Back to the first turn: the highlight follows.
    turns.nth(0).locator(".turn-head .who").click()
    wait_for_js(page, f"document.querySelector('audio[data-player]').currentTime < {at[-1] / 1000 - 0.05}")
    first = "document.querySelectorAll('li.turn[data-at-ms]')[0]"
    wait_for_js(page, f"{first}.classList.contains('playing')")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing overflows a phone
    assert errors == [] and csp == []
    page.close()
