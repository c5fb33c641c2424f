// The latency of each reply on the talk page: a chip on the agent's turn, its waterfall from the end
// of the user's speech, and the call's running P50. Fed by the server's `waterfall` messages
// (docs/protocol.md); the figures are the server's (sessions/waterfall.py), never the page's own.
//
// Pure helpers are exported for Node tests; `LatencyView` does the DOM, text only (no HTML).

/** Steps of a reply's waterfall, in order: [key, label]. */
export const STEPS = [
  ['user_final', 'transcript'],
  ['first_audio', 'first audio sent'],
  ['played', 'played'],
  ['reply', 'reply'],
];

/** Nearest-rank percentile (the server's rule): a value that occurred. */
export function percentile(values, p) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)];
}

/** "640 ms", or "1.2 s" from a second on. */
export function formatMs(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '—';
  return Math.abs(ms) >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

/** The chip's text: the reply latency the server measured. */
export function chipText(msg) {
  return formatMs(msg.latency_ms);
}

/** The waterfall as one line: "transcript +120 ms · first audio sent +640 ms · played +700 ms · reply 2.1 s". */
export function waterfallText(msg) {
  const parts = [];
  for (const [key, label] of STEPS) {
    const value = msg[key];
    if (typeof value !== 'number') continue;
    parts.push(key === 'reply' ? `${label} ${formatMs(value)}` : `${label} +${formatMs(value)}`);
  }
  return parts.join(' · ');
}

/** Chips on the agent turns (keyed by transcript id) and the running P50 of the call. */
export class LatencyView {
  constructor(doc, { turnEl, anchor }) {
    this.doc = doc;
    this.turnEl = turnEl; // id -> the agent turn's <li>, or null
    this.anchor = anchor; // the P50 goes after this element
    this.latencies = new Map(); // transcript id -> latency_ms
    this.pendingById = new Map(); // waterfalls for turns not shown yet
    this.idBySequence = new Map(); // stored turn sequence -> the id its reply was first shown under
    this.p50El = null;
  }

  /** A `waterfall` message. */
  apply(msg) {
    if (typeof msg.latency_ms !== 'number' || msg.id == null) return;
    const id = this.#idOf(msg);
    this.latencies.set(id, msg.latency_ms);
    this.renderP50();
    const li = this.turnEl(id);
    if (li) this.renderChip(li, msg);
    else this.pendingById.set(id, msg);
  }

  /** One reply, one id: an audience view shows a reply stored before it joined under the stored
   * turn's id, and a later update of its waterfall (same `sequence`, the talker's id) lands there. */
  #idOf(msg) {
    const seq = msg.sequence;
    if (seq == null) return String(msg.id);
    if (!this.idBySequence.has(seq)) this.idBySequence.set(seq, String(msg.id));
    return this.idBySequence.get(seq);
  }

  /** An agent turn was (re)rendered: give it its chip if its waterfall came first. */
  turnShown(id, li) {
    const msg = this.pendingById.get(String(id));
    if (msg) {
      this.pendingById.delete(String(id));
      this.renderChip(li, msg);
    }
  }

  renderChip(li, msg) {
    let chip = li.querySelector('.turn-latency');
    let line = li.querySelector('.turn-waterfall');
    if (!chip) {
      chip = this.#make('span', 'turn-latency');
      line = this.#make('small', 'turn-waterfall');
      li.append(chip, line);
    }
    chip.textContent = chipText(msg);
    chip.dataset.latencyMs = String(msg.latency_ms);
    chip.title = 'Reply latency: from the end of your speech reaching the server to the first agent audio sent';
    line.textContent = waterfallText(msg);
  }

  /** Another call on the same page starts: no figures of the last one carry over. */
  reset() {
    this.latencies.clear();
    this.pendingById.clear();
    this.idBySequence.clear();
    this.p50El?.remove();
    this.p50El = null;
  }

  p50() {
    return percentile([...this.latencies.values()], 50);
  }

  renderP50() {
    if (!this.p50El) {
      this.p50El = this.#make('span', 'talk-p50');
      this.p50El.id = 'talk-p50';
      if (this.anchor) this.anchor.after(this.p50El);
    }
    this.p50El.textContent = `P50 ${formatMs(this.p50())} over ${this.latencies.size}`;
    this.p50El.dataset.p50Ms = String(this.p50());
  }

  #make(tag, cls, text) {
    const node = this.doc.createElement(tag);
    node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
}
