"""A production-like deployment over real Daphne processes: what an attacker and an operator see.

The servers run with DEBUG unset (tests/server.py) and fake provider keys in their
environment; no page, error or not, may show one of them or the SECRET_KEY.
"""

import os
import re
import secrets
import subprocess
import sys

import httpx
import pytest
from django.test import RequestFactory
from django.views import defaults

from tests.server import ROOT, start_server

pytestmark = pytest.mark.slow

# Fake keys of the outside world: each a value that must never reach a response.
FAKE_KEYS = {
    name: f"fake-{name.lower().replace('_', '-')}-{secrets.token_hex(8)}"
    for name in ("LOKUTOR_API_KEY", "AIVOCO_API_KEY", "RETELL_API_KEY", "SPEECHMATICS_API_KEY",
                 "LIVEKIT_API_SECRET", "LIKU_PASSWORD", "LLM_API_KEY")
}  # fmt: skip
THREE_MB = 3 * 1024 * 1024  # over Django's 2.5 MB DATA_UPLOAD_MAX_MEMORY_SIZE


@pytest.fixture(scope="module")
def production():
    yield from start_server(extra_env=FAKE_KEYS)


@pytest.fixture(scope="module")
def developer():
    """The opt-in developer run, DEBUG=1, with the same keys in its environment."""
    yield from start_server(extra_env={**FAKE_KEYS, "DEBUG": "1"})


def secrets_in(server, text: str) -> list[str]:
    """The names of the secrets of `server` that `text` shows."""
    values = {**FAKE_KEYS, "SECRET_KEY": server.env["SECRET_KEY"]}
    return [name for name, value in values.items() if value in text]


def huge_login_post(server) -> httpx.Response:
    """A 3 MB login form, sent as a browser would: with the CSRF cookie from the login page."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        client.get("/login/")
        body = b"username=x&password=" + b"y" * THREE_MB
        token = client.cookies["csrftoken"]
        headers = {"Content-Type": "application/x-www-form-urlencoded", "X-CSRFToken": token}
        return client.post("/login/", content=body, headers=headers)


def assert_plain_site_page(response: httpx.Response, status: int, heading: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert '<header class="site-header"><a class="brand" href="/">Voice Playground</a>' in page
    assert f"<h1>{heading}</h1>" in page
    for debug_sign in ("Traceback", "DEBUG = True", "settings.py", "Request Method", "SECRET_KEY"):
        assert debug_sign not in page, debug_sign


def test_error_pages_in_production_are_plain_and_leak_nothing(production):
    too_big = huge_login_post(production)
    assert_plain_site_page(too_big, 400, "Bad request")
    missing = httpx.get(f"{production.url}/no/such/page/?token=abc")
    assert_plain_site_page(missing, 404, "Page not found")
    no_csrf = httpx.post(f"{production.url}/login/", data={"username": "x", "password": "y"})
    assert_plain_site_page(no_csrf, 403, "Form expired")
    for response in (too_big, missing, no_csrf):
        assert secrets_in(production, response.text) == []
        # The error page's stylesheet is served (WhiteNoise, DEBUG off).
        css = re.search(r'<link rel="stylesheet" href="([^"]+)"', response.text).group(1)
        assert httpx.get(production.url + css).status_code == 200


def test_the_developer_debug_page_masks_every_secret(developer):
    """DEBUG=1 shows Django's debug page with the settings, but no key among them."""
    response = huge_login_post(developer)
    assert response.status_code == 400
    assert "RequestDataTooBig" in response.text  # it is the debug page
    assert "PROVIDERS" in response.text  # with the settings listed
    assert secrets_in(developer, response.text) == []


def test_server_errors_render_without_any_context():
    """Django renders 500.html and 400.html with no request and no context: they must need none."""
    request = RequestFactory().get("/")
    for view, status, heading in [(defaults.server_error, 500, "Something went wrong"),
                                  (defaults.bad_request, 400, "Bad request")]:  # fmt: skip
        response = view(request, *([] if status == 500 else [Exception("bad")]))
        assert response.status_code == status
        assert f"<h1>{heading}</h1>" in response.content.decode()


def test_static_files_favicon_and_content_security_policy(production):
    login = httpx.get(f"{production.url}/login/")
    policy = login.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    # no inline script, no eval: WebAssembly only (the talk page's VAD, static/js/vad.js)
    assert directives["script-src"] == "'self' 'wasm-unsafe-eval'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in policy.replace("'wasm-unsafe-eval'", "")

    icon = re.search(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', login.text).group(1)
    assert re.fullmatch(r"/static/favicon\.[0-9a-f]{12}\.svg", icon)  # hashed by the manifest storage
    served = httpx.get(production.url + icon)
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/svg+xml"
    assert "immutable" in served.headers["cache-control"]  # WhiteNoise: hashed names cache forever
    ico = httpx.get(f"{production.url}/favicon.ico", follow_redirects=True)
    assert ico.status_code == 200
    assert ico.content == served.content


def documented_production_exports() -> str:
    """The `export` lines of the README's production section, as an operator would paste them."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Running on PostgreSQL + Redis", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    exports = [line for line in block.splitlines() if line.startswith("export ")]
    assert any("SECRET_KEY=" in line for line in exports)
    return "\n".join(exports)


def test_check_deploy_passes_on_the_documented_production_settings():
    """`manage.py check --deploy` finds nothing but the warnings the README explains."""
    script = f"set -e\n{documented_production_exports()}\nexec {sys.executable} manage.py check --deploy"
    # Only what the README sets: none of the test process's DEBUG, SECRET_KEY or settings module.
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    found = set(re.findall(r"\((\w+\.[EW]\d+)\)", result.stdout + result.stderr))
    explained = {"security.W005", "security.W021"}
    assert found <= explained, found
    readme = (ROOT / "README.md").read_text()
    for check in found:
        assert f"`{check}`" in readme, check
