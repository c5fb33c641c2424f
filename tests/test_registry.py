"""The registry entry drives everything the site knows about a provider: its variables and the
config they parse into, when it counts as configured, its sandbox, its topic options, the session
key of a user's token, and where its speech recognition is our English-only engine."""

import importlib
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.urls import reverse

from playground import config
from playground.sandbox.__main__ import MODULES
from sessions import auth_liku
from sessions.models import Topic
from sessions.upstreams import registry

ROOT = Path(__file__).resolve().parent.parent
VARIABLES = [(p.key, v) for p in registry.PROVIDERS.values() for v in p.variables]
# A value of each kind of variable as written in the environment, and as the config holds it.
SAMPLES = {
    "url": lambda v: (f"{v.schemes[0]}://vendor.example.test/", f"{v.schemes[0]}://vendor.example.test"),
    "secret": lambda v: (" s3cret", " s3cret"),  # as written
    "text": lambda v: (" model-1 ", "model-1"),
    "bool": lambda v: ("yes", True),
    "int": lambda v: (str(v.hi), v.hi),
    "choice": lambda v: (v.choices[-1], v.choices[-1]),
}


def lookup(config_: dict, key: str):
    for part in key.split("."):
        config_ = config_[part]
    return config_


@pytest.mark.parametrize("provider,var", VARIABLES, ids=[v.name for _, v in VARIABLES])
def test_each_variable_of_an_entry_parses_into_its_config_key(provider, var):
    raw, parsed = SAMPLES[var.kind](var)
    # with the variables that this one makes required (LLM_MODEL with LLM_BASE_URL)
    companions = {v.name: SAMPLES[v.kind](v)[0] for _, v in VARIABLES if v.required_with == var.name}
    env = {var.name: raw, **companions}
    providers = config.providers(env, registry.variables())
    assert lookup(providers[provider], var.key) == parsed
    unset = config.providers({}, registry.variables())[provider]
    assert not registry.PROVIDERS[provider].configured(unset)  # nothing set: its sandbox (or offline)


URLS = [(key, v) for key, v in VARIABLES if v.kind == "url"]


@pytest.mark.parametrize("provider,var", URLS, ids=[v.name for _, v in URLS])
def test_a_url_of_the_wrong_scheme_names_the_variable(provider, var):
    with pytest.raises(ImproperlyConfigured, match=rf"^{var.name} must be a {'/'.join(var.schemes)} URL"):
        config.providers({var.name: "ftp://vendor.example.test/"}, registry.variables())


def test_bad_numbers_and_choices_name_the_variable():
    with pytest.raises(ImproperlyConfigured, match=r"^LIKU_CHUNK_BYTES must be between 2 and 65536"):
        config.providers({"LIKU_CHUNK_BYTES": "1"}, registry.variables())
    with pytest.raises(ImproperlyConfigured, match=r"^AIVOCO_VOICE_SPELLING must be one of seed, demo, cli"):
        config.providers({"AIVOCO_VOICE_SPELLING": "Girl"}, registry.variables())
    with pytest.raises(ImproperlyConfigured, match=r"^LIKU_LOGIN must be one of"):
        config.providers({"LIKU_LOGIN": "maybe"}, registry.variables())
    with pytest.raises(ImproperlyConfigured, match=r"^LLM_MODEL must be set when LLM_BASE_URL is set"):
        config.providers({"LLM_BASE_URL": "http://127.0.0.1:9/v1"}, registry.variables())


def test_every_variable_of_every_entry_is_documented():
    listed = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for _, var in VARIABLES:
        assert f"{var.name}=" in listed, var.name
        assert f"`{var.name}`" in readme, var.name


def test_settings_read_the_entries_variables(settings):
    """settings.PROVIDERS has exactly the keys the entries' variables name (LIKU_LOGIN included)."""
    for provider in registry.PROVIDERS.values():
        assert {v.key.split(".")[0] for v in provider.variables} == set(settings.PROVIDERS[provider.key])
    assert settings.LIKU_LOGIN is settings.PROVIDERS["liku"]["login"]


