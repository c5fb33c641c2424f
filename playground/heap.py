"""The garbage collector of a serving worker.

A full collection scans every object the process holds, and a worker holds about 100,000 once
Django, the URL conf, Channels and the models are loaded: a full collection then took about 57 ms
on this project's 2-core machine, a pause of every call's audio in that worker (the tail of
bench/capacity.py's mouth-to-ear figures). `freeze()` runs once the app is loaded: it moves what
is there to the permanent generation (gc.freeze), which collections do not scan, so they scan
only what was allocated since; the startup objects live as long as the process anyway.

What calls allocate later still reached the oldest generation, and at 100 calls its collection
still took about 22 ms, about once every 5 s. So that collection waits for 1,000 collections of
the middle generation instead of 10 (logged with gc.callbacks during bench/capacity.py: none in
a 10 s step since); the young generations, which take under a millisecond, are unchanged.
Reference cycles that outlive a call are freed later, not never.
"""

from __future__ import annotations

import gc

OLDEST_THRESHOLD = 1000  # collections of the middle generation per collection of the oldest (default 10)


def freeze() -> None:
    gc.collect()  # what startup left as garbage goes now, not into the permanent generation
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, OLDEST_THRESHOLD)
