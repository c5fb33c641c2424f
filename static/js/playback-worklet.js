// Playback worklet: a ring buffer of the server's s16le mono PCM.
//
// The page runs this in its own AudioContext created with
// {sampleRate: output_rate} (24 kHz in protocol v1), separate from the capture
// context. The browser then resamples that context to the output device, so
// neither the server nor this file has to know the device rate. (Forcing a
// rate is only a problem for microphone input, which lives in the other
// context at the device rate.)
//
// This file is an ES module. In an AudioWorkletGlobalScope it registers the
// 'pcm-playback' processor; in Node tests it only exports the classes.

/** Fixed-capacity FIFO of float samples; overflow drops the oldest audio. */
export class RingBuffer {
  constructor(capacity) {
    if (!(capacity > 0)) throw new RangeError('capacity must be positive');
    this.data = new Float32Array(capacity);
    this.head = 0; // index of the oldest sample
    this.size = 0;
    this.overflows = 0; // writes that had to drop audio
    this.droppedSamples = 0;
  }

  get capacity() {
    return this.data.length;
  }

  /**
   * Append samples. When they do not fit, the oldest buffered samples are
   * dropped: late audio is worth less than current audio in a conversation.
   */
  write(samples) {
    const cap = this.capacity;
    const dropped = Math.max(0, this.size + samples.length - cap);
    if (dropped > 0) {
      this.overflows += 1;
      this.droppedSamples += dropped;
    }
    let src = samples;
    if (src.length >= cap) {
      // Everything old goes, and only the newest `cap` samples stay.
      src = src.subarray(src.length - cap);
      this.head = 0;
      this.size = 0;
    } else if (dropped > 0) {
      this.head = (this.head + dropped) % cap;
      this.size -= dropped;
    }
    const tail = (this.head + this.size) % cap;
    const first = Math.min(src.length, cap - tail);
    this.data.set(src.subarray(0, first), tail);
    this.data.set(src.subarray(first), 0);
    this.size += src.length;
  }

  /** Move up to out.length samples into out; returns how many were moved. */
  read(out) {
    const n = Math.min(out.length, this.size);
    const first = Math.min(n, this.capacity - this.head);
    out.set(this.data.subarray(this.head, this.head + first), 0);
    out.set(this.data.subarray(0, n - first), first);
    this.head = (this.head + n) % this.capacity;
    this.size -= n;
    return n;
  }

  clear() {
    this.head = 0;
    this.size = 0;
  }
}

/** s16le bytes (ArrayBuffer or Int16Array) to float samples in [-1, 1). */
export function s16ToFloat(pcm) {
  // Int16Array uses the platform's byte order; every browser platform is
  // little-endian, which is what the protocol specifies. An odd trailing
  // byte is ignored.
  const ints = pcm instanceof Int16Array ? pcm : new Int16Array(pcm, 0, pcm.byteLength >> 1);
  const out = new Float32Array(ints.length);
  for (let i = 0; i < ints.length; i++) out[i] = ints[i] / 32768;
  return out;
}

/**
 * Jitter buffer with a start threshold and underrun counting.
 *
 * After being empty it waits until `startMs` of audio is buffered before
 * playing, so network jitter does not turn into clicks. A short utterance that
 * never reaches the threshold still plays once it has waited `startMs`.
 * An underrun is counted whenever the buffer runs dry while playing; that
 * includes the natural end of each agent utterance.
 *
 * Edges: each start and stop of playing, with the index of the sample in the
 * server's stream (every sample pushed counts, also those later dropped by a
 * clear, so the index is the server's) and the frame of the audio clock it was
 * played at (`render(out, frame)`). The server turns them into the moment each
 * reply was first heard and the stretches the agent was audible
 * (sessions/waterfall.py). `takeEdges()` hands them over once.
 */
export class PlaybackBuffer {
  constructor({ rate, startMs = 80, capacityMs = 10000 } = {}) {
    if (!(rate > 0)) throw new RangeError('rate must be positive');
    this.rate = rate;
    this.ring = new RingBuffer(Math.round((capacityMs * rate) / 1000));
    this.startSamples = Math.min(Math.round((startMs * rate) / 1000), this.ring.capacity);
    this.playing = false;
    this.waited = 0; // samples rendered as silence while audio sat buffered
    this.playedSamples = 0; // real (non-silence) samples rendered, ever
    this.underruns = 0;
    this.streamSamples = 0; // samples received (or skipped) since the call began
    this.edges = [];
    this.wasPlaying = false; // playing in the last quantum rendered (edges)
  }

