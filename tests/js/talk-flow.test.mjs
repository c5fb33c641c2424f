// The talk page's flow (Start creates the conversation) and readable tool cards: pure helpers.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ZERO_ID, conversationUrl, createConversation, describeRefusal, markUnfinished } from '../../static/js/talk-flow.js';
import { fieldLines, humanize } from '../../static/js/tool-card.js';

const cfg = {
  createUrl: '/api/conversations/',
  csrfToken: 'csrf-1',
  draft: { provider: 'local', topic: 3, voice: 'en-us+f3', language: 'en' },
};

function answering(status, body) {
  const calls = [];
  const fetchImpl = async (url, init) => {
    calls.push({ url, init });
    return { status, json: async () => body };
  };
  return { calls, fetchImpl };
}

describe('createConversation', () => {
  it('posts the chosen settings with the CSRF token and returns the new socket path', async () => {
    const { calls, fetchImpl } = answering(201, { id: 'c1', ws_path: '/ws/conversations/c1/' });
    const created = await createConversation(cfg, fetchImpl);
    assert.equal(created.ws_path, '/ws/conversations/c1/');
    assert.equal(calls[0].url, '/api/conversations/');
    assert.equal(calls[0].init.method, 'POST');
    assert.equal(calls[0].init.headers['X-CSRFToken'], 'csrf-1');
    assert.deepEqual(JSON.parse(calls[0].init.body), cfg.draft);
  });

  it('throws a sentence when refused', async () => {
    const { fetchImpl } = answering(429, { error: 'Too many new conversations: at most 3 a minute.' });
    await assert.rejects(createConversation(cfg, fetchImpl), /at most 3 a minute/);
    assert.match(describeRefusal(400, { fields: { voice: ['No such voice.'] } }), /No such voice\./);
    assert.match(describeRefusal(403, {}), /Reload/);
    assert.match(describeRefusal(500, {}), /HTTP 500/);
  });

  it('fills URL templates with the conversation id', () => {
    assert.equal(conversationUrl(`/history/${ZERO_ID}/`, 'abc'), '/history/abc/');
  });
});

describe('tool cards', () => {
  it('names tools and fields in words', () => {
    assert.equal(humanize('check_availability'), 'Check availability');
    assert.equal(humanize('partySize'), 'Party size');
  });

  it('shows flat arguments as lines and leaves nested ones to JSON', () => {
    assert.deepEqual(fieldLines('{"party_size": 2, "time": "19:00", "note": null}'), [
      ['Party size', '2'],
      ['Time', '19:00'],
      ['Note', '—'],
    ]);
    // A list of plain values is a line too (a booking tool's alternatives), not a JSON block.
    assert.deepEqual(fieldLines({ available: false, alternatives: ['12:00', '12:30', '13:00'] }), [
      ['Available', 'false'],
      ['Alternatives', '12:00, 12:30, 13:00'],
    ]);
    assert.equal(fieldLines({ items: [1, { nested: true }] }), null);
    assert.equal(fieldLines({ booking: { table: 7 } }), null);
    assert.equal(fieldLines('not json'), null);
  });
});

describe('markUnfinished', () => {
  it('marks the turns a call never finished, and only those', () => {
    const node = () => {
      const n = { className: '', textContent: '', dataset: {}, children: [] };
      n.append = (...c) => n.children.push(...c);
      return n;
    };
    const cut = Object.assign(node(), { dataset: { final: 'false' } });
    const done = Object.assign(node(), { dataset: { final: 'true' } });
    const view = { doc: { createElement: node }, turnEls: new Map([['agent:a1', done], ['agent:a2', cut]]) };
    markUnfinished(view);
    assert.equal(cut.dataset.final, 'unfinished');
    assert.equal(cut.children[0].textContent, '— unfinished');
    assert.equal(done.dataset.final, 'true');
    assert.equal(done.children.length, 0);
    markUnfinished(view); // a second end changes nothing more
    assert.equal(cut.children.length, 1);
  });
});
