// Byte-level BPE tokenizer (GPT-2 style, as in SmolLM2 GGUF files), written to give exactly the
// ids of the HuggingFace `tokenizers` crate configured as:
//   added tokens: every control token (type 3) is matched first in the raw text, leftmost-longest,
//                 and emitted as its id; only the text between them is pre-tokenized;
//   pre-tokenizer: Sequence[Digits(individual_digits), ByteLevel(add_prefix_space=false, use_regex)];
//   model: BPE, merge rank = order in the merges list, no dropout, no unk;
//   decoder: ByteLevel (lossy UTF-8).
//
// Subtle points:
// - The Rust crate runs the GPT-2 regex with Oniguruma, whose \s is the Unicode White_Space
//   property. JavaScript's \s (even with the 'u' flag) is a different set: it adds U+FEFF and
//   lacks U+0085 (NEL). So the pattern spells whitespace as \p{White_Space}; \p{L} and \p{N} with
//   the 'u' flag are the Unicode general categories, as in Oniguruma and Rust's char::is_numeric
//   (Nd/Nl/No). (Both sides follow their own Unicode version; characters assigned between those
//   versions could still differ.)
// - Digits(individual_digits) followed by ByteLevel's regex is folded into one regex: every
//   numeric char is a piece of its own, and the whitespace lookahead \s+(?!\S) becomes
//   \s+(?![^\s\p{N}]), because inside a digit-free piece "end of piece" is what a following digit
//   looks like from the whole text. Nothing else in the pattern can cross a digit.
// - Merges are applied one at a time, always the lowest-ranked pair, leftmost on ties (the crate's
//   priority-queue order), not "all occurrences of the best pair per pass" as in the Python GPT-2
//   code; the two only differ for unusual merge tables, but this is the crate's order.
// - TextDecoder strips a leading byte-order mark unless told not to (ignoreBOM), which Rust's
//   from_utf8_lossy does not do; decode keeps it.

export interface TokenizerData {
  /** `tokenizer.ggml.model`: "gpt2" (byte-level BPE, the default) or "llama" (SentencePiece). */
  model?: string;
  /** `tokenizer.ggml.pre`: the byte-level BPE's pre-tokenizer ("smollm" by default, "qwen2"). */
  pre?: string;
  tokens: string[];
  merges: string[];
  types: number[];
  /** SentencePiece: piece scores, the unknown token, whether a text starts with a space. */
  scores?: number[];
  unk?: number | null;
  addSpacePrefix?: boolean;
}

/** What the package needs of a tokenizer, whichever kind the model has. */
export interface Tokenizer {
  encode(text: string): number[];
  decode(ids: number[]): string;
  tokenBytes(id: number): Uint8Array;
}

/** The tokenizer the model's data names. */
export function createTokenizer(data: TokenizerData): Tokenizer {
  if ((data.model ?? 'gpt2') === 'llama') return new SpmTokenizer(data);
  return new BpeTokenizer(data);
}

const CONTROL = 3;

// Qwen 2's pre-tokenizer (tokenizer.ggml.pre = "qwen2"): its tokenizer.json's Split regex,
// Isolated, then ByteLevel without a regex. The case-insensitive contractions (?i:'s|...) are
// spelled with character classes; \s and \S as \p{White_Space}, as above.
const QWEN2_RE =
  /'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\p{White_Space}\p{L}\p{N}]+[\r\n]*|\p{White_Space}*[\r\n]+|\p{White_Space}+(?!\P{White_Space})|\p{White_Space}+/gu;

// Pre-tokenizer: Digits(individual_digits=true) + the GPT-2 ByteLevel regex, in one pattern.
const PIECE_RE =
  /\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\p{White_Space}\p{L}\p{N}]+|\p{White_Space}+(?![^\p{White_Space}\p{N}])|\p{White_Space}+/gu;

/** GPT-2 bytes_to_unicode: byte -> printable char. */
function byteChars(): string[] {
  const out: string[] = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    out[b] = String.fromCharCode(printable ? b : 256 + n++);
  }
  return out;
}

const utf8 = new TextEncoder();

export class BpeTokenizer {
  private readonly tokens: string[];
  private readonly types: number[];
  /** Id of the one-byte token for each byte, or -1 (then the byte is dropped, as without unk). */
  private readonly byteIds = new Int32Array(256);
  /** (left id) * vocab + (right id) -> merge rank; mergedIds[rank] is the resulting id. */
  private readonly ranks = new Map<number, number>();
  private readonly mergedIds: number[] = [];
  private readonly charToByte = new Map<string, number>();
  private readonly special: RegExp | null;
  private readonly specialIds = new Map<string, number>();
  private readonly cache = new Map<string, number[]>();
  private readonly pieces: RegExp;
  private readonly bytesCache: (Uint8Array | undefined)[];
  private readonly decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

