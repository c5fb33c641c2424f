"""A person in headless Chromium: log in, pick the offline agent, press Start and talk.

The microphone is Chromium's fake capture device playing a flite WAV file, so the
whole path runs as a user would use it: getUserMedia, the capture worklet at the
device rate (44.1 kHz here), the WebSocket, the relay, the agent, playback.
"""

import json
import re
import shutil
import subprocess
import time

import numpy as np
import pytest

from tests.engine.speech import flite_wav
from tests.peers import ThreadedPeer

pytestmark = [pytest.mark.slow, pytest.mark.browser]
playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def microphone(tmp_path_factory):
    """5 s of silence (the greeting), the sentence, then 4 s of silence (Chromium loops the file)."""
    directory = tmp_path_factory.mktemp("mic")
    speech = flite_wav("I would like to book a table for two", directory / "speech.wav")
    mic = directory / "mic.wav"
    subprocess.run(["sox", str(speech), "-r", "44100", str(mic), "pad", "5", "4"], check=True)
    return mic


BASE_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def chromium():
    with playwright.sync_playwright() as p:
        yield p.chromium


@pytest.fixture(scope="module")
def browser(chromium, microphone):
    args = [
        *BASE_ARGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
        "--autoplay-policy=no-user-gesture-required",
    ]
    browser = chromium.launch(executable_path=CHROMIUM, args=args)
    yield browser
    browser.close()


REPORT_CSP_VIOLATIONS = """document.addEventListener('securitypolicyviolation', e =>
  console.error('Content Security Policy violation: ' + e.effectiveDirective + ' ' + e.blockedURI))"""


def watch_csp(page) -> list[str]:
    """Content-Security-Policy violations in `page`, as Chromium reports them: a console
    message, and the `securitypolicyviolation` event (logged by a script that CSP cannot block)."""
    violations = []
    page.add_init_script(REPORT_CSP_VIOLATIONS)
    page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
    return violations


def wait_for_js(page, expression: str, timeout: float = 30000) -> None:
    """`page.wait_for_function` without its `eval`, which the site's CSP rightly forbids:
    poll the expression through DevTools, which the policy does not govern."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout} ms: {expression}")
        page.wait_for_timeout(100)


# Continue on the pick page opens the talk page for the chosen settings (no conversation yet).
TALK_PAGE = re.compile(r"/talk/new/\?")


def log_in(page, server):
    page.goto(f"{server.url}/login/")
    page.fill("#id_username", server.username)
    page.fill("#id_password", server.password)
    page.click("button[type=submit]")
    page.wait_for_url("**/talk/")


def test_talking_to_the_offline_agent_in_the_browser(server, browser):
    talk_to_the_offline_agent(browser.new_page(), server)


@pytest.fixture(scope="module")
def uvicorn_server():
    """A uvicorn worker of `bin/serve`, as the README recommends for capacity."""
    from tests.server import start_server

    yield from start_server({"SERVER": "uvicorn"}, workers=1)


def test_under_uvicorn_the_browser_talks_and_its_socket_is_not_compressed(uvicorn_server, browser):
    """Chromium offers permessage-deflate on every socket; the server declines it (compressing 20 ms
    PCM frames costs CPU per frame for nothing), as the handshake Chromium saw shows."""
    page = browser.new_page()
    handshakes = []
    devtools = page.context.new_cdp_session(page)
    devtools.on(
        "Network.webSocketWillSendHandshakeRequest", lambda e: handshakes.append(e["request"]["headers"])
    )
    devtools.on(
        "Network.webSocketHandshakeResponseReceived", lambda e: handshakes.append(e["response"]["headers"])
    )
    devtools.send("Network.enable")
    talk_to_the_offline_agent(page, uvicorn_server)
    offered, answered = ({k.lower(): v for k, v in h.items()} for h in handshakes[:2])
    assert "permessage-deflate" in offered["sec-websocket-extensions"]
    assert "sec-websocket-extensions" not in answered, answered


def talk_to_the_offline_agent(page, server) -> None:
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    csp = watch_csp(page)  # the worklets, the socket and the scripts all run under the site's policy
    log_in(page, server)
    page.check("input[name=provider][value=local]")
    page.select_option("#id_topic", label="Restaurant booking")
    page.click("button.primary")
    page.wait_for_url(TALK_PAGE)
    page.click("#talk-start")

    user = page.locator('li.turn[data-role="user"][data-final="true"]').first
    user.wait_for(timeout=30000)
    assert "table" in user.inner_text().lower()
    answer = page.locator('li.turn[data-role="agent"][data-final="true"]', has_text="how many people")
    answer.first.wait_for(timeout=20000)
    wait_for_js(page, "window.talkState && window.talkState.played > 0", timeout=10000)
    # The reply latency says what it is measured from.
    metrics = page.locator("#talk-metrics").inner_text()
    assert re.search(r"reply\s*\d+ ms after you stopped speaking \(our VAD\)", metrics), metrics
    greeting = page.locator('li.turn[data-role="agent"]').first.inner_text()
    assert greeting.split("\n")[-1].startswith("Hello, this is")  # the greeting (maybe cut short)
    assert page.locator("#talk").get_attribute("data-state") in {"listening", "thinking", "speaking"}

    page.click("#talk-stop")
    wait_for_js(page, "document.querySelector('#talk').dataset.state === 'ended'", timeout=10000)
    assert errors == []
    assert csp == []
    assert page.locator("#talk-errors").inner_text().strip() == ""
    # The secrets rule: nothing in the page names a provider key.
    assert "api_key" not in page.content().lower()


def open_talk_page(page, server) -> None:
    """The offline agent's talk page, once its VAD has loaded or failed to."""
    log_in(page, server)
    page.check("input[name=provider][value=local]")
    page.click("button.primary")
    page.wait_for_url(TALK_PAGE)
    wait_for_js(page, "window.talkVad && (window.talkVad.ready || window.talkVad.failure)")


