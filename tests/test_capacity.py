"""bench/capacity.py runs: its short mode, as a user runs it, prints a row per worker count and a summary.

No timing assertions: the figures are the benchmark's business (README "Capacity")."""

import re
import subprocess
import sys

import pytest

from tests.server import ROOT

pytestmark = pytest.mark.slow


def test_the_capacity_benchmark_runs_short_for_one_and_two_workers():
    result = subprocess.run([sys.executable, "bench/capacity.py", "--short"], cwd=ROOT, capture_output=True,
                            text=True, timeout=180)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = re.findall(r"^\s+([12])\s+3\s+.*?(\d+)/(\d+)\s+[\d.]+%\s+[\d.]+MB\s+[\d.]+%", result.stdout, re.M)
    assert [w for w, _, _ in rows] == ["1", "2"], result.stdout
    assert all(int(sent) == 3 * 50 for _, _, sent in rows), result.stdout  # 3 calls x 1 s of 20 ms frames
    # The echoes come back through the relay (a loaded machine may hold back a few past the drain)
    assert all(int(lost) <= 15 for _, lost, _ in rows), result.stdout
    assert "1 worker(s):" in result.stdout and "2 worker(s):" in result.stdout
    # The callers score their audio as the talk page does, and the server took every score
    assert "the page's VAD" in result.stdout
    assert result.stdout.count("errors sent to the callers: none") == 2, result.stdout


def test_the_pass_through_patch_still_applies_to_the_relay(tmp_path):
    """README "Capacity", twelfth round: the patch that measures the stack without the relay's work
    must keep applying as the relay changes, and leave a module that compiles."""
    (tmp_path / "sessions").mkdir()
    (tmp_path / "sessions" / "relay.py").write_text((ROOT / "sessions" / "relay.py").read_text())
    result = subprocess.run(["git", "apply", str(ROOT / "bench" / "passthrough.patch")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 0, result.stderr
    patched = (tmp_path / "sessions" / "relay.py").read_text()
    compile(patched, "relay.py", "exec")
    # uplink, the page's scores and downlink each pass through
    assert "return await self.upstream.send_audio(pcm)" in patched
    assert patched.count("if PASS_THROUGH") == 3
