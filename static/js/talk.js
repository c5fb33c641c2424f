// Talk page controller: microphone -> WebSocket -> speakers, plus the live UI.
//
// Protocol: docs/protocol.md (version 2). Audio capture and playback run in
// AudioWorklets (capture-worklet.js, playback-worklet.js); direct media (the
// vendor's WebRTC call, `join`) is in direct.js; creating the conversation on Start and
// the next step after a call in talk-flow.js; tool cards in tool-card.js; "Share live view"
// (presenter mode) in share.js, which asks this page to send `present`. The page state is
// mirrored to window.talkState and to data-state on the page root so that
// browser tests can follow it.
//
// The helpers exported at the top are pure, so Node tests can import this
// module; the page only wires itself up when a document exists.

import { AGENT_CHANNEL, TRANSPORT_LABELS, USER_CHANNEL, openCall, scrubToken, tagFrame } from './direct.js';
import { LatencyView } from './waterfall.js';
import { clearCall, createConversation, markUnfinished, showNextStep } from './talk-flow.js';
import { toolCardNodes } from './tool-card.js';
import { PageVad } from './vad.js';

export const PROTOCOL_VERSION = 2;
const DEFAULT_OUTPUT_RATE = 24000; // protocol v1; ready.output_rate confirms it
const PLAYBACK_REPORT_MS = 1000;
const STOP_TIMEOUT_MS = 3000;
const MAX_SOCKET_BACKLOG = 64 * 1024; // bytes; more means the network is not keeping up
const MAX_ERRORS_SHOWN = 5;
const NO_USER_TRANSCRIPTS = 'This provider does not send a transcript of what you say.';
const STATES = ['idle', 'connecting', 'listening', 'thinking', 'speaking', 'ended'];
const SERVER_STATES = ['connecting', 'listening', 'thinking', 'speaking'];
const STATE_LABELS = {
  idle: 'Ready to start',
  connecting: 'Connecting…',
  listening: 'Listening',
  thinking: 'Thinking…',
  speaking: 'Speaking',
  ended: 'Ended',
};

export const CLOSE_MESSAGES = {
  4400: 'The server stopped the call: audio arrived far faster than real time, or another protocol error.',
  4401: 'You are signed out. Sign in again to talk.',
  4403: 'This conversation belongs to another user.',
  4404: 'This conversation does not exist.',
  4409: 'This conversation is already open in another tab or window.',
  4410: 'This conversation has already ended. Start a new one.',
  4429: 'You have too many live calls. End another call, then press Start again.',
  4500: 'The call failed on the server side.',
  4503: 'The voice provider is unavailable right now. Try again later.',
  1006: 'The connection to the server was lost.',
  1011: 'The server hit an internal error.',
  1013: 'The server is busy. Try again shortly.',
};

