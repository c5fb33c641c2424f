"""The vendored browser SDKs (static/vendor/, copied by bin/vendor) agree with their manifest."""

import json
import re
from pathlib import Path

import pytest

VENDOR = Path(__file__).resolve().parent.parent / "static" / "vendor"
MANIFEST = json.loads((VENDOR / "manifest.json").read_text())["packages"]


def test_the_direct_media_sdks_are_pinned():
    assert MANIFEST["livekit-client"]["version"] == "2.23.0"
    assert MANIFEST["retell-client-js-sdk"]["version"] == "2.0.8"


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_each_copied_package_is_the_pinned_version_with_its_license(name):
    spec, directory = MANIFEST[name], VENDOR / name
    package = json.loads((directory / "package.json").read_text())
    got = (package["name"], package["version"], package["license"])
    assert got == (name, spec["version"], spec["license"])
    assert sorted(p.name for p in directory.iterdir()) == sorted({*spec["files"].values(), "LICENSE"})
    assert (directory / "LICENSE").read_text().strip()


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_the_modules_import_vendored_files_not_bare_names(name):
    """A page cannot resolve a bare specifier without a bundler or an import map: each import of
    another package was rewritten to its vendored copy, which exists; no source map is referred to
    (none is copied). tests/js/vendor.test.mjs loads the modules."""
    spec, directory = MANIFEST[name], VENDOR / name
    for script in directory.glob("*.js"):
        text = script.read_text()
        assert "sourceMappingURL" not in text
        for bare, target in spec.get("imports", {}).items():
            assert not re.search(rf"""from\s*["']{re.escape(bare)}["']""", text), (script.name, bare)
            assert f'"{target}"' in text and (directory / target).resolve().is_file()
