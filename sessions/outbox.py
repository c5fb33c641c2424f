"""The transcript-save outbox: saves are queued as `TranscriptSave` rows, and a worker delivers them.

Queueing (`enqueue`): a call that ended (the relay), the owner's "Save transcript again" button
and the admin's action each add a `pending` row holding the snapshot to send (`payload`: the
turns with their reviewed text), its version (`digest`, SHA-256 of the snapshot) and an
idempotency key derived from the conversation and that version. A save of a version already
waiting is not queued twice.

Delivering (`run`, `manage.py savetranscripts`): a worker claims one due row at a time, calls the
provider's `save_transcript` class method (sessions/upstreams/base.py, "The contract") and
records what happened:

* saved: ``saved``, with the provider's answer;
* a permanent error (HTTP 4xx, nothing to save, no credentials): ``failed``, with the message,
  and never tried again;
* anything else (5xx, timeouts, connection errors, a bug): back to ``pending`` with
  ``next_attempt_at`` pushed out by exponential backoff with jitter, until
  TRANSCRIPT_SAVE_MAX_ATTEMPTS attempts were made (then ``failed``).

Every fact is in the database (status, attempts, next attempt, lease), so a worker that stops, or
is killed, loses nothing: the next one carries on from the rows.

**The same version is never sent twice.** Before calling the provider the worker looks at the
conversation's other saves of the same digest: one already ``saved`` makes this one ``saved``
without a call (``response["unchanged_since"]`` names it); one being sent by another worker
under a live lease puts this one back until that lease ends. The one case where a version is
sent again is a worker that died mid-request (the provider may have stored it, we cannot
know): its row's lease runs out and the next worker sends it again with the same idempotency
key, which the provider uses to store it once (Liku: the ``Idempotency-Key`` header, honoured
by our sandbox; an assumption about the real service, see sessions/upstreams/liku.py).

**Several workers at once.** A claim is a conditional UPDATE: the row moves from ``pending`` (or
``sending`` with an expired lease) to ``sending`` only if its status and attempt count are still
what the worker read, so of two workers racing for a row exactly one updates it. On PostgreSQL
the candidate is first picked with ``SELECT … FOR UPDATE SKIP LOCKED`` inside the claim's
transaction, so workers skip each other's rows instead of queueing on their locks. On SQLite the
same conditional UPDATE is safe too: SQLite has one writer at a time (a database-wide write
lock), and the UPDATE re-checks its WHERE clause under that lock, so only one worker can move a
row out of ``pending``; several workers on one SQLite file are correct, merely no faster.
The outcome of a delivery is written only while the worker still holds the claim (same
attempt number), so a worker that overran its lease cannot overwrite its successor's result.

Times (next attempt, lease) are the database's clock (`Now()`), so workers on hosts with
skewed clocks agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import socket
import uuid
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Q
from django.db.models.functions import Now

from sessions.models import Conversation, TranscriptSave, Turn
from sessions.upstreams import registry
from sessions.upstreams.base import SaveRequest, UpstreamError

log = logging.getLogger(__name__)

Status = TranscriptSave.Status
KEY_NAMESPACE = uuid.UUID("5b0c4f8e-8d8e-4d59-9d0e-6f7a0c1d2e3f")  # idempotency keys: uuid5 in this
CLAIM_TRIES = 5  # candidates a worker tries per claim before it waits for the next round
DRAIN_LIMIT = 100  # saves one round delivers at most, so a stop is noticed between rounds
RECORD_TRIES = 4  # writes of a delivery's outcome before the worker gives up (the lease then expires)
SAVE_TIMEOUT_S = 30.0  # a provider call that takes longer counts as a transient failure


# ---- queueing --------------------------------------------------------------------------------


def snapshot(conversation: Conversation) -> list[dict]:
    """What a save sends: the final user and agent turns in order, with their reviewed text."""
    turns = conversation.turns.filter(final=True, role__in=(Turn.Role.USER, Turn.Role.AGENT))
    return [
        {"sequence": t.sequence, "role": t.role, "text": t.reviewed_text} for t in turns.order_by("sequence")
    ]


def version(conversation_id, turns: list[dict]) -> tuple[str, str]:
    """(digest, idempotency key) of one version of one conversation's transcript."""
    canonical = json.dumps({"conversation": str(conversation_id), "turns": turns}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)  # fmt: skip
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return digest, str(uuid.uuid5(KEY_NAMESPACE, f"{conversation_id}:{digest}"))


def provider_saves(provider: str) -> bool:
    """Whether the provider's client declares a save-transcript API."""
    return provider in registry.PROVIDERS and registry.load(provider).capabilities.saves_transcript


def credentials_from_session(provider: str, session) -> dict:
    """The user's own provider token that their login kept in the server-side session, if any."""
    key = registry.get(provider).user_token_key if provider in registry.PROVIDERS else ""
    token = session.get(key) if key and session is not None else None
    return {"user_token": token} if token else {}


