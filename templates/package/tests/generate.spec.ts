// @ts-nocheck -- run by node after `tsc --noCheck`; the package itself is strictly typed.
//
// Proof for {{NAME}} (a GGUF decoder): (1) the package's TypeScript tokenizer, run in node,
// gives the ids the reference's tokenizer gave (the `tokenizers` crate for byte-level BPE,
// m2w's SentencePiece, checked against SentencePiece, for "llama" vocabularies) for every text
// of the port's reference/tokenizer-cases.json and decodes them back, and its Jinja renders the
// chat template as minijinja does (reference/chat-cases.json); (2) in headless Chromium (WebGPU) the
// package encodes the reference prompt to the same ids and its greedy continuation is the
// candle reference's token for token (reference/generation.json); (3) the chat page answers
// and is screenshotted.
// Usage: node build-tests/generate.spec.js PACKAGE_DIR REFERENCE_DIR [SCREENSHOT]
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { driveDemo, launchChromium, recordSpeed, serve } from './harness.js';

// With no arguments (`npm test` inside the package): the package here and the oracle m2w
// bundled with it (tests/reference).
const [pkgDir = '.', refDir = path.join('tests', 'reference'), shot] = process.argv.slice(2);
if (!fs.existsSync(refDir.split(',')[0])) {
  console.error(`${refDir}: no reference here; run m2w package-test --package PACKAGE --reference PORT/reference`);
  process.exit(2);
}
let failed = 0;

// (1) Tokenizer, in node: no GPU needed.
const { createTokenizer } = await import(pathToFileURL(path.join(pkgDir, 'dist', 'index.js')).href);
const tokenizerData = JSON.parse(fs.readFileSync(path.join(pkgDir, 'weights', 'tokenizer.json'), 'utf8'));
const tokenizer = createTokenizer(tokenizerData);
// SentencePiece writes spaces as U+2581: a literal U+2581 in a text decodes as a space.
const decodedForm = (text) => (tokenizerData.model === 'llama' ? text.replaceAll('\u2581', ' ') : text);
const cases = JSON.parse(fs.readFileSync(path.join(refDir, 'tokenizer-cases.json'), 'utf8'));
let encoded = 0;
let decoded = 0;
for (const c of cases) {
  const got = tokenizer.encode(c.text);
  if (JSON.stringify(got) === JSON.stringify(c.ids)) encoded++;
  else {
    failed++;
    console.log(`tokenizer: ${JSON.stringify(c.text)}\n  ours   ${JSON.stringify(got)}\n  crate  ${JSON.stringify(c.ids)}`);
  }
  if (tokenizer.decode(c.ids) === decodedForm(c.text)) decoded++;
  else {
    failed++;
    console.log(`tokenizer: decode of ${JSON.stringify(c.text)} gave ${JSON.stringify(tokenizer.decode(c.ids))}`);
  }
}
console.log(`tokenizer: ${encoded}/${cases.length} texts encode to the reference's ids (tokenizers crate / m2w's SentencePiece), ${decoded}/${cases.length} decode back`);

// The chat template, in node: the package's Jinja against minijinja's rendering (which m2w
// checks against jinja2) of the same template on the port's conversations.
const chatCases = path.join(refDir, 'chat-cases.json');
if (fs.existsSync(chatCases)) {
  const { ChatTemplate } = await import(pathToFileURL(path.join(pkgDir, 'dist', 'index.js')).href);
  const { CONFIG } = await import(pathToFileURL(path.join(pkgDir, 'dist', 'index.js')).href);
  const doc = JSON.parse(fs.readFileSync(chatCases, 'utf8'));
  const template = new ChatTemplate(CONFIG.chatTemplate);
  let same = 0;
  for (const c of doc.cases) {
    const got = template.render({ messages: c.messages, add_generation_prompt: c.add_generation_prompt, bos_token: c.bos_token, eos_token: c.eos_token });
    if (got === c.text) same++;
    else {
      failed++;
      console.log(`chat template: ${JSON.stringify(c.messages)}\n  ours       ${JSON.stringify(got)}\n  minijinja  ${JSON.stringify(c.text)}`);
    }
  }
  console.log(`chat template (${doc.origin}): ${same}/${doc.cases.length} conversations render as minijinja does`);
} else console.log('chat template: none (the model has none and m2w keeps none for its family)');

