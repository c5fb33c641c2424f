// Audience view (presenter mode): a read-only mirror of a live call, sessions/audience.py.
//
// The socket carries a `snapshot` (the call so far), then the talker's own messages, filtered by
// the server's allow-list: transcript, status, clear, tool_call, metrics, waterfall, ended. With "Play the
// agent's voice" on, it reconnects with ?audio=1 and plays the agent's audio (binary frames) in the
// same playback worklet as the talk page. The socket takes no input: the server answers any with
// an `error` `read_only`. Page state is mirrored to window.audienceState for browser tests.

import { Transcript, formatMetrics, prettyJson, wsUrl } from './talk.js';
import { toolCardNodes } from './tool-card.js';
import { LatencyView } from './waterfall.js';

const STATE_LABELS = {
  connecting: 'Connecting…',
  created: 'Waiting for the call to start',
  listening: 'Listening',
  thinking: 'Thinking…',
  speaking: 'Agent speaking',
  ended: 'The call has ended',
  closed: 'Disconnected',
};

// A conversation's stored status, as the view's state when a viewer joins.
const SNAPSHOT_STATES = { created: 'created', connecting: 'connecting', active: 'listening', ended: 'ended', failed: 'ended' };

class AudienceView {
  constructor(doc, root) {
    this.doc = doc;
    this.root = root;
    this.list = doc.getElementById('audience-transcript');
    this.metrics = doc.getElementById('audience-metrics');
    this.errors = doc.getElementById('audience-errors');
    this.stateEl = doc.getElementById('audience-state');
    this.listen = doc.getElementById('audience-listen');
    this.items = new Map();
    // The talker's latency chips and running P50, from the mirrored `waterfall` messages.
    this.latency = new LatencyView(doc, { turnEl: (id) => this.items.get(`agent:${id}`) || null, anchor: this.stateEl });
  }

  reset() {
    this.items.clear();
    this.latency.reset();
    this.list.replaceChildren();
    this.metrics.replaceChildren();
    this.errors.replaceChildren();
  }

  setState(state) {
    this.root.dataset.state = state;
    this.stateEl.textContent = STATE_LABELS[state] || state;
  }

  turn(turn) {
    const key = `${turn.role}:${turn.id}`;
    let li = this.items.get(key);
    if (!li) {
      li = this.make('li', 'turn');
      li.dataset.role = turn.role;
      li.append(
        this.make('span', 'turn-who', turn.role === 'agent' ? 'Agent' : 'Caller'),
        this.make('span', 'turn-text'),
        this.make('span', 'turn-flag', '— interrupted'),
      );
      this.items.set(key, li);
      this.append(li);
      if (turn.role === 'agent') this.latency.turnShown(turn.id, li);
    }
    li.dataset.final = String(turn.final);
    li.dataset.interrupted = String(turn.interrupted);
    li.querySelector('.turn-text').textContent = turn.text;
    li.querySelector('.turn-flag').hidden = !turn.interrupted;
  }

  toolCall(call) {
    const key = `tool:${call.id}`;
    let li = this.items.get(key);
    if (!li) {
      li = this.make('li', 'tool-card');
      this.items.set(key, li);
      this.append(li);
    }
    li.replaceChildren(...toolCardNodes(this.doc, call, prettyJson));
  }

  showMetrics(figures) {
    this.metrics.replaceChildren();
    for (const [label, text] of formatMetrics(figures)) {
      this.metrics.append(this.make('dt', '', label), this.make('dd', '', text));
    }
  }

  error(message) {
    this.errors.append(this.make('p', 'talk-error', message));
  }

  setListening(on) {
    this.listen.setAttribute('aria-pressed', String(on));
    this.listen.textContent = on ? "Mute the agent's voice" : "Play the agent's voice";
  }

  append(node) {
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    this.list.append(node);
    if (atBottom) this.list.scrollTop = this.list.scrollHeight;
  }

