// The sampler of every m2w generating package (GGUF decoders, ONNX pipelines): the native
// `cargo xtask generate` sampler's xorshift64 and order of operations, so one seed gives the
// same tokens natively and in the browser.

export interface SamplingOptions {
  /** 0 (default) is greedy; otherwise logits are divided by it before sampling. */
  temperature?: number;
  /** Keep the k most likely tokens (0: all). */
  topK?: number;
  /** Keep the smallest set of tokens whose probability reaches p (1: all). */
  topP?: number;
  /** Divides positive logits (multiplies negative ones) of tokens already seen (1: off). */
  repetitionPenalty?: number;
}

/** The sampler of the native `cargo xtask generate` (same xorshift64 and the same order). */
export class Sampler {
  private state: bigint;
  constructor(seed: number) {
    this.state = (BigInt(seed) ^ 0x9e3779b97f4a7c15n) & 0xffffffffffffffffn;
  }
  private next(): number {
    const m = 0xffffffffffffffffn;
    let s = this.state;
    s ^= (s << 13n) & m;
    s ^= s >> 7n;
    s ^= (s << 17n) & m;
    this.state = s;
    return Number(s >> 11n) / 2 ** 53;
  }
  pick(logits: Float32Array, seen: number[], o: SamplingOptions): number {
    // f32 arithmetic where the native sampler has it (Math.fround), so both draw alike.
    const l = Float32Array.from(logits);
    const penalty = Math.fround(o.repetitionPenalty ?? 1);
    // Once per distinct token seen (as Hugging Face and llama.cpp).
    if (penalty !== 1) for (const t of new Set(seen)) if (t >= 0 && t < l.length) l[t] = l[t] > 0 ? l[t] / penalty : l[t] * penalty;
    // NaN is never picked; a row of NaN gives token 0 (as the GPU argmax).
    let idx = Array.from(l.keys()).filter((i) => !Number.isNaN(l[i]));
    if (idx.length === 0) return 0;
    const temperature = o.temperature ?? 0;
    if (temperature <= 0) {
      let best = idx[0];
      for (const i of idx) if (l[i] > l[best]) best = i;
      return best;
    }
    idx.sort((a, b) => l[b] - l[a]);
    if ((o.topK ?? 0) > 0) idx = idx.slice(0, o.topK);
    return this.pickSorted(idx, idx.map((i) => l[i]), o);
  }
  /** Draws from candidates sorted largest first (the whole row, or the GPU's top k). */
  pickSorted(idx: number[], values: number[], o: SamplingOptions): number {
    const temperature = Math.fround(o.temperature ?? 0);
    const mx = values[0];
    const probs = values.map((v) => Math.exp(Math.fround(Math.fround(v - mx) / temperature)));
    let total = probs.reduce((a, b) => a + b, 0);
    for (let k = 0; k < probs.length; k++) probs[k] /= total;
    let keep = probs.length;
    let cum = 0;
    for (let k = 0; k < probs.length; k++) {
      cum += probs[k];
      if (cum >= Math.fround(o.topP ?? 1)) {
        keep = k + 1;
        break;
      }
    }
    total = 0;
    for (let k = 0; k < keep; k++) total += probs[k];
    let r = this.next() * total;
    for (let k = 0; k < keep; k++) {
      r -= probs[k];
      if (r <= 0) return idx[k];
    }
    return idx[keep - 1];
  }
}
