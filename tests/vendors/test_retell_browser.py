"""A person in headless Chromium talks to Retell (relayed, against the Retell sandbox mounted in the
server, which dials our LLM WebSocket on the same server): transcripts on the page, audio played."""

import pytest

from tests.test_browser import TALK_PAGE, browser, chromium, log_in, microphone, wait_for_js, watch_csp  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_a_relayed_retell_sandbox_call_in_the_browser(server, browser):  # noqa: F811
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    csp = watch_csp(page)
    log_in(page, server)
    page.check("input[name=provider][value=retell]")
    page.select_option("#id_topic", label="Restaurant booking")
    page.click("button.primary")
    page.wait_for_url(TALK_PAGE)
    page.click("#talk-start")

    user = page.locator('li.turn[data-role="user"][data-final="true"]').first
    user.wait_for(timeout=40000)
    assert "table" in user.inner_text().lower()
    # The demo function answered through our LLM WebSocket (a free table or alternatives).
    answer = page.locator('li.turn[data-role="agent"][data-final="true"]', has_text="table for 2")
    answer.first.wait_for(timeout=20000)
    wait_for_js(page, "window.talkState && window.talkState.played > 0", timeout=10000)
    greeting = page.locator('li.turn[data-role="agent"]').first.inner_text()
    assert greeting.split("\n")[-1].startswith("Hello, this is")  # the demo topic's (maybe cut short)
    page.click("#talk-stop")
    wait_for_js(page, "document.querySelector('#talk').dataset.state === 'ended'", timeout=10000)
    assert errors == [] and csp == []
    assert page.locator("#talk-errors").inner_text().strip() == ""
