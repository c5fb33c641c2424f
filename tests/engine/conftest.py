"""Shared fixtures for the offline engine tests: the demo topic and flite speech."""

from __future__ import annotations

import shutil

import pytest

from playground.engine.demo import RESTAURANT
from playground.engine.script import Script

from .speech import Speech


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> Speech:
    if not (shutil.which("flite") and shutil.which("sox")):
        pytest.skip("flite and sox are needed to make test speech")
    return Speech(tmp_path_factory.mktemp("speech"))


@pytest.fixture(scope="session")
def script() -> Script:
    return RESTAURANT
