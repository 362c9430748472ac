// {{NAME}}: {{MODEL}} ported to WebGPU by m2w. loadModel() requests the device with the limits
// the plan needs, checks every shader's compilation messages, creates every pipeline, buffer
// and bind group once; run() writes the inputs, encodes the forward pass (engine.ts) and reads
// the outputs back.

import { SHADERS } from './shaders.js';
import { BUFFERS, DISPATCHES, FLUSH_EVERY, INPUTS, OUTPUTS, TENSORS, WORKGROUP_STORAGE_BYTES, forward } from './engine.js';
import type { GPUAny, LoadOptions, Model, TensorData, TensorInfo } from './types.js';
import { loadWeights } from './weights.js';

export type { LoadOptions, Model, TensorData, TensorInfo } from './types.js';

const GPUBufferUsage = { MAP_READ: 1, COPY_SRC: 4, COPY_DST: 8, UNIFORM: 64, STORAGE: 128 };
const GPUMapMode = { READ: 1 };

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function toWords(info: TensorInfo, values: ArrayLike<number | bigint>): Uint32Array {
  const n = numel(info.shape);
  if (values.length !== n) throw new Error(`expected ${n} values, got ${values.length}`);
  if (info.dt === 'f32') return new Uint32Array(Float32Array.from(values as ArrayLike<number>, Number).buffer);
  if (info.dt === 'i32') return new Uint32Array(Int32Array.from(values as ArrayLike<number>, Number).buffer);
  return Uint32Array.from(values as ArrayLike<number>, (v) => (Number(v) !== 0 ? 1 : 0));
}

function fromWords(info: TensorInfo, words: ArrayBuffer): TensorData {
  if (info.dt === 'f32') return new Float32Array(words);
  if (info.dt === 'i32') return new Int32Array(words);
  return new Uint32Array(words);
}

