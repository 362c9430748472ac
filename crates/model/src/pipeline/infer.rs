//! Wiring a pipeline from what its graphs are called: exporters' input names, the configs
//! beside the graphs, and a `pipeline.json` over them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Feed, GraphSpec, MANIFEST, Pipeline, Run, SCHEMA};
use crate::{GraphInfo, InputError};

/// A `pipeline.json`: every field optional; what it gives replaces what was inferred.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    #[serde(default)]
    schema: Option<String>,
    #[serde(default)]
    graphs: Option<Vec<GraphOverride>>,
    #[serde(default)]
    start: Option<Vec<i64>>,
    #[serde(default)]
    stop: Option<Vec<i64>>,
    #[serde(default)]
    max_new_tokens: Option<usize>,
    #[serde(default)]
    max_prompt: Option<usize>,
    #[serde(default)]
    tokenizer: Option<PathBuf>,
    #[serde(default)]
    notes: Option<Vec<String>>,
}

#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphOverride {
    name: String,
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    run: Option<Run>,
    #[serde(default)]
    inputs: BTreeMap<String, Feed>,
    #[serde(default)]
    logits: Option<String>,
}

/// Generated tokens when neither the manifest nor the configs say.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 32;
/// Prompt length the engine is sized for when nothing says.
pub const DEFAULT_MAX_PROMPT: usize = 128;

/// A graph's name in a pipeline: its file stem without the exporters' `_model` suffix
/// (`decoder_model.onnx` -> `decoder`).
pub fn graph_name(file: &Path) -> String {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "graph".into());
    stem.strip_suffix("_model").unwrap_or(&stem).to_string()
}

fn is_past(name: &str) -> bool {
    name.starts_with("past_key_values") || name.starts_with("past_key") || name.starts_with("past_")
}

/// `past_key_values.0.key` -> `present.0.key` (optimum, onnxruntime-genai);
/// `past_key_0` -> `present_key_0`.
fn present_of(past: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(rest) = past.strip_prefix("past_key_values") {
        out.push(format!("present{rest}"));
    }
    if let Some(rest) = past.strip_prefix("past_") {
        out.push(format!("present_{rest}"));
        out.push(format!("present.{rest}"));
    }
    out
}

/// What the graphs' own names say about each graph.
struct Shape<'a> {
    name: String,
    file: PathBuf,
    graph: &'a GraphInfo,
}

impl Shape<'_> {
    fn has_input(&self, n: &str) -> bool {
        self.graph.inputs.iter().any(|i| i.name == n)
    }
    fn has_output(&self, n: &str) -> bool {
        self.graph.outputs.iter().any(|o| o.name == n)
    }
    fn has_past(&self) -> bool {
        self.graph.inputs.iter().any(|i| is_past(&i.name))
    }
}

