// @ts-nocheck -- run by node after `tsc --noCheck`; the package itself is strictly typed.
//
// Browser proof for {{NAME}}: the generated package runs in headless Chromium (WebGPU) with the
// reference inputs, every checkpoint is captured and compared with the same .npy oracles the
// native validate used (npy parsing here, not in the package), and the demo page is
// screenshotted. Usage: node build-tests/activation-match.spec.js PACKAGE_DIR REFERENCE_DIR[,REFERENCE_DIR...] [SCREENSHOT]
// Several reference folders (the same model at different input sizes) run through one
// loaded model: a package whose plan has dims takes every size up to their maxima.
// M2W_PER_LAYER=1 runs layer by layer (tests/layers.json), each node fed the oracle values of
// its inputs, as `validate --per-layer` does natively: for models whose own dynamic
// quantization makes an end-to-end pass drift from the reference.
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { insecureOrigin, killGpuProcess, launchChromium, launchPersistent, recordSpeed, serve } from './harness.js';

const ATOL = 1e-4;
const RTOL = 1e-3;
// With no arguments (`npm test` inside the package): the package here and the oracle m2w
// bundled with it (tests/reference).
const [pkgDir = '.', refDirs = path.join('tests', 'reference'), shot] = process.argv.slice(2);
if (!fs.existsSync(refDirs.split(',')[0])) {
  console.error(`${refDirs}: no reference here; run m2w package-test --package PACKAGE --reference PORT/reference`);
  process.exit(2);
}
const refs = refDirs.split(',');
const refDir = refs[0];
const tolerances = JSON.parse(process.env.M2W_TOLERANCES ?? '{}');
const perLayer = process.env.M2W_PER_LAYER === '1';