def answered_and_stopped(page) -> None:
    """The agent answered the user's sentence (its greeting, then a reply); the user stops."""
    page.locator('li.turn[data-role="agent"][data-final="true"]').nth(1).wait_for(timeout=30000)
    metrics = page.locator("#talk-metrics").inner_text()
    assert re.search(r"reply\s*\d+ ms after you stopped speaking", metrics), metrics
    page.click("#talk-stop")
    wait_for_js(page, "document.querySelector('#talk').dataset.state === 'ended'", timeout=10000)


def stored_vad(server, page) -> list[str]:
    """Who scored the stored call, why it was handed over (None), and whether replies were timed."""
    conversation = page.evaluate("window.talkState.conversationId")
    script = ("from sessions.models import Conversation as C; m = C.objects.get(id='%s').metrics; "
              "print(m['vad'], m.get('vad_fallback'), len(m['latencies_ms']) > 0)")  # fmt: skip
    return server.manage("shell", "-c", script % conversation).splitlines()[-1].split()


def test_the_page_scores_its_own_audio_and_the_server_runs_no_model_for_the_call(server, browser):
    """The talk page's VAD (static/js/vad.js): silero in onnxruntime-web under the site's policy. Its
    scores time the user's turn (the reply latency is measured from them), and the stored call says
    the page scored it, with no hand-over to the server's model."""
    page = browser.new_page()
    csp = watch_csp(page)
    open_talk_page(page, server)
    assert page.evaluate("window.talkVad.failure") is None
    page.click("#talk-start")
    answered_and_stopped(page)
    assert page.evaluate("window.talkState.vad") == "page"
    assert page.evaluate("window.talkVad.scored") > 100  # 32 ms windows: the greeting and a sentence
    assert stored_vad(server, page) == ["page", "None", "True"]  # replies timed from the page's scores
    assert page.locator("#talk-errors").inner_text().strip() == ""
    assert csp == []


