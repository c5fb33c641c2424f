// Microphone capture worklet: device rate -> 16 kHz s16le, 20 ms frames.
//
// The AudioContext runs at the device's own rate: forcing a sampleRate on the
// capture context breaks microphone input in Firefox ("connecting AudioNodes
// from AudioContexts with different sample-rate is not supported"). So the
// resampling to 16 kHz happens here, with a proper anti-aliasing filter.
//
// This file is an ES module. In an AudioWorkletGlobalScope it registers the
// 'pcm-capture' processor; anywhere else (Node tests) it only exports the
// plain classes below, since AudioWorkletProcessor does not exist there.

export const TARGET_RATE = 16000;
export const FRAME_SAMPLES = 320; // 20 ms at 16 kHz = 640 bytes of s16le

// Filter design, relative to the lower of the two rates (16 kHz here):
// the sinc cut-off sits at 0.45 of it (7.2 kHz) and the Kaiser transition
// band is 0.1 of it wide (6.4 .. 8.0 kHz), so everything at or above the
// output Nyquist (8 kHz) is in the stop band and cannot alias back.
const CUTOFF = 0.45;
const TRANSITION = 0.1;
const STOPBAND_DB = 80;
// Exact polyphase tables are used when the reduced ratio has at most this many
// phases (44.1k->16k has 160, 11.025k->16k has 640); odd rates fall back to
// this many phases with linear interpolation between neighbouring rows.
const MAX_PHASES = 1024;

function gcd(a, b) {
  while (b) [a, b] = [b, a % b];
  return a;
}

// Zeroth-order modified Bessel function of the first kind (Kaiser window).
function besselI0(x) {
  let sum = 1;
  let term = 1;
  for (let k = 1; k < 50; k++) {
    term *= (x / (2 * k)) ** 2;
    sum += term;
    if (term < sum * 1e-12) break;
  }
  return sum;
}

function sinc(x) {
  if (x === 0) return 1;
  const px = Math.PI * x;
  return Math.sin(px) / px;
}

// Kaiser's formulas: beta for the wanted attenuation and the number of taps
// for a transition band `width` (as a fraction of the input rate).
function kaiserBeta(db) {
  if (db > 50) return 0.1102 * (db - 8.7);
  if (db >= 21) return 0.5842 * (db - 21) ** 0.4 + 0.07886 * (db - 21);
  return 0;
}

function kaiserTaps(db, width) {
  return Math.ceil((db - 7.95) / (2.285 * 2 * Math.PI * width)) + 1;
}

/**
 * Streaming windowed-sinc resampler for mono Float32 audio, any ratio.
 *
 * Output sample n sits at input position n * inRate / outRate, tracked as an
 * exact fraction so there is no drift. Each output is a dot product of 2*half
 * input samples with one row of a polyphase table of Kaiser-windowed sinc
 * coefficients; every row is normalised to unity DC gain.
 *
 * State is carried between push() calls, and the arithmetic for an output
 * sample does not depend on how the input was split, so streamed output is
 * bit-identical to one-shot output. Latency is `half` input samples; flush()
 * feeds that many zeros to drain the tail.
 */
export class StreamResampler {
  constructor(inRate, outRate = TARGET_RATE) {
    if (!(inRate > 0 && outRate > 0)) throw new RangeError('rates must be positive');
    this.inRate = Math.round(inRate);
    this.outRate = Math.round(outRate);
    const g = gcd(this.inRate, this.outRate);
    this.step = this.inRate / g; // input advance per output, in 1/den units
    this.den = this.outRate / g;
    this.phases = Math.min(this.den, MAX_PHASES);
    this.exact = this.phases === this.den;
    this.#design();
    this.reset();
  }