/// Infers a pipeline from graphs and the files beside them (`folder`: config.json,
/// generation_config.json, tokenizer.json), then applies `folder/pipeline.json` if there
/// is one. Every problem is listed in one error.
/// `graphs` are (name, file, graph); [`graph_name`] gives the usual name.
pub fn infer(
    graphs: &[(String, PathBuf, &GraphInfo)],
    folder: &Path,
    tokenizer: Option<&Path>,
) -> Result<Pipeline, InputError> {
    let manifest_path = folder.join(MANIFEST);
    let manifest: ManifestFile = if manifest_path.is_file() {
        let text = std::fs::read_to_string(&manifest_path)
            .map_err(|e| InputError::new(&manifest_path, format!("cannot read: {e}")))?;
        serde_json::from_str(&text)
            .map_err(|e| InputError::new(&manifest_path, format!("not a pipeline manifest: {e}")))?
    } else {
        ManifestFile::default()
    };
    if let Some(s) = &manifest.schema
        && s != SCHEMA
    {
        return Err(InputError::new(
            &manifest_path,
            format!("schema '{s}', this m2w reads '{SCHEMA}'"),
        ));
    }
    let shapes: Vec<Shape> = graphs
        .iter()
        .map(|(name, file, g)| Shape {
            name: name.clone(),
            file: file.clone(),
            graph: g,
        })
        .collect();
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    {
        let mut seen = std::collections::BTreeSet::new();
        for s in &shapes {
            if !seen.insert(s.name.clone()) {
                problems.push(format!("two graphs are named '{}'", s.name));
            }
        }
    }

    // Roles: a graph that makes logits, reads a cache or an encoder's states runs per step;
    // one whose output a step graph reads as inputs_embeds runs per step before it.
    let steps_core =
        |s: &Shape| s.has_output("logits") || s.has_past() || s.has_input("encoder_hidden_states");
    let embeds_step = |s: &Shape| {
        s.has_output("inputs_embeds")
            && shapes
                .iter()
                .any(|o| steps_core(o) && o.has_input("inputs_embeds"))
    };
    let run_of = |s: &Shape| {
        if steps_core(s) || embeds_step(s) {
            Run::Step
        } else {
            Run::Once
        }
    };
    let encoder = shapes
        .iter()
        .find(|s| run_of(s) == Run::Once && s.has_output("last_hidden_state"))
        .or_else(|| shapes.iter().find(|s| run_of(s) == Run::Once));
    let encoder_decoder = encoder.is_some()
        && shapes
            .iter()
            .any(|s| run_of(s) == Run::Step && s.has_input("encoder_hidden_states"));
    let embed = shapes.iter().find(|s| embeds_step(s));
    let embeds_for_cache = |s: &Shape| {
        embeds_step(s)
            && shapes
                .iter()
                .any(|o| o.has_past() && o.has_input("inputs_embeds"))
    };

    let mut specs = Vec::new();
    for s in &shapes {
        let run = run_of(s);
        let mut inputs = BTreeMap::new();
        for i in &s.graph.inputs {
            let n = i.name.as_str();
            let feed = match (run, n) {
                (Run::Once, "input_ids") => Some(Feed::Prompt),
                (Run::Once, "attention_mask") => Some(Feed::PromptMask),
                // An embed graph feeds the graph with the cache: the same new tokens.
                (Run::Step, "input_ids") => Some(if s.has_past() || embeds_for_cache(s) {
                    Feed::NewTokens
                } else {
                    Feed::Sequence
                }),
                (Run::Step, "encoder_attention_mask") => Some(Feed::PromptMask),
                (Run::Step, "attention_mask") if encoder_decoder => Some(Feed::PromptMask),
                (Run::Step, "attention_mask" | "decoder_attention_mask") => Some(Feed::ContextMask),
                (Run::Step, "position_ids") => Some(Feed::Positions),
                (Run::Step, "use_cache_branch") => Some(Feed::HasPast),
                (Run::Step, "encoder_hidden_states") => encoder.and_then(|e| {
                    let o = if e.has_output("last_hidden_state") {
                        "last_hidden_state".to_string()
                    } else {
                        e.graph.outputs.first()?.name.clone()
                    };
                    Some(Feed::Output {
                        graph: e.name.clone(),
                        output: o,
                    })
                }),
                (Run::Step, "inputs_embeds") => embed.map(|e| Feed::Output {
                    graph: e.name.clone(),
                    output: "inputs_embeds".into(),
                }),
                (Run::Step, p) if is_past(p) => present_of(p)
                    .into_iter()
                    .find(|o| s.has_output(o))
                    .map(|output| Feed::Previous { output }),
                _ => None,
            };
            if let Some(f) = feed {
                inputs.insert(n.to_string(), f);
            }
        }
        let logits = (run == Run::Step && s.has_output("logits")).then(|| "logits".to_string());
        specs.push(GraphSpec {
            name: s.name.clone(),
            file: s.file.clone(),
            run,
            inputs,
            logits,
        });
    }
    // Once graphs first; an embed graph before the graph that reads its output.
    specs.sort_by_key(|g| match g.run {
        Run::Once => 0,
        Run::Step if embed.is_some_and(|e| e.name == g.name) => 1,
        Run::Step => 2,
    });

    // The manifest's graphs replace or extend the inferred ones.
    let base = folder.to_path_buf();
    if let Some(over) = &manifest.graphs {
        for o in over {
            let at = specs.iter().position(|g| g.name == o.name);
            let spec = match at {
                Some(k) => &mut specs[k],
                None => {
                    let Some(file) = &o.file else {
                        problems.push(format!(
                            "{MANIFEST}: graph '{}' is not among the graphs and gives no file",
                            o.name
                        ));
                        continue;
                    };
                    specs.push(GraphSpec {
                        name: o.name.clone(),
                        file: base.join(file),
                        run: o.run.unwrap_or(Run::Step),
                        inputs: BTreeMap::new(),
                        logits: None,
                    });
                    specs.last_mut().expect("pushed")
                }
            };
            if let Some(f) = &o.file {
                spec.file = base.join(f);
            }
            if let Some(r) = o.run {
                spec.run = r;
            }
            for (k, v) in &o.inputs {
                spec.inputs.insert(k.clone(), v.clone());
            }
            if o.logits.is_some() {
                spec.logits = o.logits.clone();
            }
        }
        // The manifest's order is the run order of the graphs it lists.
        let order: Vec<&str> = over.iter().map(|o| o.name.as_str()).collect();
        specs.sort_by_key(|g| {
            (
                g.run == Run::Step,
                order
                    .iter()
                    .position(|n| *n == g.name)
                    .unwrap_or(usize::MAX),
            )
        });
    }

    // Configs beside the graphs (Hugging Face exports ship them).
    let read_json = |name: &str| -> Option<serde_json::Value> {
        let p = folder.join(name);
        serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
    };
    let generation_config = read_json("generation_config.json");
    let config = read_json("config.json");
    let tokenizer_path = manifest
        .tokenizer
        .as_ref()
        .map(|t| base.join(t))
        .or_else(|| tokenizer.map(Path::to_path_buf))
        .or_else(|| Some(folder.join("tokenizer.json")).filter(|p| p.is_file()));
    let tokenizer_json = tokenizer_path.as_ref().and_then(|p| {
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(p).ok()?).ok()
    });
    let config_ids = |key: &str| -> Option<(Vec<i64>, String)> {
        for (v, from) in [
            (&generation_config, "generation_config.json"),
            (&config, "config.json"),
        ] {
            let Some(x) = v.as_ref().and_then(|v| v.get(key)) else {
                continue;
            };
            let ids: Vec<i64> = match x {
                serde_json::Value::Number(n) => n.as_i64().into_iter().collect(),
                serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_i64()).collect(),
                _ => vec![],
            };
            if !ids.is_empty() {
                return Some((ids, format!("{from} {key}")));
            }
        }
        None
    };
    let special = |contents: &[&str]| -> Option<(i64, String)> {
        let t = tokenizer_json.as_ref()?;
        for c in contents {
            for a in t.get("added_tokens")?.as_array()? {
                if a.get("content").and_then(|v| v.as_str()) == Some(c) {
                    return Some((a.get("id")?.as_i64()?, format!("tokenizer.json's {c}")));
                }
            }
        }
        None
    };

    let start = if let Some(s) = manifest.start.clone() {
        notes.push(format!("start tokens {s:?} from {MANIFEST}"));
        s
    } else if encoder_decoder {
        if let Some((ids, from)) = config_ids("decoder_start_token_id") {
            notes.push(format!("decoder start {ids:?} from {from}"));
            ids
        } else if let Some((id, from)) = special(&["<pad>"]) {
            // T5 and BART-style exports start the decoder from the pad token.
            notes.push(format!("decoder start [{id}] from {from} (T5 convention)"));
            vec![id]
        } else {
            problems.push(format!(
                "the decoder's start token is unknown: no config.json decoder_start_token_id, \
                 no <pad> in the tokenizer; give \"start\" in {MANIFEST}"
            ));
            vec![]
        }
    } else {
        vec![]
    };
    let stop = if let Some(s) = manifest.stop.clone() {
        notes.push(format!("stop tokens {s:?} from {MANIFEST}"));
        s
    } else if let Some((ids, from)) = config_ids("eos_token_id") {
        notes.push(format!("stop tokens {ids:?} from {from}"));
        ids
    } else if let Some((id, from)) = special(&[
        "</s>",
        "<|endoftext|>",
        "<|im_end|>",
        "<eos>",
        "<|end_of_text|>",
        "<|eot_id|>",
    ]) {
        notes.push(format!("stop token [{id}] from {from}"));
        vec![id]
    } else {
        notes.push("no stop token known: generation runs max_new_tokens steps".into());
        vec![]
    };
    let max_new_tokens = manifest
        .max_new_tokens
        .or_else(|| {
            generation_config
                .as_ref()?
                .get("max_new_tokens")?
                .as_u64()
                .map(|v| v as usize)
        })
        .unwrap_or(DEFAULT_MAX_NEW_TOKENS);
    let max_prompt = manifest.max_prompt.unwrap_or(DEFAULT_MAX_PROMPT);
    let mut pipeline = Pipeline {
        schema: SCHEMA.into(),
        graphs: specs,
        start,
        stop,
        max_new_tokens,
        max_prompt,
        tokenizer: tokenizer_path,
        notes: manifest.notes.clone().unwrap_or(notes),
    };
    let info: BTreeMap<&str, &GraphInfo> =
        shapes.iter().map(|s| (s.name.as_str(), s.graph)).collect();
    problems.extend(pipeline.problems(&info));
    if !problems.is_empty() {
        return Err(InputError::new(
            folder,
            format!(
                "cannot wire these graphs into a generation pipeline:\n  - {}\nwrite the missing \
                 parts into {} (m2w port writes the resolved manifest it inferred: start from it)",
                problems.join("\n  - "),
                manifest_path.display()
            ),
        ));
    }
    pipeline
        .graphs
        .iter_mut()
        .for_each(|g| g.file = std::fs::canonicalize(&g.file).unwrap_or_else(|_| g.file.clone()));
    Ok(pipeline)
}
