"""Settings for the in-process tests (pytest-django): the developer settings, DEBUG=1.

Django's test runner turns DEBUG off while tests run anyway; DEBUG=1 here only picks the
development defaults that need no preparation (a dev SECRET_KEY, static files found in
place instead of a collected manifest). The real Daphne processes of the end-to-end tests
run on production settings, DEBUG unset (tests/server.py).

pytest-django imports settings before any conftest runs, hence a module of its own.
"""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("DEBUG", "1")

from playground.settings import *  # noqa: F403

# Recordings of the in-process tests' calls go to a directory of their own, not the developer's var/.
MEDIA_ROOT = Path(tempfile.mkdtemp(prefix="playground-media-"))
