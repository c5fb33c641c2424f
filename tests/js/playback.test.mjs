// Playback-side ring buffer and jitter buffer.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { PlaybackBuffer, RingBuffer, s16ToFloat } from '../../static/js/playback-worklet.js';

const RATE = 24000;
const QUANTUM = 128;

function ramp(start, n) {
  return Float32Array.from({ length: n }, (_, i) => start + i);
}

function s16(n, value = 1000) {
  return new Int16Array(n).fill(value).buffer;
}

// Render whole quanta, returning how many real samples came out.
function renderQuanta(buf, quanta) {
  const out = new Float32Array(QUANTUM);
  let real = 0;
  for (let q = 0; q < quanta; q++) real += buf.render(out);
  return real;
}

describe('RingBuffer', () => {
  it('reads back what was written, in order', () => {
    const ring = new RingBuffer(16);
    ring.write(ramp(0, 10));
    const out = new Float32Array(10);
    assert.equal(ring.read(out), 10);
    assert.deepEqual(out, ramp(0, 10));
    assert.equal(ring.size, 0);
  });

  it('stays correct across wraparound, many times over', () => {
    const ring = new RingBuffer(10);
    let next = 0;
    let expected = 0;
    const out = new Float32Array(7);
    for (let round = 0; round < 50; round++) {
      ring.write(ramp(next, 6));
      next += 6;
      const n = ring.read(out);
      for (let i = 0; i < n; i++) assert.equal(out[i], expected++);
    }
    // Drain the rest; still in order.
    const rest = new Float32Array(ring.size);
    ring.read(rest);
    for (const v of rest) assert.equal(v, expected++);
    assert.equal(expected, next);
    assert.equal(ring.overflows, 0);
  });

  it('reads only what it has and leaves the rest of out untouched', () => {
    const ring = new RingBuffer(8);
    ring.write(ramp(1, 3));
    const out = new Float32Array(5).fill(-1);
    assert.equal(ring.read(out), 3);
    assert.deepEqual(Array.from(out), [1, 2, 3, -1, -1]);
  });

  it('drops the oldest samples on overflow and counts them', () => {
    const ring = new RingBuffer(8);
    ring.write(ramp(0, 6));
    ring.write(ramp(6, 5)); // 11 samples into 8: 0, 1, 2 are dropped
    assert.equal(ring.size, 8);
    assert.equal(ring.overflows, 1);
    assert.equal(ring.droppedSamples, 3);
    const out = new Float32Array(8);
    ring.read(out);
    assert.deepEqual(out, ramp(3, 8));
  });

  it('keeps only the newest capacity samples of an oversized write', () => {
    const ring = new RingBuffer(4);
    ring.write(ramp(0, 2));
    ring.write(ramp(2, 10)); // 12 in total, 8 dropped
    assert.equal(ring.droppedSamples, 8);
    assert.equal(ring.overflows, 1);
    const out = new Float32Array(4);
    ring.read(out);
    assert.deepEqual(out, ramp(8, 4));
  });

  it('clear empties it without counting an overflow', () => {
    const ring = new RingBuffer(4);
    ring.write(ramp(0, 3));
    ring.clear();
    assert.equal(ring.size, 0);
    assert.equal(ring.overflows, 0);
    ring.write(ramp(5, 2));
    const out = new Float32Array(2);
    ring.read(out);
    assert.deepEqual(out, ramp(5, 2));
  });
});

describe('s16ToFloat', () => {
  it('converts little-endian s16 to floats and ignores an odd trailing byte', () => {
    const bytes = new Uint8Array([0x00, 0x80, 0xff, 0x7f, 0x00, 0x40, 0x01]);
    const f = s16ToFloat(bytes.buffer);
    assert.deepEqual(Array.from(f), [-1, 32767 / 32768, 0.5]);
  });
});

