"""playground/heap.py: a serving worker's startup objects are out of the collector's way."""

import subprocess
import sys

CHECK = """
import gc, django, os
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
django.setup()
import playground.asgi  # the app, as a worker has it loaded
from playground import heap
before = gc.get_freeze_count()
heap.freeze()
print(before, gc.get_freeze_count(), gc.get_threshold()[2])
"""


def test_freeze_moves_the_loaded_app_out_of_collections_and_makes_the_oldest_one_rare():
    run = [sys.executable, "-c", CHECK]
    out = subprocess.run(run, capture_output=True, text=True, check=True, timeout=60)
    before, frozen, oldest = map(int, out.stdout.split()[-3:])
    assert before == 0 and frozen > 20_000  # Django, Channels, the URL conf, the models
    assert oldest == 1000
