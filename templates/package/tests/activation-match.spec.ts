// @ts-nocheck -- run by node after `tsc --noCheck`; the package itself is strictly typed.
//
// Browser proof for {{NAME}}: the generated package runs in headless Chromium (WebGPU) with the
// reference inputs, every checkpoint is captured and compared with the same .npy oracles the
// native validate used (npy parsing here, not in the package), and the demo page is
// screenshotted. Usage: node build-tests/activation-match.spec.js PACKAGE_DIR REFERENCE_DIR [SCREENSHOT]
import fs from 'node:fs';
import path from 'node:path';
import { launchChromium, serve } from './harness.js';

const ATOL = 1e-4;
const RTOL = 1e-3;
const [pkgDir, refDir, shot] = process.argv.slice(2);
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

const index = JSON.parse(fs.readFileSync(path.join(refDir, 'index.json'), 'utf8'));
// Weights (and weights folded at plan time) are proven by extract --verify; the browser test
// compares what the GPU computes.
const constants = new Set(JSON.parse(fs.readFileSync(path.join(pkgDir, 'weights', 'constants.json'), 'utf8')).map((c) => c.name));
const inputs = Object.fromEntries(index.inputs.map((i) => [i.name, parseNpy(fs.readFileSync(path.join(refDir, i.file))).values]));
const browser = await launchChromium();
let failed = 0;
let passed = 0;
try {
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.error('page:', m.text()); });
  await page.goto(`${origin}/index.html`);
  const names = index.checkpoints.map((c) => c.output).filter((n) => !constants.has(n));
  const result = await page.evaluate(async ({ inputs, names }) => {
    const { loadModel } = await import('/dist/index.js');
    const model = await loadModel('/weights', { debug: true });
    const adapter = await navigator.gpu.requestAdapter();
    await model.run(inputs);
    const out = {};
    for (const n of names) {
      try {
        const got = await model.capture([n]);
        out[n] = Array.from(got[n]);
      } catch (e) {
        // Not a plan tensor (folded on the host, or fused): not compared.
      }
    }
    return { out, adapter: `${adapter.info?.vendor ?? ''} ${adapter.info?.architecture ?? ''}` };
  }, { inputs, names });
  console.log(`browser WebGPU adapter: ${result.adapter}`);
  for (const c of index.checkpoints) {
    const got = result.out[c.output];
    if (!got) continue;
    const want = parseNpy(fs.readFileSync(path.join(refDir, c.file))).values;
    const [atol, rtol] = tolerances[c.output] ?? [ATOL, RTOL];
    let worst = 0;
    let ok = got.length === want.length;
    for (let i = 0; i < want.length; i++) {
      const err = Math.abs(got[i] - want[i]);
      if (!(err <= atol + rtol * Math.abs(want[i])) && !(Number.isNaN(got[i]) && Number.isNaN(want[i]))) ok = false;
      if (err > worst) worst = err;
    }
    if (ok) passed++;
    else failed++;
    console.log(`${String(c.index).padStart(4)}  ${c.op_type.padEnd(16)} ${c.output.padEnd(48)} ${worst.toExponential(3).padStart(11)}  ${ok ? 'ok' : 'FAIL'}`);
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
