// The talk page's VAD worker (static/js/vad.js): silero in onnxruntime-web, off the page's thread.
import * as ort from '../vendor/onnxruntime-web/ort.wasm.bundle.min.js';
import { Batcher, Scorer, Windows, rounded } from './vad.js';

let scorer = null;
let call = 0;
let windows = null;
let batcher = null;
let queue = Promise.resolve(); // windows are scored in order: each needs the state the one before left

async function init({ model, wasm }) {
  try {
    ort.env.wasm.numThreads = 1; // a window is under a millisecond of work: no threads (nor isolation) needed
    ort.env.wasm.wasmPaths = { wasm };
    const response = await fetch(model);
    if (!response.ok) throw new Error(`the model: HTTP ${response.status}`);
    scorer = await Scorer.create(ort, new Uint8Array(await response.arrayBuffer()));
    postMessage({ type: 'ready' });
  } catch (err) {
    postMessage({ type: 'failed', message: String(err && err.message ? err.message : err) });
  }
}

async function score(id, pcm) {
  if (id !== call || !scorer) return;
  for (const window of windows.push(new Int16Array(pcm))) {
    const p = rounded(await scorer.score(window));
    if (id !== call) return;
    const message = batcher.add(p);
    if (message) postMessage({ type: 'scores', call, ...message });
  }
}

onmessage = ({ data }) => {
  if (data.type === 'init') init(data);
  else if (data.type === 'begin') {
    call = data.call;
    windows = new Windows();
    batcher = new Batcher();
    if (scorer) scorer.reset();
  } else if (data.type === 'pcm') {
    queue = queue.then(() => score(data.call, data.pcm)).catch((err) => {
      postMessage({ type: 'failed', message: String(err && err.message ? err.message : err) });
    });
  }
};
