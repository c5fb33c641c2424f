"""The page's VAD (static/js/vad.js) in headless Chromium, against the server's model on the same
audio: time per 32 ms window, and how far apart their scores are.

The page scores every window of its own call, one at a time (onnxruntime-web, WebAssembly, one
thread), on the user's machine; the server's model scores many calls' windows in a batch, minus the
windows its gates skip. Both are shown for the same 30 s of call audio (bench/call_audio.py).

Run:  .venv/bin/python bench/page_vad.py [--audio call|speech]
It serves static/ and the model file on 127.0.0.1 for the page, and stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.call_audio import KINDS, track  # noqa: E402
from playground.engine import vad  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# In a page: vad.js's Windows (fed 20 ms frames) and Scorer, as its worker runs them, on `pcm`
# (base64 s16le); the time of the scoring alone. tests/test_browser.py runs it on the talk page.
SCORE = """async ({ pcm, ort: ortUrl, vad: vadUrl, wasm, model }) => {
  const ort = await import(ortUrl);
  const { Scorer, Windows } = await import(vadUrl);
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = { wasm };
  const scorer = await Scorer.create(ort, new Uint8Array(await (await fetch(model)).arrayBuffer()));
  const samples = new Int16Array(Uint8Array.from(atob(pcm), (c) => c.charCodeAt(0)).buffer);
  const cutter = new Windows();
  const windows = [];
  for (let i = 0; i < samples.length; i += 320) windows.push(...cutter.push(samples.subarray(i, i + 320)));
  for (const w of windows.slice(0, 20)) await scorer.score(w);  // warm
  scorer.reset();
  const out = [];
  const t0 = performance.now();
  for (const w of windows) out.push(await scorer.score(w));
  return { ms: performance.now() - t0, scores: out };
}"""


def score_in(page, pcm: bytes, static: str, model: str) -> tuple[float, list[float]]:
    """ms spent scoring, and the scores, of `pcm` in `page` (`static`: the URL of static/)."""
    import base64

    ort = f"{static}/vendor/onnxruntime-web"
    urls = {"ort": f"{ort}/ort.wasm.bundle.min.js", "vad": f"{static}/js/vad.js",
            "wasm": f"{ort}/ort-wasm-simd-threaded.wasm", "model": model}  # fmt: skip
    result = page.evaluate(SCORE, {"pcm": base64.b64encode(pcm).decode(), **urls})
    return result["ms"], result["scores"]


@contextlib.contextmanager
def serving(directory: Path):
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm"}

    def log_message(self, *args) -> None:
        pass


def in_chromium(pcm: bytes) -> tuple[float, list[float]]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="page-vad-") as tmp:
        root = Path(tmp)
        (root / "static").symlink_to(ROOT / "static")
        (root / "silero_vad.onnx").symlink_to(vad.model_path())
        (root / "index.html").write_text("<!doctype html><title>page VAD</title>")
        with serving(root) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(f"{url}/index.html")
            result = score_in(page, pcm, f"{url}/static", f"{url}/silero_vad.onnx")
            browser.close()
    return result


def on_the_server(pcm: bytes, calls: int) -> tuple[float, int]:
    """CPU ms for `calls` streams of `pcm` through process_many in the relay's 40 ms rounds (the
    gates on, as in a call), and the model runs."""
    streams = [vad.Vad() for _ in range(calls)]
    chunk = 1280  # 40 ms
    cpu0 = time.process_time()
    for i in range(0, len(pcm), chunk):
        vad.process_many([(s, pcm[i : i + chunk]) for s in streams])
    return (time.process_time() - cpu0) * 1000, sum(s.runs for s in streams)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--audio", choices=KINDS, default="call")
    args = parser.parse_args()
    pcm = track(args.audio)
    windows = len(pcm) // (vad.WINDOW * 2)
    seconds = len(pcm) / 32000
    page_ms, page_scores = in_chromium(pcm)
    ours = vad.Vad(gates=False).process(pcm)
    worst = max(abs(a - b) for a, b in zip(page_scores, ours, strict=True))
    print(f"{seconds:.0f} s of a {args.audio}, {windows} windows of 32 ms")
    print(f"page (Chromium, onnxruntime-web, every window): {page_ms / windows * 1000:.0f} µs per window, "
          f"{page_ms / seconds / 10:.2f} % of a core for the call, on the user's machine")  # fmt: skip
    for calls in (1, 50):
        ms, runs = on_the_server(pcm, calls)
        label = f"server ({calls} call{'s' * (calls > 1)} in batches, gates on)"
        print(f"{label}: {ms / runs * 1000:.0f} µs per model run, model on {runs / calls / windows:.0%} "
              f"of the windows, {ms / calls / seconds / 10:.3f} % of a core per call")  # fmt: skip
    print(f"largest difference between the page's scores and the server model's, every window: {worst:.4f}")


if __name__ == "__main__":
    main()
