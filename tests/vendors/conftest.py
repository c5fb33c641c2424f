import shutil

import pytest

from tests.engine.speech import Speech


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Speech:
    """flite speech as 16 kHz PCM, made once per test module."""
    if not (shutil.which("flite") and shutil.which("sox")):
        pytest.skip("flite and sox are needed to make test speech")
    return Speech(tmp_path_factory.mktemp("speech"))
