// Direct media on the talk page (static/js/direct.js): the tagged recording frames, what is shown,
// and the LiveKit and Retell calls driven against stand-ins for the vendors' SDKs (the outside
// world: the real SDKs load in tests/js/vendor.test.mjs and in the browser test).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  AGENT_CHANNEL,
  LIVEKIT_MIC_OPTIONS,
  LiveKitCall,
  RetellCall,
  STOP_GRACE_MS,
  USER_CHANNEL,
  decodeData,
  retellMessage,
  scrubToken,
  tagFrame,
} from '../../static/js/direct.js';

describe('recording frames', () => {
  it('are one channel byte then the PCM', () => {
    const pcm = new Int16Array([1, -2, 3]).buffer;
    const frame = new Uint8Array(tagFrame(AGENT_CHANNEL, pcm));
    assert.equal(frame.length, 7);
    assert.equal(frame[0], 1);
    assert.deepEqual([...new Int16Array(frame.slice(1).buffer)], [1, -2, 3]);
    assert.equal(new Uint8Array(tagFrame(USER_CHANNEL, pcm))[0], 0);
  });
});

describe('what the page shows', () => {
  it('never shows the join token', () => {
    const text = 'could not connect to ws://h/rtc?access_token=abc.def&auto_subscribe=1 (token abc.def)';
    const shown = scrubToken(text, 'abc.def');
    assert.ok(!shown.includes('abc.def'), shown);
    assert.match(shown, /access_token=\*\*\*/);
    assert.equal(scrubToken('x?token=zzz', ''), 'x?token=***');
  });

  it('decodes data-channel JSON objects and skips anything else', () => {
    const bytes = (s) => new TextEncoder().encode(s);
    assert.deepEqual(decodeData(bytes('{"message":"AddTranscript"}')), { message: 'AddTranscript' });
    assert.equal(decodeData(bytes('[1]')), null);
    assert.equal(decodeData(bytes('not json')), null);
  });

  it('forwards Retell events as {event, ...fields}', () => {
    assert.deepEqual(retellMessage('agent_start_talking', undefined), { event: 'agent_start_talking' });
    assert.deepEqual(retellMessage('update', { transcript: [{ role: 'agent', content: 'Hi' }] }), {
      event: 'update',
      transcript: [{ role: 'agent', content: 'Hi' }],
    });
    // Only the latest entries of the transcript so far: a long call's updates stay small.
    const long = Array.from({ length: 500 }, (_, i) => ({ role: i % 2 ? 'user' : 'agent', content: `turn ${i}` }));
    const update = retellMessage('update', { event_type: 'update', transcript: long });
    assert.deepEqual(update.transcript.map((t) => t.content), ['turn 498', 'turn 499']);
    assert.equal(long.length, 500); // the SDK's own object is left alone
  });
});

/** A stand-in for livekit-client: records what the page does to the room. */
function fakeLiveKit() {
  const log = [];
  class Room {
    constructor() {
      this.handlers = {};
      this.state = 'disconnected';
      this.localParticipant = {
        setCameraEnabled: async (on) => log.push(['camera', on]),
        setMicrophoneEnabled: async (on, options) => log.push(['mic', on, options]),
        publishData: (data, options) => log.push(['publish', new TextDecoder().decode(data), options, Date.now()]),
      };
    }
    on(event, handler) {
      this.handlers[event] = handler;
    }
    async connect(url, token) {
      log.push(['connect', url, token]);
      this.state = 'connected';
    }
    async disconnect() {
      this.state = 'disconnected';
      log.push(['disconnect', Date.now()]);
    }
  }
  const sdk = {
    Room,
    RoomEvent: { DataReceived: 'dataReceived', TrackSubscribed: 'trackSubscribed', Disconnected: 'disconnected' },
    Track: { Kind: { Audio: 'audio' } },
    ConnectionState: { Connected: 'connected' },
  };
  return { sdk, log };
}

describe('Flow over LiveKit', () => {
  it('joins with the camera off and the microphone as Flow asks, and forwards every data message', async () => {
    const { sdk, log } = fakeLiveKit();
    const forwarded = [];
    const tapped = [];
    const call = new LiveKitCall(sdk, { url: 'wss://x.livekit.cloud', token: 't' }, {
      forward: (m) => forwarded.push(m),
      agentTrack: (t) => tapped.push(t),
    });
    await call.start();
    assert.deepEqual(log.slice(0, 3), [['connect', 'wss://x.livekit.cloud', 't'], ['camera', false],
      ['mic', true, LIVEKIT_MIC_OPTIONS]]); // prettier-ignore
    assert.deepEqual(LIVEKIT_MIC_OPTIONS, { echoCancellation: true, noiseSuppression: true, voiceIsolation: true,
      autoGainControl: false }); // prettier-ignore
    call.room.handlers.dataReceived(new TextEncoder().encode('{"message":"AddTranscript","metadata":{}}'));
    call.room.handlers.dataReceived(new TextEncoder().encode('garbage'));
    assert.deepEqual(forwarded, [{ message: 'AddTranscript', metadata: {} }]);
    const element = { remove() {} };
    call.room.handlers.trackSubscribed({ kind: 'audio', mediaStreamTrack: 'agent-track', attach: () => element });
    call.room.handlers.trackSubscribed({ kind: 'video', mediaStreamTrack: 'v', attach: () => element });
    assert.deepEqual(tapped, ['agent-track']);
  });

  it('sends control messages reliably, only while connected; Stop sends AudioEnded, waits 1 s, leaves', async () => {
    const { sdk, log } = fakeLiveKit();
    const call = new LiveKitCall(sdk, { url: 'u', token: 't' }, { forward() {}, agentTrack() {} });
    assert.equal(call.send({ message: 'AddInput' }), false); // not connected yet
    await call.start();
    assert.equal(call.send({ message: 'AddInput', input: 'hi' }), true);
    await call.stop();
    const published = log.filter((e) => e[0] === 'publish');
    assert.deepEqual(published.map((e) => [JSON.parse(e[1]).message, e[2]]), [
      ['AddInput', { reliable: true }],
      ['AudioEnded', { reliable: true }],
    ]);
    const [, disconnectedAt] = log.find((e) => e[0] === 'disconnect');
    assert.ok(disconnectedAt - published[1][3] >= STOP_GRACE_MS - 20);
    assert.equal(call.send({ message: 'AddInput' }), false); // left
  });
});

describe('Retell web calls', () => {
  it('starts the call with the access token and forwards the timing events', async () => {
    const handlers = {};
    let started = null;
    let stopped = false;
    class RetellWebClient {
      on(event, handler) {
        handlers[event] = handler;
      }
      async startCall(options) {
        started = options;
      }
      stopCall() {
        stopped = true;
      }
    }
    const forwarded = [];
    const call = new RetellCall({ RetellWebClient }, { token: 'access-1' }, { forward: (m) => forwarded.push(m) });
    await call.start();
    assert.deepEqual(started, { accessToken: 'access-1' });
    handlers.agent_start_talking();
    handlers.update({ transcript: [{ role: 'user', content: 'hello' }] });
    handlers.agent_stop_talking();
    assert.deepEqual(forwarded.map((m) => m.event), ['agent_start_talking', 'update', 'agent_stop_talking']);
    assert.deepEqual(forwarded[1].transcript, [{ role: 'user', content: 'hello' }]);
    await call.stop();
    assert.ok(stopped);
  });
});