  #design() {
    const low = Math.min(this.inRate, this.outRate);
    const fc = (CUTOFF * low) / this.inRate; // cycles per input sample
    const width = (TRANSITION * low) / this.inRate;
    this.half = Math.ceil(kaiserTaps(STOPBAND_DB, width) / 2);
    this.taps = 2 * this.half;
    const beta = kaiserBeta(STOPBAND_DB);
    const i0beta = besselI0(beta);
    // One extra row (phase 1.0) so interpolation never reads past the end.
    this.table = new Float32Array((this.phases + 1) * this.taps);
    for (let r = 0; r <= this.phases; r++) {
      this.#designRow(r, fc, beta, i0beta);
    }
  }

  // Row r holds the taps for fractional position phi = r / phases: tap j
  // multiplies input sample (base - half + 1 + j), at distance d from phi.
  #designRow(r, fc, beta, i0beta) {
    const phi = r / this.phases;
    const row = new Float64Array(this.taps);
    let sum = 0;
    for (let j = 0; j < this.taps; j++) {
      const d = phi + this.half - 1 - j;
      const w = d / this.half;
      const win = Math.abs(w) >= 1 ? 0 : besselI0(beta * Math.sqrt(1 - w * w)) / i0beta;
      row[j] = 2 * fc * sinc(2 * fc * d) * win;
      sum += row[j];
    }
    for (let j = 0; j < this.taps; j++) this.table[r * this.taps + j] = row[j] / sum;
  }

  reset() {
    // Start with half-1 zeros of history so output 0 is centred on input 0.
    this.buf = new Float32Array(Math.max(4096, this.taps * 4));
    this.len = this.half - 1; // valid samples in buf
    this.base = this.half - 1; // buf index of the sample at/before output pos
    this.frac = 0; // numerator of the fractional position, over den
  }

  /** Latency in input samples (centre of the filter). */
  get latency() {
    return this.half;
  }

  /** Feed input samples; returns the output samples now computable. */
  push(input) {
    this.#append(input);
    const out = new Float32Array(this.#available());
    for (let i = 0; i < out.length; i++) out[i] = this.#next();
    this.#compact();
    return out;
  }

  /** Drain the filter tail by feeding `latency` zeros. */
  flush() {
    return this.push(new Float32Array(this.half));
  }

  #append(input) {
    if (this.len + input.length > this.buf.length) {
      const bigger = new Float32Array(Math.max(this.buf.length * 2, this.len + input.length));
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
    this.buf.set(input, this.len);
    this.len += input.length;
  }

  // Outputs whose last tap (base + half) is already buffered.
  #available() {
    const lastOk = this.len - 1 - this.half; // largest base we can compute
    if (lastOk < this.base) return 0;
    // Count n >= 1 steps with base + floor((frac + k*step)/den) <= lastOk, plus the current one.
    const room = lastOk - this.base; // whole input samples of headroom
    return Math.floor(((room + 1) * this.den - this.frac - 1) / this.step) + 1;
  }

  #next() {
    const { taps, buf, table } = this;
    const start = this.base - this.half + 1;
    const pos = (this.frac * this.phases) / this.den;
    const r = Math.floor(pos);
    const t = pos - r;
    const a = r * taps;
    let acc = 0;
    if (this.exact || t === 0) {
      for (let j = 0; j < taps; j++) acc += buf[start + j] * table[a + j];
    } else {
      const b = a + taps;
      for (let j = 0; j < taps; j++) {
        const c = table[a + j] + t * (table[b + j] - table[a + j]);
        acc += buf[start + j] * c;
      }
    }
    this.frac += this.step;
    this.base += Math.floor(this.frac / this.den);
    this.frac %= this.den;
    return acc;
  }

  // Drop history no future output needs, keeping buffer indices small.
  #compact() {
    const drop = this.base - this.half + 1;
    if (drop <= 0) return;
    this.buf.copyWithin(0, drop, this.len);
    this.len -= drop;
    this.base -= drop;
  }
}

/** Float sample in [-1, 1] to signed 16-bit, clipped. */
export function floatToS16(x) {
  const s = x < 0 ? x * 32768 : x * 32767;
  return Math.max(-32768, Math.min(32767, Math.round(s)));
}

/** RMS and peak of a frame in dBFS, floored at -100 (silence). */
export function levelDb(samples) {
  let sq = 0;
  let peak = 0;
  for (let i = 0; i < samples.length; i++) {
    const v = Math.abs(samples[i]);
    sq += v * v;
    if (v > peak) peak = v;
  }
  const rms = samples.length ? Math.sqrt(sq / samples.length) : 0;
  const db = (v) => (v > 1e-5 ? 20 * Math.log10(v) : -100);
  return { rmsDb: db(rms), peakDb: db(peak) };
}

/**
 * Cuts a stream of 16 kHz float samples into exact 320-sample s16le frames.
 * onFrame(int16Frame, floatFrame) is called once per complete frame.
 */
export class FramePacker {
  constructor(onFrame, frameSamples = FRAME_SAMPLES) {
    this.onFrame = onFrame;
    this.frame = new Float32Array(frameSamples);
    this.fill = 0;
  }

  push(samples) {
    let i = 0;
    while (i < samples.length) {
      const n = Math.min(samples.length - i, this.frame.length - this.fill);
      this.frame.set(samples.subarray(i, i + n), this.fill);
      this.fill += n;
      i += n;
      if (this.fill === this.frame.length) this.#emit();
    }
  }

  #emit() {
    const pcm = new Int16Array(this.frame.length);
    for (let i = 0; i < pcm.length; i++) pcm[i] = floatToS16(this.frame[i]);
    this.fill = 0;
    this.onFrame(pcm, this.frame);
  }
}

/** Mixes all input channels of one render quantum down to mono. */
export function downmix(channels) {
  if (channels.length === 1) return channels[0];
  const mono = new Float32Array(channels[0].length);
  for (const ch of channels) {
    for (let i = 0; i < mono.length; i++) mono[i] += ch[i] / channels.length;
  }
  return mono;
}

function registerCapture() {
  /**
   * Port messages in: {type: 'mute', muted: bool}.
   * Port messages out, one per 20 ms frame:
   *   {type: 'frame', pcm: ArrayBuffer(640), rmsDb, peakDb, muted}
   * The level is the microphone's own even when muted, so the page can show
   * that the mic works (and warn when someone talks while muted); the frame
   * sent while muted is silence, keeping the server's audio clock running.
   */
  class PcmCapture extends AudioWorkletProcessor {
    constructor() {
      super();
      this.muted = false;
      this.resampler = new StreamResampler(sampleRate, TARGET_RATE);
      this.packer = new FramePacker((pcm, floats) => this.#post(pcm, floats));
      this.port.onmessage = (e) => this.#onMessage(e.data);
    }

    #onMessage(msg) {
      if (msg && msg.type === 'mute') this.muted = Boolean(msg.muted);
    }

    #post(pcm, floats) {
      const { rmsDb, peakDb } = levelDb(floats);
      if (this.muted) pcm.fill(0);
      const msg = { type: 'frame', pcm: pcm.buffer, rmsDb, peakDb, muted: this.muted };
      this.port.postMessage(msg, [pcm.buffer]);
    }

    process(inputs) {
      const channels = inputs[0];
      // No channels until the microphone source is connected (or after it ends).
      if (channels && channels.length) this.packer.push(this.resampler.push(downmix(channels)));
      return true;
    }
  }
  registerProcessor('pcm-capture', PcmCapture);
}

if (typeof registerProcessor === 'function') registerCapture();