/** WebSocket URL for a server path, ws: or wss: to match the page. */
export function wsUrl(loc, path) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}${path.startsWith('/') ? path : `/${path}`}`;
}

/** A sentence for a close code, or '' for a normal close. */
export function closeMessage(code, reason = '') {
  if (code === 1000 || code === 1001 || code === 1005) return '';
  const known = CLOSE_MESSAGES[code];
  if (known) return known;
  return `The connection closed unexpectedly (code ${code}${reason ? `: ${reason}` : ''}).`;
}

/** Error code for talkState.errors after a failed start. */
export function mediaErrorCode(err) {
  const name = err && err.name;
  if (name === 'NotAllowedError' || name === 'SecurityError') return 'mic_denied';
  if (name === 'NotFoundError' || name === 'OverconstrainedError') return 'mic_missing';
  if (name === 'WorkletError') return 'worklet';
  return 'mic_error';
}

/** A sentence for a getUserMedia / AudioWorklet failure. */
export function describeMediaError(err) {
  switch (err && err.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'Microphone access was denied. Allow the microphone for this site (the icon in the address bar) and press Start again.';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'No microphone was found. Connect one and press Start again.';
    case 'NotReadableError':
    case 'AbortError':
      return 'The microphone is in use by another program or could not be opened.';
    case 'WorkletError':
      return `Could not load the audio processing module: ${err.message}. Reload the page.`;
    default:
      return `Could not start audio: ${(err && err.message) || err}`;
  }
}

/** Why this browser cannot run the page, or '' when it can. */
export function unsupportedReason(win) {
  if (!win.isSecureContext) {
    return 'The microphone needs a secure page: open this site over https:// or on localhost.';
  }
  if (!win.navigator.mediaDevices || !win.navigator.mediaDevices.getUserMedia) {
    return 'This browser cannot use the microphone (no getUserMedia).';
  }
  if (!win.AudioContext || !win.AudioWorkletNode) {
    return 'This browser does not support AudioWorklet. Use a current Chrome, Edge, Firefox or Safari.';
  }
  return '';
}

/** "m:ss" (or "h:mm:ss") for a duration in milliseconds. */
export function formatElapsed(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

/** Label and value for one metrics field, e.g. ["latency", "640 ms"]. */
export function formatMetric(key, value) {
  const isMs = key.endsWith('_ms');
  const label = (isMs ? key.slice(0, -3) : key).replace(/_/g, ' ');
  if (typeof value === 'number') {
    const n = Number.isInteger(value) ? value : value.toFixed(isMs ? 0 : 2);
    return [label, isMs ? `${n} ms` : String(n)];
  }
  return [label, typeof value === 'string' ? value : JSON.stringify(value)];
}

/** What a reply latency is measured from (the `latency_from` of `metrics`), in words. */
const LATENCY_FROM = {
  vad: 'after you stopped speaking (our VAD)',
  text: 'after your typed text arrived',
};

/**
 * Label and value of every metrics field to show. The reply latency says what it is measured
 * from, e.g. ["reply", "640 ms after you stopped speaking (our VAD)"]; `latency_from` is not
 * shown on its own.
 */
export function formatMetrics(metrics) {
  const rows = [];
  for (const [key, value] of Object.entries(metrics)) {
    if (key === 'latency_from') continue;
    if (key === 'latency_ms' && typeof value === 'number') {
      const from = LATENCY_FROM[metrics.latency_from] ?? 'after the end of your turn';
      rows.push(['reply', `${Math.round(value)} ms ${from}`]);
    } else {
      rows.push(formatMetric(key, value));
    }
  }
  return rows;
}

/** Pretty JSON for tool arguments/results, which may arrive as JSON strings. */
export function prettyJson(value) {
  if (typeof value === 'string') {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }
  return JSON.stringify(value, null, 2);
}

/**
 * Transcript turns keyed by role + id. Each `transcript` message carries the
 * whole text so far, so an update replaces the turn (partial -> final).
 */
export class Transcript {
  constructor() {
    this.turns = []; // in order of first appearance
    this.byKey = new Map();
  }

  /** Apply a transcript message; returns [turn, isNew]. */
  apply(msg) {
    const role = msg.role === 'agent' ? 'agent' : 'user';
    const key = `${role}:${msg.id}`;
    let turn = this.byKey.get(key);
    const isNew = !turn;
    if (isNew) {
      turn = { id: String(msg.id), role, text: '', final: false, interrupted: false };
      this.byKey.set(key, turn);
      this.turns.push(turn);
    }
    turn.text = typeof msg.text === 'string' ? msg.text : turn.text;
    turn.final = Boolean(msg.final);
    // Once interrupted, a turn stays marked even if a later update omits it.
    turn.interrupted = turn.interrupted || Boolean(msg.interrupted);
    return [turn, isNew];
  }
}

// ---------------------------------------------------------------- audio

/**
 * The two audio graphs. Capture: mic -> 'pcm-capture' in a context at the
 * device rate. Playback: 'pcm-playback' -> speakers in a context at the
 * server's output rate, which the browser resamples to the device.
 */
class AudioIO {
  constructor({ captureUrl, playbackUrl, startMs, onFrame, onPlayed }) {
    Object.assign(this, { captureUrl, playbackUrl, startMs, onFrame, onPlayed });
    this.pending = []; // agent audio that arrived while playback was being (re)built
  }

  /** Create and resume both contexts. Must run synchronously in the click. */
  createContexts(outputRate) {
    this.captureCtx = new AudioContext({ latencyHint: 'interactive' });
    this.playCtx = new AudioContext({ latencyHint: 'interactive', sampleRate: outputRate });
    // Not awaited here: resume() has to be *called* inside the user gesture.
    this.resumed = Promise.all([this.captureCtx.resume(), this.playCtx.resume()]);
  }

  async open() {
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    try {
      await this.captureCtx.audioWorklet.addModule(this.captureUrl);
      this.#buildCapture();
      await this.#buildPlayback();
    } catch (err) {
      // addModule fails with AbortError, which would read as a busy microphone.
      throw Object.assign(new Error(err.message || String(err)), { name: 'WorkletError' });
    }
    await this.resumed;
  }

  #buildCapture() {
    this.source = this.captureCtx.createMediaStreamSource(this.stream);
    this.captureNode = new AudioWorkletNode(this.captureCtx, 'pcm-capture', {
      numberOfInputs: 1,
      numberOfOutputs: 1, // silent; connected so every browser keeps pulling it
      channelCount: 1,
      channelCountMode: 'explicit',
    });
    this.captureNode.port.onmessage = (e) => this.onFrame(e.data);
    this.source.connect(this.captureNode).connect(this.captureCtx.destination);
  }

  async #buildPlayback() {
    await this.playCtx.audioWorklet.addModule(this.playbackUrl);
    this.playNode = new AudioWorkletNode(this.playCtx, 'pcm-playback', {
      numberOfInputs: 0,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { startMs: this.startMs, capacityMs: 10000, reportMs: 100 },
    });
    this.playNode.port.onmessage = (e) => this.onPlayed(e.data, this.playCtx.sampleRate);
    this.playNode.connect(this.playCtx.destination);
    for (const buf of this.pending.splice(0)) this.play(buf);
  }

  /** Rebuild playback when `ready` announces a rate other than the default. */
  async setOutputRate(rate) {
    if (!this.playCtx || this.playCtx.sampleRate === rate) return;
    const old = this.playCtx;
    this.playNode = null;
    this.playCtx = new AudioContext({ latencyHint: 'interactive', sampleRate: rate });
    old.close().catch(() => {});
    await this.#buildPlayback();
    await this.playCtx.resume();
  }

  get outputRate() {
    return this.playCtx ? this.playCtx.sampleRate : DEFAULT_OUTPUT_RATE;
  }

  play(buf) {
    if (this.playNode) this.playNode.port.postMessage(buf, [buf]);
    else this.pending.push(buf);
  }

  clearPlayback() {
    // Dropped before the worklet saw them, they still count in its stream position (edges).
    const skipped = this.pending.reduce((n, buf) => n + (buf.byteLength >> 1), 0);
    this.pending = [];
    if (this.playNode) this.playNode.port.postMessage({ type: 'clear', skipped });
  }

  /** How long ago (ms) the sample played at audio-clock `frame` reached the ear (negative: not yet). */
  agoMs(frame) {
    const ctx = this.playCtx;
    if (!ctx) return 0;
    const latency = ctx.outputLatency || ctx.baseLatency || 0;
    return Math.round((ctx.currentTime - frame / ctx.sampleRate - latency) * 1000);
  }

  setMuted(muted) {
    if (this.captureNode) this.captureNode.port.postMessage({ type: 'mute', muted });
  }

  /** Direct media: the agent's remote track into a capture worklet of its own (16 kHz frames). */
  tapTrack(track, onFrame) {
    if (!this.captureCtx || this.captureCtx.state === 'closed') return;
    const source = this.captureCtx.createMediaStreamSource(new MediaStream([track]));
    const node = new AudioWorkletNode(this.captureCtx, 'pcm-capture', {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      channelCount: 1,
      channelCountMode: 'explicit',
    });
    node.port.onmessage = (e) => onFrame(e.data);
    source.connect(node).connect(this.captureCtx.destination);
    this.taps = [...(this.taps || []), { source, node }];
  }

  /** Stop the microphone (and the mic indicator in the browser's tab). */
  stopCapture() {
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.captureNode) this.captureNode.port.onmessage = null;
    if (this.source) this.source.disconnect();
    for (const tap of (this.taps || []).splice(0)) {
      tap.node.port.onmessage = null;
      tap.source.disconnect();
    }
    if (this.captureCtx && this.captureCtx.state !== 'closed') this.captureCtx.close().catch(() => {});
  }

  close() {
    this.stopCapture();
    this.pending = [];
    if (this.playNode) this.playNode.port.onmessage = null;
    if (this.playCtx && this.playCtx.state !== 'closed') this.playCtx.close().catch(() => {});
  }
}

// ---------------------------------------------------------------- view

/** All DOM access. Text is always set with textContent, never as HTML. */
class View {
  constructor(doc, root) {
    this.doc = doc;
    this.root = root;
    const $ = (id) => doc.getElementById(id);
    this.el = {
      start: $('talk-start'),
      stop: $('talk-stop'),
      mute: $('talk-mute'),
      ptt: $('talk-ptt'),
      hold: $('talk-hold'),
      state: $('talk-state'),
      reason: $('talk-reason'),
      speaking: $('talk-speaking'),
      elapsed: $('talk-elapsed'),
      meter: $('talk-meter'),
      meterBar: $('talk-meter-bar'),
      transcript: $('talk-transcript'),
      errors: $('talk-errors'),
      textForm: $('talk-text-form'),
      textInput: $('talk-text'),
      metrics: $('talk-metrics'),
      remote: $('talk-remote-audio'),
    };
    this.turnEls = new Map();
    this.toolEls = new Map();
    this.latency = new LatencyView(doc, {
      turnEl: (id) => this.turnEls.get(`agent:${id}`),
      anchor: this.el.elapsed?.parentElement, // the running P50 goes beside the call's clock
    });
    this.levelDb = -100;
    this.meterQueued = false;
  }

  setState(state) {
    this.root.dataset.state = state;
    this.doc.documentElement.dataset.state = state;
    this.#text(this.el.state, STATE_LABELS[state] || state);
  }

  setReason(text) {
    this.#text(this.el.reason, text);
  }

  /** Enable the controls that make sense in each phase of the call. */
  setPhase(phase, { acceptsText = false } = {}) {
    const { start, stop, mute, textForm } = this.el;
    const live = phase === 'live';
    if (start) start.disabled = phase !== 'idle' && phase !== 'over'; // Start again once a call is over
    if (stop) stop.disabled = !(live || phase === 'starting');
    if (mute) mute.disabled = !live;
    if (textForm) {
      for (const c of textForm.elements) c.disabled = !(live && acceptsText);
      textForm.hidden = !acceptsText;
    }
    if (stop) stop.textContent = phase === 'stopping' ? 'Stopping…' : 'Stop';
  }

  setMuted(manual, effective) {
    const { mute, meter, hold } = this.el;
    if (mute) {
      mute.setAttribute('aria-pressed', String(manual));
      mute.textContent = manual ? 'Unmute' : 'Mute';
    }
    if (meter) meter.dataset.muted = String(effective);
    if (hold) hold.dataset.active = String(!effective);
  }

  showHold(visible) {
    if (this.el.hold) this.el.hold.hidden = !visible;
  }

  setSpeaking(active) {
    if (this.el.speaking) this.el.speaking.dataset.active = String(active);
  }

  setElapsed(ms) {
    this.#text(this.el.elapsed, formatElapsed(ms));
  }

  /** Meter updates are coalesced to one per animation frame. */
  setLevel(db) {
    this.levelDb = db;
    if (this.meterQueued || !this.el.meterBar) return;
    this.meterQueued = true;
    requestAnimationFrame(() => {
      this.meterQueued = false;
      const frac = Math.min(1, Math.max(0, (this.levelDb + 60) / 60));
      this.el.meterBar.style.transform = `scaleX(${frac})`;
      this.el.meter.setAttribute('aria-valuenow', String(Math.round(Math.max(-60, this.levelDb))));
    });
  }

  renderTurn(turn) {
    let li = this.turnEls.get(`${turn.role}:${turn.id}`);
    if (!li) {
      li = this.#newTurn(turn);
      this.turnEls.set(`${turn.role}:${turn.id}`, li);
      this.#append(li);
      if (turn.role === 'agent') this.latency.turnShown(turn.id, li);
    }
    li.dataset.final = String(turn.final);
    li.dataset.interrupted = String(turn.interrupted);
    li.querySelector('.turn-text').textContent = turn.text;
    li.querySelector('.turn-flag').hidden = !turn.interrupted;
  }

  #newTurn(turn) {
    const li = this.#make('li', 'turn');
    li.dataset.role = turn.role;
    li.dataset.id = turn.id;
    li.append(
      this.#make('span', 'turn-who', turn.role === 'agent' ? 'Agent' : 'You'),
      this.#make('span', 'turn-text'),
      this.#make('span', 'turn-flag', '— interrupted'),
    );
    return li;
  }

  renderToolCall(call) {
    let li = this.toolEls.get(call.id);
    if (!li) {
      li = this.#make('li', 'tool-card');
      li.dataset.id = call.id;
      this.toolEls.set(call.id, li);
      this.#append(li);
    }
    li.replaceChildren(...toolCardNodes(this.doc, call, prettyJson));
  }

  renderMetrics(metrics) {
    const dl = this.el.metrics;
    if (!dl) return;
    dl.replaceChildren();
    for (const [label, text] of formatMetrics(metrics)) {
      dl.append(this.#make('dt', '', label), this.#make('dd', '', text));
    }
  }

  /** A standing note about this conversation, shown above the transcript (one per text). */
  showNote(text) {
    const list = this.el.transcript;
    if (!list || [...this.doc.querySelectorAll('.talk-note')].some((n) => n.textContent === text)) return;
    list.before(this.#make('p', 'talk-note', text));
  }

  addError(message) {
    const box = this.el.errors;
    if (!box) return;
    box.append(this.#make('p', 'talk-error', message));
    while (box.children.length > MAX_ERRORS_SHOWN) box.firstElementChild.remove();
  }

  clearErrors() {
    if (this.el.errors) this.el.errors.replaceChildren();
  }

  // Keep the newest line in view unless the user scrolled up to read.
  #append(node) {
    const list = this.el.transcript;
    if (!list) return;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(node);
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  #make(tag, cls, text) {
    const node = this.doc.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  #text(node, text) {
    if (node) node.textContent = text;
  }
}

// ---------------------------------------------------------------- controller

class TalkPage {
  constructor(win, cfg, view) {
    this.win = win;
    this.cfg = cfg;
    this.view = view;
    this.transcript = new Transcript();
    this.phase = 'idle'; // idle | starting | live | stopping | over
    this.ws = null;
    this.audio = null;
    this.call = null; // direct media: the vendor's call (direct.js)
    this.ready = null;
    this.cancelled = false;
    this.manualMute = false;
    this.talkHeld = false; // Space or the hold button, in push-to-talk mode
    this.timers = [];
    this.endedWaiters = [];
    this.createdUsed = false; // the conversation the page was opened on (cfg.wsPath) has had its call
    this.vad = win.talkVad = loadVad(win, cfg); // loads at once: a call uses it if it is ready by then
    this.state = win.talkState = this.newState();
    this.setState('idle');
  }

  /** window.talkState for a new call (browser tests follow it). */
  newState() {
    return {
      state: 'idle',
      played: 0, // ms of agent audio played
      buffered: 0,
      underruns: 0,
      speaking: false,
      muted: false,
      level: -100,
      framesSent: 0,
      framesDropped: 0,
      ready: null,
      endReason: null,
      transcripts: this.transcript.turns,
      toolCalls: [],
      metrics: {},
      waterfalls: {}, // transcript id of an agent turn -> its latency waterfall
      errors: [],
      media: null, // 'relayed' | 'direct', from `ready`
      direct: null, // direct media: {transport, callId, state, forwarded, userFrames, agentFrames}
      conversationId: null, // once Start created (or opened) the conversation
      presenting: false, // presenter mode (share.js): the call is mirrored to an audience
      vad: null, // who scores the user's audio for turns: 'page' (vad.js) or 'server', from `ready`
    };
  }

  // ---- UI wiring

  bind() {
    const { start, stop, mute, ptt, hold, textForm } = this.view.el;
    start?.addEventListener('click', () => this.start());
    stop?.addEventListener('click', () => this.stop());
    mute?.addEventListener('click', () => this.toggleMute());
    ptt?.addEventListener('change', () => this.applyMute());
    textForm?.addEventListener('submit', (e) => this.onTextSubmit(e));
    this.#bindHold(hold);
    this.win.addEventListener('keydown', (e) => this.onKey(e, true));
    this.win.addEventListener('keyup', (e) => this.onKey(e, false));
    // A key released outside the window never fires keyup: never stay open.
    this.win.addEventListener('blur', () => this.setHeld(false));
    // share.js asks for presenter mode on or off (sessions/audience.py).
    this.view.root.addEventListener('talk:present', (e) => this.send({ type: 'present', on: Boolean(e.detail?.on) }));
    this.win.addEventListener('pagehide', () => {
      this.leaveCall();
      this.send({ type: 'stop' });
    });
    this.setPhase('idle');
    this.applyMute();
  }

  #bindHold(hold) {
    if (!hold) return;
    hold.addEventListener('pointerdown', (e) => {
      hold.setPointerCapture(e.pointerId);
      this.setHeld(true);
    });
    for (const type of ['pointerup', 'pointercancel', 'lostpointercapture']) {
      hold.addEventListener(type, () => this.setHeld(false));
    }
    hold.addEventListener('contextmenu', (e) => e.preventDefault()); // long-press on phones
  }

  setState(state) {
    if (!STATES.includes(state)) return;
    this.state.state = state;
    this.view.setState(state);
  }

  setPhase(phase) {
    this.phase = phase;
    this.view.setPhase(phase, { acceptsText: this.acceptsText() });
  }

  acceptsText() {
    return Boolean(this.ready?.accepts_text ?? this.cfg.acceptsText);
  }

  /** Record an error in talkState and show it (`shown` defaults to the message). */
  error(message, { code = 'client', fatal = false, shown = message } = {}) {
    this.state.errors.push({ code, message, fatal });
    this.view.addError(shown);
  }

  // ---- start

  async start() {
    if (this.phase === 'over') this.resetForNextCall();
    if (this.phase !== 'idle') return;
    this.view.clearErrors();
    const problem = unsupportedReason(this.win);
    if (problem) return this.error(problem, { code: 'unsupported' });
    this.setPhase('starting');
    this.setState('connecting');
    this.view.el.stop?.focus(); // Start is disabled now; Stop is what the user may want next
    this.audio = new AudioIO({
      captureUrl: this.cfg.captureWorkletUrl,
      playbackUrl: this.cfg.playbackWorkletUrl,
      startMs: this.cfg.startMs,
      onFrame: (m) => this.onFrame(m),
      onPlayed: (m, rate) => this.onPlayed(m, rate),
    });
    try {
      this.audio.createContexts(this.cfg.outputRate || DEFAULT_OUTPUT_RATE);
      await this.audio.open();
    } catch (err) {
      return this.abortStart(err);
    }
    if (this.cancelled) return this.abortStart(null); // Stop pressed during the mic prompt
    this.watchMicrophone();
    this.applyMute();
    this.connect();
  }

  /** Failure (or Stop) before the socket opened: back to idle, retryable. */
  abortStart(err) {
    this.audio.close();
    this.audio = null;
    this.cancelled = false;
    if (err) this.error(describeMediaError(err), { code: mediaErrorCode(err) });
    this.setPhase('idle');
    this.setState('idle');
  }

  watchMicrophone() {
    const [track] = this.audio.stream.getAudioTracks();
    if (!track) return;
    track.addEventListener('ended', () => {
      if (this.phase !== 'live') return;
      this.error('The microphone was disconnected.', { code: 'mic_ended' });
      this.stop();
    });
  }

  /** Another call on the same page: a fresh conversation, transcript and state. */
  resetForNextCall() {
    clearCall(this.view);
    this.transcript = new Transcript();
    this.ready = null;
    this.cancelled = false;
    this.state = this.win.talkState = this.newState();
    this.setPhase('idle');
    this.setState('idle');
  }

  /** The socket path of this call's conversation: created now (talk-flow.js), unless the page was
   * opened on one not yet used. */
  async conversationPath() {
    if (this.cfg.wsPath && !this.createdUsed) {
      this.createdUsed = true;
      this.setConversation(this.cfg.conversationId);
      return this.cfg.wsPath;
    }
    const created = await createConversation(this.cfg);
    this.setConversation(created.id);
    return created.ws_path;
  }

  setConversation(id) {
    this.state.conversationId = id;
    this.view.root.dataset.conversation = id;
  }

  async connect() {
    let path;
    try {
      path = await this.conversationPath();
    } catch (err) {
      this.error(err.message, { code: 'create_failed' });
      return this.abortStart(null);
    }
    if (this.cancelled) return this.abortStart(null); // Stop pressed while it was being created
    // The page scores its own audio if its VAD is ready (docs/protocol.md, `vad`)
    const ws = new WebSocket(wsUrl(this.win.location, path) + (this.vad?.ready ? '?vad=page' : ''));
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (e) => this.onMessage(e.data);
    ws.onclose = (e) => this.onClose(e);
    this.ws = ws;
  }

  // ---- socket in

  onMessage(data) {
    if (typeof data !== 'string') {
      if (this.ready && this.audio) this.audio.play(data);
      return;
    }
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return console.warn('talk: non-JSON text from server', data);
    }
    const handler = msg && typeof msg === 'object' ? this.handlers[msg.type] : null;
    if (handler) handler.call(this, msg);
    else console.warn('talk: unknown server message', msg);
  }

  handlers = {
    ready: this.onReady,
    transcript: this.onTranscript,
    status: this.onStatus,
    clear: this.onClear,
    tool_call: this.onToolCall,
    metrics: this.onMetrics,
    waterfall: this.onWaterfall,
    error: this.onServerError,
    ended: this.onEnded,
    join: this.onJoin,
    presenting: this.onPresenting,
  };

  onPresenting(msg) {
    this.state.presenting = Boolean(msg.on);
    this.view.root.dataset.presenting = String(this.state.presenting);
  }

  async onReady(msg) {
    if (this.ready || this.phase !== 'starting') return; // e.g. Stop pressed while connecting
    this.ready = msg;
    this.state.ready = msg;
    if (msg.protocol !== PROTOCOL_VERSION) {
      this.error(`The server speaks protocol ${msg.protocol}; this page expects ${PROTOCOL_VERSION}. Reload the page.`, {
        code: 'protocol_version',
      });
    }
    this.state.media = msg.media === 'direct' ? 'direct' : 'relayed';
    this.state.vad = msg.vad === 'page' ? 'page' : 'server';
    if (this.state.vad === 'page') this.vad.begin((m) => this.send(m));
    this.setPhase('live');
    if (msg.user_transcripts === false) this.view.showNote(NO_USER_TRANSCRIPTS);
    if (this.state.state === 'connecting') this.setState('listening');
    this.startTimers();
    if (msg.output_rate && this.audio) {
      try {
        await this.audio.setOutputRate(msg.output_rate);
      } catch (err) {
        this.error(`Could not set up playback at ${msg.output_rate} Hz: ${err.message}`, { code: 'playback' });
      }
    }
  }

  // ---- direct media (direct.js)

  /** The server hands this page (the owner's) the vendor's call: join it. */
  async onJoin(msg) {
    if (this.phase !== 'live' || this.state.media !== 'direct' || this.state.direct) return;
    const label = TRANSPORT_LABELS[msg.transport] || msg.transport;
    const direct = { transport: msg.transport, callId: msg.call_id || '', state: 'joining', forwarded: 0,
                     userFrames: 0, agentFrames: 0 }; // prettier-ignore
    this.state.direct = direct;
    if (msg.note) this.view.showNote(msg.note);
    const hooks = {
      forward: (message) => this.forward(msg.transport, message),
      agentTrack: (track) => this.audio?.tapTrack(track, (m) => this.onAgentFrame(m)),
      container: this.view.el.remote,
      left: () => {
        if (direct.state !== 'failed') direct.state = 'left';
      },
      failed: (err) => this.joinFailed(label, msg.token, err),
    };
    try {
      this.call = await openCall(msg, { livekit: this.cfg.livekitSdkUrl, retell: this.cfg.retellSdkUrl }, hooks);
      if (this.phase !== 'live') return this.leaveCall();
      await this.call.start();
      if (direct.state === 'joining') direct.state = 'connected';
      this.call?.setMuted(this.state.muted);
    } catch (err) {
      this.joinFailed(label, msg.token, err);
      this.leaveCall();
    }
  }

  joinFailed(label, token, err) {
    if (this.state.direct) this.state.direct.state = 'failed';
    const why = scrubToken((err && err.message) || err, token);
    this.error(`Could not join the ${label}: ${why}`, { code: 'join_failed' });
  }

  forward(source, message) {
    if (this.phase !== 'live') return;
    this.send({ type: 'forward', source, message });
    this.state.direct.forwarded += 1;
  }

  onAgentFrame(msg) {
    if (msg.type !== 'frame' || !this.sendable()) return;
    this.ws.send(tagFrame(AGENT_CHANNEL, msg.pcm));
    this.state.direct.agentFrames += 1;
  }

  /** Leave the vendor's call now (page unload, the call ended). */
  leaveCall() {
    const call = this.call;
    this.call = null;
    if (call) call.leave().catch(() => {});
  }

  onTranscript(msg) {
    const [turn] = this.transcript.apply(msg);
    this.view.renderTurn(turn);
  }

  onStatus(msg) {
    const active = this.phase === 'live' || this.phase === 'starting';
    if (active && SERVER_STATES.includes(msg.state)) this.setState(msg.state);
  }

  onClear() {
    // The worklet answers with a report marked `cleared`, which is sent on.
    if (this.audio) this.audio.clearPlayback();
  }

  onToolCall(msg) {
    const call = { id: String(msg.id), name: msg.name, arguments: msg.arguments, result: msg.result ?? null };
    const list = this.state.toolCalls;
    const i = list.findIndex((c) => c.id === call.id);
    if (i >= 0) list[i] = call;
    else list.push(call);
    this.view.renderToolCall(call);
  }

  onMetrics(msg) {
    const { type, ...fields } = msg;
    Object.assign(this.state.metrics, fields);
    this.view.renderMetrics(this.state.metrics);
  }

  /** A reply's latency waterfall (sessions/waterfall.py): a chip on its turn, the running P50. */
  onWaterfall(msg) {
    const { type, ...fields } = msg;
    this.state.waterfalls = { ...this.state.waterfalls, [String(msg.id)]: fields };
    this.view.latency.apply(msg);
  }

  onServerError(msg) {
    if (msg.code === 'bad_vad' || msg.code === 'vad_late') {
      this.vad?.end(); // the server's model scores the rest of the call
      this.state.vad = 'server';
    }
    const message = msg.message || msg.code || 'Server error';
    const shown = msg.code ? `${message} (${msg.code})` : message;
    this.error(message, { code: msg.code || 'server', fatal: Boolean(msg.fatal), shown });
  }

  onEnded(msg) {
    this.finish(msg.reason || 'ended');
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.close(1000, 'ended');
  }

  onClose(e) {
    this.ws = null;
    if (this.phase === 'over') return;
    const message = closeMessage(e.code, e.reason);
    if (message) this.error(message, { code: `close_${e.code}`, fatal: true });
    this.finish(message ? 'connection closed' : 'closed');
  }

  // ---- audio in / out

  onFrame(msg) {
    if (msg.type !== 'frame') return;
    this.state.level = msg.rmsDb;
    this.view.setLevel(msg.rmsDb);
    if (!this.sendable()) return;
    if (this.state.media === 'direct') {
      // Recording only: the vendor hears the microphone over WebRTC.
      this.ws.send(tagFrame(USER_CHANNEL, msg.pcm));
      if (this.state.direct) this.state.direct.userFrames += 1;
    } else {
      this.ws.send(msg.pcm);
    }
    if (this.state.vad === 'page') this.vad.push(msg.pcm); // exactly the audio sent, in order
    this.state.framesSent += 1;
  }

  /** Audio may go out now. Sending a backlog later would flood the server: real-time audio is
   * dropped instead when the socket is not keeping up. */
  sendable() {
    const ws = this.ws;
    if (!this.ready || this.phase !== 'live' || !ws || ws.readyState !== WebSocket.OPEN) return false;
    if (ws.bufferedAmount > MAX_SOCKET_BACKLOG) {
      this.state.framesDropped += 1;
      return false;
    }
    return true;
  }

  onPlayed(stats, rate) {
    const ms = (n) => Math.round((n * 1000) / rate);
    Object.assign(this.state, {
      played: ms(stats.playedSamples),
      buffered: ms(stats.bufferedSamples),
      underruns: stats.underruns,
      speaking: stats.playing,
    });
    this.view.setSpeaking(stats.playing);
    // Starts and stops go out at once: the server dates them on arrival (docs/protocol.md).
    const edges = (stats.edges || []).map(({ kind, how, sample, frame }) => ({
      kind, how, sample, ago_ms: this.audio ? this.audio.agoMs(frame) : 0,
    })); // prettier-ignore
    if (stats.cleared || edges.length) this.sendPlayback(edges);
  }

  sendPlayback(edges = []) {
    if (!this.ready) return;
    const { played, buffered, underruns } = this.state;
    const report = { type: 'playback', played_ms: played, buffered_ms: buffered, underruns };
    this.send(edges.length ? { ...report, edges } : report);
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  // ---- mute and push-to-talk

  toggleMute() {
    this.manualMute = !this.manualMute;
    this.applyMute();
  }

  pttMode() {
    return Boolean(this.view.el.ptt && this.view.el.ptt.checked);
  }

  applyMute() {
    const ptt = this.pttMode();
    const muted = this.manualMute || (ptt && !this.talkHeld);
    this.state.muted = muted;
    this.view.showHold(ptt);
    this.view.setMuted(this.manualMute, muted);
    if (this.audio) this.audio.setMuted(muted);
    if (this.call) this.call.setMuted(muted);
  }

  setHeld(held) {
    if (this.talkHeld === held) return;
    this.talkHeld = held;
    this.applyMute();
  }

  onKey(e, down) {
    if (e.code !== 'Space' || !this.pttMode() || isTypingTarget(e.target)) return;
    // Also stops Space from "clicking" a focused button (Stop!) on key-up.
    e.preventDefault();
    if (!e.repeat) this.setHeld(down);
  }

  onTextSubmit(e) {
    e.preventDefault();
    const input = this.view.el.textInput;
    const text = input ? input.value.trim() : '';
    if (!text || this.phase !== 'live' || !this.acceptsText()) return;
    this.send({ type: 'text', text });
    input.value = '';
  }

  // ---- timers

  startTimers() {
    const t0 = performance.now();
    this.view.setElapsed(0);
    this.timers.push(
      setInterval(() => this.view.setElapsed(performance.now() - t0), 500),
      setInterval(() => this.sendPlayback(), PLAYBACK_REPORT_MS),
    );
  }

  stopTimers() {
    this.timers.forEach(clearInterval);
    this.timers = [];
  }

  // ---- stop and end

  async stop() {
    if (this.phase === 'starting' && !this.ws) {
      this.cancelled = true; // start() notices once getUserMedia settles
      return;
    }
    if (this.phase !== 'live' && this.phase !== 'starting') return;
    this.setPhase('stopping');
    if (this.call) {
      const call = this.call;
      this.call = null;
      await call.stop().catch(() => {}); // Flow: AudioEnded, a second's grace, then leave
    }
    if (this.audio) this.audio.stopCapture(); // stop sending at once
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.sendPlayback();
      this.send({ type: 'stop' });
      await this.waitForEnd(STOP_TIMEOUT_MS);
    }
    if (this.ws) this.ws.close(1000, 'stopped');
    this.finish('stopped');
  }

  waitForEnd(timeoutMs) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.endedWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** Idempotent end of the call: stop audio and timers, show why. */
  finish(reason) {
    if (this.phase === 'over') return;
    this.setPhase('over');
    this.vad?.end();
    this.stopTimers();
    this.leaveCall();
    if (this.state.direct && this.state.direct.state !== 'failed') this.state.direct.state = 'left';
    if (this.audio) this.audio.close();
    this.state.endReason = reason;
    this.state.speaking = false;
    this.state.level = -100;
    this.view.setSpeaking(false);
    this.view.setLevel(-100);
    this.view.setReason(`Call ended: ${reason}`);
    markUnfinished(this.view);
    this.setState('ended');
    showNextStep(this.view.doc, this.cfg, this.state.conversationId);
    this.endedWaiters.splice(0).forEach((wake) => wake());
  }
}

/** The page's VAD, or null where it cannot run (no module workers, no URLs in the config). */
function loadVad(win, cfg) {
  if (!cfg.vadWorkerUrl || typeof win.Worker !== 'function') return null;
  try {
    return new PageVad(win, { workerUrl: cfg.vadWorkerUrl, modelUrl: cfg.vadModelUrl, wasmUrl: cfg.vadWasmUrl });
  } catch (err) {
    console.warn('talk: no VAD in the page; the server scores the calls', err);
    return null;
  }
}

function isTypingTarget(target) {
  if (!target || !target.tagName) return false;
  if (target.isContentEditable) return true;
  if (target.tagName === 'TEXTAREA' || target.tagName === 'SELECT') return true;
  if (target.tagName !== 'INPUT') return false;
  return !['checkbox', 'radio', 'button', 'submit', 'reset', 'range'].includes(target.type);
}

function readConfig(doc, root) {
  const el = doc.getElementById('talk-config');
  const cfg = el ? JSON.parse(el.textContent) : {};
  // Worklet URLs come from {% static %} (hashed names in production); the
  // import.meta.url fallback serves an unhashed static tree.
  const here = (name) => new URL(`./${name}`, import.meta.url).href;
  return {
    acceptsText: false,
    startMs: 80,
    ...cfg,
    captureWorkletUrl: root.dataset.captureWorklet || here('capture-worklet.js'),
    // The vendored SDKs (static/vendor/), imported only when a direct call joins.
    livekitSdkUrl: root.dataset.livekitSdk || here('../vendor/livekit-client/livekit-client.esm.js'),
    retellSdkUrl: root.dataset.retellSdk || here('../vendor/retell-client-js-sdk/retell-client-js-sdk.esm.js'),
    playbackWorkletUrl: root.dataset.playbackWorklet || here('playback-worklet.js'),
    // The page's VAD (vad.js): its worker, the model file the server runs, onnxruntime's wasm
    vadWorkerUrl: root.dataset.vadWorker,
    vadModelUrl: root.dataset.vadModel,
    vadWasmUrl: root.dataset.vadWasm,
  };
}

function boot() {
  const root = document.getElementById('talk');
  if (!root) return;
  const view = new View(document, root);
  let cfg;
  try {
    cfg = readConfig(document, root);
  } catch (err) {
    view.addError(`This page is misconfigured: ${err.message}`);
    return;
  }
  new TalkPage(window, cfg, view).bind();
}

if (typeof document !== 'undefined') boot();
