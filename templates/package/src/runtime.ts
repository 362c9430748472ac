// The WebGPU side shared by every m2w package: device with the limits a plan needs, shader
// compilation with its messages checked, buffers (lifetime-shared slots, or one per tensor in
// debug mode), one bind group + uniform per dispatch, pass encoding, and read-back.

import type { BufferSlot, DispatchInfo, Tensor, TensorData, TensorInfo } from './types.js';

export const GPUBufferUsage = { MAP_READ: 1, COPY_SRC: 4, COPY_DST: 8, UNIFORM: 64, STORAGE: 128 };
const GPUMapMode = { READ: 1 };

/** Values bound to a plan's named dims. */
export type Dims = Record<string, number>;

/** The tables `cargo xtask package` writes for one plan (engine.ts, prefill.ts, decode.ts).
 * A plan with DIMS is symbolic: TENSORS and DISPATCHES hold sizes at the dims' maxima, and
 * what depends on dims is evaluated per run (SHAPES, SHAPE_VALUES, symbolicParams, forward). */
export interface PlanTables {
  TENSORS: Record<string, TensorInfo>;
  BUFFERS: BufferSlot[];
  DISPATCHES: DispatchInfo[];
  FLUSH_EVERY: number;
  DIMS?: { name: string; min?: number; max: number; atSync?: boolean }[];
  INPUT_SHAPES?: Record<string, (string | number)[]>;
  SHAPES?: Record<string, (d: Dims) => number[]>;
  SHAPE_VALUES?: Record<string, (d: Dims) => number[]>;
  CONSTRAINTS?: [(d: Dims) => number, (d: Dims) => number, string, string[]][];
  SYNCS?: { at: number; tensor: string; values?: [string, number][]; nonzero?: { output: string; dim: string } }[];
  symbolicParams?(d: Dims, set: (i: number, word: number, value: number) => void): void;
  forward(dispatch: (i: number, x: number, y: number, z: number) => void, d?: Dims, from?: number, to?: number): void;
}

/** The dims that inputs of these shapes bind; throws when an input's rank or a fixed size
 * differs, when two inputs disagree on a dim, or when a dim exceeds its maximum. */
export function bindDims(tables: PlanTables, shapes: Record<string, number[]>): Dims {
  // Dims bound at sync points start at their maxima (placeholders until the pass reaches them).
  const d: Dims = Object.fromEntries((tables.DIMS ?? []).filter((x) => x.atSync).map((x) => [x.name, x.max]));
  for (const [name, want] of Object.entries(tables.INPUT_SHAPES ?? {})) {
    const got = shapes[name];
    if (!got) throw new Error(`input ${name} not given`);
    if (got.length !== want.length) throw new Error(`input ${name} has shape [${got}], the model takes rank ${want.length} ([${want}])`);
    want.forEach((w, k) => {
      if (typeof w === 'number') {
        if (got[k] !== w) throw new Error(`input ${name} has shape [${got}]: axis ${k} must be ${w}`);
      } else if (w in d && d[w] !== got[k]) {
        throw new Error(`input ${name} has shape [${got}]: dim ${w} is ${got[k]} there and ${d[w]} in another input`);
      } else {
        d[w] = got[k];
      }
    });
  }
  for (const { name, min, max, atSync } of tables.DIMS ?? []) {
    if (atSync) continue;
    if (!(name in d)) throw new Error(`no input binds dim ${name}`);
    if (d[name] < (min ?? 0)) throw new Error(`dim ${name} = ${d[name]} is below its minimum ${min}`);
    if (d[name] > max) throw new Error(`dim ${name} = ${d[name]} exceeds its maximum ${max} (the buffers are sized for it; port with --max-dim ${name}=N to raise it)`);
  }
  checkConstraints(tables, d, new Set((tables.DIMS ?? []).filter((x) => x.atSync).map((x) => x.name)));
  return d;
}

/** Checks the constraints whose dims are all bound (none in `pending`). */
function checkConstraints(tables: PlanTables, d: Dims, pending: Set<string>): void {
  for (const [a, b, node, syms] of tables.CONSTRAINTS ?? []) {
    if (syms.some((s) => pending.has(s))) continue;
    if (a(d) !== b(d)) throw new Error(`the model cannot take these sizes (${JSON.stringify(d)}): node ${node} needs two sizes to agree, here ${a(d)} and ${b(d)}`);
  }
}

