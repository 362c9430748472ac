// {{NAME}}: {{MODEL}}, a generation pipeline of ONNX graphs ported to WebGPU by m2w.
//
// pipeline_config.ts holds the manifest the port resolved (m2w.pipeline/1): which graph runs
// once per prompt (an encoder) and which every step (a decoder), and where each input comes
// from. Every graph is one plan (graphN.ts) on one device; the loop is the native one
// (m2w_reference::pipeline::generate), token for token: the step stream starts with the
// start tokens (or the prompt, for a decoder-only model), each step feeds the graphs, and
// the last position of the logits picks the next token. Values between graphs (encoder
// states, embeddings, KV caches) are copied buffer to buffer on the GPU; a step reads back
// only the logits row that picks its token.

import { SHADERS } from './shaders.js';
import { CHAT, GRAPHS, PIPELINE } from './pipeline_config.js';
import { ChatTemplate } from './jinja.js';
import type { GraphConfig } from './pipeline_config.js';
import { GPUBufferUsage, allocatePlan, bindDims, biggestBuffer, compilePipelines, elementOffsets, encodeForward, encodeWithSyncs, numel, preparePlan, readBuffer, readRanges, readTensors, requestDevice, setDims, shapeOf, storageBuffersPerStage, writeTensor } from './runtime.js';
import type { PlanBuffers, PreparedPlan } from './runtime.js';
import { Sampler } from './sampler.js';
import type { SamplingOptions } from './sampler.js';
import { fromTokenizerJson } from './hf_tokenizer.js';
import type { TextTokenizer } from './hf_tokenizer.js';
import type { LoadOptions, TensorInfo } from './types.js';
import { bufferBytes, readIndex, streamWeights } from './weights.js';

export { Sampler } from './sampler.js';
/** The model's chat template as the port read it (tokenizer_config.json), or null. */
export { CHAT } from './pipeline_config.js';
export { DeviceLostError, WebGPUUnavailableError } from './runtime.js';
export type { WebGPUUnavailableReason } from './runtime.js';
export { fromTokenizerJson } from './hf_tokenizer.js';
export type { SamplingOptions } from './sampler.js';
export type { TextTokenizer } from './hf_tokenizer.js';
export type { LoadOptions, Tensor } from './types.js';
export { ChatTemplate } from './jinja.js';

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | string;
  content: string | { type: string; text?: string }[];
}

/** The conversation as the model reads it, through its own chat template (tokenizer_config.json). */
export function renderChat(messages: ChatMessage[], addGenerationPrompt = true): string {
  if (!CHAT) throw new Error('this model has no chat template (no chat_template in a tokenizer_config.json beside its tokenizer.json)');
  return new ChatTemplate(CHAT.template).render({ messages, add_generation_prompt: addGenerationPrompt, bos_token: CHAT.bosText, eos_token: CHAT.eosText });
}

export interface GenerateOptions extends SamplingOptions {
  /** New tokens at most (default: the manifest's max_new_tokens, which the engines are sized for). */
  maxNewTokens?: number;
  /** Seed of the sampler (same seed, same logits: same tokens). */
  seed?: number;
  /** Stop token ids (default: the manifest's; [] never stops). */
  stop?: number[];
  /** Called for each new token with the text it adds (held back while it ends inside a character). */
  onToken?: (text: string, id: number) => void;
  /** Stops early when aborted. */
  signal?: AbortSignal;
  /** Called with the logits row that picks each new token (scores, or a check against a reference). */
  onLogits?: (row: Float32Array, step: number) => void;
}

export interface GenerateResult {
  text: string;
  /** New token ids (the stop token included when one ended the run). */
  tokens: number[];
  promptTokens: number;
  finish: 'stop' | 'length' | 'abort';
  /** Milliseconds in the graphs that run once (encoders), then in the steps. */
  onceMs: number;
  stepsMs: number;
  tokensPerSecond: number;
}

