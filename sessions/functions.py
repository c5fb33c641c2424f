"""Safe demo functions a voice agent may call during a conversation (Aivoco's custom functions).

A topic names the functions its agent may use (``provider_options["aivoco"]["functions"]``);
a provider client describes them to the service and runs them here when the
service asks. They only read small in-memory tables: nothing is booked, sent
or written, so a model calling them with any arguments can do no harm.

This module knows no wire protocol: each client turns `FUNCTIONS` into its
vendor's definition format itself. `call()` never raises: an unknown function
or bad arguments give ``{"error": ..., "status": "failed"}`` (the shape Aivoco's
own client sends back for a failed call), so the conversation goes on.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_PARTY = 12


class BadArguments(ValueError):
    """What a function says about arguments it cannot use; the message is shown to the model."""


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # "string" | "number" | "boolean"
    description: str
    required: bool = True


@dataclass(frozen=True)
class Function:
    name: str
    description: str
    params: tuple[Param, ...]
    run: Callable[..., dict]


# ---- current_time ------------------------------------------------------------------------


def current_time(now: dt.datetime | None = None) -> dict:
    now = now or dt.datetime.now().astimezone()
    return {"time": now.strftime("%H:%M"), "date": now.date().isoformat(), "weekday": now.strftime("%A"),
            "timezone": now.tzname() or "local"}  # fmt: skip


# ---- check_availability ------------------------------------------------------------------

# The demo restaurant's free seats per evening slot, by weekday (0 = Monday; Monday closed).
# A plain table, so answers are predictable in demos and tests.
_EVENING = {"18:00": 6, "18:30": 4, "19:00": 2, "19:30": 0, "20:00": 8, "20:30": 4, "21:00": 10}
_LUNCH = {"12:00": 8, "12:30": 6, "13:00": 4, "13:30": 2, "14:00": 6}
FREE_SEATS: dict[int, dict[str, int]] = {
    0: {},
    **{day: {**_LUNCH, **_EVENING} for day in range(1, 5)},
    5: {**_LUNCH, **{slot: max(0, seats - 2) for slot, seats in _EVENING.items()}},  # busy Saturday
    6: dict(_LUNCH),  # Sunday: lunch only
}


def _date(value: Any) -> dt.date:
    text = str(value).strip().lower()
    today = dt.date.today()
    if text in ("", "today", "tonight"):
        return today
    if text == "tomorrow":
        return today + dt.timedelta(days=1)
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise BadArguments(f"date must be YYYY-MM-DD, 'today' or 'tomorrow', not {value!r}") from None


def _time(value: Any) -> str:
    match = re.fullmatch(r"(\d{1,2})(?::(\d{2}))?\s*(am|pm)?", str(value).strip().lower())
    if not match:
        raise BadArguments(f"time must be HH:MM, not {value!r}")
    hour, minute = int(match[1]), int(match[2] or 0)
    if match[3] == "pm" and hour < 12:
        hour += 12
    if hour > 23 or minute > 59:
        raise BadArguments(f"time must be HH:MM, not {value!r}")
    return f"{hour:02d}:{minute:02d}"


def _party(value: Any) -> int:
    if isinstance(value, bool):
        raise BadArguments("party_size must be a number of people")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadArguments(f"party_size must be a number of people, not {value!r}") from None
    if number != int(number) or not 1 <= number <= MAX_PARTY:
        raise BadArguments(f"party_size must be a whole number from 1 to {MAX_PARTY}")
    return int(number)


def check_availability(date: Any, time: Any, party_size: Any) -> dict:
    day, slot, party = _date(date), _time(time), _party(party_size)
    if day < dt.date.today():
        raise BadArguments("that date is in the past")
    slots = FREE_SEATS[day.weekday()]
    if not slots:
        return {"available": False, "date": day.isoformat(), "time": slot, "party_size": party,
                "alternatives": [], "note": "The restaurant is closed on Mondays."}  # fmt: skip
    alternatives = [s for s, seats in slots.items() if seats >= party and s != slot]
    return {"available": slots.get(slot, 0) >= party, "date": day.isoformat(), "time": slot,
            "party_size": party, "alternatives": alternatives[:3]}  # fmt: skip


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in [
        Function("current_time", "The current local date and time at the business.", (), current_time),
        Function(
            "check_availability",
            "Check whether the restaurant has a free table for a party at a given date and time.",
            (
                Param("date", "string", "Date as YYYY-MM-DD, or 'today' / 'tomorrow'"),
                Param("time", "string", "Time of day as HH:MM (24-hour clock)"),
                Param("party_size", "number", "Number of people"),
            ),
            check_availability,
        ),
    ]
}


def known(names) -> list[Function]:
    """The registered functions among `names`, in order, without duplicates; unknown names are skipped."""
    seen: dict[str, Function] = {}
    for name in names or ():
        if isinstance(name, str) and name in FUNCTIONS and name not in seen:
            seen[name] = FUNCTIONS[name]
    return list(seen.values())


def failed(message: str) -> dict:
    return {"error": message, "status": "failed"}


def call(name: str, arguments: Any, allowed=None) -> dict:
    """Run demo function `name`; a failed result (never an exception) for anything unusable.

    `allowed` limits the call to the topic's own functions: a model asking for
    one it was not given gets a failed result, as for an unknown one.
    """
    function = FUNCTIONS.get(name) if isinstance(name, str) else None
    if function is None or (allowed is not None and name not in allowed):
        return failed(f"unknown function {name!r}")
    if not isinstance(arguments, dict):
        return failed("arguments must be an object")
    expected = {p.name for p in function.params}
    extra = sorted(map(str, set(arguments) - expected))
    if extra:
        return failed(f"unexpected argument(s) {', '.join(extra)} for {name}")
    missing = [p.name for p in function.params if p.required and p.name not in arguments]
    if missing:
        return failed(f"missing argument(s) {', '.join(missing)} for {name}")
    try:
        return function.run(**arguments)
    except BadArguments as exc:
        return failed(str(exc))
