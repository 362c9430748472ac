// Weight loading for {{NAME}}. constants.json indexes every tensor: its file (a shard of at
// most 64 MiB, tensors in plan order, each 256-byte aligned; `constants.bin` when absent),
// offset and size. streamWeights() fetches shard after shard and writes each network chunk
// straight into the GPU buffers of the tensors it carries (queue.writeBuffer at the tensor's
// offset), so JavaScript holds no copy of a tensor: only the chunk in hand, and the chunks
// the garbage collector has not reclaimed yet. With `cache`, every file is kept in the Cache
// API under this build's weights id, so a later visit reads them from disk, not the network.
// Safari lacks async iteration of ReadableStream, so readers are driven by hand.

/** Identifies these weights (a hash of their bytes, set when the package was built): the
 * Cache API keeps them under a name with it, so new weights never meet stale ones. */
export const WEIGHTS_ID = '{{WEIGHTS_ID}}';
const CACHE_PREFIX = 'm2w:{{NAME}}:';

export interface ConstantEntry {
  name: string;
  dt: string;
  shape: number[];
  /** The shard holding it (relative to the weights folder); constants.bin when absent. */
  file?: string;
  offset: number;
  bytes: number;
}

/** Where loading stands, with the bytes read of all weight files so far (the index gives
 * the total before the first byte):
 * - 'weights': a chunk of `file` arrived (`fromCache`: read from the Cache API);
 * - 'cache-error': `file` could not be stored (`error`: a QuotaExceededError when the
 *   origin's storage is full); loading goes on from the network, uncached;
 * - 'persist': the browser answered navigator.storage.persist() (`persisted`);
 * - 'done': every tensor is on the GPU. */
export interface LoadProgress {
  stage: 'weights' | 'cache-error' | 'persist' | 'done';
  file: string;
  loaded: number;
  total: number;
  fromCache?: boolean;
  error?: string;
  persisted?: boolean;
}

export type ProgressCallback = (loaded: number, total: number, progress?: LoadProgress) => void;