export interface Pipeline {
  readonly tokenizer: TextTokenizer;
  readonly graphs: string[];
  /** The longest prompt and the most new tokens the engines are sized for. */
  readonly maxPrompt: number;
  readonly maxNewTokens: number;
  generate(prompt: string, options?: GenerateOptions): Promise<GenerateResult>;
  /** Generation from token ids (what the tests compare with ONNX Runtime's loop). */
  generateIds(promptIds: number[], options?: GenerateOptions): Promise<GenerateResult>;
  /** A conversation in the model's chat template, answered as the assistant. */
  chat(messages: ChatMessage[], options?: GenerateOptions): Promise<GenerateResult>;
  /** The ids `chat` generates from: the rendered conversation, tokenized without added specials. */
  encodeChat(messages: ChatMessage[]): number[];
  destroy(): void;
}

/** A value made on the host (token ids, masks, positions, an empty cache), with its shape. */
type HostValue = { data: ArrayLike<number>; shape: number[] };
/** A graph's output left where the graph wrote it: plan `graph`'s tensor, with its shape. */
type GpuValue = { graph: number; tensor: string; shape: number[] };
/** Values by "graph:output". */
type Values = Map<string, HostValue | GpuValue>;

function words(info: TensorInfo, data: ArrayLike<number>): Uint32Array<ArrayBuffer> {
  if (info.dt === 'f32') return new Uint32Array(Float32Array.from(data).buffer as ArrayBuffer);
  if (info.dt === 'i32') return new Uint32Array(Int32Array.from(data).buffer as ArrayBuffer);
  if (info.dt === 'bool') return Uint32Array.from(data, (v) => (v !== 0 ? 1 : 0));
  throw new Error(`an input of type ${info.dt} cannot be fed`);
}

/** The first largest value of the last row (a NaN wins, as numpy's argmax and the native loop). */
export function argmaxLast(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 0; i < row.length; i++) {
    if (Number.isNaN(row[i])) return i;
    if (row[i] > row[best]) best = i;
  }
  return best;
}

