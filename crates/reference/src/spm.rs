//! SentencePiece-style tokenizer of a GGUF whose `tokenizer.ggml.model` is "llama" (Llama 2,
//! Gemma): the vocabulary's pieces with their scores and types, encoded the way
//! SentencePiece's BPE model does it.
//!
//! - Control tokens (type 3, `<start_of_turn>`) in the text are tokens, never split (as
//!   llama.cpp does when it parses specials); the text between them is encoded on its own.
//! - Spaces become U+2581; with `add_space_prefix` a text starts with one.
//! - User-defined pieces (type 4, Gemma's `\n\n`, tab runs) are taken whole, longest first;
//!   the rest starts as single characters.
//! - Adjacent symbols merge while their concatenation is a piece (normal, user-defined or
//!   unused: SentencePiece's merge vocabulary), best score first, leftmost on ties.
//! - A symbol that is no piece falls back to its UTF-8 bytes (`<0xAB>` pieces, type 6),
//!   else to the unknown token.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

pub struct Spm {
    pieces: Vec<String>,
    types: Vec<i32>,
    /// Pieces merges may produce: normal, user-defined, unused.
    mergeable: HashMap<String, (u32, f32)>,
    /// Control tokens by text, longest first.
    controls: Vec<(String, u32)>,
    /// User-defined pieces by text, longest first.
    user_defined: Vec<(String, u32)>,
    bytes: [Option<u32>; 256],
    unk: Option<u32>,
    add_space_prefix: bool,
}

const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;
const NORMAL: i32 = 1;

#[derive(PartialEq)]
struct Candidate {
    score: f32,
    left: usize,
    /// The two symbols' lengths when queued: a merge of a symbol that changed since is stale.
    len: usize,
}

impl Eq for Candidate {}
impl Ord for Candidate {
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Spm {
    pub fn new(
        pieces: &[String],
        scores: &[f32],
        types: &[i32],
        unk: Option<u32>,
        add_space_prefix: bool,
    ) -> Spm {
        let ty = |i: usize| types.get(i).copied().unwrap_or(NORMAL);
        let mut mergeable = HashMap::new();
        let mut controls = Vec::new();
        let mut user_defined = Vec::new();
        let mut bytes = [None; 256];
        for (i, p) in pieces.iter().enumerate() {
            let id = i as u32;
            match ty(i) {
                CONTROL => controls.push((p.clone(), id)),
                BYTE => {
                    if let Some(b) = p
                        .strip_prefix("<0x")
                        .and_then(|h| h.strip_suffix('>'))
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                    {
                        bytes[b as usize] = Some(id);
                    }
                }
                t => {
                    if t == USER_DEFINED {
                        user_defined.push((p.clone(), id));
                    }
                    if t == NORMAL || t == USER_DEFINED || t == UNUSED {
                        let score = scores.get(i).copied().unwrap_or(0.0);
                        mergeable.entry(p.clone()).or_insert((id, score));
                    }
                }
            }
        }
        let longest_first = |v: &mut Vec<(String, u32)>| {
            v.retain(|(s, _)| !s.is_empty());
            v.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        };
        longest_first(&mut controls);
        longest_first(&mut user_defined);
        Spm {
            pieces: pieces.to_vec(),
            types: types.to_vec(),
            mergeable,
            controls,
            user_defined,
            bytes,
            unk,
            add_space_prefix,
        }
    }

    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut rest = text;
        let mut first = true;
        while !rest.is_empty() {
            // The earliest control token (longest at that position) ends this segment.
            let mut cut: Option<(usize, &str, u32)> = None;
            for (s, id) in &self.controls {
                if let Some(at) = rest.find(s.as_str())
                    && cut.is_none_or(|(c, cs, _)| at < c || (at == c && s.len() > cs.len()))
                {
                    cut = Some((at, s.as_str(), *id));
                }
            }
            let (segment, after) = match cut {
                Some((at, s, _)) => (&rest[..at], &rest[at + s.len()..]),
                None => (rest, ""),
            };
            if !segment.is_empty() {
                self.encode_segment(segment, first, &mut ids);
            }
            if let Some((_, _, id)) = cut {
                ids.push(id);
            }
            first = false;
            rest = after;
        }
        ids
    }