/** A tensor's shape for bound dims. */
export function shapeOf(tables: PlanTables, name: string, d: Dims): number[] {
  const f = tables.SHAPES?.[name];
  if (f) return f(d);
  const info = tables.TENSORS[name];
  if (!info) throw new Error(`no tensor ${name}`);
  return info.shape;
}

export function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The buffer element of each element of a tensor of this shape, in row-major order, when
 * it is strided (a KV cache appended in place); undefined when it is row-major. */
export function elementOffsets(info: TensorInfo, shape: number[]): number[] | undefined {
  const strides = info.strides;
  if (!strides) return undefined;
  const out: number[] = new Array(numel(shape));
  const idx = shape.map(() => 0);
  for (let e = 0; e < out.length; e++) {
    out[e] = idx.reduce((a, i, d) => a + i * strides[d], 0);
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

/** Writes a tensor's 32-bit words (row-major, for the bound dims) into its buffer: scattered
 * at its strides when it is strided. */
export function writeTensor(device: GPUDevice, plan: PreparedPlan, name: string, words: Uint32Array<ArrayBuffer>): void {
  const info = plan.tables.TENSORS[name];
  if (!info) throw new Error(`no tensor ${name}`);
  const offsets = elementOffsets(info, shapeOf(plan.tables, name, plan.dims));
  let image = words;
  if (offsets) {
    image = new Uint32Array(offsets.reduce((m, o) => Math.max(m, o + 1), 0));
    offsets.forEach((o, e) => (image[o] = words[e]));
  }
  if (image.length) device.queue.writeBuffer(plan.bufferOf(name), 0, image);
}

export function fromWords(info: TensorInfo, words: ArrayBuffer): TensorData {
  if (info.dt === 'f32') return new Float32Array(words);
  if (info.dt === 'i32') return new Int32Array(words);
  return new Uint32Array(words);
}

/** Biggest buffer a plan allocates (bytes): what maxStorageBufferBindingSize must allow. */
export function biggestBuffer(plan: PlanTables): number {
  return Math.max(16, ...plan.BUFFERS.map((b) => b.bytes), ...Object.values(plan.TENSORS).map((t) => Math.max(t.bytes ?? 0, numel(t.shape) * 4)));
}

/** Most storage buffers one kernel of a plan binds (WebGPU's default per-stage limit is 8). */
export function storageBuffersPerStage(plan: PlanTables): number {
  return Math.max(0, ...plan.DISPATCHES.map((d) => d.bindings.length));
}

/** Why WebGPU cannot run the model here. */
export type WebGPUUnavailableReason = 'no-navigator-gpu' | 'insecure-context' | 'no-adapter' | 'missing-feature' | 'missing-limit';

/** WebGPU is missing or cannot run this model: `reason` says which, `message` what to do.
 * A page can test `err instanceof WebGPUUnavailableError` (or `err.name`) and show a
 * fallback instead of a stack trace. */
export class WebGPUUnavailableError extends Error {
  readonly reason: WebGPUUnavailableReason;
  constructor(reason: WebGPUUnavailableReason, message: string) {
    super(message);
    this.name = 'WebGPUUnavailableError';
    this.reason = reason;
  }
}

/** The GPU device was lost (driver reset, GPU process crash, the tab in the background too
 * long) or destroyed: the model cannot run on it any more. Load it again (loadModel /
 * loadLLM: the weights come from the Cache API when `cache` was on) after a user action,
 * such as a "Restart" button; m2w never retries on its own. */
export class DeviceLostError extends Error {
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(`the GPU device was lost (${reason}${message ? `: ${message}` : ''}); load the model again after a user action`);
    this.name = 'DeviceLostError';
    this.reason = reason;
  }
}

const lostDevices = new WeakMap<GPUDevice, DeviceLostError>();

/** Throws DeviceLostError when `device` was lost. */
export function assertAlive(device: GPUDevice): void {
  const lost = lostDevices.get(device);
  if (lost) throw lost;
}

export async function requestAdapter(): Promise<GPUAdapter> {
  // Browsers hide navigator.gpu outside a secure context (https or localhost): say that,
  // not that the browser lacks WebGPU.
  if (typeof isSecureContext !== 'undefined' && !isSecureContext) {
    throw new WebGPUUnavailableError('insecure-context', 'WebGPU needs a secure context: serve the page over https (or from localhost)');
  }
  const gpu = typeof navigator === 'undefined' ? undefined : navigator.gpu;
  if (!gpu) throw new WebGPUUnavailableError('no-navigator-gpu', 'WebGPU is not available in this browser (Chrome 113+, Edge 113+, Safari iOS 26+, Firefox 141+ on Windows)');
  const adapter = await gpu.requestAdapter();
  if (!adapter) throw new WebGPUUnavailableError('no-adapter', 'the browser offers WebGPU but no adapter (GPU blocked or unsupported; check chrome://gpu)');
  return adapter;
}

/** A CPU implementation of WebGPU (SwiftShader, lavapipe): kernels tuned for GPUs crawl there. */
export function isCpuAdapter(adapter: GPUAdapter): boolean {
  const info = adapter.info ?? {};
  const fallback = (info as { isFallbackAdapter?: boolean }).isFallbackAdapter ?? (adapter as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter;
  return Boolean(fallback) || /swiftshader|llvmpipe|lavapipe/i.test(`${info.vendor ?? ''} ${info.architecture ?? ''} ${info.description ?? ''}`);
}

export async function requestDevice(workgroupStorage: number, biggest: number, onDeviceLost?: (message: string) => void, adapter?: GPUAdapter, storageBuffers = 8, optionalFeatures: GPUFeatureName[] = []): Promise<GPUDevice> {
  adapter = adapter ?? (await requestAdapter());
  const need: Record<string, number> = { maxComputeWorkgroupStorageSize: workgroupStorage, maxStorageBufferBindingSize: biggest, maxBufferSize: biggest };
  if (storageBuffers > 8) need.maxStorageBuffersPerShaderStage = storageBuffers;
  for (const [k, v] of Object.entries(need)) {
    const offered = (adapter.limits as unknown as Record<string, number>)[k];
    if (offered < v) throw new WebGPUUnavailableError('missing-limit', `this device offers ${k} = ${offered}, the model needs ${v}`);
  }
  // Optional features (shader-f16 for f16 weights) are asked for only where offered.
  const requiredFeatures = optionalFeatures.filter((f) => adapter.features.has(f));
  const device = await adapter.requestDevice({ requiredLimits: need, requiredFeatures });
  device.lost.then((info: GPUDeviceLostInfo) => {
    lostDevices.set(device, new DeviceLostError(String(info.reason), String(info.message)));
    if (info.reason !== 'destroyed') onDeviceLost?.(String(info.message));
  });
  return device;
}

/** Compiles every kernel once, checks its messages, builds the pipelines asynchronously. */
export async function compilePipelines(device: GPUDevice, shaders: Record<string, string>, kernels: Iterable<string>): Promise<Record<string, GPUComputePipeline>> {
  const pipelines: Record<string, GPUComputePipeline> = {};
  for (const kernel of new Set(kernels)) {
    const module = device.createShaderModule({ label: kernel, code: shaders[kernel] });
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((m) => m.type === 'error');
    if (errors.length) throw new Error(`shader ${kernel}: ${errors.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join('; ')}`);
    pipelines[kernel] = await device.createComputePipelineAsync({ label: kernel, layout: 'auto', compute: { module, entryPoint: 'main' } });
  }
  return pipelines;
}

/** A plan made ready on a device: its buffers, bind groups and uniforms. */
export interface PreparedPlan {
  tables: PlanTables;
  bufferOf(name: string): GPUBuffer;
  bindGroups: GPUBindGroup[];
  uniforms: GPUBuffer[];
  /** The dims the uniforms are written for (the maxima until `setDims`). */
  dims: Dims;
  /** Each dispatch's uniform words as last written. */
  params: Uint32Array<ArrayBuffer>[];
}

/** Binds dims: rewrites the uniform words that depend on them (nothing when unchanged). */
export function setDims(device: GPUDevice, plan: PreparedPlan, d: Dims): void {
  const same = Object.keys(d).length === Object.keys(plan.dims).length && Object.entries(d).every(([k, v]) => plan.dims[k] === v);
  if (same || !plan.tables.symbolicParams) {
    plan.dims = { ...d };
    return;
  }
  const touched = new Set<number>();
  plan.tables.symbolicParams(d, (i, word, value) => {
    plan.params[i][word] = value;
    touched.add(i);
  });
  for (const i of touched) device.queue.writeBuffer(plan.uniforms[i], 0, plan.params[i]);
  plan.dims = { ...d };
}

/**
 * Buffers of a plan: every storage buffer has COPY_SRC so any of them can be read back.
 * `shared` holds buffers that outlive the plan (weights, caches: names shared between the
 * plans of one package); a slot holding one of them takes that buffer instead of a new one.
 */
export function allocatePlan(device: GPUDevice, tables: PlanTables, owned: GPUBuffer[], options: { debug?: boolean; shared?: Record<string, GPUBuffer> } = {}): PlanBuffers {
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const shared = options.shared ?? {};
  const buffers: Record<string, GPUBuffer> = {};
  const make = (label: string, size: number) => {
    const b = device.createBuffer({ label, size, usage });
    owned.push(b);
    return b;
  };
  if (options.debug) {
    for (const [name, t] of Object.entries(tables.TENSORS)) {
      if (t.base === name) buffers[name] = shared[name] ?? make(name, Math.max(4, t.bytes ?? 0, numel(t.shape) * 4));
    }
  } else {
    for (const slot of tables.BUFFERS) {
      const b = slot.tensors.map((t) => shared[t]).find((s) => s) ?? make(slot.tensors[0], slot.bytes);
      for (const t of slot.tensors) buffers[t] = b;
    }
  }
  return { bufferOf: (name: string) => buffers[tables.TENSORS[name]?.base ?? name], make };
}

/** The buffers of a plan (allocatePlan), before its kernels are bound. */
export interface PlanBuffers {
  bufferOf(name: string): GPUBuffer;
  make(label: string, size: number): GPUBuffer;
}

/** A plan's buffers (`allocated`, or allocated here) bound to its kernels. */
export function preparePlan(device: GPUDevice, tables: PlanTables, pipelines: Record<string, GPUComputePipeline>, owned: GPUBuffer[], options: { debug?: boolean; shared?: Record<string, GPUBuffer>; allocated?: PlanBuffers } = {}): PreparedPlan {
  const { bufferOf, make } = options.allocated ?? allocatePlan(device, tables, owned, options);
  const dummy = make('dummy', 16);
  const uniforms: GPUBuffer[] = [];
  const params: Uint32Array<ArrayBuffer>[] = [];
  const bindGroups = tables.DISPATCHES.map((d) => {
    const uniform = device.createBuffer({ size: Math.max(16, d.params.length * 4), usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    const words = new Uint32Array(d.params);
    params.push(words);
    device.queue.writeBuffer(uniform, 0, words);
    owned.push(uniform);
    uniforms.push(uniform);
    const entries = d.bindings.map((b, i) => {
      let buffer: GPUBuffer;
      if ('tensor' in b) buffer = bufferOf(b.tensor);
      else if ('scratch' in b) buffer = make(`${d.node} scratch`, Math.max(4, b.scratch * 4));
      else buffer = dummy;
      return { binding: i, resource: { buffer } };
    });
    entries.push({ binding: d.bindings.length, resource: { buffer: uniform } });
    return device.createBindGroup({ label: d.node, layout: pipelines[d.kernel].getBindGroupLayout(0), entries });
  });
  const dims: Dims = Object.fromEntries((tables.DIMS ?? []).map((x) => [x.name, x.max]));
  return { tables, bufferOf, bindGroups, uniforms, dims, params };
}

/**
 * Records the plan's forward pass and submits it (FLUSH_EVERY dispatches per encoder);
 * `after` may add commands to the last encoder (copies that must see this pass's results).
 */
export function encodeForward(device: GPUDevice, plan: PreparedPlan, pipelines: Record<string, GPUComputePipeline>, after?: (encoder: GPUCommandEncoder) => void, from = 0, to = Infinity): void {
  assertAlive(device);
  let encoder = device.createCommandEncoder();
  let pass = encoder.beginComputePass();
  let recorded = 0;
  const { DISPATCHES, FLUSH_EVERY } = plan.tables;
  plan.tables.forward((i: number, x: number, y: number, z: number) => {
    if (x * y * z === 0) return;
    pass.setPipeline(pipelines[DISPATCHES[i].kernel]);
    pass.setBindGroup(0, plan.bindGroups[i]);
    pass.dispatchWorkgroups(x, y, z);
    if (++recorded % FLUSH_EVERY === 0) {
      pass.end();
      device.queue.submit([encoder.finish()]);
      encoder = device.createCommandEncoder();
      pass = encoder.beginComputePass();
    }
  }, plan.dims, from, to);
  pass.end();
  after?.(encoder);
  device.queue.submit([encoder.finish()]);
}

/**
 * Submits the pass, then in the same submission copies each `feedback` pair (src -> dst
 * tensor) on the GPU and `read` out to a staging buffer; resolves with `read`'s bytes. The
 * caller can submit the next pass (which starts from the fed-back values) before awaiting.
 */
export function submitChained(device: GPUDevice, plan: PreparedPlan, pipelines: Record<string, GPUComputePipeline>, feedback: [string, string][], read: string): Promise<ArrayBuffer> {
  const info = plan.tables.TENSORS[read];
  if (!info) throw new Error(`no tensor ${read}`);
  const bytes = numel(info.shape) * 4;
  const staging = device.createBuffer({ size: Math.max(4, bytes), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  encodeForward(device, plan, pipelines, (encoder) => {
    encoder.copyBufferToBuffer(plan.bufferOf(read), 0, staging, 0, bytes);
    for (const [src, dst] of feedback) encoder.copyBufferToBuffer(plan.bufferOf(src), 0, plan.bufferOf(dst), 0, numel(plan.tables.TENSORS[src].shape) * 4);
  });
  return mapRead(device, staging).then(() => {
    const out = staging.getMappedRange(0, Math.max(4, bytes)).slice(0, bytes);
    staging.unmap();
    staging.destroy();
    return out;
  });
}

/**
 * The forward pass of a plan with sync points: each stretch up to a sync point is
 * submitted, the sync tensor read back, the dims it decides bound (uniforms rewritten) or
 * its NonZero computed and written, and the next stretch encoded for the new sizes.
 */
export async function encodeWithSyncs(device: GPUDevice, plan: PreparedPlan, pipelines: Record<string, GPUComputePipeline>): Promise<void> {
  const syncs = plan.tables.SYNCS ?? [];
  let from = 0;
  for (const [k, s] of syncs.entries()) {
    encodeForward(device, plan, pipelines, undefined, from, s.at);
    await applySync(device, plan, k);
    from = s.at;
  }
  encodeForward(device, plan, pipelines, undefined, from);
}

/** Sync point k, once the dispatches before it ran: reads its tensor back, binds the dims
 * it decides (uniforms rewritten) or computes and writes its NonZero. */
export async function applySync(device: GPUDevice, plan: PreparedPlan, k: number): Promise<void> {
  const syncs = plan.tables.SYNCS ?? [];
  const s = syncs[k];
  const limits = Object.fromEntries((plan.tables.DIMS ?? []).map((x) => [x.name, x]));
  const t = (await readTensors(device, plan, [s.tensor]))[s.tensor];
  const d: Dims = { ...plan.dims };
  const set = (name: string, v: number) => {
    const l = limits[name];
    if (v < (l.min ?? 0) || v > l.max) throw new Error(`${name} is ${v} at run time; this model takes ${l.min ?? 0}..${l.max} (port with --max-dim "${name}=N" to raise it)`);
    d[name] = v;
  };
  let write: [string, Int32Array<ArrayBuffer>] | undefined;
  if (s.values) {
    for (const [name, i] of s.values) set(name, Number(t[i]));
  } else if (s.nonzero) {
    // ONNX NonZero: [rank, count], the coordinates of each nonzero element, row-major.
    const shape = t.shape.length ? t.shape : [1];
    const hits: number[] = [];
    for (let i = 0; i < t.length; i++) if (t[i] !== 0) hits.push(i);
    const idx = new Int32Array(shape.length * hits.length);
    hits.forEach((flat, j) => {
      let rest = flat;
      for (let a = shape.length - 1; a >= 0; a--) {
        idx[a * hits.length + j] = rest % shape[a];
        rest = Math.floor(rest / shape[a]);
      }
    });
    set(s.nonzero.dim, hits.length);
    write = [s.nonzero.output, idx];
  }
  const later = new Set(syncs.slice(k + 1).flatMap((l) => (l.values ? l.values.map(([n]) => n) : [l.nonzero!.dim])));
  checkConstraints(plan.tables, d, later);
  setDims(device, plan, d);
  if (write && write[1].length) device.queue.writeBuffer(plan.bufferOf(write[0]), 0, write[1]);
}

/** Maps a staging buffer for reading; a device lost meanwhile is a DeviceLostError. */
export async function mapRead(device: GPUDevice, staging: GPUBuffer): Promise<void> {
  assertAlive(device);
  try {
    await staging.mapAsync(GPUMapMode.READ);
  } catch (e) {
    // The lost promise settles after a failed map: give it its turn.
    await new Promise((r) => setTimeout(r, 0));
    assertAlive(device);
    throw e;
  }
}

/** The first `bytes` of a buffer, read back. */
export async function readBuffer(device: GPUDevice, buffer: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
  const staging = device.createBuffer({ size: Math.max(4, bytes), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(buffer, 0, staging, 0, Math.max(4, bytes));
  device.queue.submit([encoder.finish()]);
  await mapRead(device, staging);
  const out = staging.getMappedRange(0, Math.max(4, bytes)).slice(0, bytes);
  staging.unmap();
  staging.destroy();
  return out;
}

/** Reads tensors back: `[name, byte offset, bytes]` ranges of their buffers. */
export async function readRanges(device: GPUDevice, plan: PreparedPlan, ranges: [string, number, number][]): Promise<ArrayBuffer[]> {
  const encoder = device.createCommandEncoder();
  const staging: [GPUBuffer, number][] = [];
  for (const [name, offset, bytes] of ranges) {
    if (!plan.tables.TENSORS[name]) throw new Error(`no tensor ${name}`);
    const s = device.createBuffer({ size: Math.max(4, bytes), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    if (bytes > 0) encoder.copyBufferToBuffer(plan.bufferOf(name), offset, s, 0, bytes);
    staging.push([s, bytes]);
  }
  device.queue.submit([encoder.finish()]);
  const out: ArrayBuffer[] = [];
  for (const [s, bytes] of staging) {
    await mapRead(device, s);
    out.push(s.getMappedRange(0, Math.max(4, bytes)).slice(0, bytes));
    s.unmap();
    s.destroy();
  }
  return out;
}

/** Whole tensors for the bound dims, typed by their plan dtype, each with its `shape`.
 * Shape values (integers computed from dims) are evaluated on the host. */
export async function readTensors(device: GPUDevice, plan: PreparedPlan, names: string[]): Promise<Record<string, Tensor>> {
  const hostValue = (n: string) => plan.tables.SHAPE_VALUES?.[plan.tables.TENSORS[n]?.base ?? n];
  const onGpu = names.filter((n) => !hostValue(n));
  // A strided view (a KV cache appended in place) is read whole and gathered here.
  const offsets = onGpu.map((n) => {
    if (!plan.tables.TENSORS[n]) throw new Error(`no tensor ${n}`);
    return elementOffsets(plan.tables.TENSORS[n], shapeOf(plan.tables, n, plan.dims));
  });
  const ranges: [string, number, number][] = onGpu.map((n, i) => {
    const o = offsets[i];
    return [n, 0, (o ? o.reduce((m, x) => Math.max(m, x + 1), 0) : numel(shapeOf(plan.tables, n, plan.dims))) * 4];
  });
  const got = await readRanges(device, plan, ranges);
  const out: Record<string, Tensor> = {};
  onGpu.forEach((n, i) => {
    const o = offsets[i];
    const whole = new Uint32Array(got[i]);
    const words = o ? Uint32Array.from(o, (k) => whole[k]).buffer : got[i];
    out[n] = Object.assign(fromWords(plan.tables.TENSORS[n], words), { shape: shapeOf(plan.tables, n, plan.dims) });
  });
  for (const n of names) {
    const f = hostValue(n);
    if (f) out[n] = Object.assign(Int32Array.from(f(plan.dims)), { shape: shapeOf(plan.tables, n, plan.dims) });
  }
  return out;
}

/** The f16-weight table a package ships (src/half.ts, from engine::half). */
export interface HalfTable {
  /** Constants kept as IEEE half on a device with shader-f16. */
  weights: string[];
  /** [dispatch index, twin kernel] for every dispatch that reads one of them. */
  dispatches: [number, string][];
  /** The dispatch run both ways at load: its output and the tensors filled with a probe. */
  check: { dispatch: number; output: string; probe: string[] } | null;
  /** Bytes of those weights as f32 and as f16. */
  bytes: [number, number];
}

/** Which weights a loaded model keeps as f16, and why (`useHalfWeights`). */
export interface Precision {
  weights: 'f16' | 'f32';
  /** Why: what was checked, or what was missing. */
  reason: string;
  /** The load-time check: largest |f16 - f32| of the checked dispatch, and its f32 output's
   * largest magnitude. */
  check?: { dispatch: number; maxError: number; scale: number };
  /** GPU bytes the f16 weights saved. */
  savedBytes?: number;
}

/** The load-time check's bound: |f16 - f32| <= TOLERANCE * max |f32| (a weight rounded to
 * f16 is off by 2^-11 of itself; a wrong f16 path is off by the output's whole scale). */
const HALF_TOLERANCE = 1e-2;

/**
 * Keeps the HALF weights as f16 when the device has shader-f16 and `wanted`: converts them on
 * the GPU (to_half), runs HALF.check's dispatch with its f32 kernel and with its twin on a
 * probe (same inputs, the real weights), and takes the f16 path only when every output agrees
 * within HALF_TOLERANCE and none is NaN or infinite where the other is not. Otherwise the f16
 * copies are dropped and the model runs f32, with the reason reported. On success the f32
 * copies are destroyed (GPU memory and bandwidth of those weights halve).
 */
export async function useHalfWeights(device: GPUDevice, tables: PlanTables, half: HalfTable, shaders: Record<string, string>, buffers: PlanBuffers, pipelines: Record<string, GPUComputePipeline>, wanted: boolean): Promise<{ precision: Precision; tables: PlanTables; buffers: PlanBuffers; pipelines: Record<string, GPUComputePipeline> }> {
  const f32 = (reason: string) => ({ precision: { weights: 'f32' as const, reason }, tables, buffers, pipelines });
  if (!half.weights.length || !half.check) return f32('no weight of this model has an f16 kernel');
  if (!wanted) return f32('f16 turned off (options.f16 = false)');
  if (!device.features.has('shader-f16')) return f32('the device has no shader-f16');
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const twins = await compilePipelines(device, shaders, ['to_half', ...half.dispatches.map((d) => d[1])]);
  const halves: Record<string, GPUBuffer> = {};
  const temporary: GPUBuffer[] = [];
  const encoder = device.createCommandEncoder({ label: 'to_half' });
  const pass = encoder.beginComputePass();
  pass.setPipeline(twins.to_half);
  for (const name of half.weights) {
    const n = numel(tables.TENSORS[name].shape);
    const words = Math.ceil(n / 2);
    const out = device.createBuffer({ label: `${name} (f16)`, size: Math.max(4, words * 4), usage });
    halves[name] = out;
    const uniform = device.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    temporary.push(uniform);
    device.queue.writeBuffer(uniform, 0, Uint32Array.of(n, 0, 0, 0));
    const group = device.createBindGroup({
      layout: twins.to_half.getBindGroupLayout(0),
      entries: [buffers.bufferOf(name), out, uniform].map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    pass.setBindGroup(0, group);
    const groups = Math.ceil(words / 256);
    pass.dispatchWorkgroups(Math.min(groups, 65535), Math.ceil(groups / 65535));
  }
  pass.end();
  device.queue.submit([encoder.finish()]);

  // The check: one dispatch, both ways, on the same probe.
  const { dispatch, output, probe } = half.check;
  const d = tables.DISPATCHES[dispatch];
  const twin = half.dispatches.find((x) => x[0] === dispatch)![1];
  let seed = 0x2545f491;
  for (const name of probe) {
    const size = buffers.bufferOf(name).size;
    const values = new Float32Array(size / 4);
    for (let i = 0; i < values.length; i++) {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      values[i] = (seed / 2 ** 32) * 2 - 1;
    }
    device.queue.writeBuffer(buffers.bufferOf(name), 0, values);
  }
  const uniform = device.createBuffer({ size: Math.max(16, d.params.length * 4), usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  temporary.push(uniform);
  device.queue.writeBuffer(uniform, 0, new Uint32Array(d.params));
  const weightSet = new Set(half.weights);
  const run = async (pipeline: GPUComputePipeline, useHalf: boolean) => {
    const entries = d.bindings.map((b, i) => {
      let buffer: GPUBuffer;
      if ('tensor' in b) {
        const base = tables.TENSORS[b.tensor]?.base ?? b.tensor;
        buffer = useHalf && weightSet.has(base) ? halves[base] : buffers.bufferOf(b.tensor);
      } else {
        buffer = device.createBuffer({ size: Math.max(16, 'scratch' in b ? b.scratch * 4 : 16), usage });
        temporary.push(buffer);
      }
      return { binding: i, resource: { buffer } };
    });
    entries.push({ binding: d.bindings.length, resource: { buffer: uniform } });
    const enc = device.createCommandEncoder();
    const p = enc.beginComputePass();
    p.setPipeline(pipeline);
    p.setBindGroup(0, device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries }));
    p.dispatchWorkgroups(...d.workgroups);
    p.end();
    device.queue.submit([enc.finish()]);
    const out = buffers.bufferOf(output);
    return new Float32Array(await readBuffer(device, out, out.size));
  };
  const want = await run(pipelines[d.kernel], false);
  const got = await run(twins[twin], true);
  for (const b of temporary) b.destroy();
  let scale = 0;
  let maxError = 0;
  let bad = -1;
  for (let i = 0; i < want.length; i++) {
    const [x, y] = [want[i], got[i]];
    if (Number.isFinite(x) && Number.isFinite(y)) {
      scale = Math.max(scale, Math.abs(x));
      maxError = Math.max(maxError, Math.abs(x - y));
    } else if (!(Number.isNaN(x) && Number.isNaN(y)) && x !== y && bad < 0) bad = i;
  }
  const check = { dispatch, maxError, scale };
  const node = `${d.node} (${d.kernel})`;
  if (bad >= 0 || !(maxError <= HALF_TOLERANCE * scale)) {
    for (const b of Object.values(halves)) b.destroy();
    const what = bad >= 0 ? `element ${bad} is ${got[bad]} with f16 and ${want[bad]} with f32` : `off by ${maxError.toExponential(2)} at scale ${scale.toExponential(2)}`;
    return { ...f32(`the f16 check of ${node} failed: ${what}`), precision: { weights: 'f32', reason: `the f16 check of ${node} failed: ${what}`, check } };
  }
  for (const name of half.weights) buffers.bufferOf(name).destroy();
  const swapped = new Map(half.dispatches);
  return {
    precision: { weights: 'f16', reason: `${half.weights.length} weights as f16; ${node} checked against f32 at load`, check, savedBytes: half.bytes[0] - half.bytes[1] },
    tables: { ...tables, DISPATCHES: tables.DISPATCHES.map((x, i) => (swapped.has(i) ? { ...x, kernel: swapped.get(i)! } : x)) },
    buffers: { bufferOf: (name: string) => halves[tables.TENSORS[name]?.base ?? name] ?? buffers.bufferOf(name), make: buffers.make },
    pipelines: { ...pipelines, ...twins },
  };
}
