// {{NAME}}: {{MODEL}} (a GGUF llama-family decoder) ported to WebGPU by m2w.
//
// Two plans share the weights and the KV caches: prefill.ts runs PREFILL_CHUNK tokens at a
// time (the prompt is fed in chunks, the last one padded: padded positions come after the
// real ones, so causal attention keeps them out, and the decode steps overwrite their cache
// slots before anything reads them), decode.ts runs one token. Both are built at position 0;
// POSITION_PATCHES lists the uniform words that hold the position (RoPE angle, attention
// span, cache slot) and are rewritten before each pass. Greedy decoding reads back one
// integer per token (argmax on the GPU); sampling reads the logits row.

import { SHADERS } from './shaders.js';
import * as prefillPlan from './prefill.js';
import * as gpuDecodePlan from './decode.js';
import * as fallbackDecodePlan from './decode_fallback.js';
import { CONFIG } from './config.js';
import { GPUBufferUsage, biggestBuffer, compilePipelines, encodeForward, isCpuAdapter, numel, preparePlan, readRanges, requestAdapter, requestDevice, submitChained } from './runtime.js';
import type { PlanTables, PreparedPlan } from './runtime.js';
import { createTokenizer } from './tokenizer.js';
import type { Tokenizer, TokenizerData } from './tokenizer.js';
import { ChatTemplate } from './jinja.js';
import { Sampler } from './sampler.js';
import type { LoadOptions } from './types.js';
import { bufferBytes, fetchWeightFile, streamWeights, weightsUrl } from './weights.js';

export { BpeTokenizer, SpmTokenizer, createTokenizer } from './tokenizer.js';
export { ChatTemplate } from './jinja.js';
export { Sampler } from './sampler.js';
/** The model's configuration as the port read it (layers, tokens, chat template). */
export { CONFIG } from './config.js';
export { DeviceLostError, WebGPUUnavailableError } from './runtime.js';
export type { WebGPUUnavailableReason } from './runtime.js';
export type { SamplingOptions } from './sampler.js';
export type { LoadOptions } from './types.js';
export type { LoadProgress } from './weights.js';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | string;
  content: string | { type: string; text?: string }[];
}

export interface GenerateOptions {
  /** New tokens at most (default 64). */
  maxNewTokens?: number;
  /** 0 (default) is greedy; otherwise logits are divided by it before sampling. */
  temperature?: number;
  /** Keep the k most likely tokens (0: all). */
  topK?: number;
  /** Keep the smallest set of tokens whose probability reaches p (1: all). */
  topP?: number;
  /** Divides positive logits (multiplies negative ones) of tokens already seen (1: off). */
  repetitionPenalty?: number;
  /** Seed of the sampler (same seed, same logits: same tokens). */
  seed?: number;
  /** Wrap the prompt in the model's chat template as one user turn. */
  chat?: boolean;
  /** Stop token ids (default: the model's end-of-sequence and end-of-turn tokens; [] never stops). */
  stop?: number[];
  /** Called for each new token with the text it adds (UTF-8 split across tokens is held back). */
  onToken?: (text: string, id: number) => void;
  /** Stops early when aborted. */
  signal?: AbortSignal;
}

export interface GenerateResult {
  text: string;
  /** New token ids (the stop token included when one ended the run). */
  tokens: number[];
  promptTokens: number;
  /** Why it ended: a stop token, the token limit, the context, or an abort. */
  finish: 'stop' | 'length' | 'context' | 'abort';
  prefillMs: number;
  decodeMs: number;
  /** Decode speed: new tokens after the first per second. */
  tokensPerSecond: number;
}

export interface LlmLoadOptions extends LoadOptions {
  /**
   * Decode kernels: 'gpu' (a workgroup per output row, fused projections), 'fallback'
   * (a thread per output: several times faster on CPU implementations of WebGPU such as
   * SwiftShader), or 'auto' (default: fallback on CPU adapters, else gpu).
   */
  kernels?: 'auto' | 'gpu' | 'fallback';
}

