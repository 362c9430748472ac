// Types of the generated {{NAME}} package. WebGPU objects have the types of @webgpu/types
// (a development dependency: the published .d.ts references it; no runtime dependency).

/** Storage type of a tensor on the GPU: f32, i32 (integers), bool (0/1 in 32-bit words),
 * and the packed types of weights kept as the model stores them (f16 two per word; i8, u8
 * four; u4 eight), which only kernels read. */
export type DType = 'f32' | 'i32' | 'bool' | 'f16' | 'i8' | 'u8' | 'u4';

export interface TensorInfo {
  shape: number[];
  dt: DType;
  /** The tensor whose buffer this one shares (views: Reshape, Squeeze, ...). */
  base: string;
  /** Bytes its buffer needs when that is more than its shape at the maxima (a size that
   * picks among dims by run-time values, or the context of a KV cache appended in place). */
  bytes?: number;
  /** Element strides when the layout is not row-major: a KV cache appended in place keeps
   * its rows at a pitch sized for the whole context, and its present is a view of it. */
  strides?: number[];
}

export interface BufferSlot {
  bytes: number;
  tensors: string[];
}

export type Binding = { tensor: string } | { dummy: true } | { scratch: number };

export interface DispatchInfo {
  node: string;
  op: string;
  kernel: string;
  bindings: Binding[];
  params: number[];
  workgroups: [number, number, number];
}

export type TensorData = Float32Array | Int32Array | Uint32Array;

/** A tensor read back: its values with its shape for the run's sizes. */
export type Tensor = TensorData & { shape: number[] };

/** An input: its values (row-major), with its shape when the model takes several sizes. */
export type Input = ArrayLike<number | bigint> | { data: ArrayLike<number | bigint>; shape: number[] };

export interface LoadOptions {
  /** Called with (bytes loaded, total bytes, where: stage and file) while the weights
   * download. */
  onProgress?: (loaded: number, total: number, progress?: import('./weights.js').LoadProgress) => void;
  /** Keep the weights in the Cache API (this origin's storage) so the next visit loads them
   * without the network; asks navigator.storage.persist() once. A full storage is reported
   * through onProgress ('cache-error') and loading goes on uncached. */
  cache?: boolean;
  /** Keep every tensor in its own buffer so that `capture` can read any checkpoint. */
  debug?: boolean;
  /** Keep matmul and conv weights as f16 where the device has shader-f16 (default true):
   * half their GPU memory and bandwidth, checked at load against the f32 kernels; `false`
   * keeps every weight f32 (results closest to the reference). See `Model.precision`. */
  f16?: boolean;
  /** Called when the GPU device is lost (the page should offer a restart; no silent retry). */
  onDeviceLost?: (message: string) => void;
}

export interface Model {
  readonly inputs: Record<string, TensorInfo>;
  readonly outputs: string[];
  /** The named dims inputs may vary (each up to its maximum); empty for fixed sizes. */
  readonly dims: { name: string; max: number }[];
  /** Runs one forward pass; returns the outputs, each with its shape. Integer inputs accept
   * numbers or bigints; give `{ data, shape }` for an input whose size varies. */
  run(inputs: Record<string, Input>): Promise<Record<string, Tensor>>;
  /** Reads any tensor after `run` (every checkpoint with `debug: true`). */
  capture(names: string[]): Promise<Record<string, Tensor>>;
  /** Layer by layer (with `debug: true`), as a per-layer validation runs: `bind` sizes the
   * plan for inputs and writes them, `write` replaces a tensor's values (its oracle), and
   * `dispatch` runs dispatches [from, to) after the sync points before `from`. */
  readonly layers?: {
    bind(inputs: Record<string, Input>): void;
    write(name: string, words: Uint32Array<ArrayBuffer>, offsetWords?: number): void;
    dispatch(from: number, to: number): Promise<void>;
  };
  /** Milliseconds of the last `run`, from submit to results. */
  readonly lastRunMs: number;
  /** Which weights run as f16, and why (no shader-f16, turned off, or the load check). */
  readonly precision: import('./runtime.js').Precision;
  destroy(): void;
}
