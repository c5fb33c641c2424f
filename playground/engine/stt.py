"""Speech to text with pocketsphinx and a language model built from the topic.

Measured on the 2-core dev machine (see tests/engine and bench/agent_latency.py):

* A Decoder over the full CMU dictionary takes ~0.6 s to create, and adding a
  small LM to it ~14 s (every dictionary word is pushed into the LM). A
  Decoder whose dictionary holds only the topic's words takes ~20 ms and
  ~7 MB, so every conversation gets its own Decoder (they are not
  thread-safe) instead of sharing a pool.
* pocketsphinx keeps the GIL while decoding, so the executor does not give the
  event loop its CPU back; it only keeps each blocking slice short. Audio is
  decoded incrementally while the user talks (~7 ms of GIL per 100 ms of
  audio), which leaves almost nothing to do when the turn ends.
* The second "fwdflat" pass costs ~70 ms at end of utterance and did not
  change results on topic LMs, so it is off by default.

The acoustic model and dictionary files load once per process; the topic LM
is built once per topic slug + content hash.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .script import Script
from .text import words

# Things people say in any conversation, so that "yes" or "thank you" are in the LM of every topic.
COMMON_PHRASES = (
    "yes",
    "no",
    "yes please",
    "no thanks",
    "okay",
    "thank you",
    "thanks",
    "hello",
    "hi",
    "goodbye",
    "bye",
    "sorry",
    "what",
    "can you repeat that",
    "i don't know",
    "that's all",
    "help",
    "what can you do",
    "i have a question",
)
_lock = threading.Lock()
_cmudict: dict[str, list[str]] | None = None
_models: dict[str, TopicModel] = {}
_tmpdir: str | None = None
_build_lock = threading.Lock()  # topic models are built under it (not `_lock`: a build takes that)
# pocketsphinx holds the GIL, so more threads than cores would only add contention.
EXECUTOR = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="stt")


@dataclass(frozen=True)
class TopicModel:
    key: str
    lm_path: str
    dict_path: str
    vocabulary: frozenset[str]


def _model_dir() -> str:
    import pocketsphinx

    return pocketsphinx.get_model_path()


def pronunciations() -> dict[str, list[str]]:
    """The CMU dictionary lines by word (all variants), parsed once per process."""
    global _cmudict
    with _lock:
        if _cmudict is None:
            table: dict[str, list[str]] = {}
            with open(os.path.join(_model_dir(), "en-us", "cmudict-en-us.dict"), encoding="utf-8") as fh:
                for line in fh:
                    head = line.split(" ", 1)[0]
                    table.setdefault(re.sub(r"\(\d+\)$", "", head), []).append(line)
            _cmudict = table
        return _cmudict


def corpus_lines(script: Script) -> list[str]:
    """Sentences the topic expects, as lower-case word lines (the LM's training text).

    Words missing from the pronunciation dictionary split their line: the
    decoder could not produce them anyway, and keeping their neighbours as
    separate lines keeps the n-grams honest.
    """
    known = pronunciations()
    texts = [*script.phrases, *(f.question for f in script.faq), *COMMON_PHRASES]
    texts += [k for f in script.faq for k in f.keywords]
    lines: list[str] = []
    for text in texts:
        run: list[str] = []
        for word in [*words(text), None]:
            if word is not None and word in known:
                run.append(word)
            elif run:
                lines.append(" ".join(run))
                run = []
    return lines


def _tmp() -> str:
    global _tmpdir
    if _tmpdir is None:
        _tmpdir = tempfile.mkdtemp(prefix="voice-lm-")
        atexit.register(shutil.rmtree, _tmpdir, True)
    return _tmpdir


def topic_model(script: Script) -> TopicModel:
    """The topic's LM and dictionary files, built once per slug + content hash."""
    lines = corpus_lines(script)
    digest = hashlib.sha1("\n".join(lines).encode()).hexdigest()[:12]
    key = f"{re.sub(r'[^a-z0-9_-]+', '-', script.slug.lower())}-{digest}"
    # One build at a time, the check inside: calls of one topic starting together (a fresh worker's
    # first calls) each built it before, rewriting the same files while another call's decoder
    # might be reading them, and could each make a temporary directory of their own.
    with _build_lock:
        if key not in _models:
            _models[key] = _build(key, lines)
        return _models[key]


def _build(key: str, lines: list[str]) -> TopicModel:
    from pocketsphinx.lm import ArpaBoLM

    lm = ArpaBoLM(text="\n".join(lines) + "\n", add_start=True)
    lm.compute()
    lm_path = os.path.join(_tmp(), key + ".arpa")
    dict_path = os.path.join(_tmp(), key + ".dict")
    lm.write_file(lm_path)
    vocabulary = frozenset(w for line in lines for w in line.split())
    known = pronunciations()
    with open(dict_path, "w", encoding="utf-8") as fh:
        fh.writelines(line for word in sorted(vocabulary) for line in known[word])
    return TopicModel(key, lm_path, dict_path, vocabulary)


def make_decoder(script: Script | None, fwdflat: bool = False):
    """A fresh Decoder for `script`'s LM, or pocketsphinx's generic English LM when None."""
    from pocketsphinx import Decoder

    options = {"loglevel": "FATAL", "fwdflat": fwdflat, "samprate": 16000}
    if script is None:
        return Decoder(**options)
    model = topic_model(script)
    return Decoder(lm=model.lm_path, dict=model.dict_path, **options)


class Recognizer:
    """Blocking, single-utterance-at-a-time wrapper over one Decoder; call from one thread at a time."""

    def __init__(self, script: Script | None, fwdflat: bool = False):
        self._decoder = make_decoder(script, fwdflat)
        self._open = False
        self._generation = 0
        # A cancelled turn may leave a call running in one executor thread while
        # the next turn starts in another; the Decoder must never see both at
        # once, and audio of an abandoned turn must not leak into the next one.
        self._lock = threading.Lock()

    def begin(self) -> int:
        """Start an utterance; returns its generation, which `process` and `finish` must pass."""
        with self._lock:
            if self._open:
                self._decoder.end_utt()
            self._decoder.start_utt()
            self._open = True
            self._generation += 1
            return self._generation

    def process(self, pcm: bytes, generation: int | None = None) -> None:
        with self._lock:
            if pcm and self._open and generation in (None, self._generation):
                self._decoder.process_raw(pcm, False, False)

    def partial(self) -> str:
        with self._lock:
            hyp = self._decoder.hyp()
            return hyp.hypstr if hyp else ""

    def finish(self, generation: int | None = None) -> str:
        with self._lock:
            if generation not in (None, self._generation):
                return ""
            if self._open:
                self._decoder.end_utt()
                self._open = False
            hyp = self._decoder.hyp()
            return hyp.hypstr if hyp else ""

    def transcribe(self, pcm: bytes) -> str:
        self.begin()
        for i in range(0, len(pcm), 3200):
            self.process(pcm[i : i + 3200])
        return self.finish()


class Utterance:
    """Streams one utterance into a Recognizer from the event loop.

    Audio pushed with `push()` is decoded in the STT executor by one pump task
    (owned here; `finish()` and `cancel()` await it), in batches of whatever
    arrived meanwhile. Every `partial_every` seconds a cheap partial
    hypothesis goes to `on_partial` if it changed.
    """

    def __init__(self, recognizer: Recognizer, on_partial: Callable[[str], None], partial_every: float = 0.3):
        self._rec = recognizer
        self._on_partial = on_partial
        self._every = partial_every
        self._chunks: list[bytes] = []
        self._wake = asyncio.Event()
        self._done = False
        self._last_partial = ""
        self._generation = -1
        self._task = asyncio.get_running_loop().create_task(self._pump(), name="stt-utterance")

    def push(self, pcm: bytes) -> None:
        self._chunks.append(pcm)
        self._wake.set()

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(EXECUTOR, fn, *args)

    async def _pump(self) -> str:
        self._generation = await self._run(self._rec.begin)
        next_partial = time.monotonic() + self._every
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._chunks = b"".join(self._chunks), []
            await self._run(self._rec.process, batch, self._generation)
            if self._done and not self._chunks:
                return await self._run(self._rec.finish, self._generation)
            if time.monotonic() >= next_partial:
                next_partial = time.monotonic() + self._every
                await self._emit_partial()

    async def _emit_partial(self) -> None:
        text = await self._run(self._rec.partial)
        if text and text != self._last_partial:
            self._last_partial = text
            self._on_partial(text)

    async def finish(self) -> str:
        """Decode what is left and return the final text."""
        self._done = True
        self._wake.set()
        return await self._task

    async def cancel(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):
            pass  # a failed or cancelled turn has nothing left to report
        # The decoder may be mid-utterance; close it unless a newer turn already began.
        await asyncio.get_running_loop().run_in_executor(EXECUTOR, self._rec.finish, self._generation)