export interface LLM {
  readonly tokenizer: Tokenizer;
  /** The decode kernels in use. */
  readonly kernels: 'gpu' | 'fallback';
  readonly contextLength: number;
  /** Prompt text to ids: BOS when the model asks for it, the chat template when `chat`. */
  encodePrompt(prompt: string | ChatMessage[], chat?: boolean): number[];
  generate(prompt: string, options?: GenerateOptions): Promise<GenerateResult>;
  /** Multi-turn chat in the model's template; the reply is generated for the assistant. */
  chat(messages: ChatMessage[], options?: GenerateOptions): Promise<GenerateResult>;
  /** Generation from token ids (what the tests compare with the native run). */
  generateIds(promptIds: number[], options?: GenerateOptions): Promise<GenerateResult>;
  destroy(): void;
}

/** The conversation as the model reads it, through its own chat template. */
export function renderChat(messages: ChatMessage[], addGenerationPrompt = true): string {
  if (CONFIG.chatTemplate === null) throw new Error('this model has no chat template (none in the file, none kept by m2w for its family)');
  return new ChatTemplate(CONFIG.chatTemplate).render({ messages, add_generation_prompt: addGenerationPrompt, bos_token: CONFIG.bosText, eos_token: CONFIG.eosText });
}

/** Loads the model: `baseUrl` is the weights folder (default: the package's own
 * `weights/`, resolved from this module's URL). */
