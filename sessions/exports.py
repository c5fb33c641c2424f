"""A conversation as files: JSON (docs/export-schema.json), CSV, plain text, WebVTT captions, and a
ZIP of those with the recording. No secret goes into any of them: the configuration snapshot drops
every variable the provider's registry entry declares a secret and scrubs the rest (scrub())."""

from __future__ import annotations

import copy
import csv
import io
import json
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from sessions.models import Conversation, Turn
from sessions.upstreams import registry
from sessions.upstreams.base import scrub

SCHEMA_ID = "https://voice-playground.invalid/schemas/conversation-export/1"
SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "export-schema.json"
FORMATS = {
    "json": ("application/json", "conversation.json"),
    "csv": ("text/csv; charset=utf-8", "transcript.csv"),
    "txt": ("text/plain; charset=utf-8", "transcript.txt"),
    "vtt": ("text/vtt; charset=utf-8", "captions.vtt"),
    "zip": ("application/zip", "conversation.zip"),
}
CSV_FIELDS = ["sequence", "at", "at_ms", "role", "text", "corrected_text", "tags", "final", "interrupted",
              "heard", "start_ms", "end_ms", "latency_ms",
              "tool_name", "tool_arguments", "tool_result"]  # fmt: skip
BUNDLE_CHUNK = 1024 * 1024
CUE_MS = 3000  # a caption with no known end shows this long (or until the next turn)


def clock(ms: int | None) -> str:
    """m:ss from the start of the call."""
    if ms is None:
        return ""
    seconds = max(0, round(ms / 1000))
    return f"{seconds // 60}:{seconds % 60:02d}"


def at_ms(turn: Turn, conversation: Conversation) -> int | None:
    """When the turn happened, in ms from the call's start: its own offset if the relay stored one
    (start of speech, start of the reply's audio), else when it was written (tool calls). A user
    turn's offset counts from the first audio the user sent, which the relay notes as
    metrics["input_offset_ms"]."""
    if turn.start_ms is not None and turn.role == Turn.Role.USER:  # an offset into the input stream
        return turn.start_ms + (conversation.metrics or {}).get("input_offset_ms", 0)
    if turn.start_ms is not None:
        return turn.start_ms
    if conversation.started_at is None:
        return None
    return max(0, round((turn.created_at - conversation.started_at).total_seconds() * 1000))


def timeline(conversation: Conversation) -> list[dict]:
    """The turns as the pages and every export show them, in order."""
    rows = []
    for turn in conversation.turns.prefetch_related("tags"):
        data = turn.data or {}
        at = at_ms(turn, conversation)
        row = {"turn": turn, "sequence": turn.sequence, "role": turn.role, "text": turn.text,
               "final": turn.final, "interrupted": turn.interrupted, "at_ms": at, "at": clock(at),
               "start_ms": turn.start_ms, "end_ms": turn.end_ms, "latency_ms": turn.latency_ms,
               "timings": turn.timings or {}, "heard": data.get("heard") if turn.interrupted else None,
               "played_ms": data.get("played_ms"), "audio_ms": data.get("audio_ms"),
               "tool": None, "corrected_text": turn.corrected_text or None,
               "tags": sorted(tag.slug for tag in turn.tags.all())}  # fmt: skip
        if turn.role == Turn.Role.TOOL:
            row["tool"] = {key: data.get(key) for key in ("id", "name", "arguments", "result")}
            row["tool"]["name"] = row["tool"]["name"] or turn.text
        rows.append(row)
    return rows


# ---- configuration, without secrets --------------------------------------------------------


def _secret_keys(provider: str) -> list[str]:
    try:
        variables = registry.get(provider).variables
    except KeyError:
        return []
    return [var.key for var in variables if var.kind == "secret"]


def _drop(config: dict, dotted: str) -> None:
    *path, last = dotted.split(".")
    for key in path:
        config = config.get(key) if isinstance(config, dict) else None
    if isinstance(config, dict):
        config.pop(last, None)