def enqueue(
    conversation: Conversation, *, requested_by=None, credentials: dict | None = None
) -> TranscriptSave:
    """Queue a save of the conversation as it reads now; a save of this version already waiting is
    returned instead of a second one."""
    turns = snapshot(conversation)
    digest, key = version(conversation.id, turns)
    waiting = TranscriptSave.objects.filter(conversation=conversation, digest=digest,
                                            status__in=(Status.PENDING, Status.SENDING)).first()  # fmt: skip
    if waiting is not None:
        return waiting
    return TranscriptSave.objects.create(
        conversation=conversation, payload={"turns": turns}, digest=digest, idempotency_key=key,
        requested_by=requested_by, credentials=credentials or {}, next_attempt_at=Now(),
    )  # fmt: skip


def enqueue_id(conversation_id, *, credentials: dict | None = None) -> TranscriptSave:
    return enqueue(Conversation.objects.get(id=conversation_id), credentials=credentials)


aenqueue = sync_to_async(enqueue_id)


# ---- claiming --------------------------------------------------------------------------------


def _db_now_plus(seconds: float):
    return ExpressionWrapper(Now() + timedelta(seconds=seconds), output_field=DateTimeField())


DUE = Q(status=Status.PENDING, next_attempt_at__lte=Now()) | Q(status=Status.SENDING, lease_until__lt=Now())


def claim(worker: str, lease_s: float) -> TranscriptSave | None:
    """A due save, now `sending` under this worker's lease (attempts counted), or None."""
    skip_locked = connection.features.has_select_for_update_skip_locked
    for _ in range(CLAIM_TRIES):
        # SQLite: no transaction around the read, or its upgrade to a write could fail at once
        # ("database is locked") instead of waiting; the conditional UPDATE alone is the claim.
        with transaction.atomic() if skip_locked else contextlib.nullcontext():
            candidates = TranscriptSave.objects.filter(DUE).order_by("next_attempt_at", "id")
            if skip_locked:
                candidates = candidates.select_for_update(skip_locked=True)
            row = candidates.only("id", "status", "attempts").first()
            if row is None:
                return None
            unchanged = TranscriptSave.objects.filter(
                DUE, id=row.id, status=row.status, attempts=row.attempts
            )
            won = unchanged.update(
                status=Status.SENDING, attempts=F("attempts") + 1, lease_until=_db_now_plus(lease_s),
                claimed_by=worker,
            )  # fmt: skip
        if won:
            return TranscriptSave.objects.select_related("conversation__topic").get(id=row.id)
    return None


def _mine(row: TranscriptSave):
    """The row, only while this worker still holds the claim it made."""
    return TranscriptSave.objects.filter(id=row.id, status=Status.SENDING, claimed_by=row.claimed_by,
                                         attempts=row.attempts)  # fmt: skip


def settle_duplicate(row: TranscriptSave) -> str:
    """Before sending: "saved" when this version was saved already (recorded, nothing sent),
    "wait" when another worker is sending it right now (put back, attempt not counted), else ""."""
    same = TranscriptSave.objects.filter(conversation_id=row.conversation_id, digest=row.digest).exclude(
        id=row.id
    )
    done = same.filter(status=Status.SAVED).order_by("sent_at", "id").first()
    if done is not None:
        _mine(row).update(status=Status.SAVED, attempts=F("attempts") - 1, lease_until=None, sent_at=Now(),
                          last_error="", credentials={}, response={"unchanged_since": done.id})  # fmt: skip
        return "saved"
    busy = same.filter(status=Status.SENDING, lease_until__gte=Now()).order_by("-lease_until").first()
    if busy is not None:
        _mine(row).update(status=Status.PENDING, attempts=F("attempts") - 1, lease_until=None,
                          next_attempt_at=busy.lease_until)  # fmt: skip
        return "wait"
    return ""


# ---- delivering ------------------------------------------------------------------------------


def backoff_s(attempts: int) -> float:
    """Exponential backoff with jitter: after the n-th failure, between half and all of
    BACKOFF_MS * 2**(n-1), capped at BACKOFF_MAX_S (the jitter keeps retries of many saves that
    failed together from arriving together)."""
    ceiling = min(settings.TRANSCRIPT_SAVE_BACKOFF_MAX_S,
                  settings.TRANSCRIPT_SAVE_BACKOFF_MS / 1000 * 2 ** max(0, attempts - 1))  # fmt: skip
    return random.uniform(ceiling / 2, ceiling)


