// Weight loading for {{NAME}}. constants.json indexes every tensor: its file (a shard of at
// most 64 MiB, tensors in plan order, each 256-byte aligned; `constants.bin` when absent),
// offset and size. streamWeights() fetches shard after shard and hands each tensor to the
// caller as soon as its bytes have arrived, so JavaScript never holds more than one tensor
// and one network chunk (the GPU keeps the rest). Safari lacks async iteration of ReadableStream, so the reader is driven by hand.

export interface ConstantEntry {
  name: string;
  dt: string;
  shape: number[];
  /** The shard holding it (relative to the weights folder); constants.bin when absent. */
  file?: string;
  offset: number;
  bytes: number;
}

/** Where loading stands: `stage` 'weights' (a chunk of `file` arrived) or 'done', and the
 * bytes read of all weight files (the index gives the total before the first byte). */
export interface LoadProgress {
  stage: 'weights' | 'done';
  file: string;
  loaded: number;
  total: number;
}

/** The weights folder: `base` as given, or the package's own `weights/` beside `dist/`. */
export function weightsUrl(base?: string | URL): string {
  const url = base === undefined ? new URL('../weights/', import.meta.url).href : String(base);
  return url.replace(/\/$/, '');
}

async function fetchOk(url: string): Promise<Response> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response;
}

/** Reads the index, then every shard in turn, calling `onTensor` with each tensor's bytes
 * (a view that is valid only during the call: copy or upload it there). */
export async function streamWeights(
  base: string | URL | undefined,
  onTensor: (entry: ConstantEntry, bytes: Uint8Array) => void,
  onProgress?: (loaded: number, total: number, progress?: LoadProgress) => void,
): Promise<ConstantEntry[]> {
  const root = weightsUrl(base);
  const index = (await (await fetchOk(`${root}/constants.json`)).json()) as ConstantEntry[];
  const files = new Map<string, ConstantEntry[]>();
  for (const e of index) {
    const f = e.file ?? 'constants.bin';
    if (!files.has(f)) files.set(f, []);
    files.get(f)!.push(e);
  }
  // Each shard ends with its last tensor: the sum is the bytes to read.
  let total = 0;
  for (const entries of files.values()) total += Math.max(0, ...entries.map((e) => e.offset + e.bytes));
  let loaded = 0;
  // One scratch for a tensor that spans network chunks, reused (sized for the largest), so
  // loading allocates no garbage per tensor. (The network's chunks are the browser's; a BYOB
  // reader into one reused buffer crashed Chromium's renderer on a 106 MiB load.)
  let scratch: Uint8Array | null = null;
  const largest = Math.max(0, ...index.map((e) => e.bytes));
  for (const [file, unsorted] of files) {
    const entries = [...unsorted].sort((a, b) => a.offset - b.offset);
    for (const e of entries) if (e.bytes === 0) onTensor(e, new Uint8Array(0));
    const pending = entries.filter((e) => e.bytes > 0);
    const response = await fetchOk(`${root}/${file}`);
    let k = 0;
    let pos = 0; // bytes of this file seen so far
    let current: Uint8Array | null = null; // the tensor being assembled across chunks
    let filled = 0;
    const take = (chunk: Uint8Array) => {
      let i = 0;
      while (i < chunk.length && k < pending.length) {
        const e = pending[k];
        const at = pos + i;
        if (at < e.offset) {
          i += Math.min(e.offset - at, chunk.length - i); // alignment padding
          continue;
        }
        if (!current && chunk.length - i >= e.bytes) {
          onTensor(e, chunk.subarray(i, i + e.bytes)); // whole in this chunk: no copy
          i += e.bytes;
          k++;
          continue;
        }
        scratch = scratch ?? new Uint8Array(largest);
        current = current ?? scratch.subarray(0, e.bytes);
        const n = Math.min(e.bytes - filled, chunk.length - i);
        current.set(chunk.subarray(i, i + n), filled);
        filled += n;
        i += n;
        if (filled === e.bytes) {
          onTensor(e, current);
          current = null;
          filled = 0;
          k++;
        }
      }
      pos += chunk.length;
      loaded += chunk.length;
      if (total > 0) onProgress?.(loaded, total, { stage: 'weights', file, loaded, total });
    };
    if (!response.body) take(new Uint8Array(await response.arrayBuffer()));
    else {
      const reader = response.body.getReader();
      while (true) {
        const { done, value } = await reader.read();
        if (done) break;
        take(value);
      }
    }
    if (k < pending.length) throw new Error(`${root}/${file}: ends after ${pos} bytes, before ${pending[k].name} (bytes ${pending[k].offset}..${pending[k].offset + pending[k].bytes})`);
  }
  if (total > 0) onProgress?.(loaded, total, { stage: 'done', file: '', loaded, total });
  return index;
}

/** The whole constants.bin and its index, offsets as stored (the loaders of pipeline and
 * hand-tracking packages, whose graphs share buffers by offset; their weights are not
 * sharded). */
export async function loadWeights(baseUrl: string | URL | undefined, onProgress?: (loaded: number, total: number, progress?: LoadProgress) => void): Promise<{ index: ConstantEntry[]; blob: ArrayBuffer }> {
  const root = weightsUrl(baseUrl);
  const index = (await (await fetchOk(`${root}/constants.json`)).json()) as ConstantEntry[];
  const sharded = index.find((e) => e.file !== undefined && e.file !== 'constants.bin');
  if (sharded) throw new Error(`${root}: sharded weights (${sharded.file}); read them with streamWeights`);
  const response = await fetchOk(`${root}/constants.bin`);
  const total = Number(response.headers.get('content-length') ?? 0);
  if (!response.body) return { index, blob: await response.arrayBuffer() };
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let loaded = 0;
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    onProgress?.(loaded, total || loaded, { stage: 'weights', file: 'constants.bin', loaded, total: total || loaded });
  }
  const out = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return { index, blob: out.buffer };
}
