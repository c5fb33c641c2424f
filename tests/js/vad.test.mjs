// The talk page's VAD windows (static/js/vad.js): the same windows, with the same context, as the
// server cuts from the same audio (playground/engine/vad.py), whatever the frames' sizes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Batcher, CONTEXT, PER_MESSAGE, QUIET_MESSAGE, WINDOW, Windows, rounded } from '../../static/js/vad.js';

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

describe('Batcher', () => {
  const send = (scores) => {
    const batcher = new Batcher();
    return scores.map((p) => batcher.add(p)).filter(Boolean);
  };

  it('sends every window in order, from 0, none twice', () => {
    const scores = [...new Array(40).fill(0.01), 0.9, 0.95, 0.97, 0.9, 0.2, ...new Array(60).fill(0.02)];
    const messages = send(scores);
    let next = 0;
    for (const m of messages) {
      assert.equal(m.from, next);
      next += m.scores.length;
    }
    assert.deepEqual(messages.flatMap((m) => m.scores), scores.slice(0, next));
    assert.ok(scores.length - next < QUIET_MESSAGE);
  });

  it('sends a voice at once and every two windows near it, sixteen at a time in a long quiet', () => {
    const quiet = new Array(32).fill(0.01);
    const messages = send([...quiet, 0.9, 0.9, 0.9, 0.9, ...new Array(40).fill(0.01)]);
    assert.deepEqual(messages.slice(0, 3).map((m) => m.scores.length), [16, 16, 1]); // the onset at once
    assert.equal(messages[2].scores[0], 0.9);
    const near = messages.slice(3, 3 + 9); // 4 voiced, then 16 windows near the voice
    assert.ok(near.every((m) => m.scores.length === PER_MESSAGE), JSON.stringify(near));
    assert.equal(messages.at(-1).scores.length, QUIET_MESSAGE); // quiet again
  });
});