  make(tag, cls, text) {
    const node = this.doc.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
}

/** The agent's audio, in the talk page's playback worklet. Built in the click that asks for it. */
class Speaker {
  constructor(workletUrl, rate, startMs) {
    this.ctx = new AudioContext({ latencyHint: 'interactive', sampleRate: rate });
    this.ready = this.ctx.resume().then(async () => {
      await this.ctx.audioWorklet.addModule(workletUrl);
      this.node = new AudioWorkletNode(this.ctx, 'pcm-playback', {
        numberOfInputs: 0,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        processorOptions: { startMs, capacityMs: 10000, reportMs: 250 },
      });
      this.node.port.onmessage = (e) => {
        this.played = e.data.playedSamples;
      };
      this.node.connect(this.ctx.destination);
    });
    this.played = 0;
  }

  play(buf) {
    if (this.node) this.node.port.postMessage(buf, [buf]);
  }

  clear() {
    if (this.node) this.node.port.postMessage('clear');
  }

  close() {
    this.ctx.close().catch(() => {});
  }
}

class AudiencePage {
  constructor(win, cfg, view) {
    Object.assign(this, { win, cfg, view });
    this.ws = null;
    this.speaker = null;
    this.state = win.audienceState = { state: 'connecting', received: [], audioBytes: 0, errors: [] };
  }

  bind() {
    this.view.listen.addEventListener('click', () => this.toggleAudio());
    this.connect();
  }

  connect() {
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000);
    }
    this.transcript = new Transcript();
    this.view.reset();
    const path = this.speaker ? `${this.cfg.wsPath}?audio=1` : this.cfg.wsPath;
    const ws = new WebSocket(wsUrl(this.win.location, path));
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (e) => this.onMessage(e.data);
    ws.onclose = (e) => this.onClose(e);
    this.ws = ws;
  }

  async toggleAudio() {
    if (this.speaker) {
      this.speaker.close();
      this.speaker = null;
    } else {
      this.speaker = new Speaker(this.view.root.dataset.playbackWorklet, this.cfg.outputRate, this.cfg.startMs);
      await this.speaker.ready.catch((err) => this.view.error(`Could not play audio: ${err.message}`));
    }
    this.view.setListening(Boolean(this.speaker));
    if (this.state.state !== 'ended') this.connect();
  }

  setState(state) {
    this.state.state = state;
    this.view.setState(state);
  }

  onMessage(data) {
    if (typeof data !== 'string') {
      this.state.audioBytes += data.byteLength;
      if (this.speaker) this.speaker.play(data);
      return;
    }
    const msg = JSON.parse(data);
    this.state.received.push(msg);
    const handler = this.handlers[msg.type];
    if (handler) handler.call(this, msg);
  }

  handlers = {
    snapshot(msg) {
      for (const turn of msg.turns) {
        this.view.turn({ ...turn, final: true });
        // A reply stored before this viewer joined: its chip, and its place in the running P50.
        if (turn.waterfall) this.view.latency.apply({ ...turn.waterfall, id: turn.id, sequence: turn.sequence });
      }
      this.setState(SNAPSHOT_STATES[msg.status] || 'connecting');
    },
    transcript(msg) {
      const [turn] = this.transcript.apply(msg);
      this.view.turn(turn);
    },
    status(msg) {
      this.setState(msg.state);
    },
    clear() {
      if (this.speaker) this.speaker.clear();
    },
    tool_call(msg) {
      this.view.toolCall(msg);
    },
    metrics(msg) {
      const { type, ...figures } = msg;
      this.state.metrics = { ...this.state.metrics, ...figures };
      this.view.showMetrics(this.state.metrics);
    },
    waterfall(msg) {
      this.view.latency.apply(msg);
    },
    ended() {
      this.setState('ended');
    },
    error(msg) {
      this.state.errors.push(msg);
      this.view.error(msg.message || msg.code);
    },
  };

  onClose() {
    this.ws = null;
    if (this.state.state !== 'ended') this.setState('closed');
  }
}

function boot() {
  const root = document.getElementById('audience');
  if (!root) return;
  const cfg = JSON.parse(document.getElementById('audience-config').textContent);
  new AudiencePage(window, cfg, new AudienceView(document, root)).bind();
}

boot();
