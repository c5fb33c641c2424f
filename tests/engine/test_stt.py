"""Speech to text with the topic's language model."""

import asyncio
import concurrent.futures
import os
import threading
import time

import pytest

from playground.engine import stt
from playground.engine.demo import SENTENCES
from playground.engine.text import word_error_rate


@pytest.fixture(scope="module")
def topic_recognizer(script):
    return stt.Recognizer(script)


def test_topic_sentences_are_recognised(topic_recognizer, speech):
    for sentence in SENTENCES:
        text = topic_recognizer.transcribe(speech.pcm(sentence))
        assert word_error_rate(sentence, text) <= 0.35, (sentence, text)


@pytest.mark.slow
def test_topic_model_beats_the_generic_model(topic_recognizer, speech):
    """The LM built from the topic cuts the word error rate on the topic's sentences."""
    generic = stt.Recognizer(None)
    samples = [(s, speech.pcm(s, "awb")) for s in SENTENCES]  # a voice the generic model finds hard
    topic_wer = sum(word_error_rate(s, topic_recognizer.transcribe(pcm)) for s, pcm in samples) / len(samples)
    generic_wer = sum(word_error_rate(s, generic.transcribe(pcm)) for s, pcm in samples) / len(samples)
    assert topic_wer < generic_wer
    assert topic_wer <= 0.1


def test_topic_model_is_built_once_per_content(script):
    assert stt.topic_model(script) is stt.topic_model(script)
    changed = type(script)(**{**script.__dict__, "phrases": (*script.phrases, "a window table")})
    assert stt.topic_model(changed).key != stt.topic_model(script).key
    assert "window" in stt.topic_model(changed).vocabulary


def test_words_missing_from_the_dictionary_are_left_out(script):
    odd = type(script)(**{**script.__dict__, "slug": "odd", "phrases": ("book a zqxwv table",)})
    lines = stt.corpus_lines(odd)
    assert "book a" in lines and "table" in lines
    assert not any("zqxwv" in line for line in lines)


async def test_streaming_utterance_gives_partials_then_the_final_text(script, speech):
    recognizer = stt.Recognizer(script)
    partials = []
    utterance = stt.Utterance(recognizer, partials.append, partial_every=0.0)
    pcm = speech.pcm("do you have vegetarian options")
    for i in range(0, len(pcm), 3200):
        utterance.push(pcm[i : i + 3200])
        await asyncio.sleep(0.01)
    final = await utterance.finish()
    assert final == "do you have vegetarian options"
    assert partials and len(partials[0].split()) < len(final.split())


def test_calls_of_one_new_topic_starting_together_all_get_one_model_and_a_recogniser(script):
    """Calls of a topic that start at once on a fresh process (a fresh worker's first calls) share
    one build of its model: its files are written once, never while another call's decoder may be
    reading them. (CI once saw such a call fail with "Failed to initialize PocketSphinx".)"""
    for round_ in range(4):
        fresh = type(script)(**{**script.__dict__, "slug": f"together-{round_}-{time.time_ns()}"})
        start = threading.Barrier(6)

        def load(fresh=fresh, start=start):
            start.wait()
            model = stt.topic_model(fresh)
            return model, os.stat(model.lm_path).st_mtime_ns, stt.Recognizer(fresh)

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            loads = [load.result() for load in [pool.submit(load) for _ in range(6)]]  # a failure raises
        assert len({id(model) for model, _, _ in loads}) == 1
        model = loads[0][0]
        # written once: no later write changed the file any caller saw
        assert {written for _, written, _ in loads} == {os.stat(model.lm_path).st_mtime_ns}