# ---- configured, mode -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "provider,config_,expected",
    [
        ("liku", {}, "sandbox"),
        ("liku", {"token": "t"}, "real"),
        ("liku", {"email": "a@b.test", "password": "p"}, "real"),
        ("liku", {"email": "a@b.test"}, "sandbox"),  # an email alone is no account
        ("liku", {"login": True}, "real"),  # users bring their own token
        ("lokutor", {"api_key": "k"}, "real"),
        ("aivoco", {"api_key": "k"}, "real"),
        ("aivoco", {"url": "https://aivoco.example.test"}, "sandbox"),  # a URL is not a credential
        ("echo", {}, "unavailable"),  # no sandbox: hidden from the pick page
        ("echo", {"url": "ws://127.0.0.1:9"}, "real"),
        ("retell", {}, "sandbox"),
        ("retell", {"api_key": "k"}, "real"),
        ("flow", {}, "sandbox"),
        ("flow", {"api_key": "k"}, "real"),
        ("local", {}, "offline"),
    ],
)
def test_the_entry_says_when_a_provider_is_configured(settings, provider, config_, expected):
    settings.PROVIDERS = {**settings.PROVIDERS, provider: config_}
    mode, why = registry.mode(provider)
    assert mode == expected, why
    if expected in ("real", "sandbox"):
        assert registry.has_credentials(provider) is (expected == "real")
    assert registry.upstream_config(provider)["sandbox"] is (expected == "sandbox")


def test_the_sandbox_mode_names_every_way_to_configure_the_real_service():
    assert registry.mode("liku")[1] == (
        "runs against its sandbox; set LIKU_TOKEN, or LIKU_EMAIL and LIKU_PASSWORD, or LIKU_LOGIN=1 "
        "for the real service"
    )


def test_an_entry_whose_client_is_not_built_yet_is_unavailable(monkeypatch, settings):
    """Every seed provider is built now; a new entry listed before its client module exists."""
    future = registry.Provider("future", "Future voice", "sessions.upstreams.future.FutureUpstream",
                               {"default": "Its voice"}, ("en",),
                               variables=(registry.Var.secret("FUTURE_API_KEY"),),
                               configured_by=(("api_key",),))  # fmt: skip
    monkeypatch.setitem(registry.PROVIDERS, "future", future)
    settings.PROVIDERS = {**settings.PROVIDERS, "future": {"api_key": "k"}}
    assert registry.mode("future") == (
        "unavailable",
        "its client is not built yet (it will be configured by FUTURE_API_KEY)",
    )


@pytest.mark.parametrize(
    "provider,config_,english_only",
    [("local", {}, True), ("lokutor", {}, True), ("lokutor", {"api_key": "k"}, False),
     ("aivoco", {}, True), ("echo", {"url": "ws://127.0.0.1:9"}, False)],
)  # fmt: skip
def test_english_only_recognition_follows_the_mode(settings, provider, config_, english_only):
    """Our engine (English only) hears the user offline and in every sandbox; a real service hears
    the languages it offers."""
    settings.PROVIDERS = {**settings.PROVIDERS, provider: config_}
    assert registry.english_only(provider) is english_only


# ---- every entry is complete: a client, a sandbox, its schema ---------------------------------


@pytest.mark.parametrize("provider", registry.PROVIDERS.values(), ids=list(registry.PROVIDERS))
def test_every_entry_is_complete(provider):
    variables = {v.key for v in provider.variables}
    for group in provider.configured_by:
        assert set(group) <= variables, f"{provider.key}: {group} names no variable's key"
    assert provider.configured_by or provider.offline  # else it could never leave its sandbox
    for option in provider.options:
        assert option.kind in registry.OPTION_KINDS
    if provider.sandbox and importlib.util.find_spec(provider.sandbox):
        module = importlib.import_module(provider.sandbox)
        assert callable(module.make_app) and callable(module.client_config)
        assert MODULES[provider.key] == provider.sandbox  # `python -m playground.sandbox <key>` runs it


