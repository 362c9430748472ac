//! The npm package of a GGUF llama-family decoder: two plans (a prefill chunk and one-token
//! decode, [`m2w_engine::llama::package_plans`]) sharing the packed weights and the KV caches,
//! the GGUF's tokenizer in TypeScript (byte-level BPE or SentencePiece: `weights/tokenizer.json`
//! holds its vocabulary and merges or scores), the chat template rendered by a small bundled
//! Jinja interpreter (`src/jinja.ts`), `generate(prompt, options)` / `chat(messages, options)`
//! with a token stream, and a chat page. Proven by `tests/generate.spec.ts` against the port's reference folder.

use std::path::Path;

use m2w_engine::llama::{PositionPatch, cache_names, package_plans, position_patches};

use crate::{PackageError, Summary, check_name, engine_ts, shaders_ts, subst, write_files};

const LLM_TS: &str = include_str!("../../../templates/package/src/llm.ts");
const TOKENIZER_TS: &str = include_str!("../../../templates/package/src/tokenizer.ts");
const JINJA_TS: &str = include_str!("../../../templates/package/src/jinja.ts");
const CHAT_HTML: &str = include_str!("../../../templates/package/chat.html");
const GENERATE_SPEC_TS: &str = include_str!("../../../templates/package/tests/generate.spec.ts");

#[derive(Clone, Debug)]
pub struct LlmOptions {
    /// Tokens per prefill pass (prompts run in chunks of this many, the last one padded).
    pub prefill_chunk: usize,
    /// Positions of the KV caches: prompt + generated tokens at most.
    pub context: usize,
    /// The largest storage binding of the target devices (their smallest
    /// `maxStorageBufferBindingSize`): tables past it run as row slices.
    pub max_binding_bytes: usize,
}

impl Default for LlmOptions {
    fn default() -> LlmOptions {
        LlmOptions {
            prefill_chunk: 16,
            context: 512,
            max_binding_bytes: 128 << 20,
        }
    }
}

fn patches_ts(patches: &[PositionPatch]) -> String {
    let items: Vec<String> = patches
        .iter()
        .map(|p| {
            format!(
                "{{ dispatch: {}, word: {}, scale: {} }}",
                p.dispatch, p.word, p.scale
            )
        })
        .collect();
    format!(
        "\n/** Uniform words holding the start position: params[word] = position * scale. */\nexport const POSITION_PATCHES = [\n  {},\n];\n",
        items.join(",\n  ")
    )
}

fn input(e: impl std::fmt::Display) -> PackageError {
    PackageError::Input(e.to_string())
}