export async function loadLLM(baseUrl?: string | URL, options: LlmLoadOptions = {}): Promise<LLM> {
  const adapter = await requestAdapter();
  const kernels = options.kernels === 'gpu' || options.kernels === 'fallback' ? options.kernels : isCpuAdapter(adapter) ? 'fallback' : 'gpu';
  const decodePlan = kernels === 'gpu' ? gpuDecodePlan : fallbackDecodePlan;
  const plans: PlanTables[] = [prefillPlan, decodePlan];
  const device = await requestDevice(Math.max(prefillPlan.WORKGROUP_STORAGE_BYTES, decodePlan.WORKGROUP_STORAGE_BYTES), Math.max(...plans.map(biggestBuffer)), options.onDeviceLost, adapter);
  // The kernels compile while the weights download.
  const compiling = compilePipelines(device, SHADERS, plans.flatMap((p) => p.DISPATCHES.map((d) => d.kernel)));
  compiling.catch(() => {}); // awaited below; a download error must not leave it unhandled
  const base = weightsUrl(baseUrl);
  const tokenizer = createTokenizer((await (await fetchWeightFile(base, 'tokenizer.json', options)).response.json()) as TokenizerData);
  // Weights and caches: one buffer each, shared by both plans; each weight is uploaded as
  // it arrives.
  const owned: GPUBuffer[] = [];
  const shared: Record<string, GPUBuffer> = {};
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  await streamWeights(
    baseUrl,
    device,
    (c) => {
      shared[c.name] = device.createBuffer({ label: c.name, size: bufferBytes(c.bytes), usage });
      owned.push(shared[c.name]);
      return shared[c.name];
    },
    options,
  );
  const pipelines = await compiling;
  for (const name of CONFIG.caches) {
    const t = decodePlan.TENSORS[name];
    shared[name] = device.createBuffer({ label: name, size: numel(t.shape) * 4, usage });
    owned.push(shared[name]);
  }
  const prefill = preparePlan(device, prefillPlan, pipelines, owned, { shared });
  const decode = preparePlan(device, decodePlan, pipelines, owned, { shared });

  const setPosition = (plan: PreparedPlan, patches: { dispatch: number; word: number; scale: number }[], pos: number) => {
    for (const p of patches) device.queue.writeBuffer(plan.uniforms[p.dispatch], p.word * 4, Uint32Array.of(pos * p.scale));
  };
  const vocab = CONFIG.vocab;
  // Top-k on the GPU: the top_k dispatch selects `k` candidates per position (0: none).
  const setTopK = (k: number) => {
    for (const [plan, tables] of [[prefill, prefillPlan], [decode, decodePlan]] as const) {
      tables.DISPATCHES.forEach((d, i) => {
        if (d.kernel === 'topk_rows_f32') device.queue.writeBuffer(plan.uniforms[i], 8, Uint32Array.of(k));
      });
    }
  };
  let topK = 0;
  const readRow = async (plan: PreparedPlan, row: number, sampled: boolean): Promise<{ greedy: number; logits?: Float32Array; top?: [number[], number[]] }> => {
    const ranges: [string, number, number][] = [['next_token', row * 4, 4]];
    if (sampled && topK > 0) ranges.push(['top_indices', row * CONFIG.maxTopK * 4, topK * 4], ['top_values', row * CONFIG.maxTopK * 4, topK * 4]);
    else if (sampled) ranges.push(['logits', row * vocab * 4, vocab * 4]);
    const got = await readRanges(device, plan, ranges);
    const greedy = new Int32Array(got[0])[0];
    if (!sampled) return { greedy };
    if (topK > 0) {
      const idx = Array.from(new Int32Array(got[1]));
      const values = Array.from(new Float32Array(got[2]));
      const keep = idx.findIndex((i) => i < 0);
      return { greedy, top: keep < 0 ? [idx, values] : [idx.slice(0, keep), values.slice(0, keep)] };
    }
    return { greedy, logits: new Float32Array(got[1]) };
  };

  // One generation at a time: both share the caches and the plans' uniforms.
  let busy = false;
  async function generateIds(promptIds: number[], o: GenerateOptions = {}): Promise<GenerateResult> {
    if (busy) throw new Error('a generation is already running on this model (await it, or abort it)');
    busy = true;
    try {
      return await run(promptIds, o);
    } finally {
      busy = false;
    }
  }

  async function run(promptIds: number[], o: GenerateOptions): Promise<GenerateResult> {
    const maxNew = o.maxNewTokens ?? 64;
    const k = o.topK ?? 0;
    if (!Number.isInteger(k) || k < 0) throw new Error(`topK must be a whole number >= 0, got ${k}`);
    if (!Number.isInteger(maxNew) || maxNew < 0) throw new Error(`maxNewTokens must be a whole number >= 0, got ${maxNew}`);
    const chunk = CONFIG.prefillChunk;
    const n = promptIds.length;
    if (n === 0) throw new Error('the prompt has no tokens');
    if (maxNew === 0) return { text: '', tokens: [], promptTokens: n, finish: 'length', prefillMs: 0, decodeMs: 0, tokensPerSecond: 0 };
    const lastStart = Math.floor((n - 1) / chunk) * chunk;
    if (lastStart + chunk > CONFIG.ctx) throw new Error(`the prompt (${n} tokens) does not fit the context of ${CONFIG.ctx}`);
    for (const id of promptIds) if (!(id >= 0 && id < vocab)) throw new Error(`token id ${id} is outside the vocabulary of ${vocab}`);
    const stop = new Set(o.stop ?? CONFIG.stop);
    const sampled = (o.temperature ?? 0) > 0 || (o.repetitionPenalty ?? 1) !== 1;
    const sampler = new Sampler(o.seed ?? 0);
    // Candidates from the GPU when no repetition penalty has to change the logits first.
    topK = sampled && (o.temperature ?? 0) > 0 && (o.repetitionPenalty ?? 1) === 1 && (o.topK ?? 0) > 0 && (o.topK ?? 0) <= CONFIG.maxTopK ? o.topK! : 0;
    setTopK(topK);
    const t0 = performance.now();
    let last: { greedy: number; logits?: Float32Array; top?: [number[], number[]] } = { greedy: 0 };
    for (let start = 0; start < n; start += chunk) {
      const ids = new Int32Array(chunk);
      ids.set(promptIds.slice(start, start + chunk));
      setPosition(prefill, prefillPlan.POSITION_PATCHES, start);
      device.queue.writeBuffer(prefill.bufferOf('token_ids'), 0, ids);
      encodeForward(device, prefill, pipelines);
      if (start === lastStart) last = await readRow(prefill, n - 1 - start, sampled);
    }
    const seen = [...promptIds];
    const pickNext = () => {
      if (!sampled) return last.greedy;
      if (last.top) {
        if (last.top[0].length === 0) return 0; // a row of NaN, as pick() and the GPU argmax
        return sampler.pickSorted(last.top[0], last.top[1], o);
      }
      return sampler.pick(last.logits!, seen, o);
    };
    let next = pickNext();
    const prefillMs = performance.now() - t0;
    const t1 = performance.now();
    const tokens: number[] = [];
    const decoder = new TextDecoder('utf-8');
    let text = '';
    let finish: GenerateResult['finish'] = 'length';
    let pos = n;
    // Greedy: pipelined. Each pass copies its argmax into its own token input on the GPU, so
    // the next pass is submitted before this one's token is read (at most two in flight).
    const inFlight: Promise<number>[] = [];
    let nextPass = n;
    if (!sampled) device.queue.writeBuffer(decode.bufferOf('token_ids'), 0, Int32Array.of(next));
    for (;;) {
      tokens.push(next);
      seen.push(next);
      if (stop.has(next)) {
        finish = 'stop';
        break;
      }
      const piece = decoder.decode(tokenizer.tokenBytes(next), { stream: true });
      text += piece;
      o.onToken?.(piece, next);
      if (tokens.length >= maxNew) break;
      if (o.signal?.aborted) {
        finish = 'abort';
        break;
      }
      if (pos >= CONFIG.ctx) {
        finish = 'context';
        break;
      }
      if (!sampled) {
        while (inFlight.length < 2 && nextPass < CONFIG.ctx && nextPass - n < maxNew - 1) {
          setPosition(decode, decodePlan.POSITION_PATCHES, nextPass++);
          inFlight.push(submitChained(device, decode, pipelines, [['next_token', 'token_ids']], 'next_token').then((b) => new Int32Array(b)[0]));
        }
        next = await inFlight.shift()!;
      } else {
        setPosition(decode, decodePlan.POSITION_PATCHES, pos);
        device.queue.writeBuffer(decode.bufferOf('token_ids'), 0, Int32Array.of(next));
        encodeForward(device, decode, pipelines);
        last = await readRow(decode, 0, sampled);
        next = pickNext();
      }
      pos++;
    }
    // Passes submitted past a stop finish on their own; nothing waits for them.
    for (const p of inFlight) p.catch(() => {});
    text += decoder.decode();
    const decodeMs = performance.now() - t1;
    return { text, tokens, promptTokens: n, finish, prefillMs, decodeMs, tokensPerSecond: tokens.length > 1 ? ((tokens.length - 1) * 1000) / decodeMs : 0 };
  }

  const encodePrompt = (prompt: string | ChatMessage[], chat = false): number[] => {
    // A chat template writes the specials it wants (Gemma's starts with {{ bos_token }}), as
    // Hugging Face tokenizes a rendered chat without adding any; a plain prompt gets the BOS
    // the model asks for.
    if (typeof prompt !== 'string' || chat) {
      return tokenizer.encode(renderChat(typeof prompt === 'string' ? [{ role: 'user', content: prompt }] : prompt));
    }
    return [...(CONFIG.addBos && CONFIG.bos !== null ? [CONFIG.bos] : []), ...tokenizer.encode(prompt)];
  };

  return {
    tokenizer,
    kernels,
    contextLength: CONFIG.ctx,
    encodePrompt,
    generateIds,
    generate: (prompt, o = {}) => generateIds(encodePrompt(prompt, o.chat), o),
    chat: (messages, o = {}) => generateIds(encodePrompt(messages), o),
    destroy() {
      for (const b of owned) b.destroy();
      device.destroy();
    },
  };
}
