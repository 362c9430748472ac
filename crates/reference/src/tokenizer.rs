//! The GGUF's own tokenizer: byte-level BPE (`tokenizer.ggml.model = "gpt2"`), built with
//! the `tokenizers` crate from the vocabulary and merges stored in the file, or
//! SentencePiece-style (`"llama"`: Llama 2, Gemma; [`crate::spm`]) from its pieces and
//! scores. Control tokens (`token_type` 3, e.g. `<|im_start|>`) are special tokens, never
//! split.

use tokenizers::SplitDelimiterBehavior;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};

/// Qwen 2's pre-tokenizer split (its tokenizer.json; llama.cpp's "qwen2").
pub const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
use tokenizers::{AddedToken, Tokenizer};

use crate::RefError;
use crate::llama::Llama;

pub struct GgufTokenizer {
    inner: Inner,
}

enum Inner {
    Bpe(Box<Tokenizer>),
    Spm(Box<crate::spm::Spm>),
}

fn terr(e: impl std::fmt::Display) -> RefError {
    RefError::Runtime(format!("tokenizer: {e}"))
}

impl GgufTokenizer {
    /// A byte-level BPE; `pre` is `tokenizer.ggml.pre`, which names the pre-tokenizer.
    pub fn new(
        tokens: &[String],
        merges: &[String],
        token_types: &[i32],
        pre: &str,
    ) -> Result<GgufTokenizer, RefError> {
        if tokens.is_empty() {
            return Err(RefError::Usage(
                "the GGUF has no tokenizer.ggml.tokens".into(),
            ));
        }
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges: Vec<(String, String)> = merges
            .iter()
            .filter_map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(terr)?;
        let mut inner = Tokenizer::new(bpe);
        match pre {
            // Qwen 2's split (as its tokenizer.json): contractions, letters with one leading
            // non-letter, single digits, punctuation runs, newlines; then bytes, no regex.
            "qwen2" => inner.with_pre_tokenizer(Some(Sequence::new(vec![
                Split::new(
                    SplitPattern::Regex(QWEN2_SPLIT.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(terr)?
                .into(),
                ByteLevel::new(false, false, false).into(),
            ]))),
            // The smollm/gpt2 pre-tokenizer: digits split one by one, then GPT-2's
            // byte-level regex split, no prefix space.
            "smollm" | "gpt2" | "default" | "" => {
                inner.with_pre_tokenizer(Some(Sequence::new(vec![
                    Digits::new(true).into(),
                    ByteLevel::new(false, true, true).into(),
                ])))
            }
            other => {
                return Err(RefError::Usage(format!(
                    "tokenizer.ggml.pre {other:?}: m2w's byte-level BPE knows the smollm/gpt2 and qwen2 pre-tokenizers"
                )));
            }
        };
        inner.with_decoder(Some(ByteLevel::new(false, true, true)));
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(token_types.iter().chain(std::iter::repeat(&1)))
            .filter(|(_, ty)| **ty == 3)
            .map(|(t, _)| AddedToken::from(t.clone(), true))
            .collect();
        inner.add_special_tokens(specials).map_err(terr)?;
        Ok(GgufTokenizer {
            inner: Inner::Bpe(Box::new(inner)),
        })
    }

    /// The tokenizer the GGUF's `tokenizer.ggml.model` names; any other model is refused.
    pub fn from_llama(m: &Llama) -> Result<GgufTokenizer, RefError> {
        match m.tokenizer_model.as_str() {
            "gpt2" => Self::new(&m.tokens, &m.merges, &m.token_types, &m.tokenizer_pre),
            "llama" => {
                if m.tokens.is_empty() {
                    return Err(RefError::Usage(
                        "the GGUF has no tokenizer.ggml.tokens".into(),
                    ));
                }
                Ok(GgufTokenizer {
                    inner: Inner::Spm(Box::new(crate::spm::Spm::new(
                        &m.tokens,
                        &m.scores,
                        &m.token_types,
                        m.unk,
                        m.add_space_prefix,
                    ))),
                })
            }
            other => Err(RefError::Usage(format!(
                "tokenizer.ggml.model {other:?}: m2w reads \"gpt2\" (byte-level BPE) and \"llama\" (SentencePiece) vocabularies"
            ))),
        }
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, RefError> {
        match &self.inner {
            Inner::Bpe(t) => Ok(t.encode(text, false).map_err(terr)?.get_ids().to_vec()),
            Inner::Spm(t) => Ok(t.encode(text)),
        }
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, RefError> {
        match &self.inner {
            Inner::Bpe(t) => t.decode(ids, false).map_err(terr),
            Inner::Spm(t) => Ok(t.decode(ids)),
        }
    }

    /// A byte-level BPE as the `tokenizers` crate writes it to a tokenizer.json (the
    /// Hugging Face form of the GGUF's vocabulary); None for SentencePiece.
    pub fn tokenizer_json(&self) -> Result<Option<String>, RefError> {
        match &self.inner {
            Inner::Bpe(t) => t.to_string(false).map(Some).map_err(terr),
            Inner::Spm(_) => Ok(None),
        }
    }
}

/// Texts a tokenizer port is checked on: hand-picked edge cases (contractions, digit runs,
/// whitespace runs, control tokens, many scripts, emoji with joiners, combining marks) and
/// deterministic mixtures of them, `n` in all.
pub fn sample_texts(n: usize) -> Vec<String> {
    const PICKED: &[&str] = &[
        "The capital of France is",
        "Hello, world!",
        "hello world",
        " leading space",
        "trailing space ",
        "two  spaces   three    four",
        "tab\tseparated\tvalues",
        "line one\nline two\n\nline four",
        "windows\r\nline\r\nends",
        "   ",
        "\n",
        "\n\n\n",
        " \n \n",
        "a",
        "",
        "It's, they're, we've, I'm, you'll, he'd, don't",
        "IT'S LOUD AND THEY'RE HERE",
        "rock'n'roll 'quoted' \"double\"",
        "1234567890",
        "3.14159 and 2,718 and 1e-5 and -42",
        "in 2026 there were 365 days",
        "a1b2c3 x9y8",
        "١٢٣ ٤٥٦ (Arabic-Indic digits)",
        "...!!!???---***",
        "#include <stdio.h>\nint main(void) { return 0; }",
        "def f(x):\n    return x ** 2  # square\n",
        "https://example.com/path?q=1&r=two#frag",
        "user@example.org",
        "café naïve résumé façade",
        "e\u{301} combining acute, n\u{303} tilde",
        "Straße, Œuvre, ﬁ ligature",
        "你好，世界！",
        "日本語のテキストです。",
        "한국어 문장입니다.",
        "Привет, как дела?",
        "Γειά σου Κόσμε",
        "مرحبا بالعالم",
        "שלום עולם",
        "नमस्ते दुनिया",
        "สวัสดีชาวโลก",
        "emoji 😀 👍🏽 🇫🇷 ❤️",
        "family 👨\u{200d}👩\u{200d}👧\u{200d}👦 zwj",
        "zero\u{200b}width space and\u{00a0}nbsp",
        "math: ∑ x² ≤ ∞, √2 ≈ 1.414",
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>system\nYou are helpful.<|im_end|>",
        "text<|im_end|>text<|endoftext|>more",
        "<|im_start|><|im_end|>",
        "<|not_a_special|> <|im_start",
        "ALLCAPS lowercase MiXeD CamelCase snake_case kebab-case",
        "   indented\n\tand tabbed\n",
        "end with newline\n",
        "🙂🙃",
        "\u{feff}byte order mark",
        "control \u{7} bell and \u{1b}[0m escape",
        "Ünïcödé ÀÉÎÕÜ",
        "¿Qué? ¡Sí!",
        "ﾊﾝｶｸ half-width katakana",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math letters",
        "\u{10ffff} last code point",
    ];
    const PIECES: &[&str] = &[
        "the",
        " quick",
        " brown",
        " fox",
        "'s",
        "'LL",
        " 42",
        "7",
        "2026",
        " ",
        "  ",
        "\n",
        "\t",
        ",",
        ".",
        "!?",
        " café",
        "日本",
        "😀",
        "👍🏽",
        " Привет",
        "ß",
        "<|im_start|>",
        "<|im_end|>",
        "x",
        " y",
        "_z",
        "(",
        ")",
        " //",
        " ==",
        "é",
        " 你好",
        "\r\n",
        "'",
        " don't",
        " 3.5",
        "-",
        " ",
        "٣",
        "🇫🇷",
        "abc",
        " DEF",
    ];
    let mut out: Vec<String> = PICKED.iter().map(|s| s.to_string()).collect();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    while out.len() < n {
        let len = 1 + (next() % 12) as usize;
        let s: String = (0..len)
            .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
            .collect();
        out.push(s);
    }
    out.truncate(n);
    out
}

/// `[{text, ids}]` for [`sample_texts`]: the oracle a tokenizer port (the package's
/// TypeScript BPE) is compared with.
pub fn cases_json(tok: &GgufTokenizer, n: usize) -> Result<serde_json::Value, RefError> {
    sample_texts(n)
        .into_iter()
        .map(|text| {
            let ids = tok.encode(&text)?;
            Ok(serde_json::json!({"text": text, "ids": ids}))
        })
        .collect::<Result<Vec<_>, RefError>>()
        .map(serde_json::Value::Array)
}

/// `[{text, ids}]` for [`sample_texts`] through a Hugging Face `tokenizer.json` (the
/// `tokenizers` crate, special tokens added as its post-processor says): the oracle of the
/// package's TypeScript tokenizers for ONNX pipelines (T5's Unigram).
pub fn tokenizer_json_cases(
    tokenizer_json: &std::path::Path,
    n: usize,
) -> Result<serde_json::Value, RefError> {
    let tok = Tokenizer::from_file(tokenizer_json)
        .map_err(|e| RefError::Usage(format!("{}: {e}", tokenizer_json.display())))?;
    sample_texts(n)
        .into_iter()
        .map(|text| {
            let ids = tok
                .encode(text.as_str(), true)
                .map_err(terr)?
                .get_ids()
                .to_vec();
            Ok(serde_json::json!({"text": text, "ids": ids}))
        })
        .collect::<Result<Vec<_>, RefError>>()
        .map(serde_json::Value::Array)
}
