// Direct media (docs/protocol.md, version 2): the call's audio goes between this page and the
// vendor over WebRTC (Flow over LiveKit, Retell web calls); the conversation socket keeps the
// control plane. The server sends `join` with a short-lived url and token; the page joins, forwards
// the vendor's messages over the socket (`forward`), and sends what it records as tagged frames.
//
// The SDKs are vendored ES modules (static/vendor/, see bin/vendor), imported when a call joins.
// The helpers at the top are pure, so Node tests can import this module.

export const USER_CHANNEL = 0; // recording frame tag: the user's microphone
export const AGENT_CHANNEL = 1; // recording frame tag: the agent as heard on this page
export const STOP_GRACE_MS = 1000; // after AudioEnded, before leaving the room (Flow's own example)
// The microphone LiveKit publishes, as in Speechmatics' Flow-over-LiveKit example.
export const LIVEKIT_MIC_OPTIONS = Object.freeze({
  echoCancellation: true,
  noiseSuppression: true,
  voiceIsolation: true,
  autoGainControl: false,
});
export const RETELL_EVENTS = ['agent_start_talking', 'agent_stop_talking', 'update'];
// Retell's `update` carries the whole transcript so far, several times a second: only its latest
// entries are forwarded (they time the turns; the turns themselves come from our LLM WebSocket), so
// a long call's updates stay small beside the audio under the socket's flood limits.
export const RETELL_UPDATE_ENTRIES = 2;
export const TRANSPORT_LABELS = { livekit: 'LiveKit room', retell: 'Retell web call' };

/** A recording-only frame: one channel byte, then the 16 kHz s16le PCM. */
export function tagFrame(channel, pcm) {
  const out = new Uint8Array(1 + pcm.byteLength);
  out[0] = channel;
  out.set(new Uint8Array(pcm), 1);
  return out.buffer;
}

/** `text` fit to show: without the join token, nor any token-looking query value. */
export function scrubToken(text, token = '') {
  let out = String(text ?? '');
  if (token) out = out.split(token).join('***').split(encodeURIComponent(token)).join('***');
  return out.replace(/([?&](?:access_token|token)=)[^&\s'"#]+/gi, '$1***');
}

/** A LiveKit data-channel payload (bytes of JSON) as an object, or null. */
export function decodeData(payload, decoder = new TextDecoder()) {
  try {
    const value = JSON.parse(decoder.decode(payload));
    return value && typeof value === 'object' && !Array.isArray(value) ? value : null;
  } catch {
    return null;
  }
}

/** What a Retell SDK event becomes when forwarded: {event, ...its fields}; an `update` with only
 * the latest RETELL_UPDATE_ENTRIES entries of its transcript. */
export function retellMessage(event, data) {
  const fields = data && typeof data === 'object' && !Array.isArray(data) ? { ...data } : {};
  if (Array.isArray(fields.transcript)) fields.transcript = fields.transcript.slice(-RETELL_UPDATE_ENTRIES);
  return { ...fields, event };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Flow over LiveKit: join the room, publish the microphone, play the agent, and pass every
 * data-channel message to `hooks.forward`. `hooks.agentTrack(mediaStreamTrack)` gets the agent's
 * audio for the recording tap; `hooks.container` holds the agent's <audio> element.
 */
export class LiveKitCall {
  constructor(sdk, join, hooks) {
    Object.assign(this, { sdk, join, hooks });
    this.room = null;
    this.elements = [];
  }

  async start() {
    const { Room, RoomEvent, Track } = this.sdk;
    const room = (this.room = new Room());
    room.on(RoomEvent.DataReceived, (payload) => {
      const message = decodeData(payload);
      if (message) this.hooks.forward(message);
    });
    room.on(RoomEvent.TrackSubscribed, (track) => {
      if (track.kind !== Track.Kind.Audio) return;
      const element = track.attach(); // plays it
      this.elements.push(element);
      this.hooks.container?.append(element);
      this.hooks.agentTrack(track.mediaStreamTrack);
    });
    room.on(RoomEvent.Disconnected, () => this.hooks.left?.());
    await room.connect(this.join.url, this.join.token);
    await room.localParticipant.setCameraEnabled(false);
    await room.localParticipant.setMicrophoneEnabled(true, LIVEKIT_MIC_OPTIONS);
  }

  connected() {
    return Boolean(this.room && this.room.state === this.sdk.ConnectionState.Connected);
  }

  /** A control message to Flow, only while connected; whether it was sent. */
  send(message) {
    if (!this.connected()) return false;
    const data = new TextEncoder().encode(JSON.stringify(message));
    this.room.localParticipant.publishData(data, { reliable: true });
    return true;
  }

  setMuted(muted) {
    if (this.connected()) this.room.localParticipant.setMicrophoneEnabled(!muted, LIVEKIT_MIC_OPTIONS).catch(() => {});
  }

  /** Stop: tell Flow the audio ended, give it a second, then leave. */
  async stop() {
    if (this.send({ message: 'AudioEnded' })) await sleep(STOP_GRACE_MS);
    await this.leave();
  }

  async leave() {
    const room = this.room;
    this.room = null;
    this.elements.splice(0).forEach((element) => element.remove());
    if (room) await room.disconnect();
  }
}

/**
 * A Retell web call through retell-client-js-sdk: its `agent_start_talking`, `agent_stop_talking`
 * and `update` events go to `hooks.forward` (timing; the turns come from our LLM WebSocket).
 */
export class RetellCall {
  constructor(sdk, join, hooks) {
    Object.assign(this, { sdk, join, hooks });
    this.client = null;
  }

  async start() {
    const client = (this.client = new this.sdk.RetellWebClient());
    for (const event of RETELL_EVENTS) client.on(event, (data) => this.hooks.forward(retellMessage(event, data)));
    client.on('call_ready', () => this.#tapAgent());
    client.on('error', (error) => this.hooks.failed?.(new Error(String(error))));
    client.on('call_ended', () => this.hooks.left?.());
    await client.startCall({ accessToken: this.join.token });
  }

  /** The SDK plays the agent itself; its track ("agent_audio") is tapped for the recording. */
  #tapAgent() {
    for (const participant of this.client?.room?.remoteParticipants?.values() ?? []) {
      for (const publication of participant.trackPublications.values()) {
        if (publication.trackName === 'agent_audio' && publication.track) {
          this.hooks.agentTrack(publication.track.mediaStreamTrack);
        }
      }
    }
  }

  connected() {
    return Boolean(this.client && this.client.connected);
  }

  setMuted(muted) {
    if (!this.client) return;
    if (muted) this.client.mute();
    else this.client.unmute();
  }

  async stop() {
    await this.leave();
  }

  async leave() {
    const client = this.client;
    this.client = null;
    if (client) client.stopCall();
  }
}

/** Import the transport's SDK (a vendored ES module at `url`) and make its call object. */
export async function openCall(join, urls, hooks) {
  if (join.transport === 'livekit') return new LiveKitCall(await import(urls.livekit), join, hooks);
  if (join.transport === 'retell') return new RetellCall(await import(urls.retell), join, hooks);
  throw new Error(`unknown transport ${join.transport}`);
}