  constructor(data: TokenizerData) {
    this.tokens = data.tokens;
    this.types = data.types;
    this.pieces = data.pre === 'qwen2' ? QWEN2_RE : PIECE_RE;
    this.bytesCache = new Array(data.tokens.length);
    const vocab = new Map<string, number>();
    data.tokens.forEach((t, i) => vocab.set(t, i));

    const chars = byteChars();
    for (let b = 0; b < 256; b++) {
      this.byteIds[b] = vocab.get(chars[b]) ?? -1;
      this.charToByte.set(chars[b], b);
    }

    const n = data.tokens.length;
    data.merges.forEach((m) => {
      const sp = m.indexOf(' ');
      if (sp < 0) return;
      const a = vocab.get(m.slice(0, sp));
      const b = vocab.get(m.slice(sp + 1));
      const ab = vocab.get(m.slice(0, sp) + m.slice(sp + 1));
      if (a === undefined || b === undefined || ab === undefined) return;
      // Later duplicates win, as when the crate builds its merge map.
      this.ranks.set(a * n + b, this.mergedIds.length);
      this.mergedIds.push(ab);
    });

    const specials: string[] = [];
    data.tokens.forEach((t, i) => {
      if (data.types[i] === CONTROL && t.length > 0 && !this.specialIds.has(t)) {
        this.specialIds.set(t, i);
        specials.push(t);
      }
    });
    // Alternation is leftmost-first; longest alternatives first makes it leftmost-longest.
    specials.sort((x, y) => y.length - x.length);
    this.special = specials.length
      ? new RegExp(specials.map((s) => s.replace(/[.*+?^${}()|[\]\\\/]/g, '\\$&')).join('|'), 'g')
      : null;
  }

  encode(text: string): number[] {
    const ids: number[] = [];
    if (!this.special) {
      this.encodeText(text, ids);
      return ids;
    }
    let last = 0;
    for (const m of text.matchAll(this.special)) {
      const at = m.index ?? 0;
      if (at > last) this.encodeText(text.slice(last, at), ids);
      ids.push(this.specialIds.get(m[0]) as number);
      last = at + m[0].length;
    }
    if (last < text.length) this.encodeText(text.slice(last), ids);
    return ids;
  }

