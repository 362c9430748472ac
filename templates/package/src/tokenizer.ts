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
  tokens: string[];
  merges: string[];
  types: number[];
}

const CONTROL = 3;

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
  private readonly bytesCache: (Uint8Array | undefined)[];
  private readonly decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

  constructor(data: TokenizerData) {
    this.tokens = data.tokens;
    this.types = data.types;
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
    for (const m of text.matchAll(PIECE_RE)) {
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
