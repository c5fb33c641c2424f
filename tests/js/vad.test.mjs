// The talk page's VAD windows (static/js/vad.js): the same windows, with the same context, as the
// server cuts from the same audio (playground/engine/vad.py), whatever the frames' sizes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { CONTEXT, WINDOW, Windows, rounded } from '../../static/js/vad.js';

const ramp = (n, from = 0) => Int16Array.from({ length: n }, (_, i) => (from + i) % 32768);

describe('Windows', () => {
  it('cuts 512-sample windows, each after the 64 samples before it (silence before the first)', () => {
    const windows = new Windows().push(ramp(3 * WINDOW));
    assert.equal(windows.length, 3);
    assert.deepEqual(Array.from(windows[0].subarray(0, CONTEXT)), new Array(CONTEXT).fill(0));
    assert.equal(windows[0][CONTEXT], 0);
    assert.equal(windows[0].length, CONTEXT + WINDOW);
    // the second window's context is the end of the first
    assert.deepEqual(Array.from(windows[1].subarray(0, CONTEXT)), Array.from(windows[0].subarray(WINDOW)));
    assert.equal(windows[2][CONTEXT] * 32768, 2 * WINDOW);
  });

  it('gives the same windows for 20 ms frames as for the audio at once', () => {
    const audio = ramp(10 * WINDOW + 100, 7);
    const cutter = new Windows();
    const framed = [];
    for (let i = 0; i < audio.length; i += 320) framed.push(...cutter.push(audio.subarray(i, i + 320)));
    const whole = new Windows().push(audio);
    assert.equal(framed.length, 10);
    framed.forEach((w, k) => assert.deepEqual(w, whole[k]));
  });
});

describe('rounded', () => {
  it('keeps three decimals, enough for the turn thresholds (0.35, 0.5)', () => {
    assert.equal(rounded(0.123456), 0.123);
    assert.equal(rounded(0.9999), 1);
  });
});