    fn encode_segment(&self, text: &str, first: bool, ids: &mut Vec<u32>) {
        let mut normalized = String::with_capacity(text.len() + 3);
        if self.add_space_prefix && first {
            normalized.push('\u{2581}');
        }
        normalized.extend(text.chars().map(|c| if c == ' ' { '\u{2581}' } else { c }));
        // Initial symbols: user-defined pieces whole, else one character each.
        let mut symbols: Vec<String> = Vec::new();
        let mut at = 0;
        while at < normalized.len() {
            let tail = &normalized[at..];
            let len = self
                .user_defined
                .iter()
                .find(|(s, _)| tail.starts_with(s.as_str()))
                .map(|(s, _)| s.len())
                .unwrap_or_else(|| tail.chars().next().map_or(1, char::len_utf8));
            symbols.push(tail[..len].to_string());
            at += len;
        }
        // Merge the best-scoring adjacent pair until none is a piece. Symbols are a linked
        // list over `symbols` (merged-away entries left empty).
        let n = symbols.len();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<Option<usize>> = (0..n).map(|i| i.checked_sub(1)).collect();
        let mut heap = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<Candidate>, symbols: &[String], l: usize, r: usize| {
            let joined = format!("{}{}", symbols[l], symbols[r]);
            if let Some(&(_, score)) = self.mergeable.get(&joined) {
                heap.push(Candidate {
                    score,
                    left: l,
                    len: joined.len(),
                });
            }
        };
        for i in 0..n.saturating_sub(1) {
            push(&mut heap, &symbols, i, i + 1);
        }
        while let Some(c) = heap.pop() {
            let l = c.left;
            let r = next[l];
            if symbols[l].is_empty() || r >= n || symbols[l].len() + symbols[r].len() != c.len {
                continue;
            }
            let right = std::mem::take(&mut symbols[r]);
            symbols[l].push_str(&right);
            next[l] = next[r];
            if next[l] < n {
                prev[next[l]] = Some(l);
            }
            if let Some(p) = prev[l] {
                push(&mut heap, &symbols, p, l);
            }
            if next[l] < n {
                push(&mut heap, &symbols, l, next[l]);
            }
        }
        let mut i = 0;
        while i < n {
            let s = &symbols[i];
            match self.mergeable.get(s) {
                Some(&(id, _)) => ids.push(id),
                None => {
                    for b in s.bytes() {
                        match (self.bytes[b as usize], self.unk) {
                            (Some(id), _) => ids.push(id),
                            (None, Some(u)) => {
                                ids.push(u);
                                break;
                            }
                            (None, None) => break,
                        }
                    }
                }
            }
            i = next[i];
        }
    }

    /// Pieces back to text: U+2581 to spaces, byte pieces to their bytes (decoded as UTF-8
    /// together), control tokens as their text.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(p) = self.pieces.get(id as usize) else {
                continue;
            };
            let ty = self.types.get(id as usize).copied().unwrap_or(NORMAL);
            if ty == BYTE
                && let Some(b) = p
                    .strip_prefix("<0x")
                    .and_then(|h| h.strip_suffix('>'))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                bytes.push(b);
                continue;
            }
            bytes.extend(p.replace('\u{2581}', " ").bytes());
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        match text.strip_prefix(' ') {
            Some(t) if self.add_space_prefix => t.to_string(),
            _ => text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Spm {
        // a, b, c, ab, abc, ▁, ▁a, <0x41>.. bytes for 'X' (0x58), control <s>, user "\n\n".
        let pieces: Vec<String> = [
            "<unk>",
            "<s>",
            "a",
            "b",
            "c",
            "ab",
            "bc",
            "abc",
            "\u{2581}",
            "\u{2581}a",
            "<0x58>",
            "\n\n",
            "\n",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let scores = [
            0.0, 0.0, -1.0, -1.0, -1.0, -2.0, -1.5, -3.0, -1.0, -2.5, 0.0, 0.0, -1.0,
        ];
        let types = [2, 3, 1, 1, 1, 1, 1, 1, 1, 1, 6, 4, 1];
        Spm::new(&pieces, &scores, &types, Some(0), false)
    }

    #[test]
    fn best_score_merges_first_then_bytes_and_controls() {
        let t = toy();
        // "abc": bc (-1.5) beats ab (-2.0), then a + bc = abc; "cab": c, ab.
        assert_eq!(t.encode("abc"), vec![7]);
        assert_eq!(t.encode("cab"), vec![4, 5]);
        // " a": ▁ + a -> ▁a.
        assert_eq!(t.encode(" a"), vec![9]);
        // X has a byte piece; Y has none: unknown.
        assert_eq!(t.encode("XY"), vec![10, 0]);
        // Controls split the text; user-defined pieces are whole.
        assert_eq!(t.encode("ab<s>\n\n\nc"), vec![5, 1, 11, 12, 4]);
        assert_eq!(t.decode(&[9, 6, 10]), " abcX");
    }
}
