"""The garbage collector of a serving worker.

A full collection scans every object the process holds, and a worker holds about 100,000 once
Django, the URL conf, Channels and the models are loaded: a full collection then took about 57 ms
on this project's 2-core machine, a pause of every call's audio in that worker (the tail of
bench/capacity.py's mouth-to-ear figures). `freeze()` runs once the app is loaded: it moves what
is there to the permanent generation (gc.freeze), which collections do not scan, so they scan
only what was allocated since; the startup objects live as long as the process anyway.
"""

from __future__ import annotations

import gc


def freeze() -> None:
    gc.collect()  # what startup left as garbage goes now, not into the permanent generation
    gc.freeze()