describe('PlaybackBuffer', () => {
  it('waits for the start buffer (80 ms) before playing', () => {
    const buf = new PlaybackBuffer({ rate: RATE, startMs: 80 }); // 1920 samples
    buf.push(s16(1000));
    assert.equal(renderQuanta(buf, 1), 0);
    assert.equal(buf.playing, false);
    buf.push(s16(920)); // now exactly 1920
    const out = new Float32Array(QUANTUM);
    assert.equal(buf.render(out), QUANTUM);
    assert.equal(buf.playing, true);
    assert.ok(Math.abs(out[0] - 1000 / 32768) < 1e-9);
  });

  it('plays a short utterance that never reaches the start buffer, after waiting', () => {
    const buf = new PlaybackBuffer({ rate: RATE, startMs: 80 });
    buf.push(s16(500)); // about 21 ms
    // Silence for about startMs, then it plays.
    assert.equal(renderQuanta(buf, 14), 0);
    assert.equal(renderQuanta(buf, 10), 500);
  });

  it('counts an underrun when the buffer runs dry while playing', () => {
    const buf = new PlaybackBuffer({ rate: RATE, startMs: 10 }); // 240 samples
    buf.push(s16(300));
    assert.equal(renderQuanta(buf, 3), 300);
    assert.equal(buf.underruns, 1);
    assert.equal(buf.playing, false);
    // Silence while empty is not a further underrun.
    renderQuanta(buf, 20);
    assert.equal(buf.underruns, 1);
    // After refilling past the start buffer it plays and can underrun again.
    buf.push(s16(256));
    assert.equal(renderQuanta(buf, 3), 256);
    assert.equal(buf.underruns, 2);
    assert.equal(buf.stats().playedSamples, 556);
  });

  it('does not count an underrun while audio keeps arriving in time', () => {
    const buf = new PlaybackBuffer({ rate: RATE, startMs: 80 });
    buf.push(s16(1920));
    const out = new Float32Array(QUANTUM);
    for (let q = 0; q < 200; q++) {
      buf.push(s16(QUANTUM));
      assert.equal(buf.render(out), QUANTUM);
    }
    assert.equal(buf.underruns, 0);
    assert.equal(buf.stats().bufferedSamples, 1920);
  });

  it('clear flushes everything at once, stops playing and is not an underrun', () => {
    const buf = new PlaybackBuffer({ rate: RATE, startMs: 80 });
    buf.push(s16(24000));
    renderQuanta(buf, 2);
    buf.clear();
    const stats = buf.stats();
    assert.equal(stats.bufferedSamples, 0);
    assert.equal(stats.playing, false);
    assert.equal(stats.underruns, 0);
    assert.equal(renderQuanta(buf, 5), 0);
    // New audio after a clear waits for the start buffer again.
    buf.push(s16(1000));
    assert.equal(renderQuanta(buf, 1), 0);
  });

  it('overflow past the 10 s capacity drops the oldest audio and reports it', () => {
    const buf = new PlaybackBuffer({ rate: RATE, startMs: 80, capacityMs: 10000 });
    buf.push(new Int16Array(RATE * 10).fill(1).buffer);
    buf.push(new Int16Array(RATE).fill(2).buffer); // 1 s too much
    const stats = buf.stats();
    assert.equal(stats.bufferedSamples, RATE * 10);
    assert.equal(stats.overflows, 1);
    assert.equal(stats.droppedSamples, RATE);
    // The oldest second went: the last second buffered is the new audio.
    const out = new Float32Array(RATE * 9);
    buf.render(out);
    buf.render(out.subarray(0, RATE));
    assert.ok(Math.abs(out[0] - 2 / 32768) < 1e-12);
  });

  it('fills the quantum with silence around a partial read', () => {
    const buf = new PlaybackBuffer({ rate: RATE, startMs: 1 });
    buf.push(s16(50, 16384));
    const out = new Float32Array(QUANTUM).fill(9);
    assert.equal(buf.render(out), 50);
    assert.equal(out[49], 0.5);
    assert.ok(out.subarray(50).every((v) => v === 0));
  });
});