// The sampler, in node, against the native one: `cargo xtask package-test` writes draws of
// m2w's Rust sampler on synthetic logits to build-tests/sampler-cases.json.
const samplerCases = [path.join(pkgDir, 'build-tests', 'sampler-cases.json'), path.join(refDir, 'sampler-cases.json')].find((f) => fs.existsSync(f)) ?? '';
if (fs.existsSync(samplerCases)) {
  const { Sampler } = await import(pathToFileURL(path.join(pkgDir, 'dist', 'index.js')).href);
  const all = JSON.parse(fs.readFileSync(samplerCases, 'utf8'));
  let same = 0;
  for (const c of all) {
    const sampler = new Sampler(c.options.seed);
    const logits = Float32Array.from(c.logits, (v) => (v === null ? NaN : v));
    const draws = c.draws.map(() => sampler.pick(logits, c.seen, c.options));
    if (JSON.stringify(draws) === JSON.stringify(c.draws)) same++;
    else {
      failed++;
      console.log(`sampler ${JSON.stringify(c.options)}: ours ${JSON.stringify(draws)}, native ${JSON.stringify(c.draws)}`);
    }
  }
  console.log(`sampler: ${same}/${all.length} cases draw the native sampler's tokens`);
} else console.log('sampler: not checked (no build-tests/sampler-cases.json; run through cargo xtask package-test)');