function parseNpy(buf) {
  if (buf.readUInt32BE(0) !== 0x934e554d) throw new Error('not an npy file');
  const headerLen = buf[6] === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = buf[6] === 1 ? 10 : 12;
  const header = buf.toString('latin1', start, start + headerLen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const data = buf.subarray(start + headerLen);
  const copy = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
  let values;
  if (descr === '<f4') values = Array.from(new Float32Array(copy));
  else if (descr === '<i8') values = Array.from(new BigInt64Array(copy), Number);
  else if (descr === '<i4') values = Array.from(new Int32Array(copy));
  else if (descr === '|b1' || descr === '|u1') values = Array.from(new Uint8Array(copy));
  else if (descr === '|i1') values = Array.from(new Int8Array(copy));
  else if (descr === '<i2') values = Array.from(new Int16Array(copy));
  else if (descr === '<u2') values = Array.from(new Uint16Array(copy));
  else if (descr === '<f8') values = Array.from(new Float64Array(copy));
  else throw new Error(`npy dtype ${descr} not handled`);
  return { shape, values };
}

/** An .npy file's values as the 32-bit words the engine stores (f32 bits, integers as i32,
 * booleans as 0/1). */
function npyWords(buf) {
  const headerLen = buf[6] === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = buf[6] === 1 ? 10 : 12;
  const header = buf.toString('latin1', start, start + headerLen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  const data = buf.subarray(start + headerLen);
  const copy = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
  if (descr === '<f4' || descr === '<i4') return new Uint32Array(copy);
  if (descr === '<i8') return new Uint32Array(Int32Array.from(new BigInt64Array(copy), Number).buffer);
  if (descr === '|i1') return new Uint32Array(Int32Array.from(new Int8Array(copy)).buffer);
  if (descr === '<i2') return new Uint32Array(Int32Array.from(new Int16Array(copy)).buffer);
  if (descr === '|b1' || descr === '|u1') return Uint32Array.from(new Uint8Array(copy));
  if (descr === '<u2') return Uint32Array.from(new Uint16Array(copy));
  if (descr === '<f8') return new Uint32Array(Float32Array.from(new Float64Array(copy)).buffer);
  throw new Error(`npy dtype ${descr} not handled`);
}

// /ref/ is the reference folder (the .npy oracles).
const { origin, server } = await serve(pkgDir, (url) => (url.startsWith('/ref/') ? path.join(refDir, url.slice(5)) : null));

// Weights (and weights folded at plan time) are proven by extract --verify; the browser test
// compares what the GPU computes.
const constants = new Set(JSON.parse(fs.readFileSync(path.join(pkgDir, 'weights', 'constants.json'), 'utf8')).map((c) => c.name));
const runs = refs.map((dir) => {
  const index = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8'));
  const inputs = Object.fromEntries(index.inputs.map((i) => {
    const t = parseNpy(fs.readFileSync(path.join(dir, i.file)));
    return [i.name, { data: t.values, shape: t.shape }];
  }));
  return { dir, index, inputs, names: index.checkpoints.map((c) => c.output).filter((n) => !constants.has(n)) };
});
const browser = await launchChromium();
let failed = 0;
let passed = 0;
// The demo page's run is not a checkpoint; its failure fails the test on its own.
let demoFailed = false;
try {
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.error('page:', m.text()); });
  await page.goto(`${origin}/index.html`);
  // One model load; each run's checkpoints come back one at a time as raw bytes, so a
  // long input (and several runs) never holds every activation in memory at once.
  const adapter = await page.evaluate(async () => {
    const { loadModel } = await import('/dist/index.js');
    window.__model = await loadModel('/weights', { debug: true });
    const a = await navigator.gpu.requestAdapter();
    return `${a.info?.vendor ?? ''} ${a.info?.architecture ?? ''}`;
  });
  console.log(`browser WebGPU adapter: ${adapter}`);
  // f16 weights: taken only where the device has shader-f16 and the load check agrees;
  // `f16: false` always keeps f32. Either way the reason is reported.
  const precision = await page.evaluate(async () => {
    const { loadModel } = await import('/dist/index.js');
    const a = await navigator.gpu.requestAdapter();
    const off = await loadModel('/weights', { f16: false });
    const p = { auto: window.__model.precision, off: off.precision, hasF16: a.features.has('shader-f16') };
    off.destroy();
    return p;
  });
  console.log(`weights: ${precision.auto.weights} (${precision.auto.reason}); with f16: false: ${precision.off.weights} (${precision.off.reason})`);
  const noHalf = /no weight of this model/.test(precision.auto.reason);
  if (precision.off.weights !== 'f32' || !(noHalf || /turned off/.test(precision.off.reason))) {
    console.error('f16: false did not keep the weights f32');
    failed++;
  }
  if (!precision.hasF16 && !(precision.auto.weights === 'f32' && (noHalf || /no shader-f16/.test(precision.auto.reason)))) {
    console.error('a device without shader-f16 must fall back to f32 and say so');
    failed++;
  }
  // f16 weights round to 11 significant bits: checkpoints are then held to 2e-2 of their
  // tensor's largest magnitude (bench/dawn/run-package.mjs measures that path on a GPU).
  const halfWeights = precision.auto.weights === 'f16';
  const capture = (n) => page.evaluate(async (n) => {
    let t;
    try {
      t = (await window.__model.capture([n]))[n];
    } catch (e) {
      return null; // Not a plan tensor (folded on the host, or fused): not compared.
    }
    const b = new Uint8Array(t.buffer, t.byteOffset, t.byteLength);
    let s = '';
    for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
    return { b64: btoa(s), shape: t.shape, kind: t.constructor.name };
  }, n);
  const decode = ({ b64, kind }) => {
    const raw = Buffer.from(b64, 'base64');
    const buf = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
    if (kind === 'Float32Array') return Array.from(new Float32Array(buf));
    if (kind === 'Int32Array') return Array.from(new Int32Array(buf));
    return Array.from(new Uint32Array(buf));
  };
  const check = async (c, dir, atolOf) => {
    const entry = await capture(c.output);
    if (!entry) return;
    const got = decode(entry);
    const npy = parseNpy(fs.readFileSync(path.join(dir, c.file)));
    const want = npy.values;
    const [atol, rtol] = tolerances[c.output] ?? [Math.max(ATOL, atolOf ?? 0), RTOL];
    let worst = 0;
    let ok = got.length === want.length && entry.shape.length === npy.shape.length && entry.shape.every((d, k) => d === npy.shape[k]);
    const scale = halfWeights ? want.reduce((a, x) => (Number.isFinite(x) ? Math.max(a, Math.abs(x)) : a), 0) : 0;
    for (let i = 0; i < want.length; i++) {
      const err = Math.abs(got[i] - want[i]);
      const bound = halfWeights ? 1e-5 + 2e-2 * scale : atol + rtol * Math.abs(want[i]);
      if (!(err <= bound) && !(Number.isNaN(got[i]) && Number.isNaN(want[i])) && got[i] !== want[i]) ok = false;
      if (err > worst) worst = err;
    }
    if (ok) passed++;
    else failed++;
    console.log(`${String(c.index).padStart(4)}  ${c.op_type.padEnd(16)} ${c.output.padEnd(48)} ${worst.toExponential(3).padStart(11)}  ${ok ? 'ok' : 'FAIL'}`);
  };
  // Oracle values into the engine's buffer, in pieces (one message stays small).
  const write = async (name, words) => {
    const PIECE = 1 << 22;
    for (let at = 0; at < words.length || at === 0; at += PIECE) {
      const part = words.subarray(at, Math.min(words.length, at + PIECE));
      const b64 = Buffer.from(part.buffer, part.byteOffset, part.byteLength).toString('base64');
      await page.evaluate(([n, b64, at]) => {
        const raw = atob(b64);
        const u = new Uint8Array(raw.length);
        for (let i = 0; i < raw.length; i++) u[i] = raw.charCodeAt(i);
        window.__model.layers.write(n, new Uint32Array(u.buffer), at);
      }, [name, b64, at]);
      if (words.length === 0) break;
    }
  };
  const layers = perLayer ? JSON.parse(fs.readFileSync(path.join(pkgDir, 'tests', 'layers.json'), 'utf8')) : [];
  if (perLayer) console.log(`per layer: ${layers.length} runs of dispatches, each node fed its inputs' oracle values`);
  for (const { dir, index, inputs, names } of runs) {
  if (runs.length > 1) console.log(`\n${dir}: inputs ${index.inputs.map((i) => `${i.name} [${i.shape}]`).join(', ')}`);
  const wanted = new Set(names);
  if (perLayer) {
    await page.evaluate(async (inputs) => { window.__model.layers.bind(inputs); }, inputs);
    const byOutput = new Map(index.checkpoints.map((c) => [c.output, c]));
    const given = new Set(index.inputs.map((i) => i.name));
    const done = new Set();
    for (const layer of layers) {
      for (const i of layer.inputs ?? []) {
        const c = byOutput.get(i);
        if (c && !given.has(i)) await write(i, npyWords(fs.readFileSync(path.join(dir, c.file))));
      }
      await page.evaluate(async ([a, b]) => { await window.__model.layers.dispatch(a, b); }, [layer.from, layer.to]);
      for (const o of layer.outputs ?? []) {
        const c = byOutput.get(o);
        if (c && wanted.has(o) && !done.has(o)) {
          done.add(o);
          await check(c, dir, layer.atol?.[o]);
        }
      }
    }
    // Views of outputs (Reshape etc.) have no dispatch of their own: read them at the end.
    for (const c of index.checkpoints) if (wanted.has(c.output) && !done.has(c.output)) await check(c, dir);
    continue;
  }
  await page.evaluate(async (inputs) => { await window.__model.run(inputs); }, inputs);
  for (const c of index.checkpoints) {
    if (!wanted.has(c.output)) continue;
    await check(c, dir);
  }
  }
  // A TTS package's speaking demo (tts.html): the first reference's tokens, style and speed
  // mapped back to phonemes, voice and speed, typed into the page. The gate: the page feeds
  // the engine exactly the reference's inputs (phonemes to ids through the vocabulary, the
  // voice's style row for that length, the speed), and plays what the engine computes for
  // them, which the per-layer check above proves against the reference node by node. The
  // end-to-end samples are compared for the record: a model that quantizes activations at
  // run time (Kokoro's DynamicQuantizeLinear) drifts from any other runtime by rounding
  // flips, which can move a predicted duration by a frame (docs/DYNAMIC_SHAPES.md).
  if (fs.existsSync(path.join(pkgDir, 'tts.html'))) {
    const cfg = JSON.parse(fs.readFileSync(path.join(pkgDir, 'tts', 'tts.json'), 'utf8'));
    const raw = fs.readFileSync(path.join(pkgDir, 'tts', 'voices.bin'));
    const pack = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    const { dir, index, inputs } = runs[0];
    const phonemeOf = new Map(Object.entries(cfg.vocab).map(([p, id]) => [id, p]));
    const ids = Array.from(inputs[cfg.tokens].data, Number);
    const phonemes = ids.slice(1, -1).map((id) => phonemeOf.get(id)).join('');
    const style = inputs[cfg.style].data;
    const voice = cfg.voices.find((v) => Array.from({ length: v.rows }, (_, r) => r).some((r) => style.every((x, k) => pack[v.offset + r * v.width + k] === x)));
    if (!voice) throw new Error('the reference style vector is none of the package voices');
    const speed = Number(inputs[cfg.speed].data[0]);
    const demo = await browser.newPage();
    demo.on('console', (m) => { if (m.type() === 'error') console.error('tts page:', m.text()); });
    await demo.goto(`${origin}/tts.html`);
    await demo.waitForSelector('#speak:not([disabled])', { timeout: 600000 });
    await demo.fill('#phonemes', phonemes);
    await demo.selectOption('#voice', voice.name);
    await demo.fill('#speed', String(speed));
    await demo.click('#speak');
    await demo.waitForFunction(() => /^(done|error)/.test(document.getElementById('status').textContent), null, { timeout: 1800000 });
    const status = (await demo.textContent('#status')) ?? '';
    console.log(`\ntts page: "${phonemes}" with ${voice.name} at speed ${speed}: ${status}`);
    const fed = await demo.evaluate((names) => names.map((n) => Array.from(window.__inputs[n].data, Number)), [cfg.tokens, cfg.style, cfg.speed]);
    const same = (a, b) => a.length === b.length && a.every((x, i) => Object.is(Number(x), Number(b[i])));
    // The engine takes speed as f32, as the reference stored it.
    const inputsOk = same(fed[0], ids) && same(fed[1], Array.from(style, Number)) && same(fed[2].map(Math.fround), [speed]);
    console.log(`tts page inputs (ids, style row, speed) equal to the reference's: ${inputsOk ? 'yes' : 'NO'}`);
    const b64 = await demo.evaluate(() => {
      const a = window.__audio;
      const b = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
      let s = '';
      for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
      return btoa(s);
    });
    const bytes = Buffer.from(b64, 'base64');
    const got = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    const finite = got.length > 0 && got.every((v) => Number.isFinite(v));
    const c = index.checkpoints.find((x) => x.output === cfg.audio);
    const reference = parseNpy(fs.readFileSync(path.join(dir, c.file))).values;
    const stats = (a, b) => {
      let worst = 0;
      for (let i = 0; i < Math.min(a.length, b.length); i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
      return worst;
    };
    console.log(`tts audio: ${got.length} finite samples ${finite ? 'yes' : 'NO'}; for the record: against the reference runtime ${got.length} vs ${reference.length} samples, max abs ${stats(got, reference).toExponential(3)} over the common length`);
    if (process.env.M2W_TTS_AUDIO) {
      const native = parseNpy(fs.readFileSync(process.env.M2W_TTS_AUDIO)).values;
      console.log(`tts audio, for the record: against the native engine's end-to-end run ${got.length} vs ${native.length} samples, max abs ${stats(got, native).toExponential(3)} over the common length`);
    }
    if (inputsOk && finite && status.startsWith('done')) passed++;
    else failed++;
    if (shot) await demo.screenshot({ path: shot.replace(/(\.png)?$/, '-tts.png'), fullPage: true });
  }
  // (A TTS package's screenshot is its speaking demo's, above.)
  if (shot && !fs.existsSync(path.join(pkgDir, 'tts.html'))) {
    const demo = await browser.newPage();
    await demo.goto(`${origin}/index.html`);
    await demo.waitForSelector('#run:not([disabled])', { timeout: 60000 });
    await demo.click('#run');
    // One run at the sampled sizes; SwiftShader on a loaded 2-core machine can take minutes
    // (the same bound as the harness's demo pages). An error ends the wait and fails the test.
    await demo.waitForFunction(() => /^(done|Error)/.test(document.getElementById('status').textContent), null, { timeout: 300000 });
    const status = (await demo.textContent('#status')) ?? '';
    console.log(`demo page: ${status}`);
    if (!status.startsWith('done')) demoFailed = true;
    await demo.screenshot({ path: shot, fullPage: true });
  }
  // Outside a secure context the package fails with its typed error, naming the reason.
  {
    const page = await browser.newPage();
    await page.goto(`${insecureOrigin(origin)}/package.json`);
    const got = await page.evaluate(async () => {
      const m = await import('/dist/index.js');
      try {
        await m.loadModel();
        return { loaded: true };
      } catch (e) {
        return { name: e.name, reason: e.reason, typed: e instanceof m.WebGPUUnavailableError, secure: isSecureContext, message: e.message };
      }
    });
    if (got.typed && got.name === 'WebGPUUnavailableError' && got.reason === 'insecure-context' && got.secure === false) {
      console.log(`insecure context: ${got.name} (${got.reason}): ${got.message}`);
    } else {
      console.error(`insecure context: expected WebGPUUnavailableError(insecure-context), got ${JSON.stringify(got)}`);
      failed++;
    }
  }
  // The GPU process dies under a loaded model: the next run fails with the typed
  // DeviceLostError (onDeviceLost was called), nothing retries by itself, and loading
  // again (what the demo page's Restart button does) gives the outputs of before.
  {
    const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'm2w-device-lost-'));
    const context = await launchPersistent(profile);
    try {
      const page = await context.newPage();
      await page.goto(`${origin}/package.json`);
      const before = await page.evaluate(async (inputs) => {
        const m = await import('/dist/index.js');
        window.__lost = null;
        window.__m = m;
        window.__inputs = inputs;
        const t0 = performance.now();
        window.__lostModel = await m.loadModel('/weights', { onDeviceLost: (msg) => (window.__lost = msg) });
        const loadMs = performance.now() - t0;
        const out = await window.__lostModel.run(inputs);
        // Speed (a model loaded without debug, as an app loads it): median of 5 runs after
        // the first.
        const ms = [];
        for (let i = 0; i < 5; i++) {
          await window.__lostModel.run(inputs);
          ms.push(window.__lostModel.lastRunMs);
        }
        ms.sort((a, b) => a - b);
        const a = await navigator.gpu.requestAdapter();
        const adapter = `${a?.info?.vendor ?? ''} ${a?.info?.architecture ?? ''}`;
        return { adapter, loadMs, runMs: ms[2], out: Object.fromEntries(Object.entries(out).map(([k, v]) => [k, Array.from(new Uint32Array(v.buffer, v.byteOffset, v.length))])) };
      }, runs[0].inputs);
      const shapes = Object.entries(runs[0].inputs).map(([k, v]) => `${k} [${v.shape}]`).join(', ');
      console.log(`speed: load ${before.loadMs.toFixed(0)} ms, one run (${shapes}) ${before.runMs.toFixed(2)} ms (median of 5)`);
      recordSpeed(pkgDir, before.adapter, [`load (weights from the local server, kernels compiled): ${before.loadMs.toFixed(0)} ms`, `one run of the reference inputs (${shapes}): ${before.runMs.toFixed(2)} ms, median of 5 after a warm-up, submit to results read back`]);
      const killed = killGpuProcess(profile);
      const after = await page.evaluate(async () => {
        for (let i = 0; i < 100 && window.__lost === null; i++) await new Promise((r) => setTimeout(r, 100));
        const m = window.__m;
        let error = null;
        try {
          await window.__lostModel.run(window.__inputs);
        } catch (e) {
          error = { name: e.name, typed: e instanceof m.DeviceLostError, message: e.message };
        }
        const again = await m.loadModel('/weights');
        const out = await again.run(window.__inputs);
        again.destroy();
        return { lost: window.__lost, error, out: Object.fromEntries(Object.entries(out).map(([k, v]) => [k, Array.from(new Uint32Array(v.buffer, v.byteOffset, v.length))])) };
      });
      const same = JSON.stringify(after.out) === JSON.stringify(before.out);
      if (killed > 0 && after.lost !== null && after.error?.typed && same) {
        console.log(`device lost (GPU process killed): onDeviceLost called, run() threw ${after.error.name}; loaded again, the outputs are the same bits`);
      } else {
        console.error(`device lost: killed ${killed} GPU process(es); ${JSON.stringify({ lost: after.lost, error: after.error, sameOutputs: same })}`);
        failed++;
      }
    } finally {
      await context.close();
      fs.rmSync(profile, { recursive: true, force: true });
    }
  }
} finally {
  await browser.close();
  server.close();
}
console.log(`\nbrowser checkpoints: ${passed} passed, ${failed} failed`);
if (failed > 0 || passed === 0 || demoFailed) process.exit(1);
