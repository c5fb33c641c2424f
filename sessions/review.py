"""Staff review of conversations: the audit trail of their changes, and each provider's accuracy.

Accuracy is the word error rate (WER) of a provider's user transcripts against what staff say
was said. The ground truth is:

- every final user turn with a correction (`Turn.corrected_text`), and
- every final user turn of a conversation marked Reviewed: staff checked all its turns, so a turn
  left uncorrected was heard right. Without these, only the wrong turns would count.

Both sides are normalised the same way before they are compared (`normalise`): Unicode NFKC,
lower case, apostrophes dropped ("don't" and "dont" are one word, the same), any other punctuation
a word break ("Table, please." equals "table please", "well-known" is "well known"), whitespace
collapsed. Numbers are not spelled out: "2" and "two" differ. The WER is pooled per
provider: all word errors (substitutions, deletions, insertions) over all reference words, so a
long turn weighs more than a short one. A turn whose reference is empty after normalisation has no
words to score and is left out.
"""

from __future__ import annotations

import re
import unicodedata

from django.db import transaction
from django.db.models import Q

from sessions.models import Conversation, ReviewEvent, Tag, Turn

_APOSTROPHES = re.compile(r"['\u2019\u02bc]")
_PUNCTUATION = re.compile(r"[^\w\s]|_")


def normalise(text: str) -> str:
    """The words of `text` as they are compared for accuracy (see the module docstring)."""
    text = _APOSTROPHES.sub("", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(_PUNCTUATION.sub(" ", text).split())


def ground_truth(conversations=None):
    """The user turns whose right text is known, with their conversation's provider."""
    conversations = Conversation.objects.all() if conversations is None else conversations
    turns = Turn.objects.filter(conversation__in=conversations.values("id"), role=Turn.Role.USER, final=True)
    known = ~Q(corrected_text="") | Q(conversation__review_status=Conversation.ReviewStatus.REVIEWED)
    return turns.filter(known)


def provider_accuracy(conversations_queryset=None) -> dict[str, dict]:
    """Per provider key: {"wer": pooled word error rate, "turns": turns scored, "words": reference
    words}, over the ground truth of `conversations_queryset` (default: all conversations).
    Providers with nothing scored are absent."""
    pairs: dict[str, tuple[list[str], list[str]]] = {}
    rows = ground_truth(conversations_queryset).order_by("conversation_id", "sequence")
    for provider, text, corrected in rows.values_list("conversation__provider", "text", "corrected_text"):
        reference = normalise(corrected or text)  # Turn.reviewed_text, without building each Turn
        if not reference:
            continue
        references, hypotheses = pairs.setdefault(provider, ([], []))
        references.append(reference)
        hypotheses.append(normalise(text))
    return {provider: _score(*texts) for provider, texts in sorted(pairs.items())}


def _score(references: list[str], hypotheses: list[str]) -> dict:
    import jiwer  # here, not at the top: the admin imports this module in every process

    out = jiwer.process_words(references, hypotheses)
    words = sum(len(r.split()) for r in references)
    return {"wer": out.wer, "turns": len(references), "words": words}


# ---- audit ----------------------------------------------------------------------------------


def tag_names(turn: Turn) -> str:
    """A turn's tags as the audit records them: slugs, sorted, comma separated."""
    return ", ".join(sorted(tag.slug for tag in turn.tags.all()))


# What staff see for an audit entry's field and values: labels, not the stored keys and slugs.
FIELD_LABELS = ReviewEvent.FIELD_LABELS


def shown_value(field: str, value: str) -> str:
    """An audited value as the review pages name it ("Reviewed", "Echo, Hallucination")."""
    if field == "review_status":
        labels = dict(Conversation.ReviewStatus.choices)
        return labels.get(value, value)
    if field == "tags" and value:
        slugs = [slug.strip() for slug in value.split(",")]
        labels = dict(Tag.objects.filter(slug__in=slugs).values_list("slug", "label"))
        return ", ".join(labels.get(slug, slug) for slug in slugs)
    return value


def turn_snapshot(turn: Turn) -> dict[str, str]:
    """The reviewable fields of a turn as stored, for `record` to compare with after a change."""
    return {"corrected_text": turn.corrected_text, "tags": tag_names(turn)}


def record(user, conversation: Conversation, before: dict, after: dict, turn: Turn | None = None) -> int:
    """Write an audit entry per field that differs between the two snapshots; returns how many."""
    events = [
        ReviewEvent(user=user, conversation=conversation, turn=turn, field=name, old=old, new=after[name])
        for name, old in before.items()
        if after.get(name, old) != old
    ]
    ReviewEvent.objects.bulk_create(events)
    return len(events)


@transaction.atomic
def correct(turn: Turn, text: str, user) -> None:
    """Set (or, with "", clear) a turn's correction; the provider's text stays in `text`."""
    before = turn_snapshot(turn)
    turn.corrected_text = text
    turn.save(update_fields=["corrected_text"])
    record(user, turn.conversation, before, turn_snapshot(turn), turn)


@transaction.atomic
def set_tags(turn: Turn, tags, user) -> None:
    before = turn_snapshot(turn)
    turn.tags.set(tags)
    record(user, turn.conversation, before, turn_snapshot(turn), turn)


@transaction.atomic
def set_status(conversation: Conversation, status: str, user) -> None:
    before = {"review_status": conversation.review_status}
    conversation.review_status = status
    conversation.save(update_fields=["review_status"])
    record(user, conversation, before, {"review_status": status})
