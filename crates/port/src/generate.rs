//! Native text generation on wgpu from a GGUF llama-family decoder: the prompt (optionally
//! wrapped in the model's chat format) tokenized like the reference does, the GPU decoder,
//! and the text streamed out as it grows.

use std::path::Path;

use m2w_model::chat::{ChatTemplate, end_of_turn_ids, stop_tokens};

use crate::PortError;

/// What one generation did.
#[derive(Clone, Debug)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    /// From the decoder being ready to the last token.
    pub seconds: f64,
    /// "name (backend)".
    pub adapter: String,
}

/// The text the model is fed: the prompt itself, or with `chat` one user turn rendered by
/// the model's chat template (its own, or the one m2w keeps for its family).
pub fn prompt_text(
    model: &m2w_model::Model,
    tokens: &[String],
    config: &m2w_model::llama_config::LlamaConfig,
    prompt: &str,
    chat: bool,
) -> Result<String, PortError> {
    if !chat {
        return Ok(prompt.to_string());
    }
    let Some(template) = ChatTemplate::of_model(model) else {
        return Err(PortError::Input(
            "--chat: the model has no tokenizer.chat_template and m2w keeps none for its family"
                .into(),
        ));
    };
    let text = |id: Option<u32>| {
        id.and_then(|i| tokens.get(i as usize))
            .cloned()
            .unwrap_or_default()
    };
    template
        .user_turn(prompt, &text(config.bos), &text(config.eos))
        .map_err(PortError::Input)
}

/// Generates up to `max_new` tokens after `prompt`. `on_ready` is called once the decoder is
/// built, `on_text` with each new piece of text (whole characters only); stops at end of
/// sequence or end of turn.
pub fn generate(
    model_path: &Path,
    prompt: &str,
    chat: bool,
    max_new: usize,
    sampling: &m2w_engine::llama::Sampling,
    on_ready: impl FnOnce(),
    mut on_text: impl FnMut(&str),
) -> Result<GenerateStats, PortError> {
    let model = m2w_model::Model::open(model_path)?;
    let llama = m2w_reference::llama::Llama::load(model_path)?;
    let tok = m2w_reference::tokenizer::GgufTokenizer::from_llama(&llama)?;
    let text = prompt_text(&model, &llama.tokens, &llama.config, prompt, chat)?;
    let mut ids = Vec::new();
    // A chat template writes the specials it wants (Gemma's starts with {{ bos_token }}), as
    // Hugging Face tokenizes a rendered chat without adding any.
    if !chat
        && llama.config.add_bos
        && let Some(b) = llama.config.bos
    {
        ids.push(b);
    }
    ids.extend(tok.encode(&text)?);
    let gpu = m2w_engine::gpu::Gpu::new().map_err(PortError::Input)?;
    let dec = m2w_engine::llama::Decoder::new(&gpu, &model, ids.len(), ids.len() + max_new + 1)
        .map_err(PortError::Input)?;
    let stop = stop_tokens(llama.config.eos, &end_of_turn_ids(&llama.tokens));
    let t0 = std::time::Instant::now();
    on_ready();
    let mut shown = String::new();
    let mut all = Vec::new();
    let out = dec
        .generate(&ids, max_new, sampling, &stop, |t| {
            if stop.contains(&t) {
                return;
            }
            all.push(t);
            if let Ok(s) = tok.decode(&all) {
                // Only what is new (multi-byte characters may span tokens).
                if s.len() > shown.len() && s.starts_with(&shown) {
                    on_text(&s[shown.len()..]);
                    shown = s;
                }
            }
        })
        .map_err(PortError::Input)?;
    Ok(GenerateStats {
        prompt_tokens: ids.len(),
        new_tokens: out.len(),
        seconds: t0.elapsed().as_secs_f64(),
        adapter: format!("{} ({:?})", gpu.info.name, gpu.info.backend),
    })
}