/// Generates the package of the GGUF at `model_path` into `out` (replaced atomically).
pub fn generate(
    model_path: &Path,
    name: &str,
    out: &Path,
    options: &LlmOptions,
) -> Result<Summary, PackageError> {
    check_name(name)?;
    let model = m2w_model::Model::open(model_path).map_err(input)?;
    let plans = package_plans(
        &model,
        options.prefill_chunk,
        options.context,
        options.max_binding_bytes,
    )
    .map_err(input)?;
    let (prefill, decode, fallback, config) = (
        &plans.prefill,
        &plans.decode,
        &plans.decode_fallback,
        &plans.config,
    );
    let array = |key: &str| -> Result<serde_json::Value, PackageError> {
        m2w_model::gguf::metadata_value(model_path, key)
            .map_err(input)?
            .ok_or_else(|| {
                PackageError::Input(format!("{}: no {key} (tokenizer)", model_path.display()))
            })
    };
    let tokens = array("tokenizer.ggml.tokens")?;
    let types = array("tokenizer.ggml.token_type")?;
    let tokenizer_model = model
        .metadata
        .get("tokenizer.ggml.model")
        .and_then(|v| v.as_str())
        .unwrap_or("gpt2")
        .to_string();
    // Byte-level BPE needs its merges; SentencePiece its scores.
    let (merges, scores) = match tokenizer_model.as_str() {
        "gpt2" => (array("tokenizer.ggml.merges")?, serde_json::Value::Null),
        "llama" => (serde_json::json!([]), array("tokenizer.ggml.scores")?),
        other => {
            return Err(PackageError::Input(format!(
                "{}: tokenizer model {other:?}: the package's tokenizers are byte-level BPE (gpt2) and SentencePiece (llama)",
                model_path.display()
            )));
        }
    };
    let meta_u32 = |k: &str| {
        model
            .metadata
            .get(k)
            .and_then(|v| v.as_u64())
            .map(|v| v as u32)
    };
    let add_space_prefix = model
        .metadata
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(|v| v.as_bool())
        .unwrap_or(tokenizer_model == "llama");
    let token_id = |s: &str| {
        tokens
            .as_array()
            .and_then(|a| a.iter().position(|t| t.as_str() == Some(s)))
    };
    let (bos, eos, add_bos) = (config.bos, config.eos, config.add_bos);
    let end_of_turn: Vec<u32> = m2w_model::chat::END_OF_TURN
        .iter()
        .filter_map(|e| token_id(e).map(|i| i as u32))
        .collect();
    let stop = m2w_model::chat::stop_tokens(eos, &end_of_turn);
    let chat_template = m2w_model::chat::ChatTemplate::of_model(&model);
    let token_text = |id: Option<u32>| {
        id.and_then(|i| tokens.as_array().and_then(|a| a.get(i as usize)))
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_string()
    };
    let config_ts = format!(
        "// Generated by m2w from the GGUF metadata: regenerate with `cargo xtask package`, do not edit.\n\nexport interface LlmConfig {{\n  vocab: number;\n  layers: number;\n  /** KV cache positions. */\n  ctx: number;\n  /** Tokens per prefill pass. */\n  prefillChunk: number;\n  bos: number | null;\n  eos: number | null;\n  addBos: boolean;\n  /** Default stop tokens (end of sequence, end of turn). */\n  stop: number[];\n  /** The Jinja chat template (the model's, or the one m2w keeps for its family). */\n  chatTemplate: string | null;\n  /** Where the template came from. */\n  chatTemplateOrigin: string | null;\n  /** The texts the template writes for bos_token and eos_token. */\n  bosText: string;\n  eosText: string;\n  caches: string[];\n  /** Largest k the plans' top-k dispatch selects on the GPU. */\n  maxTopK: number;\n}}\n\nexport const CONFIG: LlmConfig = {};\n",
        serde_json::to_string_pretty(&serde_json::json!({
            "vocab": config.vocab,
            "layers": config.layers,
            "ctx": options.context,
            "prefillChunk": options.prefill_chunk,
            "bos": bos,
            "eos": eos,
            "addBos": add_bos,
            "stop": stop,
            "chatTemplate": chat_template.as_ref().map(|t| t.source.clone()),
            "chatTemplateOrigin": chat_template.as_ref().map(|t| t.origin.clone()),
            "bosText": token_text(bos),
            "eosText": token_text(eos),
            "caches": cache_names(config),
            "maxTopK": m2w_engine::llama::MAX_TOP_K,
        }))
        .expect("json")
    );
    let tokenizer_json = serde_json::to_vec(&serde_json::json!({
        "model": tokenizer_model, "tokens": tokens, "merges": merges, "types": types,
        "pre": model.metadata.get("tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or(""),
        "scores": scores, "unk": meta_u32("tokenizer.ggml.unknown_token_id"),
        "addSpacePrefix": add_space_prefix,
    }))
    .expect("json");
    let (blob, index) = m2w_engine::constants_blob(decode);
    let constants_json = serde_json::to_string_pretty(&index).expect("json") + "\n";
    let shaders = shaders_ts(&[prefill, decode, fallback], &[]);
    let model_name = model_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let subst = |t: &str| subst(t, name, &model_name, "generate.spec.js");
    let readme = readme(
        name,
        &model_name,
        config,
        options,
        blob.len(),
        prefill.dispatches.len(),
        decode.dispatches.len(),
    );
    let licence = crate::licence::of_models(&[model_path]);
    let files: Vec<(&str, Vec<u8>)> = vec![
        (
            "package.json",
            crate::package_json(&subst(crate::PACKAGE_JSON), &licence),
        ),
        ("MODEL_LICENSE.md", licence.notice(&model_name).into_bytes()),
        ("tsconfig.json", crate::TSCONFIG.as_bytes().to_vec()),
        (
            "tsconfig.tests.json",
            crate::TSCONFIG_TESTS.as_bytes().to_vec(),
        ),
        ("README.md", readme.into_bytes()),
        ("index.html", subst(CHAT_HTML).into_bytes()),
        ("src/types.ts", subst(crate::TYPES_TS).into_bytes()),
        (
            "src/weights.ts",
            crate::weights_ts(
                &subst(crate::WEIGHTS_TS),
                &[constants_json.as_bytes(), &blob, &tokenizer_json],
            ),
        ),
        ("src/runtime.ts", crate::RUNTIME_TS.as_bytes().to_vec()),
        ("src/tokenizer.ts", TOKENIZER_TS.as_bytes().to_vec()),
        ("src/jinja.ts", JINJA_TS.as_bytes().to_vec()),
        ("src/sampler.ts", crate::SAMPLER_TS.as_bytes().to_vec()),
        ("src/index.ts", subst(LLM_TS).into_bytes()),
        ("src/config.ts", config_ts.into_bytes()),
        ("src/shaders.ts", shaders.clone().into_bytes()),
        (
            "src/prefill.ts",
            (engine_ts(prefill) + &patches_ts(&position_patches(prefill))).into_bytes(),
        ),
        (
            "src/decode.ts",
            (engine_ts(decode) + &patches_ts(&position_patches(decode))).into_bytes(),
        ),
        (
            "src/decode_fallback.ts",
            (engine_ts(fallback) + &patches_ts(&position_patches(fallback))).into_bytes(),
        ),
        (
            "tests/generate.spec.ts",
            subst(GENERATE_SPEC_TS).into_bytes(),
        ),
        ("tests/harness.ts", crate::HARNESS_TS.as_bytes().to_vec()),
        ("weights/tokenizer.json", tokenizer_json),
        (
            m2w_engine::limits::FILE,
            m2w_engine::limits::LimitsReport::new(&[prefill, decode, fallback]).to_json(),
        ),
    ];
    let (index, shards) =
        crate::shards::shard(constants_json.as_bytes(), &blob, crate::shards::SHARD_BYTES)?;
    let shard_names: Vec<String> = shards.iter().map(|(n, _)| format!("weights/{n}")).collect();
    let mut files = files;
    files.push(("weights/constants.json", index));
    for (name, (_, bytes)) in shard_names.iter().zip(shards) {
        files.push((name, bytes));
    }
    write_files(out, &files)?;
    let kernels = prefill
        .dispatches
        .iter()
        .chain(&decode.dispatches)
        .chain(&fallback.dispatches)
        .map(|d| d.kernel)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    Ok(Summary {
        files: files.iter().map(|(f, _)| f.to_string()).collect(),
        dispatches: decode.dispatches.len(),
        kernels,
        weight_bytes: blob.len() as u64,
        shader_bytes: shaders.len(),
    })
}

fn readme(
    name: &str,
    model: &str,
    c: &m2w_engine::llama::Config,
    o: &LlmOptions,
    weight_bytes: usize,
    prefill_dispatches: usize,
    decode_dispatches: usize,
) -> String {
    format!(
        "# {name}\n\n{model} ({layers} layers, width {dim}, {heads}/{kv} heads, vocabulary {vocab}) on WebGPU,\ngenerated by m2w: quantized weights stay packed on the GPU, KV caches of {ctx} positions,\nno runtime dependencies.\n\n## Use\n\n```js\nimport {{ loadLLM }} from '{name}';\nconst llm = await loadLLM(); // the package's own weights/ (or loadLLM(url, {{ onProgress }}))\nconst r = await llm.generate('The capital of France is', {{\n  maxNewTokens: 32,\n  onToken: (text) => console.log(text),\n}});\nconsole.log(r.text, r.tokensPerSecond);\n// the model's chat template and sampling:\nawait llm.chat([{{ role: 'user', content: 'Hi!' }}], {{ temperature: 0.7, topK: 40, topP: 0.9, repetitionPenalty: 1.1, seed: 1 }});\nllm.destroy();\n```\n\nOptions: `maxNewTokens`, `temperature` (0: greedy, on the GPU), `topK`, `topP`,\n`repetitionPenalty`, `seed`, `chat`, `stop` (token ids; default the model's end tokens),\n`onToken(text, id)`, `signal` (AbortSignal). `llm.tokenizer` encodes and decodes text.\n\n## How it runs\n\n- prefill: {chunk} tokens per pass ({prefill_dispatches} dispatches), the prompt in chunks;\n- decode: one token per pass ({decode_dispatches} dispatches); the position lives in a few\n  uniform words (`POSITION_PATCHES`) rewritten before each pass.\n- weights (`weights/constants-NNNNN.bin`, shards of at most 64 MiB, streamed tensor by tensor to the GPU): {weight_bytes} bytes; tokenizer in `weights/tokenizer.json`.\n\n## Proof\n\n`npm test` (or `cargo xtask package-test`) checks the TypeScript tokenizer against the\n`tokenizers` crate on the port's sample texts and the greedy tokens in headless Chromium\nagainst the candle reference.\n",
        layers = c.layers,
        dim = c.dim,
        heads = c.heads,
        kv = c.kv_heads,
        vocab = c.vocab,
        ctx = o.context,
        chunk = o.prefill_chunk,
    )
}