def _collect_strings(value, into: list[str]) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _collect_strings(item, into)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect_strings(item, into)
    elif isinstance(value, str) and value:
        into.append(value)


def _scrubbed(value, secrets: list[str]):
    if isinstance(value, dict):
        return {key: _scrubbed(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(item, secrets) for item in value]
    if isinstance(value, str):
        return scrub(value, *secrets, limit=10_000)
    return value


def provider_settings(provider: str) -> tuple[dict, list[str]]:
    """The provider's settings as configured now, without its secrets; and those secrets' values
    (to scrub them from anything else exported)."""
    config = copy.deepcopy(dict(settings.PROVIDERS.get(provider, {})))
    secrets: list[str] = []
    for key in _secret_keys(provider):
        probe = copy.deepcopy(config)
        for part in key.split("."):
            probe = probe.get(part) if isinstance(probe, dict) else None
        _collect_strings(probe, secrets)
        _drop(config, key)
    return _scrubbed(config, secrets), secrets


def configuration(conversation: Conversation) -> tuple[dict, list[str]]:
    topic = conversation.topic
    known = conversation.provider in registry.PROVIDERS
    mode = registry.mode(conversation.provider)[0] if known else ""
    public, secrets = provider_settings(conversation.provider)
    snapshot = {
        "provider": conversation.provider,
        "provider_label": conversation.provider_label,
        "provider_mode": mode,
        "voice": conversation.voice,
        "language": conversation.language,
        "topic": {
            "slug": topic.slug,
            "title": topic.title,
            "persona": topic.persona,
            "greeting": topic.greeting,
            "default_language": topic.default_language,
            "provider_options": topic.options_for(conversation.provider),
        },
        "provider_settings": public,
        "provider_refs": _public_refs(conversation),
    }
    return _scrubbed(snapshot, secrets), secrets


def _public_refs(conversation: Conversation) -> dict:
    """The call's provider references without those its registry entry marks as credentials."""
    refs = dict(conversation.provider_refs or {})
    hidden = (
        registry.PROVIDERS[conversation.provider].secret_refs
        if conversation.provider in registry.PROVIDERS
        else ()
    )
    for key in hidden:
        refs.pop(key, None)
    return refs


# ---- the formats ---------------------------------------------------------------------------


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _events(conversation: Conversation, rows: list[dict]) -> list[dict]:
    """What happened, in order: the call starting and ending, each turn, each interruption and
    tool call, each transcript save."""
    events = [{"at_ms": 0, "type": "started", "detail": ""}] if conversation.started_at else []
    for row in rows:
        kind = "tool_call" if row["tool"] else f"{row['role']}_turn"
        event = {"at_ms": row["at_ms"], "type": kind, "sequence": row["sequence"], "detail": row["text"]}
        events.append(event)
        if row["interrupted"]:
            end = row["end_ms"] if row["end_ms"] is not None else row["at_ms"]
            events.append({"at_ms": end, "type": "interrupted", "sequence": row["sequence"],
                           "detail": row["heard"] or ""})  # fmt: skip
    if conversation.ended_at and conversation.started_at:
        ended = round((conversation.ended_at - conversation.started_at).total_seconds() * 1000)
        events.append({"at_ms": ended, "type": "ended", "detail": conversation.end_reason})
    for save in conversation.saves.order_by("created_at"):
        events.append({"at_ms": None, "type": "transcript_save", "detail": save.status,
                       "at": _iso(save.created_at)})  # fmt: skip
    return events


def as_dict(conversation: Conversation, rows: list[dict] | None = None) -> dict:
    rows = timeline(conversation) if rows is None else rows
    config, secrets = configuration(conversation)
    turns = []
    for row in rows:
        turn = {key: value for key, value in row.items() if key not in ("turn", "at")}
        turns.append(_scrubbed(turn, secrets))
    metrics = conversation.metrics or {}
    return {
        "$schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "exported_at": timezone.now().isoformat(),
        "conversation": {
            "id": str(conversation.id),
            "status": conversation.status,
            "end_reason": conversation.end_reason,
            "created_at": _iso(conversation.created_at),
            "started_at": _iso(conversation.started_at),
            "ended_at": _iso(conversation.ended_at),
            "duration_s": conversation.duration_s,
            "recording": {"file": "recording.wav", "rate": 16000, "channels": ["user", "agent"]}
            if conversation.recording
            else None,
        },
        "configuration": config,
        "turns": turns,
        "events": _scrubbed(_events(conversation, rows), secrets),
        "timings": {
            "latency_p50_ms": metrics.get("latency_p50_ms"),
            "latencies_ms": list(metrics.get("latencies_ms") or []),
            "metrics": _scrubbed(metrics, secrets),
        },
    }


def to_json(conversation: Conversation, rows: list[dict] | None = None) -> str:
    return json.dumps(as_dict(conversation, rows), indent=2, ensure_ascii=False)


def to_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        tool = row["tool"] or {}
        record = {key: row.get(key) for key in CSV_FIELDS if key in row}
        record.update(tags=" ".join(row["tags"]), tool_name=tool.get("name") or "",
                      tool_arguments=json.dumps(tool["arguments"], sort_keys=True) if tool else "",
                      tool_result=json.dumps(tool["result"], sort_keys=True) if tool else "")  # fmt: skip
        writer.writerow({key: "" if value is None else value for key, value in record.items()})
    return out.getvalue()


def _line(row: dict) -> str:
    when = f"[{row['at']}] " if row["at"] else ""
    if row["tool"]:
        tool = row["tool"]
        # Keys sorted: PostgreSQL's jsonb keeps no order, and the same call should read the same.
        arguments = json.dumps(tool["arguments"], ensure_ascii=False, sort_keys=True)
        result = json.dumps(tool["result"], ensure_ascii=False, sort_keys=True)
        return f"{when}Tool {tool['name']}({arguments}) -> {result}"
    text = f"{when}{row['role'].capitalize()}: {row['corrected_text'] or row['text']}"
    if row["corrected_text"]:
        text += f" [corrected; the provider's text: {row['text']}]"
    if row["interrupted"]:
        text += " [interrupted" + (f"; heard: {row['heard']}" if row["heard"] is not None else "") + "]"
    return text


def to_text(conversation: Conversation, rows: list[dict]) -> str:
    head = f"{conversation.topic.title} with {conversation.provider_label} ({conversation.voice_label}, "
    head += f"{conversation.language_label}), {conversation.created_at:%Y-%m-%d %H:%M} UTC"
    return "\n".join([head, "", *(_line(row) for row in rows)]) + "\n"


def _vtt_time(ms: int) -> str:
    hours, rest = divmod(max(0, ms), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def _vtt_text(text: str) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(text.split())  # a blank line would end the cue


def to_vtt(rows: list[dict]) -> str:
    cues = ["WEBVTT", ""]
    timed = [row for row in rows if row["at_ms"] is not None and not row["tool"] and row["text"].strip()]
    for i, row in enumerate(timed):
        start = row["at_ms"]
        following = timed[i + 1]["at_ms"] if i + 1 < len(timed) else None
        end = row["end_ms"] if row["end_ms"] is not None and row["end_ms"] > start else start + CUE_MS
        if following is not None and following > start:
            end = min(end, following)
        text = row["heard"] if row["interrupted"] and row["heard"] else row["corrected_text"] or row["text"]
        voice = row["role"].capitalize()
        cues += [str(row["sequence"]), f"{_vtt_time(start)} --> {_vtt_time(max(end, start + 1))}",
                 f"<v {voice}>{_vtt_text(text)}", ""]  # fmt: skip
    return "\n".join(cues)


def write_bundle(archive: zipfile.ZipFile, conversation: Conversation, folder: str = "") -> None:
    """The conversation's files into `archive` (under `folder/`, for a bulk export)."""
    rows = timeline(conversation)
    prefix = f"{folder}/" if folder else ""
    archive.writestr(prefix + "conversation.json", to_json(conversation, rows))
    archive.writestr(prefix + "transcript.csv", to_csv(rows))
    archive.writestr(prefix + "transcript.txt", to_text(conversation, rows))
    archive.writestr(prefix + "captions.vtt", to_vtt(rows))
    if conversation.recording:
        info = zipfile.ZipInfo(prefix + "recording.wav", date_time=time.localtime()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        try:
            with conversation.recording.open("rb") as audio, archive.open(info, "w", force_zip64=True) as out:
                shutil.copyfileobj(audio, out, BUNDLE_CHUNK)  # an hour is 230 MB: never all in memory
        except FileNotFoundError:
            pass  # a recording removed from storage: the rest is still worth having


def bundle(conversations):
    """One ZIP in a temporary file (open, at its start): a single conversation's files at its root,
    several with a folder each. The caller closes it (a FileResponse does)."""
    conversations = list(conversations)
    out = tempfile.TemporaryFile()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for conversation in conversations:
            folder = f"{conversation.created_at:%Y%m%d-%H%M%S}-{conversation.id}"
            write_bundle(archive, conversation, folder if len(conversations) > 1 else "")
    out.seek(0)
    return out


def render(conversation: Conversation, fmt: str) -> bytes:
    rows = timeline(conversation)
    text = {"json": lambda: to_json(conversation, rows), "csv": lambda: to_csv(rows),
            "txt": lambda: to_text(conversation, rows), "vtt": lambda: to_vtt(rows)}[fmt]()  # fmt: skip
    return text.encode()


# ---- the schema ------------------------------------------------------------------------------


def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _is(value, kind: str) -> bool:
    if kind in ("integer", "number"):
        if isinstance(value, bool):
            return False
        return isinstance(value, int) if kind == "integer" else isinstance(value, int | float)
    return isinstance(value, _TYPES[kind])


def problems(value) -> list[str]:
    """Where `value` breaks docs/export-schema.json; empty if it fits. A subset of JSON Schema, the
    one the schema uses (jsonschema is not a dependency): type (one or a list), required, properties,
    additionalProperties (false or a schema), items, enum, const, minimum, and $ref to #/$defs/…"""
    root = schema()
    return _check(value, root, "$", root)


def _check(value, node: dict, where: str, root: dict) -> list[str]:
    if "$ref" in node:
        node = root["$defs"][node["$ref"].rpartition("/")[2]]
    kinds = node.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, kind) for kind in kinds):
            return [f"{where}: expected {'|'.join(kinds)}, got {type(value).__name__}"]
    found = []
    if "const" in node and value != node["const"]:
        found.append(f"{where}: must be {node['const']!r}")
    if "enum" in node and value not in node["enum"]:
        found.append(f"{where}: {value!r} is not one of {node['enum']}")
    if "minimum" in node and _is(value, "number") and value < node["minimum"]:
        found.append(f"{where}: below {node['minimum']}")
    if isinstance(value, dict):
        found += _check_object(value, node, where, root)
    if isinstance(value, list) and "items" in node:
        for i, item in enumerate(value):
            found += _check(item, node["items"], f"{where}[{i}]", root)
    return found


def _check_object(value: dict, node: dict, where: str, root: dict) -> list[str]:
    found = [f"{where}: missing {key!r}" for key in node.get("required", []) if key not in value]
    properties = node.get("properties", {})
    extra = node.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            found += _check(item, properties[key], f"{where}.{key}", root)
        elif extra is False:
            found.append(f"{where}: unexpected {key!r}")
        elif isinstance(extra, dict):
            found += _check(item, extra, f"{where}.{key}", root)
    return found
