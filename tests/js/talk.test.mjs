import { readFileSync } from 'node:fs';
// Pure helpers of the talk page controller (the DOM part runs in browsers).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  CLOSE_MESSAGES,
  PROTOCOL_VERSION,
  Transcript,
  closeMessage,
  describeMediaError,
  formatElapsed,
  formatMetric,
  formatMetrics,
  mediaErrorCode,
  prettyJson,
  unsupportedReason,
  wsUrl,
} from '../../static/js/talk.js';

describe('wsUrl', () => {
  it('uses wss: on https pages and ws: on http pages, same host and port', () => {
    const path = '/ws/conversations/abc/';
    assert.equal(wsUrl({ protocol: 'https:', host: 'x.org' }, path), 'wss://x.org/ws/conversations/abc/');
    assert.equal(wsUrl({ protocol: 'http:', host: 'localhost:8000' }, path), 'ws://localhost:8000/ws/conversations/abc/');
  });

  it('accepts a path without the leading slash', () => {
    assert.equal(wsUrl({ protocol: 'http:', host: 'h' }, 'ws/c/1/'), 'ws://h/ws/c/1/');
  });
});

describe('closeMessage', () => {
  it('is silent for normal closes', () => {
    for (const code of [1000, 1001, 1005]) assert.equal(closeMessage(code), '');
  });

  it('explains every application close code of protocol v1', () => {
    // The codes are read from docs/protocol.md, so the page and the document cannot drift apart.
    const doc = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8');
    const codes = [...doc.matchAll(/^\| (4\d\d\d) \|/gm)].map((m) => Number(m[1]));
    assert.ok(codes.length >= 8, 'the close-code table was not found in docs/protocol.md');
    for (const code of codes) {
      assert.ok(CLOSE_MESSAGES[code], `no message for ${code}`);
      assert.equal(closeMessage(code), CLOSE_MESSAGES[code]);
    }
    assert.match(closeMessage(4409), /another tab/);
    assert.match(closeMessage(4401), /sign in/i);
  });

  it('falls back to the code and reason for anything else', () => {
    assert.match(closeMessage(4999, 'odd'), /4999: odd/);
  });
});

describe('media errors', () => {
  it('says clearly when the microphone is denied or missing', () => {
    assert.match(describeMediaError({ name: 'NotAllowedError' }), /denied/);
    assert.match(describeMediaError({ name: 'NotFoundError' }), /No microphone/);
    assert.equal(mediaErrorCode({ name: 'NotAllowedError' }), 'mic_denied');
    assert.equal(mediaErrorCode({ name: 'NotFoundError' }), 'mic_missing');
    assert.equal(mediaErrorCode({ name: 'WorkletError' }), 'worklet');
  });

  it('reports a missing AudioWorklet, getUserMedia or secure context', () => {
    const ok = { isSecureContext: true, navigator: { mediaDevices: { getUserMedia() {} } }, AudioContext() {}, AudioWorkletNode() {} };
    assert.equal(unsupportedReason(ok), '');
    assert.match(unsupportedReason({ ...ok, AudioWorkletNode: undefined }), /AudioWorklet/);
    assert.match(unsupportedReason({ ...ok, navigator: {} }), /getUserMedia/);
    assert.match(unsupportedReason({ ...ok, isSecureContext: false }), /https/);
  });
});

describe('Transcript', () => {
  it('replaces a partial with the final of the same id', () => {
    const t = new Transcript();
    const [first, isNew] = t.apply({ role: 'user', id: 'u1', text: 'hel', final: false });
    assert.equal(isNew, true);
    const [again, isNew2] = t.apply({ role: 'user', id: 'u1', text: 'hello there', final: true });
    assert.equal(isNew2, false);
    assert.equal(again, first);
    assert.deepEqual(t.turns, [{ id: 'u1', role: 'user', text: 'hello there', final: true, interrupted: false }]);
  });

  it('keeps user and agent turns with the same id apart, in arrival order', () => {
    const t = new Transcript();
    t.apply({ role: 'user', id: 1, text: 'a', final: true });
    t.apply({ role: 'agent', id: 1, text: 'b', final: false });
    assert.deepEqual(t.turns.map((x) => `${x.role}:${x.id}:${x.text}`), ['user:1:a', 'agent:1:b']);
  });

  it('keeps an interrupted turn marked', () => {
    const t = new Transcript();
    t.apply({ role: 'agent', id: 'a1', text: 'It is', final: false });
    t.apply({ role: 'agent', id: 'a1', text: 'It is sunny', final: true, interrupted: true });
    t.apply({ role: 'agent', id: 'a1', text: 'It is sunny', final: true });
    assert.equal(t.turns[0].interrupted, true);
  });
});

describe('formatting', () => {
  it('formats elapsed time', () => {
    assert.equal(formatElapsed(0), '0:00');
    assert.equal(formatElapsed(65_400), '1:05');
    assert.equal(formatElapsed(3_725_000), '1:02:05');
  });

  it('formats metrics, with _ms fields in milliseconds', () => {
    assert.deepEqual(formatMetric('latency_ms', 640), ['latency', '640 ms']);
    assert.deepEqual(formatMetric('first_audio_ms', 12.7), ['first audio', '13 ms']);
    assert.deepEqual(formatMetric('turns', 3), ['turns', '3']);
    assert.deepEqual(formatMetric('model', 'x'), ['model', 'x']);
  });

  it('labels the reply latency with what it is measured from', () => {
    assert.deepEqual(formatMetrics({ latency_ms: 640, latency_from: 'vad', turns: 2 }), [
      ['reply', '640 ms after you stopped speaking (our VAD)'],
      ['turns', '2'],
    ]);
    assert.deepEqual(formatMetrics({ latency_ms: 410, latency_from: 'text' }), [
      ['reply', '410 ms after your typed text arrived'],
    ]);
  });

  it('pretty-prints tool arguments given as objects or JSON strings', () => {
    assert.equal(prettyJson({ a: 1 }), '{\n  "a": 1\n}');
    assert.equal(prettyJson('{"a":1}'), '{\n  "a": 1\n}');
    assert.equal(prettyJson('not json'), 'not json');
  });

  it('is written against protocol version 2', () => {
    assert.equal(PROTOCOL_VERSION, 2);
  });
});
