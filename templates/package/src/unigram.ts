// Unigram tokenizer (SentencePiece's unigram model as a Hugging Face tokenizer.json: T5, mT5,
// ALBERT...), written to give exactly the ids of the `tokenizers` crate for the pipeline it
// describes:
//   added tokens: special tokens (`added_tokens`, not normalized) are matched first in the raw
//                 text, leftmost-longest, and emitted as their ids; only the text between them
//                 goes on;
//   normalizer:   SentencePiece's precompiled charsmap (a double-array trie over UTF-8 bytes
//                 to replacement strings: NFKC and friends), applied per grapheme cluster when
//                 the cluster is shorter than 6 bytes and has an entry, else per character;
//                 then any Replace rules (T5: runs of spaces to one);
//   pre-tokenizer: Metaspace: spaces become U+2581, a segment gets one in front ("always", or
//                 "first" for the text's first segment only), words split before each U+2581;
//   model:        Viterbi over the pieces' log probabilities, the best path ending at each byte;
//                 a character no piece starts with is the unknown token (score: the lowest
//                 piece score - 10), consecutive unknowns fused into one;
//   post-processor: the template's special tokens after the text (T5: </s>);
//   decoder:      Metaspace (U+2581 to spaces, the first one dropped).
// Grapheme clusters come from Intl.Segmenter, the crate's from unicode-segmentation: the two
// follow their own Unicode versions (characters assigned in between could differ).

export interface UnigramData {
  model: { type: 'Unigram'; vocab: [string, number][]; unk_id: number | null; byte_fallback?: boolean };
  normalizer: NormalizerSpec | null;
  pre_tokenizer: { type: string; replacement?: string; prepend_scheme?: string; split?: boolean } | null;
  post_processor: { type: string; single?: ({ SpecialToken?: { id: string } } | { Sequence?: unknown })[] } | null;
  added_tokens: { id: number; content: string; special: boolean; normalized: boolean }[];
}

type NormalizerSpec =
  | { type: 'Sequence'; normalizers: NormalizerSpec[] }
  | { type: 'Precompiled'; precompiled_charsmap: string }
  | { type: 'Replace'; pattern: { Regex?: string; String?: string }; content: string }
  | { type: string };

const utf8 = new TextEncoder();
const SPACE = '\u2581';
const UNK_PENALTY = 10;

/** SentencePiece's precompiled normalization map (spm_precompiled's reading of it). */
class Precompiled {
  private readonly trie: Uint32Array;
  private readonly normalized: Uint8Array;
  private readonly decoder = new TextDecoder();
  private readonly graphemes = new Intl.Segmenter('und', { granularity: 'grapheme' });

  constructor(base64: string) {
    const bin = atob(base64);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    const view = new DataView(bytes.buffer);
    const trieBytes = view.getUint32(0, true);
    this.trie = new Uint32Array(trieBytes / 4);
    for (let i = 0; i < this.trie.length; i++) this.trie[i] = view.getUint32(4 + 4 * i, true);
    this.normalized = bytes.subarray(4 + trieBytes);
  }

  /** The replacement of the shortest key that prefixes `chunk`, as spm_precompiled takes it. */
  private transform(chunk: Uint8Array): string | null {
    const t = this.trie;
    const offset = (u: number) => (u >>> 10) << ((u & (1 << 9)) >>> 6);
    let pos = 0;
    pos ^= offset(t[pos]);
    for (const c of chunk) {
      if (c === 0) break;
      pos ^= c;
      const unit = t[pos];
      if (unit === undefined || (unit & 0x800000ff) >>> 0 !== c) return null;
      pos ^= offset(unit);
      if ((unit >>> 8) & 1) {
        const at = t[pos] & 0x7fffffff;
        let end = at;
        while (end < this.normalized.length && this.normalized[end] !== 0) end++;
        return this.decoder.decode(this.normalized.subarray(at, end));
      }
    }
    return null;
  }

