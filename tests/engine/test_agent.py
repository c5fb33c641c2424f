"""The offline agent end to end, without Django: audio in, events out."""

import asyncio

import pytest

from playground.engine.agent import Agent
from playground.engine.events import Audio, Interrupted, Status, Transcript
from playground.engine.text import word_error_rate

from .helpers import Events, feed
from .speech import noise, silence


def agent_final(event):
    return isinstance(event, Transcript) and event.role == "agent" and event.final


def user_final(event):
    return isinstance(event, Transcript) and event.role == "user" and event.final


@pytest.fixture
async def make_agent(script):
    agents = []

    async def make(**options):
        agent = Agent(script, voice="en-us+f3", **options)
        await agent.start()
        agents.append(agent)
        return agent, Events(agent)

    yield make
    for agent in agents:
        await agent.close()


async def test_spoken_question_gets_greeting_then_transcript_then_spoken_answer(make_agent, speech, script):
    agent, events = await make_agent(speed=8.0)
    greeting = await events.wait_for(agent_final)
    assert greeting.text == script.greeting
    first_text = next(e for e in events.seen if isinstance(e, Transcript))
    assert first_text.role == "agent" and first_text.text.startswith("Hello")
    mark = len(events.seen)

    sentence = "do you have vegetarian options"
    pcm = speech.pcm(sentence)
    await feed(agent, silence(500), speedup=5)
    await feed(agent, pcm + silence(1000), speedup=5)
    user = await events.wait_for(user_final, start=mark)
    assert word_error_rate(sentence, user.text) <= 0.35
    stream_start = (len(silence(500)) + 0) / 32  # where our speech began in the input stream, in ms
    assert abs(user.start_ms - stream_start) < 300
    assert abs(user.end_ms - (stream_start + len(pcm) / 32)) < 400

    answer = await events.wait_for(agent_final, start=mark)
    assert answer.text == script.faq[2].answer and not answer.interrupted
    after = events.seen[events.seen.index(user) : events.seen.index(answer)]
    assert [e.state for e in after if isinstance(e, Status)][:1] == ["speaking"]
    audio = [e for e in after if isinstance(e, Audio)]
    assert audio and {a.rate for a in audio} == {22050}
    assert all(20 <= len(a.pcm) / 2 / a.rate * 1000 <= 100 for a in audio)
    partials = [e for e in after if isinstance(e, Transcript) and e.role == "agent" and not e.final]
    assert partials[0].text.startswith("Yes, about half")  # shown as the first clause starts
    assert agent.last_timings["stt_final_ms"] < 300


async def test_user_partials_arrive_while_talking(make_agent, speech):
    agent, events = await make_agent(greet=False)
    pcm = speech.pcm("I would like to book a table for two")
    await feed(agent, silence(300) + pcm + silence(800), speedup=2)
    final = await events.wait_for(user_final)
    partials = [e for e in events.seen if isinstance(e, Transcript) and e.role == "user" and not e.final]
    assert partials and all(p.id == final.id for p in partials)
    assert events.seen.index(partials[0]) < events.seen.index(final)


@pytest.mark.slow
async def test_barge_in_stops_the_agent_and_reports_what_was_heard(make_agent, speech, script):
    agent, events = await make_agent()  # real-time pacing: the greeting takes ~3 s
    await events.wait_for(lambda e: isinstance(e, Status) and e.state == "speaking")
    await feed(agent, silence(1000))
    await feed(agent, speech.pcm("where is the restaurant") + silence(800))
    interrupted = await events.wait_for(lambda e: isinstance(e, Interrupted))
    cut = events.seen[events.seen.index(interrupted) + 1]
    assert agent_final(cut) and cut.interrupted
    assert cut.text and len(cut.text) < len(script.greeting)
    assert script.greeting.startswith(cut.text.rsplit(" ", 1)[0])
    user = await events.wait_for(user_final)
    between = events.seen[events.seen.index(interrupted) : events.seen.index(user)]
    assert not any(isinstance(e, Audio) for e in between)  # the agent went quiet at once
    assert word_error_rate("where is the restaurant", user.text) <= 0.35
    answer = await events.wait_for(agent_final, start=events.seen.index(user))
    assert answer.text == script.faq[3].answer


async def test_noise_does_not_interrupt_the_agent(make_agent, script):
    agent, events = await make_agent(speed=2.0)
    await events.wait_for(lambda e: isinstance(e, Status) and e.state == "speaking")
    await feed(agent, noise(1500, level=0.05), speedup=2)
    greeting = await events.wait_for(agent_final)
    assert greeting.text == script.greeting and not greeting.interrupted
    assert not any(isinstance(e, Interrupted) for e in events.seen)


async def test_typed_text_is_answered_like_speech(make_agent, script):
    agent, events = await make_agent(greet=False, speed=0)
    await agent.send_text("Is there parking nearby?")
    user = await events.wait_for(user_final)
    assert user.text == "Is there parking nearby?"
    answer = await events.wait_for(agent_final)
    assert answer.text == script.faq[4].answer
    assert agent.history[-2:] == [
        {"role": "user", "content": user.text},
        {"role": "assistant", "content": answer.text},
    ]


async def test_close_cancels_everything_and_ends_events(script, speech):
    """Closing mid-reply and mid-utterance leaves no task behind, and a second close is harmless."""
    agent = Agent(script)
    await agent.start()
    events = Events(agent)
    await events.wait_for(lambda e: isinstance(e, Audio))
    await feed(agent, silence(200) + speech.pcm("can I pay by card")[:16000], speedup=4)  # mid-utterance
    await asyncio.wait_for(agent.close(), 2.5)
    await events.finished()
    await agent.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_llm_reply_is_spoken_clause_by_clause_with_the_conversation(make_agent, script):
    from .test_responder import FakeLLM

    async with FakeLLM() as server:
        llm = {"base_url": server.base_url, "model": "m"}
        agent, events = await make_agent(greet=False, speed=0, llm=llm)
        await agent.send_text("Can I book a table?")
        answer = await events.wait_for(agent_final)
    assert answer.text == "Sure, we can do that. Anything else?"
    partials = [e.text for e in events.seen if isinstance(e, Transcript) and e.role == "agent"]
    assert partials[:-1] == ["Sure, we can do that.", "Sure, we can do that. Anything else?"]
    assert server.requests[0][1]["messages"][1:] == [{"role": "user", "content": "Can I book a table?"}]


async def _pieces(*texts):
    for text in texts:
        yield text


async def test_say_speaks_given_text_as_an_agent_turn_and_nothing_for_empty_text(make_agent):
    """`say` (a vendor's opening line or reminder): spoken like the greeting; an empty line (the user
    speaks first) is silence, not a failed reply."""
    from playground.engine.events import Failure

    agent, events = await make_agent(speed=8.0, greet=False)
    agent.say(_pieces(""))
    await events.wait_for(lambda e: isinstance(e, Status) and e.state == "listening", start=1)
    await asyncio.sleep(0.1)
    assert not [e for e in events.seen if isinstance(e, (Failure, Audio, Transcript))]
    agent.say(_pieces("Hello there."))
    said = await events.wait_for(agent_final)
    assert said.text == "Hello there."
    assert [e for e in events.seen if isinstance(e, Audio)]