/** How files are fetched: `cache` true keeps them in the Cache API (default off). */
export interface FetchOptions {
  cache?: boolean;
  onProgress?: ProgressCallback;
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

let openedCache: Promise<Cache | null> | null = null;

/** This build's cache (older builds' caches of this package are deleted), or null where
 * the Cache API is missing (an insecure context, some workers). Asks once for persistent
 * storage, so the browser does not evict the weights under pressure. */
function weightsCache(onProgress?: ProgressCallback): Promise<Cache | null> {
  if (typeof caches === 'undefined') return Promise.resolve(null);
  openedCache ??= (async () => {
    const name = CACHE_PREFIX + WEIGHTS_ID;
    for (const key of await caches.keys()) if (key.startsWith(CACHE_PREFIX) && key !== name) await caches.delete(key);
    const storage = typeof navigator === 'undefined' ? undefined : navigator.storage;
    if (storage?.persist) {
      const persisted = await storage.persist().catch(() => false);
      onProgress?.(0, 0, { stage: 'persist', file: '', loaded: 0, total: 0, persisted });
    }
    return caches.open(name);
  })();
  return openedCache;
}

/**
 * A file of the weights folder. With `cache`: from the Cache API when it holds it; else
 * fetched, stored (streamed to disk by the cache, never buffered here) and read back from
 * the cache. A store that fails (storage full) is reported as 'cache-error' and the file
 * is fetched again, uncached.
 */
export async function fetchWeightFile(root: string, file: string, options: FetchOptions = {}): Promise<{ response: Response; fromCache: boolean }> {
  const url = `${root}/${file}`;
  const cache = options.cache ? await weightsCache(options.onProgress) : null;
  if (!cache) return { response: await fetchOk(url), fromCache: false };
  const hit = await cache.match(url);
  if (hit) return { response: hit, fromCache: true };
  try {
    await cache.put(url, await fetchOk(url));
    const stored = await cache.match(url);
    if (stored) return { response: stored, fromCache: false };
  } catch (e) {
    if (e instanceof Error && /HTTP \d+$/.test(e.message)) throw e;
    options.onProgress?.(0, 0, { stage: 'cache-error', file, loaded: 0, total: 0, error: `${(e as Error)?.name ?? 'Error'}: ${(e as Error)?.message ?? e}` });
  }
  return { response: await fetchOk(url), fromCache: false };
}

/** Bytes of a buffer for `bytes` of tensor data (writeBuffer moves whole 4-byte words). */
export function bufferBytes(bytes: number): number {
  return Math.max(4, Math.ceil(bytes / 4) * 4);
}

/** The weights' index (constants.json). */
export async function readIndex(base: string | URL | undefined, options: FetchOptions = {}): Promise<ConstantEntry[]> {
  return (await (await fetchWeightFile(weightsUrl(base), 'constants.json', options)).response.json()) as ConstantEntry[];
}

/** A byte range of a weight file and the buffers it goes to (entries stored once for
 * several names, such as a tied embedding and LM head, share a range). */
interface Span {
  name: string;
  offset: number;
  bytes: number;
  buffers: GPUBuffer[];
}

/**
 * Reads the index (unless given), then every weight file in turn; each tensor's bytes go to
 * the buffer `bufferFor(entry)` returns (at least `bufferBytes(entry.bytes)` long;
 * undefined skips the tensor) as they arrive. Returns the index.
 */
export async function streamWeights(
  base: string | URL | undefined,
  device: GPUDevice,
  bufferFor: (entry: ConstantEntry) => GPUBuffer | undefined,
  options: FetchOptions = {},
  given?: ConstantEntry[],
): Promise<ConstantEntry[]> {
  const root = weightsUrl(base);
  const { onProgress } = options;
  const index = given ?? (await readIndex(base, options));
  const files = new Map<string, Span[]>();
  for (const e of index) {
    const f = e.file ?? 'constants.bin';
    if (!files.has(f)) files.set(f, []);
    const spans = files.get(f)!;
    const buffer = bufferFor(e);
    const same = spans.find((s) => s.offset === e.offset && s.bytes === e.bytes);
    if (same) {
      if (buffer && !same.buffers.includes(buffer)) same.buffers.push(buffer);
    } else spans.push({ name: e.name, offset: e.offset, bytes: e.bytes, buffers: buffer ? [buffer] : [] });
  }
  // Each file ends with its last tensor: the sum is the bytes to read.
  let total = 0;
  for (const spans of files.values()) total += Math.max(0, ...spans.map((e) => e.offset + e.bytes));
  let loaded = 0;
  // Up to 3 bytes of a word split between two chunks wait here for the rest of their word.
  const carry = new Uint8Array(4);
  for (const [file, unsorted] of files) {
    const entries = [...unsorted].sort((a, b) => a.offset - b.offset);
    for (let i = 1; i < entries.length; i++) {
      const [a, b] = [entries[i - 1], entries[i]];
      if (b.offset < a.offset + a.bytes) throw new Error(`${root}/${file}: ${a.name} and ${b.name} overlap`);
    }
    const { response, fromCache } = await fetchWeightFile(root, file, options);
    let k = 0; // the tensor being written
    let pos = 0; // bytes of this file seen so far
    let carried = 0;
    const take = (chunk: Uint8Array<ArrayBuffer>) => {
      let i = 0;
      while (i < chunk.length && k < entries.length) {
        const e = entries[k];
        const at = pos + i;
        if (at >= e.offset + e.bytes) {
          k++;
          continue;
        }
        if (at < e.offset) {
          i += Math.min(e.offset - at, chunk.length - i); // alignment padding
          continue;
        }
        const into = at - e.offset; // where this piece goes in the tensor
        const n = Math.min(e.offset + e.bytes - at, chunk.length - i);
        if (e.buffers.length === 0) {
          i += n;
          continue;
        }
        const write = (offset: number, data: Uint8Array<ArrayBuffer>, from: number, size: number) => {
          for (const b of e.buffers) device.queue.writeBuffer(b, offset, data, from, size);
        };
        let done = 0;
        if (carried > 0) {
          // Complete the split word first.
          const m = Math.min(4 - carried, n);
          carry.set(chunk.subarray(i, i + m), carried);
          carried += m;
          done = m;
          if (carried === 4 || into + m === e.bytes) {
            write(into + m - carried, carry, 0, 4);
            carry.fill(0);
            carried = 0;
          }
        }
        const whole = (n - done) & ~3;
        if (whole > 0) write(into + done, chunk, i + done, whole);
        const rest = n - done - whole;
        if (rest > 0) {
          carry.set(chunk.subarray(i + done + whole, i + n), 0);
          carried = rest;
          if (into + n === e.bytes) {
            write(into + n - carried, carry, 0, 4); // the tensor's last, partial word
            carry.fill(0);
            carried = 0;
          }
        }
        i += n;
      }
      pos += chunk.length;
      loaded += chunk.length;
      if (total > 0) onProgress?.(loaded, total, { stage: 'weights', file, loaded, total, fromCache });
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
    const last = entries[entries.length - 1];
    if (last && pos < last.offset + last.bytes) {
      const short = entries.find((e) => pos < e.offset + e.bytes)!;
      throw new Error(`${root}/${file}: ends after ${pos} bytes, before the end of ${short.name} (bytes ${short.offset}..${short.offset + short.bytes})`);
    }
  }
  if (total > 0) onProgress?.(loaded, total, { stage: 'done', file: '', loaded, total });
  return index;
}
