// A Hugging Face tokenizer.json as a pipeline package reads it: Unigram models (T5, mT5,
// ALBERT) through unigram.ts, byte-level BPE (SmolLM2, Qwen 2) through tokenizer.ts. Each
// gives the `tokenizers` crate's ids for the pipeline its file describes; what neither
// implements is refused when the tokenizer loads, never approximated.

import { BpeTokenizer } from './tokenizer.js';
import { UnigramTokenizer } from './unigram.js';
import type { UnigramData } from './unigram.js';

/** Text to ids as the model's tokenizer.json gives them (its post-processor's special
 * tokens included unless `addSpecial` is false, as for a rendered chat), and back (special
 * tokens skipped, as `decode(ids, true)`). */
export interface TextTokenizer {
  encode(text: string, addSpecial?: boolean): number[];
  decode(ids: number[]): string;
  isSpecial(id: number): boolean;
}

/* eslint-disable @typescript-eslint/no-explicit-any */
type Json = any;

/** The byte-level BPE pre-tokenizers tokenizer.ts implements, by their tokenizer.json form. */
function bpePre(pre: Json): 'smollm' | 'qwen2' {
  const steps: Json[] = pre?.type === 'Sequence' ? pre.pretokenizers : pre ? [pre] : [];
  const kinds = steps.map((s) => s.type).join(',');
  // Digits(individual) then ByteLevel with the GPT-2 regex: SmolLM2, StarCoder.
  if (kinds === 'Digits,ByteLevel' && steps[0].individual_digits === true && steps[1].use_regex !== false && steps[1].add_prefix_space !== true) return 'smollm';
  // Qwen 2's Split regex, isolated, then ByteLevel without one.
  if (kinds === 'Split,ByteLevel' && steps[0].behavior === 'Isolated' && steps[1].use_regex === false && String(steps[0].pattern?.Regex ?? '').startsWith("(?i:'s|'t|'re|'ve|'m|'ll|'d)")) return 'qwen2';
  throw new Error(`tokenizer.json: byte-level BPE with the pre-tokenizer ${JSON.stringify(pre)} is not implemented by this package (it implements SmolLM2's Digits + ByteLevel and Qwen 2's Split + ByteLevel)`);
}

/** The post-processor's special tokens before and after the text (TemplateProcessing). */
function template(post: Json, ids: Map<string, number>): [number[], number[]] {
  const before: number[] = [];
  const after: number[] = [];
  if (!post || post.type === 'ByteLevel') return [before, after];
  if (post.type !== 'TemplateProcessing') throw new Error(`tokenizer.json: post-processor ${post.type} is not implemented by this package`);
  let seen = false;
  for (const item of post.single ?? []) {
    if (item.Sequence) seen = true;
    else if (item.SpecialToken) {
      const id = ids.get(item.SpecialToken.id);
      if (id === undefined) throw new Error(`tokenizer.json: the post-processor's token ${item.SpecialToken.id} is not in the vocabulary`);
      (seen ? after : before).push(id);
    }
  }
  return [before, after];
}

function bpe(json: Json): TextTokenizer {
  const m = json.model;
  if (json.normalizer) throw new Error(`tokenizer.json: a normalizer (${json.normalizer.type}) before byte-level BPE is not implemented by this package`);
  for (const k of ['continuing_subword_prefix', 'end_of_word_suffix', 'dropout']) if (m[k]) throw new Error(`tokenizer.json: BPE with ${k} is not implemented by this package`);
  if (m.byte_fallback || m.ignore_merges) throw new Error('tokenizer.json: BPE with byte_fallback or ignore_merges is not implemented by this package');
  const ids = new Map<string, number>(Object.entries(m.vocab as Record<string, number>));
  const added: Json[] = json.added_tokens ?? [];
  for (const t of added) ids.set(t.content, t.id);
  const size = Math.max(...ids.values()) + 1;
  const tokens: string[] = new Array(size).fill('');
  for (const [t, i] of ids) tokens[i] = t;
  // Added tokens are matched in the raw text first (tokenizer.ts: control tokens).
  const types: number[] = new Array(size).fill(1);
  for (const t of added) types[t.id] = 3;
  const merges: string[] = (m.merges as (string | [string, string])[]).map((x) => (typeof x === 'string' ? x : `${x[0]} ${x[1]}`));
  const inner = new BpeTokenizer({ model: 'gpt2', pre: bpePre(json.pre_tokenizer), tokens, merges, types });
  const special = new Set<number>(added.filter((t) => t.special).map((t) => t.id));
  const [before, after] = template(json.post_processor, ids);
  return {
    encode: (text, addSpecial = true) => (addSpecial ? [...before, ...inner.encode(text), ...after] : inner.encode(text)),
    decode: (list) => inner.decode(list.filter((i) => !special.has(i))),
    isSpecial: (id) => special.has(id),
  };
}

function unigram(json: Json): TextTokenizer {
  const inner = new UnigramTokenizer(json as UnigramData);
  const special = new Set<number>((json.added_tokens ?? []).filter((t: Json) => t.special).map((t: Json) => t.id));
  return {
    encode: (text, addSpecial = true) => inner.encode(text, addSpecial),
    decode: (ids) => inner.decode(ids, true),
    isSpecial: (id) => special.has(id),
  };
}

/** The tokenizer a tokenizer.json describes. */
export function fromTokenizerJson(json: Json): TextTokenizer {
  const kind = json?.model?.type;
  if (kind === 'Unigram') return unigram(json);
  if (kind === 'BPE') return bpe(json);
  throw new Error(`tokenizer.json: model ${JSON.stringify(kind)}: this package implements Unigram and byte-level BPE`);
}
