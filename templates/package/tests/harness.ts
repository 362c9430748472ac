// @ts-nocheck -- run by node after `tsc --noCheck`; the package itself is strictly typed.
//
// What the browser proofs share: a static server on 127.0.0.1 (the package, plus whatever
// `extra` maps a URL to) and Debian's chromium with WebGPU on, driven by playwright-core.
import { chromium } from 'playwright-core';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';

const types = { '.js': 'text/javascript', '.html': 'text/html', '.json': 'application/json', '.bin': 'application/octet-stream', '.npy': 'application/octet-stream' };

/**
 * Serves `pkgDir`; `extra(url)` may answer first with a file path or `{ html }`. Returns the
 * origin, the server (close it at the end) and the count of requests per path.
 */
export async function serve(pkgDir, extra = () => null) {
  // Requests per path: a spec checks what a load fetched (none of the weights when they
  // come from the Cache API).
  const requests = new Map();
  const server = http.createServer((req, res) => {
    const url = decodeURIComponent(req.url.split('?')[0]);
    requests.set(url, (requests.get(url) ?? 0) + 1);
    const special = extra(url);
    if (special && typeof special === 'object') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(special.html);
      return;
    }
    const file = special ?? path.join(pkgDir, url === '/' ? 'index.html' : url);
    fs.readFile(file, (err, body) => {
      if (err) {
        res.writeHead(404);
        res.end();
        return;
      }
      res.writeHead(200, { 'content-type': types[path.extname(file)] ?? 'application/octet-stream' });
      res.end(body);
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { origin: `http://127.0.0.1:${server.address().port}`, server, requests };
}

/** The same server at an origin that is not a secure context (http, not loopback): WebGPU
 * is hidden there, and a package must say so with its typed error. */
export function insecureOrigin(origin) {
  return origin.replace('127.0.0.1', 'm2w-insecure.test');
}

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    // playwright gives every launch a fresh temporary profile (a new --user-data-dir).
    // m2w-insecure.test is the server again, at an origin that is not a secure context.
    // performance.memory.usedJSHeapSize, exact (not bucketed) with precise memory info,
    // counts ArrayBuffer contents too: a spec samples it while weights load, after gc().
    args: ['--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic', '--enable-precise-memory-info', '--js-flags=--expose-gc', '--host-resolver-rules=MAP m2w-insecure.test 127.0.0.1'],
  });
}

/** Writes `lines` (what the test measured) into the package README's speed section, with
 * the adapter and the date: the README's figures are this package's, measured, not
 * claimed. */
export function recordSpeed(pkgDir, adapter, lines) {
  const file = path.join(pkgDir, 'README.md');
  if (!fs.existsSync(file)) return;
  const text = fs.readFileSync(file, 'utf8');
  const [open, close] = ['<!-- m2w:measured-speed -->', '<!-- /m2w:measured-speed -->'];
  const a = text.indexOf(open);
  const b = text.indexOf(close);
  if (a < 0 || b < a) return;
  const body = [`Measured by this package's own test on ${new Date().toISOString().slice(0, 10)}, headless Chromium, WebGPU adapter "${adapter.trim()}"`, '(a CPU adapter such as SwiftShader is far slower than a GPU):', '', ...lines.map((l) => `- ${l}`)].join('\n');
  fs.writeFileSync(file, `${text.slice(0, a + open.length)}\n${body}\n${text.slice(b)}`);
}

/** Chromium with its profile in `profileDir` (so its processes can be told apart from any
 * other Chromium on the machine by their --user-data-dir). Returns the browser context. */
export function launchPersistent(profileDir) {
  return chromium.launchPersistentContext(profileDir, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: ['--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  });
}

/** Kills the GPU process of the Chromium whose profile is `profileDir` (as a driver reset
 * or a GPU process crash would end it): its pages' WebGPU devices are lost. Returns how
 * many processes were killed. */
export function killGpuProcess(profileDir) {
  const ps = execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' });
  let killed = 0;
  for (const line of ps.split('\n')) {
    if (line.includes('--type=gpu-process') && line.includes(`--user-data-dir=${profileDir}`)) {
      process.kill(Number(line.trim().split(/\s+/)[0]), 'SIGKILL');
      killed++;
    }
  }
  return killed;
}

/**
 * Drives a package's demo page (index.html): waits until `button` is enabled (the model
 * loaded), clicks it, waits until #status starts with "done" or "Error", screenshots to
 * `shot`. Returns the status and the text of `output`.
 */
export async function driveDemo(browser, origin, shot, button, output) {
  const demo = await browser.newPage();
  await demo.goto(`${origin}/index.html`);
  await demo.waitForSelector(`${button}:not([disabled])`, { timeout: 120000 });
  await demo.click(button);
  await demo.waitForFunction(() => /^(done|Error)/.test(document.getElementById('status').textContent), null, { timeout: 300000 });
  const status = await demo.textContent('#status');
  const text = await demo.textContent(output);
  await demo.screenshot({ path: shot, fullPage: true });
  return { status, text };
}