def test_a_page_whose_vad_cannot_load_is_scored_by_the_server(server, browser):
    """The model file does not arrive: the page says nothing to the server, whose model scores the
    call as it does for any client."""
    page = browser.new_page()
    page.route("**/vad/silero_vad.onnx", lambda route: route.fulfill(status=404))
    open_talk_page(page, server)
    assert "404" in page.evaluate("window.talkVad.failure")
    page.click("#talk-start")
    answered_and_stopped(page)
    assert page.evaluate("window.talkState.vad") == "server"
    assert stored_vad(server, page) == ["server", "None", "True"]


def test_a_page_whose_vad_dies_mid_call_is_handed_to_the_server(server, browser):
    """The page's worker dies during the greeting: its scores stop, the server says so (vad_late)
    and its own model scores the rest, so the user's sentence is still heard, timed and answered."""
    page = browser.new_page()
    open_talk_page(page, server)
    page.click("#talk-start")
    wait_for_js(page, "window.talkState.vad === 'page' && window.talkVad.scored > 20", timeout=10000)
    page.evaluate("window.talkVad.worker.terminate()")
    wait_for_js(page, "window.talkState.vad === 'server'", timeout=5000)
    assert "(vad_late)" in page.locator("#talk-errors").inner_text()
    answered_and_stopped(page)
    assert stored_vad(server, page) == ["server", "vad_late", "True"]


