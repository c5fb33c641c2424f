"""Text to speech: espeak-ng as a subprocess, one clause at a time, streamed.

espeak-ng renders a clause ~50x faster than real time and its first bytes
arrive within ~15 ms, so speaking clause by clause means the first clause is
audible while the rest of the reply is still being written or rendered.
piper is used only for voices keyed "piper:<model.onnx>" when the `piper`
command is installed; otherwise those keys fall back to espeak-ng.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import struct
from collections.abc import AsyncIterator

import numpy as np

from .text import split_clauses

RATE = 22050  # espeak-ng's output rate
LANGUAGES: dict[str, str] = {"en": "English", "es": "Spanish", "fr": "French", "de": "German"}
# espeak-ng voice names per language, with a label; "+f3" selects a female variant.
_ESPEAK: dict[str, tuple[tuple[str, str], ...]] = {
    "en": (("en-us", "American English"), ("en-gb", "British English")),
    "es": (("es", "Spanish (Spain)"), ("es-419", "Spanish (Latin America)")),
    "fr": (("fr-fr", "French (France)"), ("fr-be", "French (Belgium)")),
    "de": (("de", "German"),),
    # Not offered for the offline agent (LANGUAGES), but the Lokutor sandbox speaks them.
    "pt": (("pt-br", "Portuguese (Brazil)"), ("pt", "Portuguese (Portugal)")),
    "ko": (("ko", "Korean"),),
}
_VARIANTS = (("", "male"), ("+f3", "female"), ("+f1", "female 2"))
_SILENCE = 200  # |sample| below this counts as silence when trimming clause tails
_MAX_TAIL_S = 0.12  # espeak ends every clause with 300 ms of silence; keep a comma-sized pause


def voices_for(language: str, piper_dir: str | None = None) -> list[tuple[str, str]]:
    """(voice key, label) pairs offered for `language`; the first is the default."""
    voices = [
        (name + suffix, f"{label}, {kind}")
        for name, label in _ESPEAK.get(language, ())
        for suffix, kind in _VARIANTS
    ]
    return voices + _piper_voices(language, piper_dir)


def _piper_voices(language: str, piper_dir: str | None) -> list[tuple[str, str]]:
    if not piper_dir or not shutil.which("piper") or not os.path.isdir(piper_dir):
        return []
    return [
        (f"piper:{os.path.join(piper_dir, name)}", f"Piper {name[:-5]}")
        for name in sorted(os.listdir(piper_dir))
        if name.endswith(".onnx") and name.startswith(language)
    ]


def resolve_voice(language: str, voice: str | None) -> str:
    """A voice key that can speak: `voice` if valid for `language`, else the language's default."""
    if voice and voice.startswith("piper:") and shutil.which("piper") and os.path.exists(voice[6:]):
        return voice
    offered = [key for key, _ in voices_for(language)]
    if voice in offered:
        return voice
    return offered[0] if offered else "en-us"


def trim_tail(pcm: bytes, rate: int = RATE, keep_s: float = _MAX_TAIL_S) -> bytes:
    """`pcm` with trailing silence shortened to `keep_s`."""
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
    loud = np.nonzero(np.abs(samples.astype(np.int32)) > _SILENCE)[0]
    end = (int(loud[-1]) + 1 if len(loud) else 0) + int(keep_s * rate)
    return pcm[: min(len(samples), end) * 2]


def _wav_data_offset(header: bytes) -> int | None:
    """Byte offset of the sample data in a (possibly still growing) WAV stream, None if not there yet."""
    pos = 12
    while pos + 8 <= len(header):
        chunk, size = header[pos : pos + 4], struct.unpack("<I", header[pos + 4 : pos + 8])[0]
        if chunk == b"data":
            return pos + 8
        pos += 8 + size
    return None


async def synthesize(
    text: str, voice: str = "en-us", speed: int = 175, chunk_bytes: int = 4096
) -> AsyncIterator[tuple[bytes, int]]:
    """(pcm s16le mono, rate) pieces of `text` spoken with `voice`, as the synthesiser produces them."""
    if voice.startswith("piper:") and shutil.which("piper"):
        rate, argv = _piper_command(voice[6:])
    else:
        voice = "en-us" if voice.startswith("piper:") else voice
        rate, argv = RATE, ["espeak-ng", "--stdout", "-v", voice, "-s", str(speed)]
    async for pcm in _run(argv, text, wav=argv[0] == "espeak-ng", rate=rate, chunk_bytes=chunk_bytes):
        yield pcm, rate


def _piper_command(model: str) -> tuple[int, list[str]]:
    with open(model + ".json", encoding="utf-8") as fh:
        rate = int(json.load(fh)["audio"]["sample_rate"])
    return rate, ["piper", "--model", model, "--output-raw"]


async def _run(argv: list[str], text: str, wav: bool, rate: int, chunk_bytes: int) -> AsyncIterator[bytes]:
    """Run a synthesiser with `text` on stdin; yield its samples, holding back the tail to trim it."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        proc.stdin.write(text.encode("utf-8"))
        proc.stdin.close()
        hold = int(0.35 * rate) * 2  # never emit what might be the clause's trailing silence
        buf, offset = b"", None if wav else 0
        while block := await proc.stdout.read(65536):
            buf += block
            if offset is None and (offset := _wav_data_offset(buf)) is not None:
                buf = buf[offset:]
            while offset is not None and len(buf) - hold >= chunk_bytes:
                yield buf[:chunk_bytes]
                buf = buf[chunk_bytes:]
        tail = trim_tail(buf, rate) if offset is not None else b""
        for i in range(0, len(tail), chunk_bytes):
            yield tail[i : i + chunk_bytes]
        await proc.wait()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


# The generators below close the one they read from (aclosing), so a cancelled
# reply stops its synthesiser and HTTP stream at once instead of at garbage collection.


async def speak(
    pieces: AsyncIterator[str], voice: str = "en-us", speed: int = 175
) -> AsyncIterator[tuple[str, bytes, int]]:
    """(clause, pcm, rate) for each clause of a streamed text, synthesised one clause at a time.

    Clause 1 is yielded before clause 2 is even read from `pieces`, so speech
    starts while the rest of the reply is being written and rendered. A whole
    clause is rendered before it is yielded (espeak-ng needs ~15 ms for a
    short one) because its duration is what lets barge-in estimate how much
    of it was heard.
    """
    async with contextlib.aclosing(clauses_of(pieces)) as clauses:
        async for clause in clauses:
            chunks, rates = [], [RATE]
            async with contextlib.aclosing(synthesize(clause, voice, speed)) as audio:
                async for pcm, rate in audio:
                    chunks.append(pcm)
                    rates.append(rate)
            yield clause, b"".join(chunks), rates[-1]


async def clauses_of(pieces: AsyncIterator[str]) -> AsyncIterator[str]:
    """Complete clauses of a text stream, each as soon as it is complete."""
    buffer = ""
    async with contextlib.aclosing(pieces):
        async for piece in pieces:
            clauses, buffer = split_clauses(buffer + piece)
            for clause in clauses:
                yield clause
    if buffer.strip():
        yield buffer.strip()
