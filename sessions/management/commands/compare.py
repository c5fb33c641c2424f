"""`manage.py compare`: the same utterances played into several providers (sessions/abtest.py)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from sessions import abtest
from sessions.models import CompareRun


class Command(BaseCommand):
    help = (
        "Play one set of utterances (a topic's script spoken by TTS, or WAV files) into several "
        "providers at real time through the relay, and print the side-by-side report."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--providers", default="local,liku,lokutor", help="Comma-separated provider keys."
        )
        parser.add_argument("--topic", default="restaurant", help="Topic slug (or the start of one).")
        parser.add_argument("--language", default="", help="Language code (default: the topic's).")
        parser.add_argument("--wav", action="append", default=[], help="A WAV file to say (repeatable).")
        parser.add_argument(
            "--text", action="append", default=[], help="A sentence to say by TTS (repeatable)."
        )
        parser.add_argument(
            "--count", type=int, default=3, help="Script sentences to say when no --wav/--text."
        )
        parser.add_argument("--repeat", type=int, default=1, help="Say the whole set this many times (1-10).")
        parser.add_argument("--server", default="", help="http URL of a running server (default: start one).")
        parser.add_argument("--user", default="", help="Who owns the run (default: the first superuser).")
        parser.add_argument("--run", type=int, help="Execute this stored run (as the staff page does).")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
        parser.add_argument("--bench", action="store_true", help="Print only the latency percentiles.")

    def handle(self, *args, **options):
        # SIGTERM (a stopping server, `kill`) ends the run the way Ctrl-C does: stored as failed,
        # its own server stopped, its token deleted.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            run = self._stored(options["run"]) if options["run"] else self._create(options)
            run = abtest.execute(run, options["server"] or None)
        except abtest.CompareError as exc:
            raise CommandError(str(exc)) from None
        self._print(run, options)

    def _stored(self, pk: int) -> CompareRun:
        run = CompareRun.objects.filter(pk=pk, status=CompareRun.Status.QUEUED).first()
        if run is None:
            raise CommandError(f"no queued comparison run {pk}")
        return run

    def _create(self, options) -> CompareRun:
        topic = abtest.find_topic(options["topic"])
        language = options["language"] or topic.default_language
        wavs = [(Path(p).name, self._read(p)) for p in options["wav"]]
        texts = options["text"] or ([] if wavs else abtest.script_lines(topic, language, options["count"]))
        providers = options["providers"].split(",")
        repeat = max(1, min(options["repeat"], 10))
        texts, wavs = list(texts) * repeat, wavs * repeat
        return abtest.create_run(self._user(options["user"]), topic, providers, language, texts, wavs)

    def _read(self, path: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc}") from None

    def _user(self, name: str):
        users = get_user_model().objects
        user = users.filter(username=name).first() if name else users.filter(is_superuser=True).first()
        if user is None:
            raise CommandError(f"no user {name!r}" if name else "no superuser to own the run: pass --user")
        return user

    def _print(self, run: CompareRun, options) -> None:
        report = abtest.export_json(run)
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, ensure_ascii=False))
            return
        if not options["bench"]:
            for r in report["rows"]:
                self.stdout.write(
                    f"[{r['index'] + 1}] {r['provider_label']}: heard {r['user_text']!r}, "
                    f"replied {r['reply_text']!r}, {_ms(r['latency_ms'])}"
                    f"{' - ' + r['error'] if r['error'] else ''}"
                )
        self.stdout.write(
            f"Comparison {run.pk} ({run.status}): reply latency, end of speech to first agent audio"
        )
        self.stdout.write(
            f"{'provider':<28}{'mode':<9}{'answered':>9}{'P50':>8}{'P90':>8}{'P99':>8}"
            f"{'client P50':>12}{'played P50':>12}"
        )
        for s in report["summary"]:
            answered = f"{s['answered']}/{s['utterances']}"
            self.stdout.write(
                f"{s['provider_label'][:27]:<28}{s['mode']:<9}{answered:>9}{_ms(s['p50_ms']):>8}"
                f"{_ms(s['p90_ms']):>8}{_ms(s['p99_ms']):>8}{_ms(s['client_p50_ms']):>12}{_ms(s['played_p50_ms']):>12}"
            )
        if run.error:
            self.stderr.write(run.error)


def _ms(value) -> str:
    return "-" if value is None else f"{value:.0f} ms"
