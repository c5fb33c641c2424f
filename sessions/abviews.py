"""Staff pages of the A/B comparison (sessions/abtest.py): start a run, follow it, read and export
its side-by-side report, listen to the replies."""

from __future__ import annotations

import functools
import json

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from sessions import abtest
from sessions.models import CompareItem, CompareRun, Topic
from sessions.upstreams import registry

MAX_FILES = 10


def staff_only(view):
    """Signed-in staff only: others who are signed in get 403, anonymous visitors the login page."""

    @login_required
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_staff:
            raise PermissionDenied("Comparisons are for staff.")
        return view(request, *args, **kwargs)

    return wrapper


def _choices() -> dict:
    providers = [(p.key, p.label, *registry.mode(p.key)) for p in registry.offered()]
    return {
        "providers": [p for p in providers if p[2] != "unavailable"],
        "topics": Topic.objects.filter(is_active=True),
        "languages": list(registry.LANGUAGE_NAMES.items()),
    }


@staff_only
@require_GET
def run_list(request):
    runs = CompareRun.objects.select_related("topic", "created_by")[:50]
    return render(request, "sessions/abrun_list.html", {"runs": runs, **_choices(), "form": {}})


@staff_only
@require_http_methods(["GET", "POST"])
def run_new(request):
    if request.method == "GET":
        return render(request, "sessions/abrun_new.html", {**_choices(), "form": {}})
    form = request.POST
    try:
        run = _create(request)
    except abtest.CompareError as exc:
        context = {**_choices(), "form": form, "chosen": form.getlist("providers"), "error": str(exc)}
        return render(request, "sessions/abrun_new.html", context, status=400)
    abtest.spawn(run)
    return redirect("abrun_detail", run.pk)


def _create(request) -> CompareRun:
    form = request.POST
    topic = Topic.objects.filter(is_active=True, pk=form.get("topic") or 0).first()
    if topic is None:
        raise abtest.CompareError("choose a topic")
    language = form.get("language") or topic.default_language
    texts = [line.strip() for line in form.get("texts", "").splitlines() if line.strip()]
    wavs = _uploads(request.FILES.getlist("wavs"))
    if not texts and not wavs:
        texts = abtest.script_lines(topic, language, _count(form.get("count")))
    return abtest.create_run(request.user, topic, form.getlist("providers"), language, texts, wavs)


def _count(value) -> int:
    try:
        return max(1, min(int(value), abtest.MAX_UTTERANCES))
    except (TypeError, ValueError):
        return 3


def _uploads(files) -> list[tuple[str, bytes]]:
    if len(files) > MAX_FILES:
        raise abtest.CompareError(f"at most {MAX_FILES} WAV files")
    out = []
    for f in files:
        if f.size > abtest.MAX_UPLOAD_BYTES:
            raise abtest.CompareError(f"{f.name} is larger than {abtest.MAX_UPLOAD_BYTES // 2**20} MB")
        out.append((f.name, f.read()))
    return out


@staff_only
@require_GET
def run_detail(request, run_id: int):
    run = get_object_or_404(CompareRun.objects.select_related("topic"), pk=run_id)
    rows = abtest.rows(run)
    context = {
        "run": run,
        "state": abtest.status(run),
        "summary": abtest.summary(rows, run.providers),
        "utterances": _side_by_side(run, rows),
    }
    return render(request, "sessions/abrun_detail.html", context)


def _side_by_side(run: CompareRun, rows: list[dict]) -> list[dict]:
    """Per utterance, one cell per provider (in the run's order), each with its waterfall bars."""
    items = {(i.index, i.provider): i for i in run.items.all()}
    scale = max([_longest(r) for r in rows] + [1000])
    out = []
    for n, utterance in enumerate(run.utterances):
        cells = []
        for key in run.providers:
            row = next((r for r in rows if r["index"] == n and r["provider"] == key), None)
            cells.append({"label": registry.label(key), "row": row, "item": items.get((n, key)),
                          "bars": _bars(row, scale) if row else []})  # fmt: skip
        out.append({"index": n, "text": utterance["text"], "cells": cells})
    return out


STAGES = (
    ("user_final_ms", "transcript of the user"),
    ("first_audio_ms", "first agent audio at the server"),
    ("played_ms", "first agent audio played"),
    ("client_first_audio_ms", "first agent audio at the client"),
    ("reply_ms", "reply length"),
    ("client_reply_ms", "reply length heard"),
)


def _longest(row: dict) -> int:
    return max([v for key, _ in STAGES[:4] if isinstance(v := row.get(key), int | float)] + [0])


def _bars(row: dict, scale: int) -> list[dict]:
    """The waterfall: each moment after the end of the user's speech, as a bar on one scale."""
    bars = []
    for key, label in STAGES:
        value = row.get(key)
        if isinstance(value, int | float):
            bars.append({"key": key, "label": label, "value": value, "max": max(scale, value)})
    return bars


@staff_only
@require_GET
def run_status(request, run_id: int):
    return JsonResponse(abtest.status(get_object_or_404(CompareRun, pk=run_id)))


@staff_only
@require_POST
def run_cancel(request, run_id: int):
    CompareRun.objects.filter(pk=run_id).update(cancel_requested=True)
    return redirect("abrun_detail", run_id)


@staff_only
@require_GET
def run_export(request, run_id: int, fmt: str):
    if fmt not in ("csv", "json"):
        raise Http404("exports are csv or json")
    run = get_object_or_404(CompareRun.objects.select_related("topic"), pk=run_id)
    name = f"comparison-{run.pk}.{fmt}"
    if fmt == "csv":
        response = HttpResponse(abtest.export_csv(run), content_type="text/csv; charset=utf-8")
    else:
        body = json.dumps(abtest.export_json(run), indent=2, ensure_ascii=False)
        response = HttpResponse(body, content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@staff_only
@require_GET
def item_clip(request, item_id: int):
    item = get_object_or_404(CompareItem, pk=item_id)
    if not item.clip:
        raise Http404("no clip")
    return FileResponse(item.clip.open("rb"), content_type="audio/wav")


@staff_only
@require_GET
def run_input(request, run_id: int, index: int):
    run = get_object_or_404(CompareRun, pk=run_id)
    if not 0 <= index < len(run.utterances):
        raise Http404("no such utterance")
    return FileResponse(default_storage.open(run.utterances[index]["audio"], "rb"), content_type="audio/wav")


# Included under compare/runs/ by playground/urls.py.
urls = [
    path("", run_list, name="abrun_list"),
    path("new/", run_new, name="abrun_new"),
    path("<int:run_id>/", run_detail, name="abrun_detail"),
    path("<int:run_id>/status/", run_status, name="abrun_status"),
    path("<int:run_id>/cancel/", run_cancel, name="abrun_cancel"),
    path("<int:run_id>/export.<str:fmt>", run_export, name="abrun_export"),
    path("<int:run_id>/input/<int:index>.wav", run_input, name="abrun_input"),
    path("clips/<int:item_id>.wav", item_clip, name="abrun_clip"),
]
