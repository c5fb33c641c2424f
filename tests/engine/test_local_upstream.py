"""The offline agent behind the Upstream interface the relay uses."""

from playground.engine.script import Script
from sessions.upstreams.base import Audio, Session, Transcript, Upstream, UpstreamError
from sessions.upstreams.local import LANGUAGES, LocalAgent, catalogue

from .helpers import Events


def final_of(role):
    return lambda e: isinstance(e, Transcript) and e.role == role and e.final


def session(script: Script, **config) -> Session:
    return Session("c-1", script, voice="en-gb+f3", language="en", config=config)


async def test_local_agent_answers_typed_text_through_the_upstream_interface(script):
    upstream = LocalAgent(session(script, llm=None, lead_ms=100))
    assert isinstance(upstream, Upstream) and upstream.input_rate == 16000
    assert upstream.capabilities.accepts_text
    await upstream.connect()
    events = Events(upstream)
    try:
        await events.wait_for(lambda e: isinstance(e, Audio))  # the greeting is playing
        await upstream.send_audio(bytes(640))
        await upstream.send_text("Do you take card payments?")  # typing over the greeting cuts it short
        greeting = await events.wait_for(final_of("agent"))
        assert greeting.interrupted and script.greeting.startswith(greeting.text)
        user = await events.wait_for(final_of("user"))
        answer = await events.wait_for(final_of("agent"), start=events.seen.index(user))
        assert answer.text == script.faq[6].answer
        assert upstream.last_timings["responder_ms"] < 100
    finally:
        await upstream.close()
        await upstream.close()
    await events.finished()


async def test_start_failure_is_a_permanent_upstream_error(script, monkeypatch):
    upstream = LocalAgent(session(script))

    def broken(*args, **kwargs):
        raise OSError("model files missing")

    monkeypatch.setattr("playground.engine.stt.Recognizer", broken)
    try:
        await upstream.connect()
    except UpstreamError as exc:
        assert exc.permanent and "model files missing" in exc.message
    else:
        raise AssertionError("connect() should have failed")


def test_catalogue_lists_voices_per_language():
    voices = catalogue()
    assert set(voices) == set(LANGUAGES) >= {"en", "es", "fr", "de"}
    assert voices["en"][0] == ("en-us", "American English, male")