  push(pcm) {
    const samples = pcm instanceof Float32Array ? pcm : s16ToFloat(pcm);
    this.streamSamples += samples.length;
    this.ring.write(samples);
  }

  /** Samples the page dropped before they reached this buffer still count in the stream. */
  skip(n) {
    if (n > 0) this.streamSamples += n;
  }

  /** Index in the stream of the next sample to play. */
  get head() {
    return this.streamSamples - this.ring.size;
  }

  /** Fill `out` with audio or silence; returns the number of real samples. `frame`: the audio
   * clock's frame of out[0], to date the edges. */
  render(out, frame = 0) {
    if (!this.playing && !this.#shouldStart(out.length)) {
      out.fill(0);
      return 0;
    }
    if (!this.wasPlaying) this.#edge('start', '', frame);
    const n = this.ring.read(out);
    out.fill(0, n);
    this.playedSamples += n;
    this.wasPlaying = true;
    if (n < out.length) {
      this.underruns += 1;
      this.playing = false;
      this.#edge('stop', 'drained', frame + n);
    }
    return n;
  }

  #edge(kind, how, frame) {
    this.wasPlaying = kind === 'start';
    if (this.edges.length < 32) this.edges.push({ kind, how, sample: this.head, frame });
  }

  takeEdges() {
    return this.edges.splice(0);
  }

  #shouldStart(quantum) {
    const buffered = this.ring.size;
    if (buffered === 0) {
      this.waited = 0;
      return false;
    }
    if (buffered >= this.startSamples || this.waited >= this.startSamples) {
      this.playing = true;
      this.waited = 0;
      return true;
    }
    this.waited += quantum;
    return false;
  }

  /** Drop everything buffered at once (barge-in). Not an underrun. `frame`: the audio clock now. */
  clear(frame = 0) {
    if (this.wasPlaying) this.#edge('stop', 'cleared', frame);
    this.ring.clear();
    this.playing = false;
    this.waited = 0;
  }

  stats() {
    return {
      playedSamples: this.playedSamples,
      bufferedSamples: this.ring.size,
      underruns: this.underruns,
      playing: this.playing,
      overflows: this.ring.overflows,
      droppedSamples: this.ring.droppedSamples,
      sampleRate: this.rate,
    };
  }
}

function registerPlayback() {
  /**
   * processorOptions: {startMs = 80, capacityMs = 10000, reportMs = 100}.
   * Port messages in: s16le PCM as an ArrayBuffer (or Int16Array); 'clear' or {type: 'clear',
   * skipped} (skipped: samples the page dropped before posting them here).
   * Port messages out, every reportMs of rendered time, right after a clear, and in the quantum
   * playback starts or stops:
   *   {type: 'played', playedSamples, bufferedSamples, underruns, playing,
   *    overflows, droppedSamples, sampleRate, cleared, edges: [{kind, how, sample, frame}]}
   */
  class PcmPlayback extends AudioWorkletProcessor {
    constructor(options) {
      super();
      const opts = (options && options.processorOptions) || {};
      this.buffer = new PlaybackBuffer({ rate: sampleRate, ...opts });
      this.reportEvery = Math.round(((opts.reportMs || 100) * sampleRate) / 1000);
      this.sinceReport = 0;
      this.port.onmessage = (e) => this.#onMessage(e.data);
    }

    #onMessage(msg) {
      if (msg instanceof ArrayBuffer || msg instanceof Int16Array) {
        this.buffer.push(msg);
      } else if (msg === 'clear' || (msg && msg.type === 'clear')) {
        this.buffer.skip((msg && msg.skipped) || 0);
        this.buffer.clear(currentFrame);
        this.#report(true);
      }
    }

    #report(cleared = false) {
      this.sinceReport = 0;
      this.port.postMessage({ type: 'played', ...this.buffer.stats(), cleared, edges: this.buffer.takeEdges() });
    }

    process(inputs, outputs) {
      const channels = outputs[0];
      this.buffer.render(channels[0], currentFrame);
      for (let c = 1; c < channels.length; c++) channels[c].set(channels[0]);
      this.sinceReport += channels[0].length;
      if (this.sinceReport >= this.reportEvery || this.buffer.edges.length) this.#report();
      return true;
    }
  }
  registerProcessor('pcm-playback', PcmPlayback);
}

if (typeof registerProcessor === 'function') registerPlayback();