def save_request(row: TranscriptSave) -> SaveRequest:
    conv = row.conversation
    return SaveRequest(
        conversation_id=str(conv.id),
        refs=dict(conv.provider_refs or {}),
        options=conv.topic.options_for(conv.provider),
        turns=tuple((row.payload or {}).get("turns") or ()),
        idempotency_key=row.idempotency_key,
        config={**registry.upstream_config(conv.provider), **(row.credentials or {})},
    )


async def send(row: TranscriptSave) -> tuple[dict | None, UpstreamError | None]:
    """Call the provider: (its answer, None) or (None, why not)."""
    provider = row.conversation.provider
    client = registry.load(provider) if provider in registry.PROVIDERS else None
    if getattr(client, "save_transcript", None) is None:  # a provider gone, or without a save API
        return None, UpstreamError(f"{provider} has no save-transcript API.", permanent=True)
    try:
        request = await sync_to_async(save_request)(row)
        return await asyncio.wait_for(client.save_transcript(request), SAVE_TIMEOUT_S), None
    except UpstreamError as exc:
        return None, exc
    except TimeoutError:
        return None, UpstreamError(f"The provider did not answer within {SAVE_TIMEOUT_S:g} s.")
    except Exception:  # a bug in a client: logged, and retried like a transient error
        log.exception("saving transcript %s", row.id)
        return None, UpstreamError("internal error while saving")


def record(row: TranscriptSave, response: dict | None, error: UpstreamError | None) -> str:
    """Write the outcome (only while the claim is ours): the status it left the row in."""
    mine = _mine(row)
    if error is None:
        done = mine.update(status=Status.SAVED, response=response or {}, last_error="", sent_at=Now(),
                           lease_until=None, credentials={})  # fmt: skip
        return Status.SAVED if done else "lost"
    message = error.message[:1000]
    if error.permanent or row.attempts >= settings.TRANSCRIPT_SAVE_MAX_ATTEMPTS:
        if not error.permanent:
            message = f"{message} (gave up after {row.attempts} attempts)"
        done = mine.update(status=Status.FAILED, last_error=message, lease_until=None, credentials={})
        return Status.FAILED if done else "lost"
    done = mine.update(status=Status.PENDING, last_error=message, lease_until=None,
                       next_attempt_at=_db_now_plus(backoff_s(row.attempts)))  # fmt: skip
    return Status.PENDING if done else "lost"


async def record_outcome(row: TranscriptSave, response: dict | None, error: UpstreamError | None) -> str:
    """`record`, tried again a few times if the database is busy (SQLite under several writers):
    the provider has answered, and losing that answer would mean sending the save again."""
    for attempt in range(RECORD_TRIES):
        try:
            return await sync_to_async(record)(row, response, error)
        except DatabaseError:
            if attempt == RECORD_TRIES - 1:
                raise
            log.warning("save %s: recording the outcome failed, trying again", row.id)
            await asyncio.sleep(0.5 * (attempt + 1))
    return "lost"  # not reached


async def deliver_one(worker: str) -> str | None:
    """Claim and deliver one due save: what became of it, or None when nothing is due."""
    row = await sync_to_async(claim)(worker, settings.TRANSCRIPT_SAVE_LEASE_S)
    if row is None:
        return None
    settled = await sync_to_async(settle_duplicate)(row)
    if settled:
        return "unchanged" if settled == "saved" else "wait"
    response, error = await send(row)
    outcome = await record_outcome(row, response, error)
    if error is not None:
        log.info("save %s of %s, attempt %d: %s (%s)", row.id, row.conversation_id, row.attempts,
                 error.message, outcome)  # fmt: skip
    if outcome == "lost":
        log.warning("save %s: the claim ran out before the provider answered; another worker has it", row.id)
    return outcome


async def drain(worker: str, stop: asyncio.Event | None = None) -> dict[str, int]:
    """Deliver what is due now (at most DRAIN_LIMIT): counts by outcome."""
    counts: dict[str, int] = {}
    for _ in range(DRAIN_LIMIT):
        if stop is not None and stop.is_set():
            break
        outcome = await deliver_one(worker)
        if outcome is None:
            break
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def worker_name() -> str:
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def run(*, once: bool = False, interval: float = 2.0, stop: asyncio.Event | None = None,
              worker: str = "", report=None) -> None:  # fmt: skip
    """The worker: rounds of `drain` every `interval` seconds until `stop` is set (or one round
    with `once`). A delivery under way when `stop` comes is finished first (bounded by the
    provider's timeout), so its outcome is recorded."""
    stop = stop or asyncio.Event()
    worker = worker or worker_name()
    while True:
        try:
            counts = await drain(worker, stop)
        except DatabaseError as exc:  # the database is away or busy: the rows wait, try next round
            log.warning("savetranscripts: database error, trying again in %g s: %s", interval, exc)
            await sync_to_async(close_old_connections)()
            counts = {}
        if counts and report is not None:
            report(counts)
        if once or stop.is_set():
            return
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            continue
        return
