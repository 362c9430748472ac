// @ts-nocheck -- run by node after `tsc --noCheck`; the package itself is strictly typed.
//
// Proof for {{NAME}} (MediaPipe's hand tracking): in headless Chromium (WebGPU), the
// package's detectHands() on each photo of the oracle folder (the decoded RGB pixels
// MediaPipe saw, `<stem>.rgb.npy`), against MediaPipe's own solution on the same pixels
// (`oracle.json`, made by m2w's scripts/mediapipe_hands_oracle.py): as many hands, the
// same label, each palm detection and region, and every landmark within the stated pixel
// tolerance. Then the demo page runs on a photo (decoded by the browser) and is
// screenshotted with the landmarks drawn.
// Usage: node build-tests/hands.spec.js PACKAGE_DIR ORACLE_DIR,PHOTOS_DIR [SCREENSHOT]
import fs from 'node:fs';
import path from 'node:path';
import { launchChromium, serve } from './harness.js';

// Pixels of the photo (see crates/vision/tests/hands_vs_mediapipe.rs for the measured
// native errors: palms and regions within 5e-4 px, landmarks within 0.17 px).
const PALM_PX = 0.01;
const RECT_PX = 0.01;
const LANDMARK_PX = 0.5;

const [pkgDir, dirsArg, shot] = process.argv.slice(2);
if (!dirsArg) {
  console.error('usage: node build-tests/hands.spec.js PACKAGE_DIR ORACLE_DIR [SCREENSHOT] (m2w package-test passes them: this package bundles no oracle)');
  process.exit(2);
}
const [oracleDir, photosDir] = dirsArg.split(',');
const oracle = JSON.parse(fs.readFileSync(path.join(oracleDir, 'oracle.json'), 'utf8'));
const { origin, server } = await serve(pkgDir, (url) => {
  if (url.startsWith('/oracle/')) return path.join(oracleDir, path.basename(url));
  if (url.startsWith('/photos/') && photosDir) return path.join(photosDir, path.basename(url));
  if (url === '/blank.html') return { html: '<!doctype html><title>hands test</title>' };
  return null;
});
const browser = await launchChromium();
let failed = 0;
try {
  const page = await browser.newPage();
  page.on('console', (m) => console.log(`[page] ${m.text()}`));
  await page.goto(`${origin}/blank.html`);
  const stems = oracle.images.map((im) => im.file.replace(/\.[^.]+$/, ''));
  const runs = await page.evaluate(async (stems) => {
    const { loadHands } = await import('/dist/index.js');
    const tracker = await loadHands('/');
    // A .npy of uint8 [h, w, 3] (numpy's format 1.0 header).
    const readNpy = (buf) => {
      const bytes = new Uint8Array(buf);
      const len = bytes[8] | (bytes[9] << 8);
      const header = new TextDecoder().decode(bytes.subarray(10, 10 + len));
      const shape = header.match(/'shape': \(([^)]*)\)/)[1].split(',').filter((s) => s.trim()).map(Number);
      return { shape, data: bytes.subarray(10 + len) };
    };
    const out = [];
    for (const stem of stems) {
      const { shape, data } = readNpy(await (await fetch(`/oracle/${stem}.rgb.npy`)).arrayBuffer());
      const [height, width] = shape;
      const rgba = new Uint8ClampedArray(width * height * 4);
      for (let i = 0; i < width * height; i++) {
        rgba[4 * i] = data[3 * i];
        rgba[4 * i + 1] = data[3 * i + 1];
        rgba[4 * i + 2] = data[3 * i + 2];
        rgba[4 * i + 3] = 255;
      }
      const hands = await tracker.detectHands({ width, height, data: rgba });
      out.push({ stem, width, height, ms: tracker.lastRunMs, hands });
    }
    tracker.destroy();
    return out;
  }, stems);
  fs.mkdirSync(path.join(pkgDir, 'build-tests'), { recursive: true });
  fs.writeFileSync(path.join(pkgDir, 'build-tests', 'hands-runs.json'), JSON.stringify(runs));
  let worst = 0;
  for (const [k, run] of runs.entries()) {
    const want = oracle.images[k];
    const { width: w, height: h } = run;
    if (run.hands.length !== want.hands.length) {
      failed++;
      console.log(`${want.file}: ${run.hands.length} hand(s), MediaPipe ${want.hands.length}`);
      continue;
    }
    for (const [j, hand] of run.hands.entries()) {
      const p = want.palm_detections[j];
      let palm = Math.max(Math.abs(hand.palm.xmin - p.bbox.xmin) * w, Math.abs(hand.palm.ymin - p.bbox.ymin) * h);
      for (const [i, kp] of hand.palm.keypoints.entries()) {
        palm = Math.max(palm, Math.abs(kp[0] - p.keypoints[i].x) * w, Math.abs(kp[1] - p.keypoints[i].y) * h);
      }
      const r = want.hand_rects_from_palm_detections[j];
      const rect = Math.max(
        Math.abs(hand.rect.x_center - r.x_center) * w,
        Math.abs(hand.rect.y_center - r.y_center) * h,
        Math.abs(hand.rect.width - r.width) * w,
        Math.abs(hand.rect.height - r.height) * h,
        Math.abs(hand.rect.rotation - r.rotation) * hand.rect.width * w,
      );
      let marks = 0;
      for (const [i, [x, y]] of hand.points.entries()) {
        const o = want.hands[j].landmarks[i];
        marks = Math.max(marks, Math.hypot(x - o.px, y - o.py));
      }
      worst = Math.max(worst, marks);
      const label = hand.label === want.hands[j].handedness.label;
      const ok = palm <= PALM_PX && rect <= RECT_PX && marks <= LANDMARK_PX && label && Math.abs(hand.palm.score - p.score) < 1e-3;
      if (!ok) failed++;
      console.log(
        `${want.file}: ${ok ? 'ok' : 'FAIL'}: palm ${palm.toFixed(4)} px, region ${rect.toFixed(4)} px, landmarks ${marks.toFixed(3)} px, ${hand.label} (MediaPipe ${want.hands[j].handedness.label}), ${run.ms.toFixed(0)} ms`,
      );
    }
  }
  console.log(`browser hands: ${runs.length} photos, ${runs.length - failed} match MediaPipe, worst landmark ${worst.toFixed(3)} px`);

  // The demo page on a photo the browser decodes itself.
  if (photosDir) {
    const demo = await browser.newPage();
    await demo.goto(`${origin}/index.html?image=/photos/${oracle.images[0].file}`);
    await demo.waitForFunction(() => /^(done|Error)/.test(document.getElementById('status').textContent), null, { timeout: 300000 });
    const status = await demo.textContent('#status');
    console.log(`demo page: ${status}`);
    if (!status.startsWith('done') || !/[1-9] hand/.test(status)) failed++;
    if (shot) await demo.screenshot({ path: shot, fullPage: true });
  }
} finally {
  await browser.close();
  server.close();
}
process.exitCode = failed ? 1 : 0;
