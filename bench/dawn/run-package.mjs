// Runs a generated m2w package on Dawn (Chrome's WebGPU implementation) from Node, on the
// GPU machine, against the oracle the package bundles (tests/reference/, written by
// `m2w package`):
// - an ONNX package: every checkpoint of a debug load against the reference's .npy files,
//   twice: f32 weights (the activation-match spec's tolerance, 1e-4 + 1e-3 |ref|, NaN equal to
//   NaN) and the default load, which keeps conv/matmul weights as f16 where the device has
//   shader-f16 (2e-2 of each tensor's scale); then the median time of a run of each;
// - a GGUF decoder package: the greedy tokens of the reference prompt against candle's, then
//   prefill time and decode tokens/s over `DECODE` greedy tokens.
// Usage: node run-package.mjs DAWN_NODE PACKAGE_DIR [dawn toggles...]
import { createRequire } from 'node:module';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseNpy } from '../npy.mjs';

const [dawnPath, pkgDir, ...toggles] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const { create, globals } = require(path.resolve(dawnPath));
Object.assign(globalThis, globals);
globalThis.navigator = { gpu: create(toggles) };
const DECODE = 128;

const server = http.createServer((req, res) => {
  const file = path.join(pkgDir, decodeURIComponent(req.url.split('?')[0]));
  fs.readFile(file, (err, body) => {
    res.writeHead(err ? 404 : 200);
    res.end(err ? undefined : body);
  });
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const weights = `http://127.0.0.1:${server.address().port}/weights`;
const ref = path.join(pkgDir, 'tests', 'reference');
const m = await import(pathToFileURL(path.resolve(pkgDir, 'dist', 'index.js')).href);
const adapter = await navigator.gpu.requestAdapter();
console.log(`adapter: ${adapter.info.vendor} ${adapter.info.architecture} ${adapter.info.description ?? ''}; shader-f16: ${adapter.features.has('shader-f16')}`);
let failed = 0;

const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

if (m.loadLLM) {
  const gen = JSON.parse(fs.readFileSync(path.join(ref, 'generation.json'), 'utf8'));
  const t0 = performance.now();
  const llm = await m.loadLLM(weights, { kernels: 'gpu' });
  const loadMs = performance.now() - t0;
  const ids = llm.encodePrompt(gen.prompt);
  const r = await llm.generateIds(ids, { maxNewTokens: gen.generated_ids.length, stop: [] });
  const same = JSON.stringify(r.tokens) === JSON.stringify(gen.generated_ids);
  if (!same) failed++;
  console.log(`greedy: ${same ? 'equal to' : 'DIFFERENT from'} candle's ${gen.generated_ids.length} tokens${same ? '' : `: ${JSON.stringify(r.tokens)} vs ${JSON.stringify(gen.generated_ids)}`}`);
  const runs = [];
  for (let i = 0; i < 3; i++) runs.push(await llm.generateIds(ids, { maxNewTokens: DECODE, stop: [] }));
  const best = runs.reduce((a, b) => (b.tokensPerSecond > a.tokensPerSecond ? b : a));
  console.log(`load ${loadMs.toFixed(0)} ms; prefill of ${ids.length} tokens: median ${median(runs.map((x) => x.prefillMs)).toFixed(1)} ms; decode ${DECODE} tokens: median ${median(runs.map((x) => x.tokensPerSecond)).toFixed(1)} tokens/s (best ${best.tokensPerSecond.toFixed(1)})`);
  llm.destroy();
} else {
  const index = JSON.parse(fs.readFileSync(path.join(ref, 'index.json'), 'utf8'));
  const inputs = Object.fromEntries(index.inputs.map((i) => {
    const t = parseNpy(fs.readFileSync(path.join(ref, i.file)));
    return [i.name, { data: t.values, shape: t.shape }];
  }));
  // Both weight paths: f32 (f16: false) at the activation-match tolerance, and the default
  // load, which keeps matmul/conv weights as f16 where the device has shader-f16 (checked at
  // load); its checkpoints are held to 2e-2 of each tensor's largest magnitude (weights
  // rounded to 11 significant bits, carried through the later layers). NaN equals NaN,
  // infinities must be equal.
  for (const f16 of [false, true]) {
    const model = await m.loadModel(weights, { debug: true, f16 });
    const p = model.precision;
    console.log(`f16 ${f16 ? 'allowed' : 'off'}: weights ${p.weights} (${p.reason})${p.check ? `; load check: max error ${p.check.maxError.toExponential(2)} at scale ${p.check.scale.toExponential(2)}` : ''}${p.savedBytes ? `; ${p.savedBytes} bytes saved` : ''}`);
    if (!f16 && p.weights !== 'f32') failed++;
    const half = p.weights === 'f16';
    await model.run(inputs);
    let passed = 0;
    let compared = 0;
    let worst = 0;
    for (const c of index.checkpoints) {
      let got;
      try {
        got = (await model.capture([c.output]))[c.output];
      } catch {
        continue; // folded on the host or fused (not a plan tensor), or a weight kept as f16
      }
      const want = parseNpy(fs.readFileSync(path.join(ref, c.file))).values;
      compared++;
      const scale = want.reduce((a, x) => (Number.isFinite(x) ? Math.max(a, Math.abs(x)) : a), 0);
      let ok = got.length === want.length;
      for (let i = 0; ok && i < want.length; i++) {
        const g = Number(got[i]);
        if (Number.isNaN(g) && Number.isNaN(want[i])) continue;
        if (!Number.isFinite(g) || !Number.isFinite(want[i])) {
          ok = g === want[i];
          continue;
        }
        const err = Math.abs(g - want[i]);
        if (scale > 0) worst = Math.max(worst, err / scale);
        if (!(err <= (half ? 1e-5 + 2e-2 * scale : 1e-4 + 1e-3 * Math.abs(want[i])))) ok = false;
      }
      if (ok) passed++;
      else {
        failed++;
        console.log(`checkpoint ${c.output}: differs`);
      }
    }
    console.log(`checkpoints (${p.weights} weights): ${passed}/${compared} within ${half ? "2e-2 of each tensor's scale" : '1e-4 + 1e-3 |ref|'}; worst error ${worst.toExponential(2)} of the scale`);
    model.destroy();
  }
  for (const f16 of [false, true]) {
    const plain = await m.loadModel(weights, { f16 });
    const ms = [];
    for (let i = 0; i < 21; i++) {
      await plain.run(inputs);
      ms.push(plain.lastRunMs);
    }
    console.log(`one run (${plain.precision.weights} weights): median ${median(ms.slice(1)).toFixed(3)} ms over 20 (after a warm-up)`);
    plain.destroy();
  }
}
server.close();
console.log(failed ? `FAILED (${failed})` : 'passed');
process.exit(failed ? 1 : 0);