  decode(ids: number[]): string {
    const parts: Uint8Array[] = [];
    let len = 0;
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.tokens.length) continue; // unknown ids are skipped
      const b = this.tokenBytes(id);
      parts.push(b);
      len += b.length;
    }
    const all = new Uint8Array(len);
    let o = 0;
    for (const p of parts) {
      all.set(p, o);
      o += p.length;
    }
    return this.decoder.decode(all);
  }

  /** Bytes of one token (for streaming text that splits a UTF-8 character across tokens). */
  tokenBytes(id: number): Uint8Array {
    const hit = this.bytesCache[id];
    if (hit) return hit;
    const tok = this.tokens[id];
    if (tok === undefined) return new Uint8Array(0);
    let out: Uint8Array;
    if (this.types[id] === CONTROL) {
      out = utf8.encode(tok);
    } else {
      // ByteLevel decoder: map each char back to its byte; a token with any char outside the
      // byte alphabet is written as its own UTF-8 text instead.
      const bytes: number[] = [];
      let ok = true;
      for (const c of tok) {
        const b = this.charToByte.get(c);
        if (b === undefined) {
          ok = false;
          break;
        }
        bytes.push(b);
      }
      out = ok ? Uint8Array.from(bytes) : utf8.encode(tok);
    }
    this.bytesCache[id] = out;
    return out;
  }

  private encodeText(text: string, ids: number[]): void {
    for (const m of text.matchAll(this.pieces)) {
      const piece = m[0];
      let word = this.cache.get(piece);
      if (word === undefined) {
        word = this.bpe(piece);
        if (piece.length <= 256) {
          if (this.cache.size >= 65536) this.cache.clear();
          this.cache.set(piece, word);
        }
      }
      for (const id of word) ids.push(id);
    }
  }

  /** BPE of one pre-tokenized piece: UTF-8 bytes, one-byte tokens, then merges by rank. */
  private bpe(piece: string): number[] {
    const bytes = utf8.encode(piece);
    const sym: number[] = [];
    for (const b of bytes) {
      const id = this.byteIds[b];
      if (id >= 0) sym.push(id);
    }
    const len = sym.length;
    if (len < 2) return sym;
    const n = this.tokens.length;

    // Doubly linked symbols; a binary min-heap of candidate pairs keyed (rank, left position).
    const prev = new Int32Array(len);
    const next = new Int32Array(len);
    const alive = new Uint8Array(len).fill(1);
    for (let i = 0; i < len; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < len ? i + 1 : -1;
    }
    const hr: number[] = [];
    const hp: number[] = [];
    const less = (i: number, j: number) => hr[i] < hr[j] || (hr[i] === hr[j] && hp[i] < hp[j]);
    const swap = (i: number, j: number) => {
      const r = hr[i], p = hp[i];
      hr[i] = hr[j]; hp[i] = hp[j];
      hr[j] = r; hp[j] = p;
    };
    const push = (rank: number, pos: number) => {
      let i = hr.length;
      hr.push(rank);
      hp.push(pos);
      while (i > 0) {
        const parent = (i - 1) >> 1;
        if (!less(i, parent)) break;
        swap(i, parent);
        i = parent;
      }
    };
    const pop = () => {
      const last = hr.length - 1;
      swap(0, last);
      hr.pop();
      hp.pop();
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < hr.length && less(l, m)) m = l;
        if (r < hr.length && less(r, m)) m = r;
        if (m === i) break;
        swap(i, m);
        i = m;
      }
    };
    const pairRank = (a: number, b: number) => this.ranks.get(sym[a] * n + sym[b]);

    for (let i = 0; i + 1 < len; i++) {
      const r = pairRank(i, i + 1);
      if (r !== undefined) push(r, i);
    }
    while (hr.length > 0) {
      const rank = hr[0], pos = hp[0];
      pop();
      // Skip stale entries: the left symbol was absorbed or the pair has changed since.
      if (!alive[pos]) continue;
      const right = next[pos];
      if (right < 0 || pairRank(pos, right) !== rank) continue;
      sym[pos] = this.mergedIds[rank];
      alive[right] = 0;
      const after = next[right];
      next[pos] = after;
      if (after >= 0) prev[after] = pos;
      const before = prev[pos];
      if (before >= 0) {
        const r = pairRank(before, pos);
        if (r !== undefined) push(r, before);
      }
      if (after >= 0) {
        const r = pairRank(pos, after);
        if (r !== undefined) push(r, pos);
      }
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]) out.push(sym[i]);
    return out;
  }
}

const NORMAL = 1;
const USER_DEFINED = 4;
const UNUSED = 5;
const BYTE = 6;
const SPACE = '\u2581';

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\\/]/g, '\\$&');
}

// SentencePiece-style tokenizer (tokenizer.ggml.model = "llama": Llama 2, Gemma), written to
// give exactly the ids of m2w's Rust reference (crates/reference/src/spm.rs), which is checked
// against SentencePiece itself:
//   control tokens (type 3) in the text are tokens, leftmost-longest; the text between them is
//   encoded on its own: spaces become U+2581 (and a text starts with one if addSpacePrefix),
//   user-defined pieces (type 4) are taken whole (longest first), the rest starts as single
//   code points; adjacent symbols merge while their concatenation is a normal, user-defined or
//   unused piece, best score first, leftmost on ties; what is no piece falls back to its UTF-8
//   bytes (<0xAB> pieces), else to the unknown token.
export class SpmTokenizer {
  private readonly tokens: string[];
  private readonly types: number[];
  private readonly mergeable = new Map<string, { id: number; score: number }>();
  private readonly userDefined: string[] = [];
  private readonly byteIds = new Int32Array(256).fill(-1);
  private readonly unk: number;
  private readonly addSpacePrefix: boolean;
  private readonly special: RegExp | null;
  private readonly specialIds = new Map<string, number>();
  private readonly decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

  constructor(data: TokenizerData) {
    this.tokens = data.tokens;
    this.types = data.types;
    this.unk = data.unk ?? -1;
    this.addSpacePrefix = data.addSpacePrefix ?? true;
    const scores = data.scores ?? [];
    const specials: string[] = [];
    data.tokens.forEach((t, i) => {
      const ty = data.types[i] ?? NORMAL;
      if (ty === CONTROL) {
        if (t.length > 0 && !this.specialIds.has(t)) {
          this.specialIds.set(t, i);
          specials.push(t);
        }
      } else if (ty === BYTE) {
        const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(t);
        if (m) this.byteIds[parseInt(m[1], 16)] = i;
      } else {
        if (ty === USER_DEFINED && t.length > 0) this.userDefined.push(t);
        if ((ty === NORMAL || ty === USER_DEFINED || ty === UNUSED) && !this.mergeable.has(t)) {
          this.mergeable.set(t, { id: i, score: scores[i] ?? 0 });
        }
      }
    });
    this.userDefined.sort((a, b) => utf8.encode(b).length - utf8.encode(a).length);
    specials.sort((x, y) => y.length - x.length);
    this.special = specials.length ? new RegExp(specials.map(escapeRe).join('|'), 'g') : null;
  }

