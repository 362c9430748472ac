// A generated m2w ONNX package against onnxruntime-web's WebGPU execution provider, in one
// Node process on one Dawn device (Chrome's WebGPU implementation), on the same model file
// and the same inputs (the package's bundled oracle inputs, tests/reference/). For each: the
// cold start (load + compile + first run, outputs read back), the median of 20 runs after a
// warm-up (outputs read back), and the graph outputs' largest error against ONNX Runtime's
// oracle (CPU, in the reference folder). m2w runs twice: f32 weights, and the default load
// (f16 weights where the adapter has shader-f16).
//
// Usage: node vs-ortweb.mjs DAWN_NODE ORT_DIST PACKAGE_DIR MODEL.onnx [dawn toggles...]
//   ORT_DIST: onnxruntime-web's dist/ (ort.webgpu.min.mjs, ort-wasm-simd-threaded.asyncify.*)
import { createRequire } from 'node:module';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseNpy } from '../npy.mjs';

const [dawnPath, ortDist, pkgDir, modelFile, ...toggles] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const { create, globals } = require(path.resolve(dawnPath));
Object.assign(globalThis, globals);
globalThis.navigator = { gpu: create(toggles) };
// dawn.node rejects queue.writeBuffer with a view of a SharedArrayBuffer (ORT's wasm memory is
// shared): such views are copied first (../shared/peers/ortweb-dawn/).
{
  const a = await navigator.gpu.requestAdapter();
  const d = await a.requestDevice();
  const proto = Object.getPrototypeOf(d.queue);
  const orig = proto.writeBuffer;
  proto.writeBuffer = function (buf, off, data, dataOff = 0, size) {
    if (ArrayBuffer.isView(data) && data.buffer instanceof SharedArrayBuffer) {
      const bpe = data.BYTES_PER_ELEMENT || 1;
      const n = (size ?? data.length - dataOff) * bpe;
      const copy = new Uint8Array(n);
      copy.set(new Uint8Array(data.buffer, data.byteOffset + dataOff * bpe, n));
      return orig.call(this, buf, off, copy, 0, n);
    }
    return orig.call(this, buf, off, data, dataOff, size);
  };
  console.log(`adapter: ${a.info.vendor} ${a.info.architecture} ${a.info.description ?? ''}; shader-f16: ${a.features.has('shader-f16')}`);
  d.destroy();
}
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const RUNS = 20;

// REF=DIR: another reference folder of the same model (other input sizes for a symbolic package).
const ref = process.env.REF ?? path.join(pkgDir, 'tests', 'reference');
const index = JSON.parse(fs.readFileSync(path.join(ref, 'index.json'), 'utf8'));
const inputs = index.inputs.map((i) => ({ name: i.name, ...parseNpy(fs.readFileSync(path.join(ref, i.file))), dtype: i.dtype }));
const outputs = index.checkpoints.filter((c) => c.graph_output).map((c) => ({ name: c.output, want: parseNpy(fs.readFileSync(path.join(ref, c.file))).values }));
const worstOf = (got) => {
  let worst = 0;
  for (const o of outputs) {
    const g = got[o.name];
    if (!g || g.length !== o.want.length) return Infinity;
    const scale = o.want.reduce((m, x) => (Number.isFinite(x) ? Math.max(m, Math.abs(x)) : m), 0) || 1;
    for (let i = 0; i < g.length; i++) {
      const [x, y] = [Number(g[i]), Number(o.want[i])];
      if (Number.isNaN(x) && Number.isNaN(y)) continue;
      worst = Math.max(worst, x === y ? 0 : Math.abs(x - y) / scale);
    }
  }
  return worst;
};
const rows = [];

// m2w: the package's weights over local HTTP, as a page would fetch them.
const server = http.createServer((req, res) => {
  const file = path.join(pkgDir, decodeURIComponent(new URL(req.url, 'http://x').pathname));
  fs.readFile(file, (err, data) => {
    if (err) {
      res.writeHead(404);
      res.end();
    } else {
      res.writeHead(200);
      res.end(data);
    }
  });
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const weights = `http://127.0.0.1:${server.address().port}/weights/`;
const m = await import(pathToFileURL(path.resolve(pkgDir, 'dist/index.js')).href);
const m2wInputs = Object.fromEntries(inputs.map((i) => [i.name, { data: i.values, shape: i.shape }]));
for (const f16 of [false, true]) {
  const t0 = performance.now();
  const model = await m.loadModel(weights, { f16 });
  const first = await model.run(m2wInputs);
  const cold = performance.now() - t0;
  const ms = [];
  let got = first;
  for (let i = 0; i < RUNS + 1; i++) {
    const t = performance.now();
    got = await model.run(m2wInputs);
    if (i > 0) ms.push(performance.now() - t);
  }
  rows.push({ who: `m2w (${model.precision.weights} weights)`, cold, median: median(ms), spread: [Math.min(...ms), Math.max(...ms)], worst: worstOf(got) });
  model.destroy();
}
server.close();

// onnxruntime-web, WebGPU EP, graph optimisations at their default.
const ort = await import(pathToFileURL(path.join(path.resolve(ortDist), 'ort.webgpu.min.mjs')).href);
ort.env.wasm.wasmPaths = path.resolve(ortDist) + '/';
ort.env.wasm.numThreads = 1;
const typed = { f32: Float32Array, i64: BigInt64Array, i32: Int32Array, bool: Uint8Array };
const ortType = { f32: 'float32', i64: 'int64', i32: 'int32', bool: 'bool' };
const feeds = Object.fromEntries(
  inputs.map((i) => {
    const T = typed[i.dtype];
    const data = i.dtype === 'i64' ? BigInt64Array.from(i.values, (v) => BigInt(v)) : T.from(i.values, Number);
    return [i.name, new ort.Tensor(ortType[i.dtype], data, i.shape)];
  }),
);
{
  const t0 = performance.now();
  const s = await ort.InferenceSession.create(fs.readFileSync(modelFile), { executionProviders: ['webgpu'] });
  let r = await s.run(feeds);
  for (const k of Object.keys(r)) await r[k].getData?.();
  const cold = performance.now() - t0;
  const ms = [];
  for (let i = 0; i < RUNS + 1; i++) {
    const t = performance.now();
    r = await s.run(feeds);
    for (const k of Object.keys(r)) r[k].data;
    if (i > 0) ms.push(performance.now() - t);
  }
  const got = Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Array.from(v.data, Number)]));
  rows.push({ who: 'onnxruntime-web 1.30.0 (webgpu EP)', cold, median: median(ms), spread: [Math.min(...ms), Math.max(...ms)], worst: worstOf(got) });
}
const base = rows.find((r) => r.who.startsWith('onnxruntime')).median;
console.log(`model ${path.basename(modelFile)}, inputs ${inputs.map((i) => `${i.name} [${i.shape}]`).join(', ')}`);
console.log('| runtime | cold start (ms) | median of 20 (ms) | min-max | latency / onnxruntime-web | largest error of the outputs vs ORT (CPU), of their scale |');
for (const r of rows) {
  console.log(`| ${r.who} | ${r.cold.toFixed(0)} | ${r.median.toFixed(3)} | ${r.spread[0].toFixed(2)}-${r.spread[1].toFixed(2)} | ${(r.median / base).toFixed(2)} | ${r.worst.toExponential(2)} |`);
}
process.exit(0);
