// Types of the generated {{NAME}} package. WebGPU objects are typed loosely (no @webgpu/types
// dependency): the package has zero runtime and type dependencies.

export type GPUAny = any; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Storage type of a tensor on the GPU: f32, i32 (integers), bool (0/1 in 32-bit words),
 * and the packed types of weights kept as the model stores them (f16 two per word; i8, u8
 * four; u4 eight), which only kernels read. */
export type DType = 'f32' | 'i32' | 'bool' | 'f16' | 'i8' | 'u8' | 'u4';

export interface TensorInfo {
  shape: number[];
  dt: DType;
  /** The tensor whose buffer this one shares (views: Reshape, Squeeze, ...). */
  base: string;
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

export interface LoadOptions {
  /** Called with (bytes loaded, total bytes) while the weights download. */
  onProgress?: (loaded: number, total: number) => void;
  /** Keep every tensor in its own buffer so that `capture` can read any checkpoint. */
  debug?: boolean;
  /** Called when the GPU device is lost (the page should offer a restart; no silent retry). */
  onDeviceLost?: (message: string) => void;
}

export interface Model {
  readonly inputs: Record<string, TensorInfo>;
  readonly outputs: string[];
  /** Runs one forward pass; returns the outputs. Integer inputs accept numbers or bigints. */
  run(inputs: Record<string, ArrayLike<number | bigint>>): Promise<Record<string, TensorData>>;
  /** Reads any tensor after `run` (every checkpoint with `debug: true`). */
  capture(names: string[]): Promise<Record<string, TensorData>>;
  /** Milliseconds of the last `run`, from submit to results. */
  readonly lastRunMs: number;
  destroy(): void;
}
