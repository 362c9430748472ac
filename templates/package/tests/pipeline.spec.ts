// @ts-nocheck -- run by node after `tsc --noCheck`; the package itself is strictly typed.
//
// Proof for {{NAME}} (a generation pipeline): (1) in node, the package's tokenizer encodes
// every reference prompt to the ids the `tokenizers` crate gave and decodes ONNX Runtime's
// tokens to its text; (2) in headless Chromium (WebGPU), each prompt's greedy loop runs, its
// tokens and the logits row behind each go to build-tests/pipeline-runs.json, where `cargo
// xtask package-test` judges them against ONNX Runtime's loop (reference/generation.json of
// the port folder) as the port's own gate does: identical, or parted at a near tie (graphs
// that quantize activations at run time); the streamed text is the result's; a seed gives
// the same sampled tokens twice; an aborted signal stops the loop; with a chat template,
// the package's Jinja renders the reference conversations as minijinja does, the tokenizer
// gives the crate's ids for them, and chat() answers from those ids; (3) the demo page
// generates and is screenshotted.
// Usage: node build-tests/pipeline.spec.js PACKAGE_DIR PORT_DIR [SCREENSHOT]
// M2W_PROMPTS=N runs the first N reference prompts only.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { driveDemo, launchChromium, serve } from './harness.js';

const [pkgDir, refArg, shot] = process.argv.slice(2);
if (!refArg) {
  console.error('usage: node build-tests/pipeline.spec.js PACKAGE_DIR ORACLE_DIR [SCREENSHOT] (m2w package-test passes them: this package bundles no oracle)');
  process.exit(2);
}
const portDir = refArg.split(',')[0];
const record = JSON.parse(fs.readFileSync(path.join(portDir, 'reference', 'generation.json'), 'utf8'));
const prompts = record.prompts.slice(0, Number(process.env.M2W_PROMPTS || record.prompts.length));
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
let failed = 0;

// (1) The tokenizer, in node.
const { fromTokenizerJson } = await import(pathToFileURL(path.join(pkgDir, 'dist', 'index.js')).href);
const tokenizer = fromTokenizerJson(JSON.parse(fs.readFileSync(path.join(pkgDir, 'weights', 'tokenizer.json'), 'utf8')));
let encoded = 0;
let decoded = 0;
for (const p of record.prompts) {
  const ids = tokenizer.encode(p.text);
  if (same(ids, p.prompt_ids)) encoded++;
  else {
    failed++;
    console.log(`tokenizer: ${JSON.stringify(p.text)}\n  ours   ${JSON.stringify(ids)}\n  crate  ${JSON.stringify(p.prompt_ids)}`);
  }
  const text = tokenizer.decode(p.tokens);
  if (text === p.output) decoded++;
  else {
    failed++;
    console.log(`tokenizer: decode of ${JSON.stringify(p.tokens)} gave ${JSON.stringify(text)}, the crate ${JSON.stringify(p.output)}`);
  }
}
console.log(`tokenizer: ${encoded}/${record.prompts.length} prompts encode to the tokenizers crate's ids, ${decoded}/${record.prompts.length} outputs decode to its text`);

// The chat template, in node: the package's Jinja against minijinja's rendering of the
// model's tokenizer_config.json template (build-tests/chat-cases.json, written by
// `cargo xtask package-test` with the tokenizers crate's ids of each rendering).
const chatFile = path.join(pkgDir, 'build-tests', 'chat-cases.json');
const chatDoc = fs.existsSync(chatFile) ? JSON.parse(fs.readFileSync(chatFile, 'utf8')) : null;
if (chatDoc) {
  const { ChatTemplate } = await import(pathToFileURL(path.join(pkgDir, 'dist', 'index.js')).href);
  const { CHAT } = await import(pathToFileURL(path.join(pkgDir, 'dist', 'index.js')).href);
  const template = new ChatTemplate(CHAT.template);
  let rendered = 0;
  let tokenized = 0;
  for (const c of chatDoc.cases) {
    const text = template.render({ messages: c.messages, add_generation_prompt: c.add_generation_prompt, bos_token: CHAT.bosText, eos_token: CHAT.eosText });
    if (text === c.text) rendered++;
    else {
      failed++;
      console.log(`chat template: ${JSON.stringify(c.messages)}\n  ours       ${JSON.stringify(text)}\n  minijinja  ${JSON.stringify(c.text)}`);
    }
    const ids = tokenizer.encode(c.text, false);
    if (same(ids, c.ids)) tokenized++;
    else {
      failed++;
      console.log(`chat ids of ${JSON.stringify(c.text)}\n  ours   ${JSON.stringify(ids)}\n  crate  ${JSON.stringify(c.ids)}`);
    }
  }
  console.log(`chat template (${chatDoc.origin}): ${rendered}/${chatDoc.cases.length} conversations render as minijinja does, ${tokenized}/${chatDoc.cases.length} tokenize to the crate's ids`);
} else console.log('chat template: none (no chat_template in a tokenizer_config.json beside the tokenizer)');

