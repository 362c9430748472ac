// {{NAME}}: {{MODEL}} ported to WebGPU by m2w. loadModel() requests the device with the limits
// the plan needs, checks every shader's compilation messages, creates every pipeline, buffer
// and bind group once; run() writes the inputs, encodes the forward pass (engine.ts) and reads
// the outputs back.

import { SHADERS } from './shaders.js';
import * as plan from './engine.js';
import { HALF } from './half.js';
import { allocatePlan, applySync, bindDims, biggestBuffer, compilePipelines, encodeForward, encodeWithSyncs, numel, preparePlan, readTensors, requestDevice, setDims, shapeOf, storageBuffersPerStage, useHalfWeights, writeTensor } from './runtime.js';
import type { Input, LoadOptions, Model, TensorInfo } from './types.js';
import { streamWeights } from './weights.js';

export type { Input, LoadOptions, Model, Tensor, TensorData, TensorInfo } from './types.js';
export type { LoadProgress } from './weights.js';
export { DeviceLostError, WebGPUUnavailableError } from './runtime.js';
export type { Precision, WebGPUUnavailableReason } from './runtime.js';

function toWords(info: TensorInfo, shape: number[], values: ArrayLike<number | bigint>): Uint32Array<ArrayBuffer> {
  const n = numel(shape);
  if (values.length !== n) throw new Error(`expected ${n} values for shape [${shape}], got ${values.length}`);
  if (info.dt === 'f32') return new Uint32Array(Float32Array.from(values as ArrayLike<number>, Number).buffer as ArrayBuffer);
  if (info.dt === 'i32') return new Uint32Array(Int32Array.from(values as ArrayLike<number>, Number).buffer as ArrayBuffer);
  return Uint32Array.from(values as ArrayLike<number>, (v) => (Number(v) !== 0 ? 1 : 0));
}

/** Loads the model: `baseUrl` is the weights folder (default: the package's own
 * `weights/`, resolved from this module's URL). */
export async function loadModel(baseUrl?: string | URL, options: LoadOptions = {}): Promise<Model> {
  const device = await requestDevice(plan.WORKGROUP_STORAGE_BYTES, biggestBuffer(plan), options.onDeviceLost, undefined, storageBuffersPerStage(plan), HALF.weights.length ? ['shader-f16'] : []);
  // The kernels compile while the weights download; each tensor goes to its buffer as it
  // arrives.
  const compiling = compilePipelines(device, SHADERS, plan.DISPATCHES.map((d) => d.kernel));
  compiling.catch(() => {}); // awaited below; a download error must not leave it unhandled
  const owned: GPUBuffer[] = [];
  const buffers = allocatePlan(device, plan, owned, { debug: options.debug });
  await streamWeights(baseUrl, device, (c) => buffers.bufferOf(c.name), options);
  // f16 weights where the device has shader-f16 and a load-time check agrees (else f32).
  const half = await useHalfWeights(device, plan, HALF, SHADERS, buffers, await compiling, options.f16 !== false);
  const pipelines = half.pipelines;
  const prepared = preparePlan(device, half.tables, pipelines, owned, { debug: options.debug, allocated: half.buffers });

  const given = (x: Input) => ('data' in x && 'shape' in x ? x : { data: x as ArrayLike<number | bigint>, shape: undefined });
  // Sizes the plan for the inputs' shapes and writes them.
  const bind = (inputs: Record<string, Input>) => {
    const shapes: Record<string, number[]> = {};
    for (const name of plan.INPUTS) {
      if (!(name in inputs)) throw new Error(`input ${name} not given`);
      shapes[name] = given(inputs[name]).shape ?? plan.TENSORS[name].shape;
    }
    setDims(device, prepared, bindDims(plan, shapes));
    for (const name of plan.INPUTS) {
      const shape = shapeOf(plan, name, prepared.dims);
      writeTensor(device, prepared, name, toWords(plan.TENSORS[name], shape, given(inputs[name]).data));
    }
  };
  let nextSync = 0;
  const layers = {
    bind(inputs: Record<string, Input>) {
      bind(inputs);
      nextSync = 0;
    },
    write(name: string, words: Uint32Array<ArrayBuffer>, offsetWords = 0) {
      if (!plan.TENSORS[name]) throw new Error(`no tensor ${name}`);
      if (plan.TENSORS[name].strides) {
        // A strided view (a KV cache appended in place) is written whole, at its strides.
        if (offsetWords !== 0) throw new Error(`${name} is strided: write it whole`);
        writeTensor(device, prepared, name, words);
      } else device.queue.writeBuffer(prepared.bufferOf(name), offsetWords * 4, words);
    },
    async dispatch(from: number, to: number) {
      while (nextSync < plan.SYNCS.length && plan.SYNCS[nextSync].at <= from) await applySync(device, prepared, nextSync++);
      encodeForward(device, prepared, pipelines, undefined, from, to);
    },
  };

  let lastRunMs = 0;
  const model: Model = {
    inputs: Object.fromEntries(plan.INPUTS.map((n) => [n, plan.TENSORS[n]])),
    outputs: plan.OUTPUTS,
    dims: plan.DIMS,
    precision: half.precision,
    get lastRunMs() {
      return lastRunMs;
    },
    async run(inputs) {
      const t0 = performance.now();
      bind(inputs);
      if (plan.SYNCS.length) await encodeWithSyncs(device, prepared, pipelines);
      else encodeForward(device, prepared, pipelines);
      const out = await readTensors(device, prepared, plan.OUTPUTS);
      lastRunMs = performance.now() - t0;
      return out;
    },
    capture: (names) => {
      // A weight kept as f16 is not in its f32 layout on the GPU any more.
      const halfNow = half.precision.weights === 'f16' ? new Set(HALF.weights) : new Set<string>();
      const stored = names.find((n) => halfNow.has(plan.TENSORS[n]?.base ?? n));
      if (stored) return Promise.reject(new Error(`${stored} is a weight kept as f16 on this device: load with { f16: false } to read it`));
      return readTensors(device, prepared, names);
    },
    layers: options.debug ? layers : undefined,
    destroy() {
      for (const b of owned) b.destroy();
      device.destroy();
    },
  };
  return model;
}