  normalize(text: string): string {
    let out = '';
    for (const { segment } of this.graphemes.segment(text)) {
      const bytes = utf8.encode(segment);
      if (bytes.length < 6) {
        const whole = this.transform(bytes);
        if (whole !== null) {
          out += whole;
          continue;
        }
      }
      for (const ch of segment) {
        const norm = this.transform(utf8.encode(ch));
        out += norm ?? ch;
      }
    }
    return out;
  }
}

function normalizer(spec: NormalizerSpec | null): (s: string) => string {
  if (!spec) return (s) => s;
  switch (spec.type) {
    case 'Sequence': {
      const all = (spec as { normalizers: NormalizerSpec[] }).normalizers.map(normalizer);
      return (s) => all.reduce((acc, f) => f(acc), s);
    }
    case 'Precompiled': {
      const charsmap = (spec as { precompiled_charsmap: string }).precompiled_charsmap;
      if (!charsmap) return (s) => s;
      const p = new Precompiled(charsmap);
      return (s) => p.normalize(s);
    }
    case 'Replace': {
      const r = spec as { pattern: { Regex?: string; String?: string }; content: string };
      const re = r.pattern.Regex !== undefined ? new RegExp(r.pattern.Regex, 'gu') : new RegExp(escapeRe(r.pattern.String ?? ''), 'gu');
      return (s) => s.replace(re, r.content);
    }
  }
  throw new Error(`tokenizer.json normalizer ${spec.type} is not supported by this package`);
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/** A byte trie of the vocabulary's pieces for common-prefix search. */
class ByteTrie {
  private readonly next: Map<number, number>[] = [new Map()];
  private readonly ids: number[] = [-1];

  insert(bytes: Uint8Array, id: number): void {
    let node = 0;
    for (const b of bytes) {
      let child = this.next[node].get(b);
      if (child === undefined) {
        child = this.next.length;
        this.next.push(new Map());
        this.ids.push(-1);
        this.next[node].set(b, child);
      }
      node = child;
    }
    if (this.ids[node] < 0) this.ids[node] = id;
  }

  /** (end, id) of every piece that starts at `from`, shortest first. */
  *prefixes(bytes: Uint8Array, from: number): Generator<[number, number]> {
    let node = 0;
    for (let i = from; i < bytes.length; i++) {
      const child = this.next[node].get(bytes[i]);
      if (child === undefined) return;
      node = child;
      if (this.ids[node] >= 0) yield [i + 1, this.ids[node]];
    }
  }
}

export class UnigramTokenizer {
  private readonly pieces: string[];
  private readonly scores: number[];
  private readonly trie = new ByteTrie();
  private readonly unk: number;
  private readonly unkScore: number;
  private readonly normalize: (s: string) => string;
  private readonly prepend: 'always' | 'first' | 'never';
  private readonly special: RegExp | null;
  private readonly specialIds = new Map<string, number>();
  private readonly specialSet = new Set<number>();
  private readonly suffix: number[] = [];
  private readonly decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

  constructor(data: UnigramData) {
    if (data.model.type !== 'Unigram') throw new Error(`tokenizer model ${data.model.type} is not Unigram`);
    if (data.model.byte_fallback) throw new Error('Unigram with byte fallback is not supported by this package');
    this.pieces = data.model.vocab.map(([p]) => p);
    this.scores = data.model.vocab.map(([, s]) => s);
    this.pieces.forEach((p, id) => this.trie.insert(utf8.encode(p), id));
    this.unk = data.model.unk_id ?? -1;
    this.unkScore = Math.min(...this.scores) - UNK_PENALTY;
    this.normalize = normalizer(data.normalizer);
    const pre = data.pre_tokenizer;
    if (pre && pre.type !== 'Metaspace') throw new Error(`pre-tokenizer ${pre.type} is not supported with Unigram by this package`);
    this.prepend = (pre?.prepend_scheme as 'always' | 'first' | 'never' | undefined) ?? 'always';
    const specials: string[] = [];
    for (const t of data.added_tokens) {
      this.specialSet.add(t.id);
      if (t.content.length > 0 && !this.specialIds.has(t.content)) {
        this.specialIds.set(t.content, t.id);
        specials.push(t.content);
      }
    }
    specials.sort((x, y) => y.length - x.length);
    this.special = specials.length ? new RegExp(specials.map(escapeRe).join('|'), 'g') : null;
    for (const item of data.post_processor?.single ?? []) {
      const s = (item as { SpecialToken?: { id: string } }).SpecialToken;
      if (s) {
        const id = this.specialIds.get(s.id) ?? this.pieces.indexOf(s.id);
        if (id >= 0) this.suffix.push(id);
      }
    }
  }

  /** Ids of `text`, with the post-processor's special tokens when `addSpecial` (default). */
  encode(text: string, addSpecial = true): number[] {
    const ids: number[] = [];
    let last = 0;
    let first = true;
    const segment = (s: string) => {
      this.encodeSegment(s, first, ids);
      first = false;
    };
    if (this.special) {
      for (const m of text.matchAll(this.special)) {
        const at = m.index ?? 0;
        if (at > last) segment(text.slice(last, at));
        ids.push(this.specialIds.get(m[0]) as number);
        first = false;
        last = at + m[0].length;
      }
    }
    if (last < text.length) segment(text.slice(last));
    return addSpecial ? [...ids, ...this.suffix] : ids;
  }

  private encodeSegment(text: string, first: boolean, ids: number[]): void {
    let s = this.normalize(text);
    if (s.length === 0) return;
    s = s.replaceAll(' ', SPACE);
    if ((this.prepend === 'always' || (this.prepend === 'first' && first)) && !s.startsWith(SPACE)) s = SPACE + s;
    // Words start at each U+2581 (MergedWithNext).
    const words = s.split(new RegExp(`(?=${SPACE})`, 'u')).filter((w) => w.length > 0);
    for (const w of words) this.viterbi(w, ids);
  }

  private viterbi(word: string, ids: number[]): void {
    const bytes = utf8.encode(word);
    const n = bytes.length;
    const score = new Float64Array(n + 1);
    const from = new Int32Array(n + 1).fill(-1);
    const id = new Int32Array(n + 1);
    let at = 0;
    while (at < n) {
      const lead = bytes[at];
      const mblen = lead < 0x80 ? 1 : lead < 0xe0 ? 2 : lead < 0xf0 ? 3 : 4;
      const here = score[at];
      let single = false;
      for (const [end, tok] of this.trie.prefixes(bytes, at)) {
        const cand = this.scores[tok] + here;
        if (from[end] < 0 || cand > score[end]) {
          score[end] = cand;
          from[end] = at;
          id[end] = tok;
        }
        if (end - at === mblen) single = true;
      }
      if (!single) {
        const end = at + mblen;
        const cand = this.unkScore + here;
        if (from[end] < 0 || cand > score[end]) {
          score[end] = cand;
          from[end] = at;
          id[end] = this.unk;
        }
      }
      at += mblen;
    }
    const out: number[] = [];
    let unkRun = false;
    for (let end = n; end > 0; end = from[end]) {
      const tok = id[end];
      // Consecutive unknowns fuse into one (the fused text is no piece: the unknown id).
      if (tok === this.unk) {
        if (!unkRun) out.push(this.unk);
        unkRun = true;
      } else {
        out.push(tok);
        unkRun = false;
      }
    }
    for (let i = out.length - 1; i >= 0; i--) ids.push(out[i]);
  }

  decode(ids: number[], skipSpecial = false): string {
    let text = '';
    for (const i of ids) {
      if (!Number.isInteger(i) || i < 0 || i >= this.pieces.length) continue;
      if (skipSpecial && this.specialSet.has(i)) continue;
      text += this.pieces[i];
    }
    text = text.replaceAll(SPACE, ' ');
    return this.prepend !== 'never' && text.startsWith(' ') ? text.slice(1) : text;
  }

  /** Bytes of one token (for streaming text that splits a UTF-8 character across tokens). */
  tokenBytes(i: number): Uint8Array {
    return utf8.encode((this.pieces[i] ?? '').replaceAll(SPACE, ' '));
  }
}
