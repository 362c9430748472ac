// @ts-nocheck -- run by node after `tsc --noCheck`; the package itself is strictly typed.
//
// Browser proof for {{NAME}}: the generated package runs in headless Chromium (WebGPU) with the
// reference inputs, every checkpoint is captured and compared with the same .npy oracles the
// native validate used (npy parsing here, not in the package), and the demo page is
// screenshotted. Usage: node build-tests/activation-match.spec.js PACKAGE_DIR REFERENCE_DIR[,REFERENCE_DIR...] [SCREENSHOT]
// Several reference folders (the same model at different input sizes) run through one
// loaded model: a package whose plan has dims takes every size up to their maxima.
import fs from 'node:fs';
import path from 'node:path';
import { launchChromium, serve } from './harness.js';

const ATOL = 1e-4;
const RTOL = 1e-3;
const [pkgDir, refDirs, shot] = process.argv.slice(2);
const refs = refDirs.split(',');
const refDir = refs[0];
const tolerances = JSON.parse(process.env.M2W_TOLERANCES ?? '{}');

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
  else throw new Error(`npy dtype ${descr} not handled`);
  return { shape, values };
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
  for (const { dir, index, inputs, names } of runs) {
  await page.evaluate(async (inputs) => { await window.__model.run(inputs); }, inputs);
  if (runs.length > 1) console.log(`\n${dir}: inputs ${index.inputs.map((i) => `${i.name} [${i.shape}]`).join(', ')}`);
  const wanted = new Set(names);
  for (const c of index.checkpoints) {
    if (!wanted.has(c.output)) continue;
    const entry = await capture(c.output);
    if (!entry) continue;
    const got = decode(entry);
    const npy = parseNpy(fs.readFileSync(path.join(dir, c.file)));
    const want = npy.values;
    const [atol, rtol] = tolerances[c.output] ?? [ATOL, RTOL];
    let worst = 0;
    let ok = got.length === want.length && entry.shape.length === npy.shape.length && entry.shape.every((d, k) => d === npy.shape[k]);
    for (let i = 0; i < want.length; i++) {
      const err = Math.abs(got[i] - want[i]);
      if (!(err <= atol + rtol * Math.abs(want[i])) && !(Number.isNaN(got[i]) && Number.isNaN(want[i]))) ok = false;
      if (err > worst) worst = err;
    }
    if (ok) passed++;
    else failed++;
    console.log(`${String(c.index).padStart(4)}  ${c.op_type.padEnd(16)} ${c.output.padEnd(48)} ${worst.toExponential(3).padStart(11)}  ${ok ? 'ok' : 'FAIL'}`);
  }
  }
  if (shot) {
    const demo = await browser.newPage();
    await demo.goto(`${origin}/index.html`);
    await demo.waitForSelector('#run:not([disabled])', { timeout: 60000 });
    await demo.click('#run');
    await demo.waitForFunction(() => document.getElementById('status').textContent.startsWith('done'), null, { timeout: 60000 });
    console.log(`demo page: ${await demo.textContent('#status')}`);
    await demo.screenshot({ path: shot, fullPage: true });
  }
} finally {
  await browser.close();
  server.close();
}
console.log(`\nbrowser checkpoints: ${passed} passed, ${failed} failed`);
if (failed > 0 || passed === 0) process.exit(1);
