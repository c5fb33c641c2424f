"""Pure text helpers shared by the recogniser, the responder and speech output.

Nothing here does I/O; everything is a small function that is easy to test.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """Spell a non-negative integer below 10 000 the way people say it ("two thirty" is out of scope)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    if n < 10000:
        thousands, rest = divmod(n, 1000)
        return _ONES[thousands] + " thousand" + ("" if rest == 0 else " " + number_words(rest))
    return " ".join(_ONES[int(d)] for d in str(n))


def words(text: str) -> list[str]:
    """Lower-case spoken words of `text`; digits become words because recognisers emit words."""
    out: list[str] = []
    for token in _WORD.findall(text.lower().replace("\u2019", "'")):
        out.extend(number_words(int(token)).split() if token.isdigit() else [token])
    return out


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over words divided by the reference length."""
    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return float(bool(hyp))
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref)


# A clause ends at sentence punctuation, or at a comma/semicolon/colon followed by a space.
_CLAUSE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)|[,;:](?=\s)")


def split_clauses(text: str, min_chars: int = 12) -> tuple[list[str], str]:
    """Split streamed text into complete clauses and an unfinished rest.

    Short pieces ("Sure,") are merged with what follows so that speech output
    does not start a synthesiser for one word, but the first clause is still
    short enough to be spoken while the rest is being written.
    """
    clauses: list[str] = []
    start = 0
    for match in _CLAUSE_END.finditer(text):
        piece = text[start : match.end()].strip()
        if len(piece) >= min_chars:
            clauses.append(piece)
            start = match.end()
    return clauses, text[start:].lstrip()


def all_clauses(text: str, min_chars: int = 12) -> list[str]:
    """Every clause of a finished text (the unfinished rest is the last clause)."""
    clauses, rest = split_clauses(text, min_chars)
    return clauses + ([rest.strip()] if rest.strip() else [])


def spoken_prefix(text: str, fraction: float) -> str:
    """The first `fraction` of `text`'s words: an estimate of what was heard before a barge-in."""
    tokens = text.split()
    count = round(len(tokens) * min(max(fraction, 0.0), 1.0))
    return " ".join(tokens[:count])
