// The page's own VAD (docs/protocol.md, `vad`): silero, the model the server runs, in
// onnxruntime-web on a worker, scores each 32 ms window of the audio this page sends, so the
// server runs no model for the call (README "Capacity"). If it cannot load in time, the server's
// model scores the call; if its scores go wrong or stop, the server's model takes over.

export const RATE = 16000;
export const WINDOW = 512; // samples: silero v5's window at 16 kHz
export const CONTEXT = 64; // samples of the window before that the model sees with each
export const PER_MESSAGE = 2; // windows a `vad` message near a voice: a barge-in waits at most 64 ms
export const QUIET_MESSAGE = 16; // windows a message in a long quiet stretch (512 ms: under LAG_WINDOWS)
export const VOICE = 0.35; // a score this high may be a voice (the server's turn detector ends below it)
export const NEAR_VOICE = 16; // windows after one: the turn's end (a 300 ms hangover) is decided there

/** Cuts s16le audio into the model's windows, each after the CONTEXT samples before it. */
export class Windows {
  constructor() {
    this.buf = new Float32Array(CONTEXT + WINDOW);
    this.fill = CONTEXT; // the first window's context is silence, as the server's stream starts
  }

  /** The windows `samples` (Int16Array) complete, as Float32Arrays of CONTEXT + WINDOW. */
  push(samples) {
    const out = [];
    for (let i = 0; i < samples.length; i += 1) {
      this.buf[this.fill] = samples[i] / 32768;
      this.fill += 1;
      if (this.fill === this.buf.length) {
        out.push(this.buf.slice());
        this.buf.copyWithin(0, WINDOW); // the window's last CONTEXT samples lead the next
        this.fill = CONTEXT;
      }
    }
    return out;
  }
}

/** One stream of silero in onnxruntime-web: the recurrent state is an input and an output. */
export class Scorer {
  static async create(ort, model) {
    const session = await ort.InferenceSession.create(model, {
      executionProviders: ['wasm'],
      graphOptimizationLevel: 'all',
    });
    return new Scorer(ort, session);
  }

  constructor(ort, session) {
    this.ort = ort;
    this.session = session;
    this.rate = new ort.Tensor('int64', BigInt64Array.from([BigInt(RATE)]), []);
    this.reset();
  }

  reset() {
    this.state = new this.ort.Tensor('float32', new Float32Array(2 * 128), [2, 1, 128]);
  }

  /** The speech probability of one window (Float32Array of CONTEXT + WINDOW); the state moves on. */
  async score(window) {
    const input = new this.ort.Tensor('float32', window, [1, CONTEXT + WINDOW]);
    const out = await this.session.run({ input, state: this.state, sr: this.rate });
    this.state = out.stateN;
    return out.output.data[0];
  }
}

/**
 * When the scores go out. Near a voice (a score of VOICE or more in the last NEAR_VOICE windows)
 * every PER_MESSAGE windows, so turns start and end on time; in a long quiet stretch, where the
 * server's turn detector has nothing to decide, every QUIET_MESSAGE: a call's messages drop by about
 * a third. A voice's first window goes out at once.
 */
export class Batcher {
  constructor() {
    this.from = 0;
    this.pending = [];
    this.sinceVoice = NEAR_VOICE;
  }

  /** The message to send after window score `p`, or null. */
  add(p) {
    this.pending.push(p);
    const onset = p >= VOICE && this.sinceVoice >= NEAR_VOICE;
    this.sinceVoice = p >= VOICE ? 0 : this.sinceVoice + 1;
    const size = this.sinceVoice < NEAR_VOICE ? PER_MESSAGE : QUIET_MESSAGE;
    if (!onset && this.pending.length < size) return null;
    const message = { from: this.from, scores: this.pending };
    this.from += this.pending.length;
    this.pending = [];
    return message;
  }
}

/** Three decimals: the turn detector's thresholds need no more, and the messages stay short. */
export const rounded = (p) => Math.round(p * 1000) / 1000;

/**
 * The talk page's side: a worker that loads the model at once (the page's first visit downloads
 * onnxruntime's 12 MB WebAssembly, cached after), then scores each call's audio. `ready` is true
 * once it can; `begin(send)` starts a call (windows from 0), `push(pcm)` takes each frame sent,
 * `end()` stops sending.
 */
export class PageVad {
  constructor(win, { workerUrl, modelUrl, wasmUrl }) {
    this.ready = false;
    this.failure = null;
    this.call = 0;
    this.send = null;
    this.scored = 0;
    this.worker = new win.Worker(workerUrl, { type: 'module' });
    this.worker.onmessage = (e) => this.onMessage(e.data);
    this.worker.onerror = (e) => this.failed(e.message || 'the VAD worker failed to load');
    this.worker.postMessage({ type: 'init', model: modelUrl, wasm: wasmUrl });
  }

  onMessage(msg) {
    if (msg.type === 'ready') this.ready = true;
    else if (msg.type === 'failed') this.failed(msg.message);
    else if (msg.type === 'scores' && msg.call === this.call && this.send) {
      this.scored += msg.scores.length;
      this.send({ type: 'vad', from: msg.from, scores: msg.scores });
    }
  }

  failed(message) {
    this.ready = false;
    this.failure = message;
    this.end();
  }

  begin(send) {
    this.call += 1;
    this.send = send;
    this.scored = 0;
    this.worker.postMessage({ type: 'begin', call: this.call });
  }

  push(pcm) {
    if (this.send) this.worker.postMessage({ type: 'pcm', call: this.call, pcm });
  }

  end() {
    this.send = null;
  }
}