// (2) Generation in the browser.
const { origin, server } = await serve(pkgDir, (url) => (url === '/blank.html' ? { html: '<!doctype html><title>test</title>' } : null));
const browser = await launchChromium();
try {
  const page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error') console.error('page:', m.text()); });
  await page.goto(`${origin}/blank.html`);
  const result = await page.evaluate(async ({ prompts, maxNew, chatCase }) => {
    const { loadPipeline } = await import('/dist/index.js');
    const model = await loadPipeline('/weights');
    const adapter = await navigator.gpu.requestAdapter();
    const runs = [];
    // Rows go back as base64 of their little-endian f32 bytes.
    const base64 = (row) => {
      const bytes = new Uint8Array(row.buffer, row.byteOffset, row.byteLength);
      let bin = '';
      for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
      return btoa(bin);
    };
    for (const p of prompts) {
      let streamed = '';
      const rows = [];
      const r = await model.generateIds(p.prompt_ids, { maxNewTokens: maxNew, onToken: (t) => { streamed += t; }, onLogits: (row) => rows.push(base64(row)) });
      runs.push({ tokens: r.tokens, text: r.text, streamed, finish: r.finish, onceMs: r.onceMs, stepsMs: r.stepsMs, logits: rows });
    }
    const fromText = (await model.generate(prompts[0].text, { maxNewTokens: 3 })).tokens;
    const sampling = { maxNewTokens: 3, temperature: 0.8, topK: 20, topP: 0.95, seed: 7, stop: [] };
    const sampled = [(await model.generateIds(prompts[0].prompt_ids, sampling)).tokens, (await model.generateIds(prompts[0].prompt_ids, sampling)).tokens];
    // chat(): the conversation's ids as the oracle's, and an answer begins.
    let chat = null;
    if (chatCase) {
      const ids = model.encodeChat(chatCase.messages);
      const r = await model.chat(chatCase.messages, { maxNewTokens: 2, stop: [] });
      chat = { ids, tokens: r.tokens };
    }
    const controller = new AbortController();
    controller.abort();
    const aborted = await model.generateIds(prompts[0].prompt_ids, { signal: controller.signal });
    model.destroy();
    return { runs, fromText, sampled, chat, aborted: { finish: aborted.finish, tokens: aborted.tokens.length }, adapter: `${adapter.info?.vendor ?? ''} ${adapter.info?.architecture ?? ''}` };
  }, { prompts: prompts.map((p) => ({ text: p.text, prompt_ids: p.prompt_ids })), maxNew: record.max_new_tokens, chatCase: chatDoc?.cases.find((c) => c.add_generation_prompt) ?? null });
  console.log(`browser WebGPU adapter: ${result.adapter}`);
  result.runs.forEach((r, k) => {
    const verdict = same(r.tokens, prompts[k].tokens) ? 'identical to ONNX Runtime' : 'not ONNX Runtime\'s (judged below)';
    console.log(`prompt ${k}: ${r.tokens.length} tokens ${JSON.stringify(r.text)} (${r.finish}; once ${r.onceMs.toFixed(0)} ms, steps ${r.stepsMs.toFixed(0)} ms): ${verdict}`);
    if (r.streamed !== r.text) {
      failed++;
      console.log(`  streamed ${JSON.stringify(r.streamed)} is not the result's text`);
    }
  });
  fs.mkdirSync(path.join(pkgDir, 'build-tests'), { recursive: true });
  // Each run's rows as raw little-endian f32, one file per prompt.
  result.runs.forEach((r, k) => fs.writeFileSync(path.join(pkgDir, 'build-tests', `pipeline-logits-${k}.f32`), Buffer.concat(r.logits.map((b) => Buffer.from(b, 'base64')))));
  fs.writeFileSync(path.join(pkgDir, 'build-tests', 'pipeline-runs.json'), JSON.stringify(result.runs.map((r, k) => ({ tokens: r.tokens, logits: `pipeline-logits-${k}.f32` }))));
  const textOk = same(result.fromText, result.runs[0].tokens.slice(0, 3));
  console.log(`generate(text) encodes in the browser and, picking greedy tokens on the GPU (no logits row read back), gives the same first tokens: ${textOk ? 'yes' : 'NO'} (${JSON.stringify(result.fromText)})`);
  if (!textOk) failed++;
  const sampledOk = result.sampled[0].length === 3 && same(result.sampled[0], result.sampled[1]);
  console.log(`sampled (top-k 20, T 0.8, top-p 0.95, seed 7): ${JSON.stringify(result.sampled[0])} then ${JSON.stringify(result.sampled[1])}: ${sampledOk ? 'same' : 'DIFFER'}`);
  if (!sampledOk) failed++;
  if (chatDoc) {
    const want = chatDoc.cases.find((c) => c.add_generation_prompt).ids;
    const chatOk = result.chat && same(result.chat.ids, want) && result.chat.tokens.length === 2;
    console.log(`chat(): the conversation's ids ${chatOk ? 'are' : 'are NOT'} the crate's; answer ${JSON.stringify(result.chat?.tokens)}`);
    if (!chatOk) failed++;
  }
  const abortOk = result.aborted.finish === 'abort' && result.aborted.tokens === 0;
  console.log(`an aborted signal: ${JSON.stringify(result.aborted)}`);
  if (!abortOk) failed++;

  // (3) The demo page.
  if (shot) {
    const { status, text } = await driveDemo(browser, origin, shot, '#run', '#output');
    console.log(`demo page: ${JSON.stringify(text)} [${status}]`);
    if (!status.startsWith('done')) failed++;
  }
} finally {
  await browser.close();
  server.close();
}
console.log(failed === 0 ? '\npipeline package: all checks passed' : `\npipeline package: ${failed} check(s) failed`);
if (failed > 0) process.exit(1);
