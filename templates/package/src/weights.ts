// Weight loading for {{NAME}}: constants.json (index) + constants.bin (32-bit words, each
// tensor 256-byte aligned), streamed with progress. Safari lacks async iteration of
// ReadableStream, so the reader is driven by hand.

export interface ConstantEntry {
  name: string;
  dt: string;
  shape: number[];
  offset: number;
  bytes: number;
}

async function fetchWithProgress(url: string, onProgress?: (loaded: number, total: number) => void): Promise<ArrayBuffer> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  const total = Number(response.headers.get('content-length') ?? 0);
  if (!response.body) return response.arrayBuffer();
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let loaded = 0;
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    onProgress?.(loaded, total || loaded);
  }
  const out = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out.buffer;
}

export async function loadWeights(baseUrl: string, onProgress?: (loaded: number, total: number) => void): Promise<{ index: ConstantEntry[]; blob: ArrayBuffer }> {
  const base = baseUrl.replace(/\/$/, '');
  const indexResponse = await fetch(`${base}/constants.json`);
  if (!indexResponse.ok) throw new Error(`${base}/constants.json: HTTP ${indexResponse.status}`);
  const index = (await indexResponse.json()) as ConstantEntry[];
  const blob = await fetchWithProgress(`${base}/constants.bin`, onProgress);
  return { index, blob };
}
