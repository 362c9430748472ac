//! The GGUF's own tokenizer (byte-level BPE: `tokenizer.ggml.model = "gpt2"`), built with
//! the `tokenizers` crate from the vocabulary and merges stored in the file. Control tokens
//! (`token_type` 3, e.g. `<|im_start|>`) are special tokens, never split.

use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use crate::RefError;
use crate::llama::Llama;

pub struct GgufTokenizer {
    inner: Tokenizer,
}

fn terr(e: impl std::fmt::Display) -> RefError {
    RefError::Runtime(format!("tokenizer: {e}"))
}

impl GgufTokenizer {
    pub fn new(
        tokens: &[String],
        merges: &[String],
        token_types: &[i32],
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
        // The smollm/gpt2 pre-tokenizer: digits split one by one, then GPT-2's byte-level
        // regex split, no prefix space.
        inner.with_pre_tokenizer(Some(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        inner.with_decoder(Some(ByteLevel::new(false, true, true)));
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(token_types.iter().chain(std::iter::repeat(&1)))
            .filter(|(_, ty)| **ty == 3)
            .map(|(t, _)| AddedToken::from(t.clone(), true))
            .collect();
        inner.add_special_tokens(specials).map_err(terr)?;
        Ok(GgufTokenizer { inner })
    }

    pub fn from_llama(m: &Llama) -> Result<GgufTokenizer, RefError> {
        Self::new(&m.tokens, &m.merges, &m.token_types)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, RefError> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(terr)?
            .get_ids()
            .to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, RefError> {
        self.inner.decode(ids, false).map_err(terr)
    }
}
