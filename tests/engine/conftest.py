"""Shared fixtures for the offline engine tests: the demo topic and flite speech."""

from __future__ import annotations

import pytest

from playground.engine.demo import RESTAURANT
from playground.engine.script import Script


@pytest.fixture(scope="session")
def script() -> Script:
    return RESTAURANT