export async function loadModel(baseUrl: string, options: LoadOptions = {}): Promise<Model> {
  const gpu = (navigator as GPUAny).gpu;
  if (!gpu) throw new Error('WebGPU is not available in this browser (Chrome 113+, Safari iOS 26+)');
  const adapter = await gpu.requestAdapter();
  if (!adapter) throw new Error('no WebGPU adapter');
  const biggest = Math.max(16, ...BUFFERS.map((b) => b.bytes), ...Object.values(TENSORS).map((t) => numel(t.shape) * 4));
  const need: Record<string, number> = { maxComputeWorkgroupStorageSize: WORKGROUP_STORAGE_BYTES, maxStorageBufferBindingSize: biggest, maxBufferSize: biggest };
  for (const [k, v] of Object.entries(need)) {
    if (adapter.limits[k] < v) throw new Error(`this device offers ${k} = ${adapter.limits[k]}, the model needs ${v}`);
  }
  const device = await adapter.requestDevice({ requiredLimits: need });
  device.lost.then((info: GPUAny) => {
    if (info.reason !== 'destroyed') options.onDeviceLost?.(String(info.message));
  });

  // Pipelines: compile every shader once, check its messages, build asynchronously.
  const pipelines: Record<string, GPUAny> = {};
  for (const kernel of new Set(DISPATCHES.map((d) => d.kernel))) {
    const module = device.createShaderModule({ label: kernel, code: SHADERS[kernel] });
    const info = await module.getCompilationInfo();
    const errors = info.messages.filter((m: GPUAny) => m.type === 'error');
    if (errors.length) throw new Error(`shader ${kernel}: ${errors.map((m: GPUAny) => `${m.lineNum}:${m.linePos} ${m.message}`).join('; ')}`);
    pipelines[kernel] = await device.createComputePipelineAsync({ label: kernel, layout: 'auto', compute: { module, entryPoint: 'main' } });
  }

  // Buffers: lifetime-shared slots, or one per tensor in debug mode. Every storage buffer
  // has COPY_SRC so any of them can be read back.
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const buffers: Record<string, GPUAny> = {};
  const owned: GPUAny[] = [];
  if (options.debug) {
    for (const [name, t] of Object.entries(TENSORS)) {
      if (t.base !== name) continue;
      const b = device.createBuffer({ label: name, size: Math.max(4, numel(t.shape) * 4), usage });
      buffers[name] = b;
      owned.push(b);
    }
  } else {
    for (const slot of BUFFERS) {
      const b = device.createBuffer({ label: slot.tensors[0], size: slot.bytes, usage });
      for (const t of slot.tensors) buffers[t] = b;
      owned.push(b);
    }
  }
  const bufferOf = (name: string) => buffers[TENSORS[name]?.base ?? name];

  const { index, blob } = await loadWeights(baseUrl, options.onProgress);
  for (const c of index) {
    const b = bufferOf(c.name);
    if (b && c.bytes > 0) device.queue.writeBuffer(b, 0, blob, c.offset, c.bytes);
  }

  const dummy = device.createBuffer({ size: 16, usage });
  owned.push(dummy);
  const bindGroups = DISPATCHES.map((d) => {
    const uniform = device.createBuffer({ size: Math.max(16, d.params.length * 4), usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(uniform, 0, new Uint32Array(d.params));
    owned.push(uniform);
    const entries = d.bindings.map((b, i) => {
      let buffer: GPUAny;
      if ('tensor' in b) buffer = bufferOf(b.tensor);
      else if ('scratch' in b) {
        buffer = device.createBuffer({ size: Math.max(4, b.scratch * 4), usage });
        owned.push(buffer);
      } else buffer = dummy;
      return { binding: i, resource: { buffer } };
    });
    entries.push({ binding: d.bindings.length, resource: { buffer: uniform } });
    return device.createBindGroup({ label: d.node, layout: pipelines[d.kernel].getBindGroupLayout(0), entries });
  });

  async function read(names: string[]): Promise<Record<string, TensorData>> {
    const encoder = device.createCommandEncoder();
    const staging: [string, GPUAny, number][] = [];
    for (const name of names) {
      const info = TENSORS[name];
      if (!info) throw new Error(`no tensor ${name}`);
      const bytes = numel(info.shape) * 4;
      const s = device.createBuffer({ size: Math.max(4, bytes), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      if (bytes > 0) encoder.copyBufferToBuffer(bufferOf(name), 0, s, 0, bytes);
      staging.push([name, s, bytes]);
    }
    device.queue.submit([encoder.finish()]);
    const out: Record<string, TensorData> = {};
    for (const [name, s, bytes] of staging) {
      await s.mapAsync(GPUMapMode.READ);
      out[name] = fromWords(TENSORS[name], s.getMappedRange(0, Math.max(4, bytes)).slice(0, bytes));
      s.unmap();
      s.destroy();
    }
    return out;
  }

  let lastRunMs = 0;
  const model: Model = {
    inputs: Object.fromEntries(INPUTS.map((n) => [n, TENSORS[n]])),
    outputs: OUTPUTS,
    get lastRunMs() {
      return lastRunMs;
    },
    async run(inputs) {
      const t0 = performance.now();
      for (const name of INPUTS) {
        if (!(name in inputs)) throw new Error(`input ${name} not given`);
        device.queue.writeBuffer(bufferOf(name), 0, toWords(TENSORS[name], inputs[name]));
      }
      let encoder = device.createCommandEncoder();
      let pass = encoder.beginComputePass();
      let recorded = 0;
      forward((i: number, x: number, y: number, z: number) => {
        pass.setPipeline(pipelines[DISPATCHES[i].kernel]);
        pass.setBindGroup(0, bindGroups[i]);
        pass.dispatchWorkgroups(x, y, z);
        if (++recorded % FLUSH_EVERY === 0) {
          pass.end();
          device.queue.submit([encoder.finish()]);
          encoder = device.createCommandEncoder();
          pass = encoder.beginComputePass();
        }
      });
      pass.end();
      device.queue.submit([encoder.finish()]);
      const out = await read(OUTPUTS);
      lastRunMs = performance.now() - t0;
      return out;
    },
    capture: read,
    destroy() {
      for (const b of owned) b.destroy();
      device.destroy();
    },
  };
  return model;
}
