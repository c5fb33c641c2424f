// Playback edges (static/js/playback-worklet.js) and the talk page's latency chips (static/js/waterfall.js).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { PlaybackBuffer } from '../../static/js/playback-worklet.js';
import { LatencyView, chipText, formatMs, percentile, waterfallText } from '../../static/js/waterfall.js';

const RATE = 24000;
const Q = 128;

function s16(n, value = 1000) {
  return new Int16Array(n).fill(value).buffer;
}

/** Render `quanta` quanta from audio-clock frame `frame`; returns the frame after them. */
function run(buf, frame, quanta) {
  const out = new Float32Array(Q);
  for (let q = 0; q < quanta; q++, frame += Q) buf.render(out, frame);
  return frame;
}

describe('playback edges', () => {
  it('report the stream index and clock frame of each start and stop', () => {
    const buf = new PlaybackBuffer({ rate: RATE, startMs: 10 }); // 240 samples of start buffer
    let frame = run(buf, 1000 * Q, 3); // nothing yet
    buf.push(s16(1000)); // samples 0..999
    frame = run(buf, frame, 10);
    assert.deepEqual(buf.takeEdges(), [
      { kind: 'start', how: '', sample: 0, frame: 1003 * Q },
      // 1000 samples = 7 quanta + 104: the eighth quantum runs dry after 104 samples
      { kind: 'stop', how: 'drained', sample: 1000, frame: 1010 * Q + 104 },
    ]);
    assert.deepEqual(buf.takeEdges(), []); // handed over once
  });

  it('count samples dropped by a clear, so indices stay the server\'s', () => {
    const buf = new PlaybackBuffer({ rate: RATE, startMs: 1 });
    buf.push(s16(1000));
    let frame = run(buf, 0, 2); // 256 played
    buf.clear(frame);
    buf.skip(500); // the page dropped 500 samples it had not posted yet
    buf.push(s16(300)); // samples 1500..1799
    frame = run(buf, frame, 1);
    const edges = buf.takeEdges();
    assert.deepEqual(edges.map((e) => [e.kind, e.how, e.sample]), [
      ['start', '', 0],
      ['stop', 'cleared', 256],
      ['start', '', 1500],
    ]);
    assert.equal(edges[1].frame, 256);
  });

  it('report no stop for a clear while nothing played', () => {
    const buf = new PlaybackBuffer({ rate: RATE, startMs: 100 });
    buf.push(s16(10));
    run(buf, 0, 1); // waiting for the start buffer
    buf.clear(Q);
    assert.deepEqual(buf.takeEdges(), []);
  });
});

/** Just enough DOM for LatencyView: element nodes, and `made` collecting what went `after` one. */
function fakeDom() {
  const made = [];
  const node = (tag) => {
    const n = { tag, className: '', textContent: '', dataset: {}, children: [], title: '' };
    n.append = (...c) => n.children.push(...c);
    n.after = (c) => made.push(c);
    n.querySelector = (sel) => n.children.find((c) => `.${c.className}` === sel) || null;
    return n;
  };
  return { made, node };
}

describe('latency chips', () => {
  it('format the figures', () => {
    assert.equal(formatMs(640.4), '640 ms');
    assert.equal(formatMs(2140), '2.1 s');
    assert.equal(formatMs(undefined), '—');
    assert.equal(chipText({ latency_ms: 512 }), '512 ms');
    assert.equal(
      waterfallText({ user_final: 120, first_audio: 640, played: 730, reply: 2100 }),
      'transcript +120 ms · first audio sent +640 ms · played +730 ms · reply 2.1 s',
    );
    assert.equal(waterfallText({ first_audio: 640 }), 'first audio sent +640 ms');
  });

  it('take the nearest-rank P50, as the server does', () => {
    assert.equal(percentile([400, 100, 300, 200], 50), 200);
    assert.equal(percentile([700], 50), 700);
    assert.equal(percentile([], 50), null);
  });

  it('wait for their turn when the waterfall comes first', () => {
    const { made, node } = fakeDom();
    const doc = { createElement: node };
    const turns = new Map();
    const view = new LatencyView(doc, { turnEl: (id) => turns.get(id) || null, anchor: node('span') });
    view.apply({ type: 'waterfall', id: 'a2', latency_ms: 300, first_audio: 300 });
    view.apply({ type: 'waterfall', id: 'a4', latency_ms: 900, first_audio: 900 });
    const li = node('li');
    turns.set('a2', li);
    view.turnShown('a2', li);
    assert.equal(li.children[0].textContent, '300 ms');
    assert.equal(li.children[1].textContent, 'first audio sent +300 ms');
    assert.equal(made[0].textContent, 'P50 300 ms over 2');
    view.apply({ type: 'waterfall', id: 'a2', latency_ms: 300, first_audio: 300, played: 380 });
    assert.equal(li.children.length, 2); // updated in place
    assert.match(li.children[1].textContent, /played \+380 ms/);
  });

  it('count a reply once when a stored turn and a live update name it differently', () => {
    const { made, node } = fakeDom();
    const li = node('li');
    const view = new LatencyView({ createElement: node }, { turnEl: (id) => (id === 'stored-3' ? li : null), anchor: node('span') });
    // An audience view: the snapshot's stored reply, then the talker's update of the same reply.
    view.apply({ id: 'stored-3', sequence: 3, latency_ms: 600, first_audio: 600 });
    view.apply({ type: 'waterfall', id: 'a3', sequence: 3, latency_ms: 600, first_audio: 600, played: 650 });
    view.apply({ type: 'waterfall', id: 'a5', sequence: 5, latency_ms: 800, first_audio: 800 });
    assert.equal(made[0].textContent, 'P50 600 ms over 2');
    assert.match(li.children[1].textContent, /played \+650 ms/); // the update reached the stored turn
  });
});