def test_the_user_token_key_is_the_one_the_liku_login_writes():
    assert auth_liku.SESSION_KEY == registry.get("liku").user_token_key == "liku_token"
    others = [p.key for p in registry.PROVIDERS.values() if p.user_token_key and p.key != "liku"]
    assert others == []  # no other provider reads a token from the session


# ---- topic options: the entry's schema ---------------------------------------------------------

# A value each kind of option refuses, and one it accepts.
WRONG = {"id": [55], "text": 5, "names": ["current_time", 3], "list": {"a": 1}, "object": ["a"],
         "switch": "yes"}  # fmt: skip
RIGHT = {"id": 55, "text": "x", "names": ["current_time"], "list": [], "object": {}, "switch": True}
OPTIONS = [(p, o) for p in registry.PROVIDERS.values() for o in p.options]


def make_topic(options):
    return Topic.objects.create(title="T", slug="t", persona="p", greeting="hi", provider_options=options)


def valid_options(provider) -> dict:
    return {o.name: RIGHT[o.kind] for o in provider.options}


def problem(options) -> str:
    with pytest.raises(ValidationError) as caught:
        make_topic(options)
    return " ".join(caught.value.message_dict["provider_options"])


@pytest.mark.django_db
@pytest.mark.parametrize("provider", [p for p in registry.PROVIDERS.values() if p.options],
                         ids=lambda p: p.key)  # fmt: skip
def test_a_topic_with_every_option_of_an_entry_saves_and_an_unknown_key_does_not(provider):
    options = valid_options(provider)
    assert make_topic({provider.key: options}).options_for(provider.key) == options
    Topic.objects.all().delete()
    allowed = ", ".join(sorted(provider.option_keys))
    expected = f"Unknown option(s) for {provider.key}: colour (allowed: {allowed})."
    assert problem({provider.key: {**options, "colour": "red"}}) == expected


@pytest.mark.django_db
@pytest.mark.parametrize("provider,option", OPTIONS, ids=[f"{p.key}.{o.name}" for p, o in OPTIONS])
def test_an_option_of_the_wrong_kind_is_refused(provider, option):
    options = {**valid_options(provider), option.name: WRONG[option.kind]}
    what = registry.OPTION_KINDS[option.kind][1]
    assert problem({provider.key: options}) == f"Option {option.name} for {provider.key} must be {what}."


REQUIRED = [(p, o) for p, o in OPTIONS if o.required]


@pytest.mark.django_db
@pytest.mark.parametrize("provider,option", REQUIRED, ids=[f"{p.key}.{o.name}" for p, o in REQUIRED])
def test_a_required_option_is_needed_whenever_the_provider_has_options(provider, option):
    others = {k: v for k, v in valid_options(provider).items() if k != option.name}
    needed = f"Options for {provider.key} need a {option.name}."
    assert problem({provider.key: others}) == needed
    assert problem({provider.key: {**others, option.name: " "}}) == needed  # blank is missing
    assert make_topic({provider.key: {}}).options_for(provider.key) == {}  # no options at all: nothing needed


def test_liku_needs_a_topic_id_and_aivoco_takes_function_names():
    assert [o.name for o in registry.get("liku").options if o.required] == ["topic_id"]
    assert registry.get("aivoco").option_keys == {"functions"}
    assert registry.get("flow").option_keys >= {"template_id"}


def test_the_topic_script_knows_no_provider(topic):
    """Aivoco's functions stay in its options (its client reads them there), not in the script."""
    topic.provider_options = {"aivoco": {"functions": ["current_time"]}}
    script = topic.to_script()
    assert not hasattr(script, "functions")
    assert topic.options_for("aivoco") == {"functions": ["current_time"]}


def test_the_admin_explains_each_providers_options_from_its_entry(client, staff, topic):
    client.force_login(staff)
    html = client.get(reverse("admin:voice_sessions_topic_change", args=[topic.pk])).content.decode()
    assert "liku: topic_id (a number or text, required), face_id (a number or text)" in html
    assert "aivoco: functions (a list of names)" in html
