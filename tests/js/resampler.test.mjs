// Capture-side resampler: level, anti-aliasing, streaming and framing.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  FRAME_SAMPLES,
  FramePacker,
  StreamResampler,
  floatToS16,
  levelDb,
} from '../../static/js/capture-worklet.js';

const OUT = 16000;

function tone(freq, rate, seconds, amp = 0.5) {
  const n = Math.round(rate * seconds);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = amp * Math.sin((2 * Math.PI * freq * i) / rate);
  return x;
}

function noise(n, seed = 1) {
  // Small LCG so the test input is the same on every run.
  const x = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    x[i] = s / 1073741824 - 1;
  }
  return x;
}

function concat(parts) {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function oneShot(rate, input) {
  const r = new StreamResampler(rate, OUT);
  return concat([r.push(input), r.flush()]);
}

function streamed(rate, input, blockSizes) {
  const r = new StreamResampler(rate, OUT);
  const parts = [];
  let i = 0;
  for (let b = 0; i < input.length; b++) {
    const size = blockSizes[b % blockSizes.length];
    parts.push(r.push(input.subarray(i, i + size)));
    i += size;
  }
  parts.push(r.flush());
  return concat(parts);
}

function rmsDb(x) {
  let sq = 0;
  for (const v of x) sq += v * v;
  return 10 * Math.log10(sq / x.length);
}

// Level of the steady part of the output, skipping the filter's start-up and tail.
function steadyDb(out) {
  const skip = 800; // 50 ms at 16 kHz, far more than any filter half-length
  return rmsDb(out.subarray(skip, out.length - skip));
}

describe('StreamResampler passband', () => {
  for (const rate of [48000, 44100, 96000, 22050, 16000, 8000, 44056]) {
    it(`keeps a 1 kHz tone within 1 dB at ${rate} Hz input`, () => {
      const input = tone(1000, rate, 1);
      const gain = steadyDb(oneShot(rate, input)) - rmsDb(input);
      assert.ok(Math.abs(gain) < 1, `gain ${gain.toFixed(3)} dB`);
    });
  }

  it('keeps a 5 kHz tone within 1 dB at 44.1 kHz input', () => {
    const input = tone(5000, 44100, 1);
    const gain = steadyDb(oneShot(44100, input)) - rmsDb(input);
    assert.ok(Math.abs(gain) < 1, `gain ${gain.toFixed(3)} dB`);
  });
});

describe('StreamResampler anti-aliasing', () => {
  // Anything at or above 8 kHz cannot exist at 16 kHz; what comes out is alias.
  const cases = [
    [10000, 48000],
    [10000, 44100],
    [9000, 44100],
    [12000, 96000],
    [15000, 48000],
    [20000, 44100],
    [10000, 44056],
  ];
  for (const [freq, rate] of cases) {
    it(`attenuates a ${freq} Hz tone at ${rate} Hz input by at least 40 dB`, () => {
      const input = tone(freq, rate, 1);
      const gain = steadyDb(oneShot(rate, input)) - rmsDb(input);
      assert.ok(gain < -40, `gain ${gain.toFixed(1)} dB`);
    });
  }

  it('attenuates 10 kHz far below the level of 1 kHz (48 kHz input)', () => {
    const pass = steadyDb(oneShot(48000, tone(1000, 48000, 1)));
    const stop = steadyDb(oneShot(48000, tone(10000, 48000, 1)));
    assert.ok(pass - stop > 60, `only ${(pass - stop).toFixed(1)} dB apart`);
  });
});

describe('StreamResampler streaming', () => {
  for (const rate of [48000, 44100, 22050, 96000, 44056]) {
    it(`gives identical output in 128-sample blocks and one shot at ${rate} Hz`, () => {
      const input = noise(rate); // 1 s of noise
      const whole = oneShot(rate, input);
      assert.deepEqual(streamed(rate, input, [128]), whole);
    });
  }

  it('gives identical output for irregular block sizes, including empty ones', () => {
    const input = noise(44100, 7);
    assert.deepEqual(streamed(44100, input, [1, 127, 0, 128, 1000, 3]), oneShot(44100, input));
  });

  it('produces exactly the duration-matching number of samples after flush', () => {
    for (const rate of [48000, 44100, 22050, 96000, 8000, 44056]) {
      const out = oneShot(rate, noise(rate * 2));
      // latency is `half` input samples, so flush yields within one sample of 2 s.
      assert.ok(Math.abs(out.length - 2 * OUT) <= 1, `${rate}: ${out.length}`);
    }
  });

  it('does not drift over a long stream (1 min at 44.1 kHz)', () => {
    const r = new StreamResampler(44100, OUT);
    const block = new Float32Array(128);
    let produced = 0;
    const blocks = Math.round((60 * 44100) / 128);
    for (let b = 0; b < blocks; b++) produced += r.push(block).length;
    const expected = Math.floor(((blocks * 128 - r.latency) * OUT) / 44100);
    assert.ok(Math.abs(produced - expected) <= 1, `${produced} vs ${expected}`);
  });

  it('rejects nonsensical rates', () => {
    assert.throws(() => new StreamResampler(0, OUT), RangeError);
  });
});

describe('FramePacker with the resampler', () => {
  function framesFor(rate, seconds, flush) {
    const r = new StreamResampler(rate, OUT);
    const frames = [];
    const packer = new FramePacker((pcm) => frames.push(pcm));
    const input = tone(1000, rate, seconds);
    for (let i = 0; i < input.length; i += 128) packer.push(r.push(input.subarray(i, i + 128)));
    if (flush) packer.push(r.flush());
    return frames;
  }

  it('turns 1 s at 44.1 kHz into 50 frames of 320 samples (640 bytes), +-1', () => {
    const frames = framesFor(44100, 1, false);
    assert.ok(Math.abs(frames.length - 50) <= 1, `${frames.length} frames`);
    for (const f of frames) {
      assert.ok(f instanceof Int16Array);
      assert.equal(f.length, FRAME_SAMPLES);
      assert.equal(f.buffer.byteLength, 640);
    }
  });

  it('gives exactly 50 frames for 1 s at 48 kHz once flushed', () => {
    assert.equal(framesFor(48000, 1, true).length, 50);
  });

  it('gives each frame its own buffer, so transferring one does not affect the next', () => {
    const frames = framesFor(48000, 0.2, true);
    assert.equal(new Set(frames.map((f) => f.buffer)).size, frames.length);
  });

  it('keeps the tone level in the s16 frames', () => {
    const frames = framesFor(48000, 1, true).slice(5, -5);
    const floats = Float32Array.from(frames.flatMap((f) => Array.from(f, (v) => v / 32768)));
    const gain = rmsDb(floats) - rmsDb(tone(1000, 48000, 1));
    assert.ok(Math.abs(gain) < 1, `gain ${gain.toFixed(3)} dB`);
  });
});

describe('sample conversion and level', () => {
  it('clips and rounds to s16', () => {
    assert.equal(floatToS16(0), 0);
    assert.equal(floatToS16(1), 32767);
    assert.equal(floatToS16(-1), -32768);
    assert.equal(floatToS16(2.5), 32767);
    assert.equal(floatToS16(-3), -32768);
    assert.equal(floatToS16(0.5), 16384);
  });

  it('reports a full-scale sine at -3 dBFS RMS and 0 dBFS peak', () => {
    const { rmsDb: rms, peakDb } = levelDb(tone(1000, 16000, 0.02, 1));
    assert.ok(Math.abs(rms + 3.01) < 0.05, `rms ${rms}`);
    assert.ok(Math.abs(peakDb) < 0.05, `peak ${peakDb}`);
  });

  it('floors silence at -100 dBFS', () => {
    assert.deepEqual(levelDb(new Float32Array(320)), { rmsDb: -100, peakDb: -100 });
  });
});