export async function loadPipeline(baseUrl: string, options: LoadOptions = {}): Promise<Pipeline> {
  const plans = GRAPHS.map((g) => g.plan);
  const device = await requestDevice(Math.max(...plans.map((p) => p.WORKGROUP_STORAGE_BYTES)), Math.max(...plans.map(biggestBuffer)), options.onDeviceLost, undefined, Math.max(...plans.map(storageBuffersPerStage)));
  // The kernels compile while the weights download.
  const compiling = compilePipelines(device, SHADERS, [...plans.flatMap((p) => p.DISPATCHES.map((d) => d.kernel)), 'argmax_exact_f32']);
  compiling.catch(() => {}); // awaited below; a download error must not leave it unhandled
  const base = baseUrl.replace(/\/$/, '');
  const tokenizerResponse = await fetch(`${base}/tokenizer.json`);
  if (!tokenizerResponse.ok) throw new Error(`${base}/tokenizer.json: HTTP ${tokenizerResponse.status}`);
  const tokenizer = fromTokenizerJson(await tokenizerResponse.json());
  const owned: GPUBuffer[] = [];
  const allocated: PlanBuffers[] = [];
  const loaded: number[] = GRAPHS.map(() => 0);
  const totals: number[] = GRAPHS.map(() => 0);
  for (const [k, g] of GRAPHS.entries()) {
    const root = `${base}/${g.weights}`;
    const progress = (l: number, t: number) => {
      loaded[k] = l;
      totals[k] = t;
      options.onProgress?.(loaded.reduce((a, b) => a + b, 0), totals.reduce((a, b) => a + b, 0));
    };
    const index = await readIndex(root, { cache: options.cache });
    // Constants stored once in constants.bin (the same bytes: a tied embedding and the
    // lm_head reading one 4-bit weight) share one GPU buffer, written once.
    const slotBytes = new Map<string, number>();
    for (const slot of g.plan.BUFFERS) for (const t of slot.tensors) slotBytes.set(t, slot.bytes);
    const byOffset = new Map<number, typeof index>();
    for (const c of index) if (c.bytes > 0) byOffset.set(c.offset, [...(byOffset.get(c.offset) ?? []), c]);
    const shared: Record<string, GPUBuffer> = {};
    for (const group of byOffset.values()) {
      if (group.length < 2) continue;
      const size = Math.max(...group.map((c) => Math.max(bufferBytes(c.bytes), slotBytes.get(c.name) ?? 0)));
      const b = device.createBuffer({ label: group[0].name, size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
      owned.push(b);
      for (const c of group) shared[c.name] = b;
    }
    const buffers = allocatePlan(device, g.plan, owned, { debug: options.debug, shared });
    // Streamed tensor by tensor: the file is never held whole.
    await streamWeights(root, device, (c) => buffers.bufferOf(c.name), { cache: options.cache, onProgress: progress }, index);
    allocated.push(buffers);
  }
  const pipelines = await compiling;
  const prepared: PreparedPlan[] = GRAPHS.map((g, k) => preparePlan(device, g.plan, pipelines, owned, { debug: options.debug, allocated: allocated[k] }));

  // A graph's input given the stream so far (`fed`: tokens the step graphs have seen).
  const feedValue = (g: GraphConfig, input: GraphConfig['inputs'][number], promptIds: number[], stream: number[], fed: number, values: Values, previous: Values) => {
    const fresh = stream.slice(Math.min(fed, stream.length));
    const row = (v: number[]) => ({ data: v, shape: [1, v.length] });
    const f = input.feed;
    if (f === 'prompt') return row(promptIds);
    if (f === 'prompt_mask') return row(promptIds.map(() => 1));
    if (f === 'sequence') return row(stream);
    if (f === 'new_tokens') return row(fresh);
    if (f === 'context_mask') return row(new Array(fed + fresh.length).fill(1));
    if (f === 'positions') return row(fresh.map((_, i) => fed + i));
    if (f === 'has_past') return { data: [fed > 0 ? 1 : 0], shape: [1] };
    if (f.startsWith('previous:')) {
      const v = previous.get(`${g.name}:${f.slice('previous:'.length)}`);
      if (v) return v;
      // Empty along its growing axes at the first step; batch 1.
      return { data: [], shape: input.shape.map((d, k) => (typeof d === 'number' ? d : k === 0 ? 1 : 0)) };
    }
    const v = values.get(f);
    if (!v) throw new Error(`${g.name}.${input.name}: ${f} was not computed`);
    return v;
  };

  // Inputs from other graphs' outputs (encoder states, embeddings) are copied buffer to
  // buffer on the GPU: nothing of them goes through the host. A KV cache the plan appends
  // in place (present a view of past's buffer, sized for the context) is already where
  // the next step reads it: the same buffer, nothing copied. Inputs and outputs have
  // buffers of their own in every plan.
  const copyIn = (k: number, copies: [GpuValue, string][]) => {
    const encoder = device.createCommandEncoder();
    for (const [src, name] of copies) {
      const from = prepared[src.graph].bufferOf(src.tensor);
      const to = prepared[k].bufferOf(name);
      if (from === to) continue;
      const [a, b] = [GRAPHS[src.graph].plan.TENSORS[src.tensor], GRAPHS[k].plan.TENSORS[name]];
      if (String(a.strides) !== String(b.strides)) throw new Error(`${GRAPHS[k].name}.${name}: ${src.tensor} is laid out at other strides`);
      // Same strides: the same elements of the buffer, up to the last one.
      const offsets = elementOffsets(a, src.shape);
      const bytes = (offsets ? offsets.reduce((m, o) => Math.max(m, o + 1), 0) : numel(src.shape)) * 4;
      if (bytes > 0) encoder.copyBufferToBuffer(from, 0, to, 0, bytes);
    }
    device.queue.submit([encoder.finish()]);
  };

  const wanted = (g: GraphConfig): string[] => {
    const w = new Set<string>();
    for (const other of GRAPHS) for (const i of other.inputs) if (i.feed.startsWith(`${g.name}:`)) w.add(i.feed.slice(g.name.length + 1));
    for (const i of g.inputs) if (i.feed.startsWith('previous:')) w.add(i.feed.slice('previous:'.length));
    if (g.name === PIPELINE.logits.graph) w.add(PIPELINE.logits.output);
    return [...w];
  };

  const runGraph = async (k: number, promptIds: number[], stream: number[], fed: number, values: Values, previous: Values) => {
    const g = GRAPHS[k];
    const p = prepared[k];
    const given: Record<string, HostValue | GpuValue> = {};
    for (const input of g.inputs) if (g.plan.INPUTS.includes(input.name)) given[input.name] = feedValue(g, input, promptIds, stream, fed, values, previous);
    setDims(device, p, bindDims(g.plan, Object.fromEntries(Object.entries(given).map(([n, v]) => [n, v.shape]))));
    const copies: [GpuValue, string][] = [];
    for (const [name, v] of Object.entries(given)) {
      if ('tensor' in v) {
        copies.push([v, name]);
        continue;
      }
      const n = numel(shapeOf(g.plan, name, p.dims));
      if (v.data.length !== n) throw new Error(`${g.name}.${name}: ${v.data.length} values for shape [${v.shape}]`);
      if (n > 0) writeTensor(device, p, name, words(g.plan.TENSORS[name], v.data));
    }
    if (copies.length) copyIn(k, copies);
    if (g.plan.SYNCS?.length) await encodeWithSyncs(device, p, pipelines);
    else encodeForward(device, p, pipelines);
    // Outputs stay on the GPU; the few computed on the host (shape values) are read.
    const host = wanted(g).filter((name) => g.plan.SHAPE_VALUES?.[g.plan.TENSORS[name]?.base ?? name]);
    for (const [name, t] of Object.entries(await readTensors(device, p, host))) values.set(`${g.name}:${name}`, { data: t, shape: t.shape });
    for (const name of wanted(g)) if (!host.includes(name)) values.set(`${g.name}:${name}`, { graph: k, tensor: name, shape: shapeOf(g.plan, name, p.dims) });
  };

  /** The last row of the logits: the only values a step reads back. */
  const lastRow = async (v: HostValue | GpuValue): Promise<Float32Array> => {
    const width = v.shape[v.shape.length - 1];
    if (!('tensor' in v)) {
      const at = v.data.length - width;
      return Float32Array.from({ length: width }, (_, i) => v.data[at + i]);
    }
    const at = (numel(v.shape) - width) * 4;
    const [bytes] = await readRanges(device, prepared[v.graph], [[v.tensor, at, width * 4]]);
    return new Float32Array(bytes);
  };

  // Greedy tokens are picked on the GPU (argmax_exact_f32: numpy's argmax, the first NaN
  // wins, as argmaxLast and the native loop): a step reads back 4 bytes. The logits row
  // comes back only when sampling or onLogits wants it.
  const logitsGraph = GRAPHS.findIndex((g) => g.name === PIPELINE.logits.graph);
  const picked = device.createBuffer({ label: 'picked token', size: 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
  const pickParams = device.createBuffer({ label: 'argmax params', size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  owned.push(picked, pickParams);
  const pickGroup = device.createBindGroup({
    label: 'argmax',
    layout: pipelines.argmax_exact_f32.getBindGroupLayout(0),
    entries: [prepared[logitsGraph].bufferOf(PIPELINE.logits.output), picked, pickParams].map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  const pickOnGpu = async (v: GpuValue): Promise<number> => {
    const width = v.shape[v.shape.length - 1];
    const rows = numel(v.shape) / width;
    device.queue.writeBuffer(pickParams, 0, Uint32Array.of(rows, width, rows - 1, 0));
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipelines.argmax_exact_f32);
    pass.setBindGroup(0, pickGroup);
    pass.dispatchWorkgroups(1);
    pass.end();
    device.queue.submit([encoder.finish()]);
    return new Int32Array(await readBuffer(device, picked, 4))[0];
  };

  let busy = false;
  async function run(promptIds: number[], o: GenerateOptions): Promise<GenerateResult> {
    const maxNew = o.maxNewTokens ?? PIPELINE.maxNewTokens;
    if (!Number.isInteger(maxNew) || maxNew < 0) throw new Error(`maxNewTokens must be a whole number >= 0, got ${maxNew}`);
    if (maxNew > PIPELINE.maxNewTokens) throw new Error(`maxNewTokens ${maxNew}: the engines are sized for ${PIPELINE.maxNewTokens} (port with a larger max_new_tokens in pipeline.json)`);
    if (promptIds.length === 0 && PIPELINE.start.length === 0) throw new Error('the prompt has no tokens');
    if (promptIds.length > PIPELINE.maxPrompt) throw new Error(`the prompt has ${promptIds.length} tokens; the engines are sized for ${PIPELINE.maxPrompt} (port with a larger max_prompt in pipeline.json)`);
    const stop = new Set(o.stop ?? PIPELINE.stop);
    const sampled = (o.temperature ?? 0) > 0 || (o.repetitionPenalty ?? 1) !== 1;
    const sampler = new Sampler(o.seed ?? 0);
    const stream = PIPELINE.start.length ? [...PIPELINE.start] : [...promptIds];
    const values: Values = new Map();
    let previous: Values = new Map();
    const t0 = performance.now();
    for (const [k, g] of GRAPHS.entries()) if (g.run === 'once') await runGraph(k, promptIds, stream, 0, values, previous);
    const onceMs = performance.now() - t0;
    const t1 = performance.now();
    const tokens: number[] = [];
    let text = '';
    let finish: GenerateResult['finish'] = 'length';
    let fed = 0;
    while (tokens.length < maxNew) {
      if (o.signal?.aborted) {
        finish = 'abort';
        break;
      }
      for (const [k, g] of GRAPHS.entries()) if (g.run === 'step') await runGraph(k, promptIds, stream, fed, values, previous);
      const logits = values.get(`${PIPELINE.logits.graph}:${PIPELINE.logits.output}`)!;
      let next: number;
      if ('tensor' in logits && logits.tensor === PIPELINE.logits.output && !sampled && !o.onLogits) next = await pickOnGpu(logits);
      else {
        const row = await lastRow(logits);
        o.onLogits?.(row, tokens.length);
        next = sampled ? sampler.pick(row, [...promptIds, ...tokens], o) : argmaxLast(row);
      }
      // This step's outputs are the next step's caches.
      previous = new Map([...values].filter(([key]) => GRAPHS.some((g) => g.run === 'step' && key.startsWith(`${g.name}:`))));
      fed = stream.length;
      stream.push(next);
      tokens.push(next);
      if (stop.has(next)) {
        finish = 'stop';
        break;
      }
      // The text so far, less what was already given out; held while it ends mid-character.
      const now = tokenizer.decode(tokens);
      if (now.startsWith(text) && !now.endsWith('\uFFFD')) {
        if (now.length > text.length) o.onToken?.(now.slice(text.length), next);
        text = now;
      }
    }
    text = tokenizer.decode(tokens);
    const stepsMs = performance.now() - t1;
    return { text, tokens, promptTokens: promptIds.length, finish, onceMs, stepsMs, tokensPerSecond: tokens.length > 0 ? (tokens.length * 1000) / stepsMs : 0 };
  }

  async function generateIds(promptIds: number[], o: GenerateOptions = {}): Promise<GenerateResult> {
    if (busy) throw new Error('a generation is already running on this pipeline (await it, or abort it)');
    busy = true;
    try {
      return await run(promptIds, o);
    } finally {
      busy = false;
    }
  }

  return {
    tokenizer,
    graphs: GRAPHS.map((g) => g.name),
    maxPrompt: PIPELINE.maxPrompt,
    maxNewTokens: PIPELINE.maxNewTokens,
    generateIds,
    generate: (prompt, o = {}) => generateIds(tokenizer.encode(prompt), o),
    // As Hugging Face's apply_chat_template: the template writes the specials it wants.
    encodeChat: (messages) => tokenizer.encode(renderChat(messages), false),
    chat: (messages, o = {}) => generateIds(tokenizer.encode(renderChat(messages), false), o),
    destroy() {
      for (const b of owned) b.destroy();
      device.destroy();
    },
  };
}