  encode(text: string): number[] {
    const ids: number[] = [];
    let last = 0;
    let first = true;
    if (this.special) {
      for (const m of text.matchAll(this.special)) {
        const at = m.index ?? 0;
        if (at > last) this.encodeSegment(text.slice(last, at), first, ids);
        ids.push(this.specialIds.get(m[0]) as number);
        first = false;
        last = at + m[0].length;
      }
    }
    if (last < text.length) this.encodeSegment(text.slice(last), first, ids);
    return ids;
  }

  private encodeSegment(text: string, first: boolean, ids: number[]): void {
    const normalized = (this.addSpacePrefix && first ? SPACE : '') + text.replaceAll(' ', SPACE);
    const sym: string[] = [];
    for (let at = 0; at < normalized.length; ) {
      const tail = normalized.slice(at);
      const user = this.userDefined.find((u) => tail.startsWith(u));
      const piece = user ?? String.fromCodePoint(tail.codePointAt(0) as number);
      sym.push(piece);
      at += piece.length;
    }
    const n = sym.length;
    const next = Int32Array.from({ length: n }, (_, i) => i + 1);
    const prev = Int32Array.from({ length: n }, (_, i) => i - 1);
    // Max-heap of candidate merges keyed (score desc, left asc); `len` spots stale entries.
    type Cand = { score: number; left: number; len: number };
    const heap: Cand[] = [];
    const better = (a: Cand, b: Cand) => a.score > b.score || (a.score === b.score && a.left < b.left);
    const push = (c: Cand) => {
      heap.push(c);
      for (let i = heap.length - 1; i > 0; ) {
        const p = (i - 1) >> 1;
        if (!better(heap[i], heap[p])) break;
        [heap[i], heap[p]] = [heap[p], heap[i]];
        i = p;
      }
    };
    const pop = (): Cand => {
      const top = heap[0];
      const end = heap.pop() as Cand;
      if (heap.length > 0) {
        heap[0] = end;
        for (let i = 0; ; ) {
          const l = 2 * i + 1;
          const r = l + 1;
          let m = i;
          if (l < heap.length && better(heap[l], heap[m])) m = l;
          if (r < heap.length && better(heap[r], heap[m])) m = r;
          if (m === i) break;
          [heap[i], heap[m]] = [heap[m], heap[i]];
          i = m;
        }
      }
      return top;
    };
    const candidate = (l: number, r: number) => {
      const joined = sym[l] + sym[r];
      const hit = this.mergeable.get(joined);
      if (hit) push({ score: hit.score, left: l, len: joined.length });
    };
    for (let i = 0; i + 1 < n; i++) candidate(i, i + 1);
    while (heap.length > 0) {
      const c = pop();
      const l = c.left;
      const r = next[l];
      if (sym[l].length === 0 || r >= n || sym[l].length + sym[r].length !== c.len) continue;
      sym[l] += sym[r];
      sym[r] = '';
      next[l] = next[r];
      if (next[l] < n) prev[next[l]] = l;
      if (prev[l] >= 0) candidate(prev[l], l);
      if (next[l] < n) candidate(l, next[l]);
    }
    for (let i = 0; i < n; i = next[i]) {
      const hit = this.mergeable.get(sym[i]);
      if (hit) {
        ids.push(hit.id);
        continue;
      }
      for (const b of utf8.encode(sym[i])) {
        if (this.byteIds[b] >= 0) ids.push(this.byteIds[b]);
        else {
          if (this.unk >= 0) ids.push(this.unk);
          break;
        }
      }
    }
  }

  decode(ids: number[]): string {
    const parts: number[] = [];
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.tokens.length) continue;
      for (const b of this.tokenBytes(id)) parts.push(b);
    }
    const text = this.decoder.decode(Uint8Array.from(parts));
    return this.addSpacePrefix && text.startsWith(' ') ? text.slice(1) : text;
  }

  /** Bytes of one token (for streaming text that splits a UTF-8 character across tokens). */
  tokenBytes(id: number): Uint8Array {
    const tok = this.tokens[id];
    if (tok === undefined) return new Uint8Array(0);
    if (this.types[id] === BYTE) {
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(tok);
      if (m) return Uint8Array.of(parseInt(m[1], 16));
    }
    return utf8.encode(tok.replaceAll(SPACE, ' '));
  }
}