def test_the_pages_scores_are_the_servers_model_on_the_same_audio(server, browser, tmp_path):
    """The same model file, windows and state in both places: in Chromium, onnxruntime-web scores a
    sentence in a quiet room as our onnxruntime does, window for window. (Not digital silence: there
    our model skips the windows and the page's does not.)"""
    from bench.page_vad import score_in
    from playground.engine import vad
    from tests.engine.speech import noise, read_pcm

    words = read_pcm(flite_wav("Could you book a table for two tonight", tmp_path / "s.wav"))
    said = np.frombuffer(bytes(300 * 32) + words[: len(words) // 32 * 32], "<i2")
    room = np.frombuffer(noise(len(said) // 16, level=0.003), "<i2")
    pcm = (said.astype(np.int32) + room).clip(-32768, 32767).astype("<i2").tobytes()
    ours = vad.Vad(gates=False).process(pcm)
    page = browser.new_page()
    log_in(page, server)
    page.check("input[name=provider][value=local]")
    page.click("button.primary")
    page.wait_for_url(TALK_PAGE)
    _, scored = score_in(page, pcm, f"{server.url}/static", f"{server.url}/vad/silero_vad.onnx")
    assert len(scored) == len(ours)
    assert max(abs(a - b) for a, b in zip(scored, ours, strict=True)) < 0.01
    assert sum(p >= 0.5 for p in scored) > 20  # the sentence is speech to both


def test_every_page_works_under_the_content_security_policy(server, browser):
    """Login, pick, history, a conversation and the admin (its widgets' scripts included) run
    without a CSP violation or a script error; the talk page is the test above."""
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    csp = watch_csp(page)
    log_in(page, server)
    page.check("input[name=provider][value=local]")  # pick.js fills the voices for the provider
    assert page.locator("#id_voice option").count() > 0
    conversation = server.conversation()["id"]
    visited = {}
    for path in ["/history/", f"/history/{conversation}/", "/admin/", "/admin/voice_sessions/conversation/",
                 f"/admin/voice_sessions/conversation/{conversation}/change/",
                 "/admin/voice_sessions/topic/add/", "/admin/voice_sessions/conversation/accuracy/",
                 "/admin/voice_sessions/turn/", "/admin/voice_sessions/transcriptsave/",
                 "/favicon.ico"]:  # fmt: skip
        response = page.goto(server.url + path)
        visited[path] = response.status
        page.wait_for_load_state("networkidle")
    assert set(visited.values()) == {200}, visited
    assert errors == []
    assert csp == []


def test_the_talk_page_says_when_the_microphone_is_denied(server, chromium):
    """Without microphone permission the page says so instead of failing silently."""
    browser = chromium.launch(executable_path=CHROMIUM, args=[*BASE_ARGS, "--deny-permission-prompts"])
    try:
        page = browser.new_page()
        log_in(page, server)
        page.click("button.primary")
        page.wait_for_url(TALK_PAGE)
        page.click("#talk-start")
        errors = page.locator("#talk-errors")
        wait_for_js(page, "document.querySelector('#talk-errors').innerText.trim().length > 0")
        text = errors.inner_text().lower()
    finally:
        browser.close()
    assert "microphone" in text


@pytest.mark.parametrize("provider", ["liku", "lokutor", "aivoco", "flow"])
def test_vendor_sandboxes_work_in_the_browser_like_the_offline_agent(server, browser, provider):
    """The same page, the same fake microphone, a vendor's client against its sandbox."""
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    log_in(page, server)
    page.check(f"input[name=provider][value={provider}]")
    page.select_option("#id_topic", label="Restaurant booking")
    page.click("button.primary")
    page.wait_for_url(TALK_PAGE)
    page.click("#talk-start")
    page.locator('li.turn[data-role="agent"][data-final="true"]').first.wait_for(timeout=40000)
    wait_for_js(page, "window.talkState && window.talkState.played > 0", timeout=10000)
    if provider == "aivoco":  # no user transcript from Aivoco: the page says so, and shows the tool call
        notes = page.locator(".talk-note").all_inner_texts()  # beside why there is no text box
        assert any("does not send a transcript" in note for note in notes), notes
        page.locator(".tool-card").first.wait_for(timeout=20000)
    else:  # the fake microphone's sentence, as the provider heard it
        user = page.locator('li.turn[data-role="user"][data-final="true"]').first
        user.wait_for(timeout=40000)
        assert "table" in user.inner_text().lower()
    page.click("#talk-stop")
    wait_for_js(page, "document.querySelector('#talk').dataset.state === 'ended'", timeout=10000)
    assert errors == []
    assert page.locator("#talk-errors").inner_text().strip() == ""
    assert "sandbox-" not in page.content()  # no sandbox key reaches the page


def test_the_pick_page_offers_the_languages_topic_and_provider_share_then_talks_spanish(server, browser):
    """Languages follow provider and topic; a Spanish conversation says where speech is English only
    and answers a typed Spanish question in Spanish."""
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    log_in(page, server)
    page.select_option("#id_topic", label="Restaurant booking")

    def languages():
        return page.eval_on_selector_all("#id_language option", "options => options.map(o => o.value)")

    page.check("input[name=provider][value=liku]")
    assert languages() == ["en"]  # Liku also speaks Korean, the topic is not written in it
    page.check("input[name=provider][value=local]")
    assert languages() == ["en", "es", "fr"]  # the offline agent also speaks German: the topic doesn't
    page.select_option("#id_language", "es")
    voices = page.eval_on_selector_all("#id_voice option", "options => options.map(o => o.value)")
    assert voices and all(v.startswith("es") for v in voices)
    page.click("button.primary")
    page.wait_for_url(TALK_PAGE)
    note = page.locator("#talk-speech-note").inner_text()
    assert note == "Speech recognition is English only here: speak English or type your turns in Spanish."
    page.click("#talk-start")
    page.click("#talk-mute")  # the fake microphone would talk over the typed turn
    page.locator('li.turn[data-role="agent"][data-final="true"]', has_text="Bella Vista").first.wait_for(
        timeout=30000
    )
    page.fill("#talk-text", "¿A qué hora abren?")
    page.press("#talk-text", "Enter")
    answer = page.locator('li.turn[data-role="agent"][data-final="true"]', has_text="Abrimos todos los días")
    answer.first.wait_for(timeout=20000)
    greeting = page.locator('li.turn[data-role="agent"]').first.inner_text()
    assert "Hola, le atiende Bella Vista" in greeting
    page.click("#talk-stop")
    wait_for_js(page, "document.querySelector('#talk').dataset.state === 'ended'", timeout=10000)
    assert errors == []


# ---- direct media (browser protocol v2) ---------------------------------------------------------

ROOM_TOKEN = "eyJ-test-room-token-not-for-the-page-text"
LIVEKIT_NOTE = "This room is our sandbox's: the LiveKit transport needs the real service."


class DirectEchoPeer(ThreadedPeer):
    """The echo provider's peer acting out a direct vendor: it sends a LiveKit `join` whose room is a
    closed loopback port, and records what reaches it."""

    def __init__(self, port: int, room_port: int):
        super().__init__(port)
        self.room_url, self.received = f"ws://127.0.0.1:{room_port}", []

    async def handler(self, ws):
        join = {"transport": "livekit", "url": self.room_url, "token": ROOM_TOKEN, "call_id": "room-1",
                "note": LIVEKIT_NOTE}  # fmt: skip
        await ws.send(json.dumps({"join": join}))
        async for message in ws:
            self.received.append(message)


@pytest.fixture(scope="module")
def direct_server():
    """A Daphne whose echo provider is a direct vendor; the page may connect to loopback rooms."""
    from tests.server import free_port, start_server

    yield from start_server({"ECHO_URL": f"ws://127.0.0.1:{free_port()}/?direct_media=1",
                             "DIRECT_MEDIA_ORIGINS": "ws://127.0.0.1:* http://127.0.0.1:*"})  # fmt: skip


def test_a_direct_call_loads_the_vendored_sdks_and_reacts_to_join(direct_server, browser):
    """`ready` says the media is direct, `join` sends the page to a LiveKit room: it loads the
    vendored SDK under the CSP, tries the room (a closed port: no LiveKit server runs here), shows
    the server's note and a clear error without the token, and keeps sending recording frames."""
    from tests.server import free_port

    server = direct_server
    port = int(server.env["ECHO_URL"].split(":")[2].split("/")[0])
    with DirectEchoPeer(port, free_port()) as peer:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        csp = watch_csp(page)
        log_in(page, server)
        page.check("input[name=provider][value=echo]")
        page.click("button.primary")
        page.wait_for_url(TALK_PAGE)
        page.click("#talk-start")
        wait_for_js(page, "talkState.direct && talkState.direct.state === 'failed'", timeout=30000)
        wait_for_js(page, "window.talkState.direct.userFrames > 25")  # half a second of the microphone
        talk = "({media: talkState.media, direct: talkState.direct, errors: talkState.errors})"
        state = page.evaluate(talk)
        sdks = page.evaluate("""async () => {
            const root = document.getElementById('talk');
            const lk = await import(root.dataset.livekitSdk);
            const retell = await import(root.dataset.retellSdk);
            return [typeof lk.Room, lk.version, typeof retell.RetellWebClient];
        }""")
        shown = page.locator("#talk-errors").inner_text()
        note = page.locator(".talk-note").all_inner_texts()
        content = page.content()
        page.click("#talk-stop")
        wait_for_js(page, "document.querySelector('#talk').dataset.state === 'ended'", timeout=10000)
    assert state["media"] == "direct"
    assert (state["direct"]["transport"], state["direct"]["callId"]) == ("livekit", "room-1")
    assert sdks == ["function", "2.23.0", "function"]
    print(f"the page says: {shown!r}")  # pytest -s
    assert "Could not join the LiveKit room" in shown, shown
    assert LIVEKIT_NOTE in note
    assert [e["code"] for e in state["errors"]] == ["join_failed"]  # the tagged frames were accepted
    assert ROOM_TOKEN not in shown and ROOM_TOKEN not in content and ROOM_TOKEN not in str(state)
    assert not any(isinstance(m, bytes) for m in peer.received)  # no audio went to the vendor
    assert not any(ROOM_TOKEN in m for m in peer.received if isinstance(m, str))
    assert errors == [] and csp == []