// (2) Greedy generation in the browser.
const generation = JSON.parse(fs.readFileSync(path.join(refDir, 'generation.json'), 'utf8'));
// /blank.html: an empty page of this origin, so the greedy check loads the model once, without the chat page.
const { origin, server, requests } = await serve(pkgDir, (url) => (url === '/blank.html' ? { html: '<!doctype html><title>test</title>' } : null));
const browser = await launchChromium();
try {
  // One context (one profile's storage) for the first load and the reload from its cache.
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.error('page:', m.text()); });
  await page.goto(`${origin}/blank.html`);
  // The largest weight file: JavaScript should never hold much more than one.
  const shardBytes = Math.max(...fs.readdirSync(path.join(pkgDir, 'weights')).filter((f) => f.endsWith('.bin')).map((f) => fs.statSync(path.join(pkgDir, 'weights', f)).size));
  const result = await page.evaluate(async ({ prompt, count }) => {
    const { loadLLM } = await import('/dist/index.js');
    // The JS heap (ArrayBuffers included) sampled at every chunk of the load, over what it
    // was before (after a full collection).
    const heap = () => performance.memory?.usedJSHeapSize ?? NaN;
    globalThis.gc?.();
    const before = heap();
    let peak = before;
    let persisted = null;
    const cacheErrors = [];
    const onProgress = (_l, _t, p) => {
      peak = Math.max(peak, heap());
      if (p?.stage === 'persist') persisted = p.persisted;
      if (p?.stage === 'cache-error') cacheErrors.push(`${p.file}: ${p.error}`);
    };
    const llm = await loadLLM('/weights', { cache: true, onProgress });
    const loadPeak = peak - before;
    const adapter = await navigator.gpu.requestAdapter();
    const ids = llm.encodePrompt(prompt);
    const streamed = [];
    const r = await llm.generateIds(ids, { maxNewTokens: count, stop: [], onToken: (_, id) => streamed.push(id) });
    const kernels = llm.kernels;
    // Sampling (top-k on the GPU, temperature, top-p, seed): the same seed twice, the same tokens.
    const sampling = { maxNewTokens: 4, temperature: 0.8, topK: 20, topP: 0.95, seed: 7, stop: [] };
    const sampled = [(await llm.generateIds(ids, sampling)).tokens, (await llm.generateIds(ids, sampling)).tokens];
    llm.destroy();
    return { ids, tokens: r.tokens, streamed, text: r.text, prefillMs: r.prefillMs, tps: r.tokensPerSecond, kernels, sampled, loadPeak, persisted, cacheErrors, heapMeasured: Number.isFinite(before), adapter: `${adapter.info?.vendor ?? ''} ${adapter.info?.architecture ?? ''}` };
  }, { prompt: generation.prompt, count: generation.generated_ids.length });
  const ratio = result.loadPeak / shardBytes;
  console.log(`load: peak JS heap ${(result.loadPeak / 2 ** 20).toFixed(1)} MiB over its level before = ${ratio.toFixed(2)}x the largest shard (${(shardBytes / 2 ** 20).toFixed(1)} MiB; must stay under 1.5x); persistent storage ${result.persisted ? 'granted' : 'not granted'}`);
  if (!result.heapMeasured || !(ratio < 1.5)) failed++;
  if (result.cacheErrors.length) console.log(`first load: cache errors: ${result.cacheErrors.join('; ')}`);

  // Reloaded in a new page of the same browser context (its storage): every file from the
  // Cache API.
  const weightRequests = () => [...requests].filter(([u]) => u.startsWith('/weights/')).reduce((a, [, n]) => a + n, 0);
  const fetchedBefore = weightRequests();
  const again = await context.newPage();
  await again.goto(`${origin}/blank.html`);
  const reload = await again.evaluate(async ({ prompt, kernels }) => {
    const { loadLLM } = await import('/dist/index.js');
    let fromCache = 0;
    let fromNetwork = 0;
    const errors = [];
    const onProgress = (_l, _t, p) => {
      if (p?.stage === 'weights') (p.fromCache ? fromCache++ : fromNetwork++);
      if (p?.stage === 'cache-error') errors.push(`${p.file}: ${p.error}`);
    };
    // The other decode kernels, for a few tokens (on a CPU adapter the GPU kernels crawl).
    const other = await loadLLM('/weights', { cache: true, onProgress, kernels: kernels === 'gpu' ? 'fallback' : 'gpu' });
    const short = await other.generateIds(other.encodePrompt(prompt), { maxNewTokens: 3, stop: [] });
    other.destroy();
    return { otherKernels: other.kernels, otherTokens: short.tokens, fromCache, fromNetwork, errors };
  }, { prompt: generation.prompt, kernels: result.kernels });
  await again.close();
  const refetched = weightRequests() - fetchedBefore;
  console.log(`reload from the Cache API: ${refetched} requests for weights/ files (${fetchedBefore} on the first load), ${reload.fromCache} chunks from the cache, ${reload.fromNetwork} from the network${reload.errors.length ? `; cache errors: ${reload.errors.join('; ')}` : ''}`);
  if (refetched !== 0 || reload.fromNetwork !== 0 || reload.fromCache === 0) failed++;
  Object.assign(result, reload);
  console.log(`browser WebGPU adapter: ${result.adapter}; decode kernels: ${result.kernels}`);
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  if (!same(result.ids, generation.prompt_ids)) {
    failed++;
    console.log(`prompt ids: browser ${JSON.stringify(result.ids)}, reference ${JSON.stringify(generation.prompt_ids)}`);
  }
  let agree = 0;
  while (agree < generation.generated_ids.length && result.tokens[agree] === generation.generated_ids[agree]) agree++;
  console.log(`greedy: ${agree}/${generation.generated_ids.length} tokens equal to the candle reference; prefill ${result.prefillMs.toFixed(0)} ms, decode ${result.tps.toFixed(2)} tokens/s`);
  console.log(`text: ${JSON.stringify(generation.prompt + result.text)}`);
  recordSpeed(pkgDir, result.adapter, [`prefill of a ${result.ids.length}-token prompt: ${result.prefillMs.toFixed(0)} ms`, `greedy decode: ${result.tps.toFixed(2)} tokens/s (${result.kernels} decode kernels)`]);
  if (agree !== generation.generated_ids.length || result.tokens.length !== agree || !same(result.streamed, result.tokens)) {
    failed++;
    console.log(`browser   ${JSON.stringify(result.tokens)}\nreference ${JSON.stringify(generation.generated_ids)}`);
  }
  const sampledOk = result.sampled[0].length === 4 && same(result.sampled[0], result.sampled[1]);
  console.log(`sampled (top-k 20 on the GPU, T 0.8, top-p 0.95, seed 7): ${JSON.stringify(result.sampled[0])} then ${JSON.stringify(result.sampled[1])}: ${sampledOk ? 'same' : 'DIFFER'}`);
  if (!sampledOk) failed++;
  const otherOk = same(result.otherTokens, generation.generated_ids.slice(0, 3));
  console.log(`greedy with the ${result.otherKernels} decode kernels: first 3 tokens ${otherOk ? 'equal' : 'DIFFER'} (${JSON.stringify(result.otherTokens)})`);
  if (!otherOk) failed++;

  // (3) The chat page.
  if (shot) {
    const { status, text } = await driveDemo(browser, origin, shot, '#send', '.assistant');
    console.log(`chat page: ${JSON.stringify(text)} [${status}]`);
    if (!status.startsWith('done')) failed++;
  }
} finally {
  await browser.close();
  server.close();
}
console.log(failed === 0 ? '\nLLM package: all checks passed' : `\nLLM package: ${failed} check(s) failed`);
if (failed > 0) process.exit(1);
