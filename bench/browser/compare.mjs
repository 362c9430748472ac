// Benchmark (not a test): an m2w package against onnxruntime-web (WebGPU execution provider)
// on the same model and the same inputs, in the same headless Chromium, one after the other.
// Usage: node compare.mjs PACKAGE_DIR MODEL.onnx REFERENCE_DIR RUNS
// Prints a Markdown table: median latency of RUNS runs after a warm-up (outputs read back to
// the CPU in both), and the bytes each needs to download.
import { chromium } from 'playwright-core';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseNpy } from '../npy.mjs';

const [pkgDir, modelPath, refDir, runsArg] = process.argv.slice(2);
const runs = Number(runsArg ?? 10);
const here = path.dirname(fileURLToPath(import.meta.url));
const ortDir = path.join(here, 'node_modules', 'onnxruntime-web', 'dist');
const ortVersion = JSON.parse(fs.readFileSync(path.join(here, 'node_modules', 'onnxruntime-web', 'package.json'), 'utf8')).version;

const server = http.createServer((req, res) => {
  const url = decodeURIComponent(req.url.split('?')[0]);
  let file;
  if (url.startsWith('/ort/')) file = path.join(ortDir, url.slice(5));
  else if (url === '/model.onnx') file = modelPath;
  else file = path.join(pkgDir, url === '/' ? 'index.html' : url);
  fs.readFile(file, (err, body) => {
    if (err) { res.writeHead(404); res.end(); return; }
    const type = file.endsWith('.mjs') || file.endsWith('.js') ? 'text/javascript' : file.endsWith('.wasm') ? 'application/wasm' : file.endsWith('.html') ? 'text/html' : 'application/octet-stream';
    res.writeHead(200, { 'content-type': type });
    res.end(body);
  });
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const origin = `http://127.0.0.1:${server.address().port}`;
const index = JSON.parse(fs.readFileSync(path.join(refDir, 'index.json'), 'utf8'));
const inputs = index.inputs.map((i) => ({ name: i.name, ...parseNpy(fs.readFileSync(path.join(refDir, i.file))) }));

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true, args: ['--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'] });
const page = await browser.newPage();
await page.goto(`${origin}/index.html`);
const result = await page.evaluate(async ({ inputs, runs }) => {
  const median = (v) => v.slice().sort((a, b) => a - b)[Math.floor(v.length / 2)];
  const adapter = await navigator.gpu.requestAdapter();
  const { loadModel } = await import('/dist/index.js');
  const model = await loadModel('/weights');
  const feed = Object.fromEntries(inputs.map((i) => [i.name, i.values]));
  await model.run(feed);
  const m2w = [];
  for (let k = 0; k < runs; k++) { const t = performance.now(); await model.run(feed); m2w.push(performance.now() - t); }
  model.destroy();
  const ort = await import('/ort/ort.webgpu.min.mjs');
  ort.env.wasm.wasmPaths = '/ort/';
  ort.env.wasm.numThreads = 1;
  const session = await ort.InferenceSession.create('/model.onnx', { executionProviders: ['webgpu'] });
  const feeds = Object.fromEntries(inputs.map((i) => [i.name, new ort.Tensor(i.type, i.type === 'int64' ? BigInt64Array.from(i.values, BigInt) : Float32Array.from(i.values), i.shape)]));
  await session.run(feeds);
  const ortTimes = [];
  for (let k = 0; k < runs; k++) { const t = performance.now(); const out = await session.run(feeds); for (const v of Object.values(out)) await v.getData(); ortTimes.push(performance.now() - t); }
  return { m2w: median(m2w), ort: median(ortTimes), adapter: `${adapter.info?.vendor} ${adapter.info?.architecture}` };
}, { inputs, runs });
await browser.close();
server.close();

const size = (p) => fs.statSync(p).size;
const dist = fs.readdirSync(path.join(pkgDir, 'dist')).filter((f) => f.endsWith('.js')).reduce((s, f) => s + size(path.join(pkgDir, 'dist', f)), 0);
const weights = size(path.join(pkgDir, 'weights', 'constants.bin')) + size(path.join(pkgDir, 'weights', 'constants.json'));
const ortJs = size(path.join(ortDir, 'ort.webgpu.min.mjs'));
const ortWasm = size(path.join(ortDir, 'ort-wasm-simd-threaded.jsep.wasm'));
console.log(`| ${path.basename(modelPath)} | m2w package | ${result.m2w.toFixed(1)} | ${dist} JS | ${weights} |`);
console.log(`| ${path.basename(modelPath)} | onnxruntime-web ${ortVersion} (webgpu EP) | ${result.ort.toFixed(1)} | ${ortJs} JS + ${ortWasm} wasm | ${size(modelPath)} (.onnx) |`);
console.log(`\nadapter: ${result.adapter}; ${runs} runs after one warm-up, median ms, outputs read back in both`);
