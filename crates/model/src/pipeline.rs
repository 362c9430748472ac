//! Generation pipelines: several ONNX graphs that run as one model under a greedy loop
//! (an encoder once, a decoder per step; an embed graph and a decoder with a KV cache).
//!
//! A [`Pipeline`] says, for every input of every graph, where its value comes from
//! ([`Feed`]): the prompt's tokens, the tokens generated so far, masks and positions made
//! from their lengths, another graph's output, or the same graph's output at the previous
//! step (a cache). It is inferred from the names exporters give inputs (optimum,
//! torch.onnx, onnxruntime-genai: `input_ids`, `encoder_hidden_states`,
//! `past_key_values.N.key` -> `present.N.key`, ...) and from `config.json` /
//! `generation_config.json` / `tokenizer.json` beside the graphs; a `pipeline.json` in the
//! folder overrides any part of it. The port writes the resolved manifest back out, so a
//! user can start from it.
//!
//! The loop that follows a manifest is `m2w_reference::pipeline::generate`, run by ONNX
//! Runtime for the reference and by the GPU runners for the engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Dim, GraphInfo, InputError};

/// The manifest's schema tag.
pub const SCHEMA: &str = "m2w.pipeline/1";
/// The manifest file a folder may hold.
pub const MANIFEST: &str = "pipeline.json";

/// When a graph runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Run {
    /// Once per prompt, before the loop (an encoder).
    Once,
    /// Every step of the loop, in manifest order (embed, then decoder).
    Step,
}

/// Where a graph input's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feed {
    /// The prompt's token ids, `[1, P]`.
    Prompt,
    /// Ones over the prompt, `[1, P]`.
    PromptMask,
    /// Every token of the step stream so far (start tokens, or the prompt for a decoder
    /// without encoder, then the generated ones), `[1, S]`: a decoder without a cache.
    Sequence,
    /// The stream's tokens no step graph has seen yet (the prompt at the first step, then
    /// the last token), `[1, N]`: a decoder with a cache.
    NewTokens,
    /// Ones over the cache and the new tokens, `[1, past + N]`.
    ContextMask,
    /// Positions of the new tokens, `past .. past + N`, `[1, N]`.
    Positions,
    /// Whether the cache holds anything (optimum's merged decoders: `use_cache_branch`),
    /// `[1]` bool.
    HasPast,
    /// An output of another graph: a once graph's, or a step graph's earlier in the same
    /// step (`encoder:last_hidden_state`, `embed:inputs_embeds`).
    Output { graph: String, output: String },
    /// This graph's own output at the previous step, empty along its growing axis at the
    /// first step (`previous:present.0.key`).
    Previous { output: String },
}

impl Feed {
    /// Whether the feed is token ids (typed as the graph declares them, int64 or int32).
    pub fn is_tokens(&self) -> bool {
        matches!(self, Feed::Prompt | Feed::Sequence | Feed::NewTokens)
    }
}

impl std::fmt::Display for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Feed::Prompt => write!(f, "prompt"),
            Feed::PromptMask => write!(f, "prompt_mask"),
            Feed::Sequence => write!(f, "sequence"),
            Feed::NewTokens => write!(f, "new_tokens"),
            Feed::ContextMask => write!(f, "context_mask"),
            Feed::Positions => write!(f, "positions"),
            Feed::HasPast => write!(f, "has_past"),
            Feed::Output { graph, output } => write!(f, "{graph}:{output}"),
            Feed::Previous { output } => write!(f, "previous:{output}"),
        }
    }
}

impl std::str::FromStr for Feed {
    type Err = String;
    fn from_str(s: &str) -> Result<Feed, String> {
        Ok(match s {
            "prompt" => Feed::Prompt,
            "prompt_mask" => Feed::PromptMask,
            "sequence" => Feed::Sequence,
            "new_tokens" => Feed::NewTokens,
            "context_mask" => Feed::ContextMask,
            "positions" => Feed::Positions,
            "has_past" => Feed::HasPast,
            _ => match s.split_once(':') {
                Some(("previous", o)) if !o.is_empty() => Feed::Previous {
                    output: o.to_string(),
                },
                Some((g, o)) if !g.is_empty() && !o.is_empty() => Feed::Output {
                    graph: g.to_string(),
                    output: o.to_string(),
                },
                _ => {
                    return Err(format!(
                        "unknown feed '{s}' (prompt, prompt_mask, sequence, new_tokens, \
                         context_mask, positions, has_past, GRAPH:OUTPUT, previous:OUTPUT)"
                    ));
                }
            },
        })
    }
}

impl serde::Serialize for Feed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Feed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Feed, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One graph of a pipeline.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GraphSpec {
    pub name: String,
    /// The ONNX file (relative paths are relative to the manifest's folder).
    pub file: PathBuf,
    pub run: Run,
    /// Every input of the graph and its feed.
    pub inputs: BTreeMap<String, Feed>,
    /// The output whose last position picks the next token (the last step graph's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logits: Option<String>,
}

/// A generation pipeline: its graphs, how values flow between them, and the loop.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pipeline {
    pub schema: String,
    /// Once graphs first, then step graphs in the order they run within a step.
    pub graphs: Vec<GraphSpec>,
    /// Tokens the step stream starts with before the first generated one (an
    /// encoder-decoder's decoder start token; empty for a decoder-only model, whose stream
    /// starts with the prompt).
    pub start: Vec<i64>,
    /// Generation stops after any of these tokens.
    pub stop: Vec<i64>,
    pub max_new_tokens: usize,
    /// The longest prompt the engine is sized for, in tokens.
    pub max_prompt: usize,
    /// A Hugging Face tokenizer.json.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    /// Where each inferred choice came from (printed by inspect and port).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

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

    let mut specs = Vec::new();
    for s in &shapes {
        let run = run_of(s);
        let mut inputs = BTreeMap::new();
        for i in &s.graph.inputs {
            let n = i.name.as_str();
            let feed = match (run, n) {
                (Run::Once, "input_ids") => Some(Feed::Prompt),
                (Run::Once, "attention_mask") => Some(Feed::PromptMask),
                (Run::Step, "input_ids") => Some(if s.has_past() {
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

impl Pipeline {
    pub fn graph(&self, name: &str) -> Option<&GraphSpec> {
        self.graphs.iter().find(|g| g.name == name)
    }

    /// The graph whose logits pick the next token.
    pub fn logits(&self) -> Option<(&GraphSpec, &str)> {
        self.graphs
            .iter()
            .rev()
            .find_map(|g| g.logits.as_deref().map(|l| (g, l)))
    }

    /// Everything that keeps the pipeline from running, given each graph's declared inputs
    /// and outputs.
    pub fn problems(&self, info: &BTreeMap<&str, &GraphInfo>) -> Vec<String> {
        let mut out = Vec::new();
        if !self.graphs.iter().any(|g| g.run == Run::Step) {
            out.push(
                "no graph runs per step (none makes logits, reads a cache or an encoder's states)"
                    .into(),
            );
        }
        if self.logits().is_none() {
            out.push("no step graph has a logits output: name it (\"logits\": OUTPUT)".into());
        }
        for (k, g) in self.graphs.iter().enumerate() {
            let Some(gi) = info.get(g.name.as_str()) else {
                continue;
            };
            let missing: Vec<&str> = gi
                .inputs
                .iter()
                .filter(|i| !g.inputs.contains_key(&i.name))
                .map(|i| i.name.as_str())
                .collect();
            if !missing.is_empty() {
                out.push(format!(
                    "{}: no feed known for input(s) {}",
                    g.name,
                    missing.join(", ")
                ));
            }
            for (input, feed) in &g.inputs {
                if !gi.inputs.iter().any(|i| &i.name == input) {
                    out.push(format!("{}: has no input '{input}'", g.name));
                }
                match feed {
                    Feed::Output { graph, output } => match self.graph(graph) {
                        None => out.push(format!(
                            "{}.{input}: feed '{feed}' names no graph of the pipeline",
                            g.name
                        )),
                        Some(src) => {
                            let earlier = self.graphs[..k].iter().any(|x| x.name == *graph);
                            if src.run == Run::Step && (g.run == Run::Once || !earlier) {
                                out.push(format!(
                                    "{}.{input}: '{graph}' runs per step and not before '{}'",
                                    g.name, g.name
                                ));
                            }
                            if let Some(si) = info.get(graph.as_str())
                                && !si.outputs.iter().any(|o| &o.name == output)
                            {
                                out.push(format!(
                                    "{}.{input}: '{graph}' has no output '{output}'",
                                    g.name
                                ));
                            }
                        }
                    },
                    Feed::Previous { output } => {
                        if g.run == Run::Once {
                            out.push(format!(
                                "{}.{input}: a once graph has no previous step",
                                g.name
                            ));
                        }
                        if !gi.outputs.iter().any(|o| &o.name == output) {
                            out.push(format!(
                                "{}.{input}: '{}' has no output '{output}'",
                                g.name, g.name
                            ));
                        }
                    }
                    Feed::Sequence
                    | Feed::NewTokens
                    | Feed::ContextMask
                    | Feed::Positions
                    | Feed::HasPast
                        if g.run == Run::Once =>
                    {
                        out.push(format!(
                            "{}.{input}: '{feed}' changes every step, but '{}' runs once",
                            g.name, g.name
                        ));
                    }
                    _ => {}
                }
            }
            if let Some(l) = &g.logits
                && !gi.outputs.iter().any(|o| &o.name == l)
            {
                out.push(format!("{}: has no output '{l}' for logits", g.name));
            }
        }
        out
    }

    /// The largest length each feed gives its token axis: the prompt, or the step stream.
    pub fn max_len(&self, feed: &Feed) -> usize {
        let stream = self.start.len()
            + self.max_new_tokens
            + if self.start.is_empty() {
                self.max_prompt
            } else {
                0
            };
        match feed {
            Feed::Prompt | Feed::PromptMask => self.max_prompt,
            Feed::HasPast => 1,
            _ => stream,
        }
    }

    /// The named dims each graph's caches start at 0 with (the axes after the batch of its
    /// `previous:` inputs), by graph: their plans must take 0 there.
    pub fn empty_dims(&self, infos: &BTreeMap<String, GraphInfo>) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for g in &self.graphs {
            let Some(info) = infos.get(&g.name) else {
                continue;
            };
            for i in &info.inputs {
                if !matches!(g.inputs.get(&i.name), Some(Feed::Previous { .. })) {
                    continue;
                }
                for d in i.shape.iter().skip(1) {
                    if let Dim::Symbolic(s) = d {
                        let list = out.entry(g.name.clone()).or_default();
                        if !list.contains(s) {
                            list.push(s.clone());
                        }
                    }
                }
            }
        }
        out
    }

    /// Maxima of every graph's named dims, by graph: the token axis (1) of token, mask and
    /// position feeds, the batch axis (0) at 1, a cache's axes after the batch at the
    /// stream's length, and an input fed by another graph's output takes that output's
    /// maxima axis by axis (the decoder's `encoder_sequence_length` is the prompt's). A
    /// dim nothing decides is left to the caller.
    pub fn max_dims(
        &self,
        infos: &BTreeMap<String, GraphInfo>,
    ) -> BTreeMap<String, BTreeMap<String, usize>> {
        let mut all: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for g in &self.graphs {
            let Some(info) = infos.get(&g.name) else {
                continue;
            };
            let mut out = BTreeMap::new();
            let mut set = |d: &Dim, v: usize| {
                if let Dim::Symbolic(s) = d {
                    let e = out.entry(s.clone()).or_insert(v);
                    *e = (*e).max(v);
                }
            };
            for i in &info.inputs {
                let Some(feed) = g.inputs.get(&i.name) else {
                    continue;
                };
                if let Some(d) = i.shape.first() {
                    set(d, 1);
                }
                match feed {
                    Feed::Previous { .. } => {
                        for d in i.shape.iter().skip(1) {
                            set(d, self.max_len(feed));
                        }
                    }
                    Feed::Output { graph, output } => {
                        let (Some(src), Some(src_max)) = (infos.get(graph), all.get(graph)) else {
                            continue;
                        };
                        let Some(o) = src.outputs.iter().find(|o| &o.name == output) else {
                            continue;
                        };
                        for (d, sd) in i.shape.iter().zip(&o.shape).skip(1) {
                            if let Dim::Symbolic(sn) = sd
                                && let Some(&v) = src_max.get(sn)
                            {
                                set(d, v);
                            }
                        }
                    }
                    Feed::HasPast => {}
                    _ => {
                        if let Some(d) = i.shape.get(1) {
                            set(d, self.max_len(feed));
                        }
                    }
                }
            }
            all.insert(g.name.clone(), out);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ValueInfo;

    fn vi(name: &str, dtype: &str, shape: &[&str]) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            dtype: dtype.into(),
            shape: shape
                .iter()
                .map(|d| match d.parse::<i64>() {
                    Ok(n) => Dim::Fixed(n),
                    Err(_) => Dim::Symbolic(d.to_string()),
                })
                .collect(),
        }
    }

    fn named(file: PathBuf, g: &GraphInfo) -> (String, PathBuf, &GraphInfo) {
        (graph_name(&file), file, g)
    }

    fn graph(inputs: Vec<ValueInfo>, outputs: Vec<ValueInfo>) -> GraphInfo {
        GraphInfo {
            inputs,
            outputs,
            ..Default::default()
        }
    }

    fn t5() -> (GraphInfo, GraphInfo) {
        (
            graph(
                vec![
                    vi("input_ids", "i64", &["batch", "enc"]),
                    vi("attention_mask", "i64", &["batch", "enc"]),
                ],
                vec![vi("last_hidden_state", "f32", &["batch", "enc", "512"])],
            ),
            graph(
                vec![
                    vi("input_ids", "i64", &["batch", "dec"]),
                    vi("encoder_hidden_states", "f32", &["batch", "enc", "512"]),
                    vi("encoder_attention_mask", "i64", &["batch", "enc"]),
                ],
                vec![vi("logits", "f32", &["batch", "dec", "32128"])],
            ),
        )
    }

    #[test]
    fn an_encoder_decoder_is_wired_from_its_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tokenizer.json"),
            r#"{"added_tokens": [{"id": 0, "content": "<pad>"}, {"id": 1, "content": "</s>"}]}"#,
        )
        .unwrap();
        let (enc, dec) = t5();
        let p = infer(
            &[
                named(dir.path().join("decoder_model.onnx"), &dec),
                named(dir.path().join("encoder_model.onnx"), &enc),
            ],
            dir.path(),
            None,
        )
        .unwrap();
        assert_eq!(p.graphs[0].name, "encoder");
        assert_eq!(p.graphs[0].run, Run::Once);
        assert_eq!(p.graphs[1].run, Run::Step);
        assert_eq!(p.graphs[1].inputs["input_ids"], Feed::Sequence);
        assert_eq!(
            p.graphs[1].inputs["encoder_hidden_states"].to_string(),
            "encoder:last_hidden_state"
        );
        assert_eq!(
            p.graphs[1].inputs["encoder_attention_mask"],
            Feed::PromptMask
        );
        assert_eq!((p.start.clone(), p.stop.clone()), (vec![0], vec![1]));
        assert_eq!(p.logits().unwrap().1, "logits");
        let infos = [
            ("encoder".to_string(), enc.clone()),
            ("decoder".to_string(), dec.clone()),
        ]
        .into_iter()
        .collect();
        let all = p.max_dims(&infos);
        let dims = &all["decoder"];
        assert_eq!(dims["batch"], 1);
        assert_eq!(dims["dec"], 1 + DEFAULT_MAX_NEW_TOKENS);
        assert_eq!(dims["enc"], DEFAULT_MAX_PROMPT);
        // Round trip through the manifest's text.
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Pipeline>(&text).unwrap(), p);
    }

    #[test]
    fn a_decoder_with_a_cache_feeds_its_presents_back() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"eos_token_id": [2, 7]}"#,
        )
        .unwrap();
        let dec = graph(
            vec![
                vi("input_ids", "i64", &["batch", "seq"]),
                vi("attention_mask", "i64", &["batch", "total"]),
                vi("position_ids", "i64", &["batch", "seq"]),
                vi(
                    "past_key_values.0.key",
                    "f32",
                    &["batch", "3", "past", "64"],
                ),
                vi(
                    "past_key_values.0.value",
                    "f32",
                    &["batch", "3", "past", "64"],
                ),
            ],
            vec![
                vi("logits", "f32", &["batch", "seq", "100"]),
                vi("present.0.key", "f32", &["batch", "3", "total", "64"]),
                vi("present.0.value", "f32", &["batch", "3", "total", "64"]),
            ],
        );
        let p = infer(
            &[named(dir.path().join("model.onnx"), &dec)],
            dir.path(),
            None,
        )
        .unwrap();
        let g = &p.graphs[0];
        assert_eq!(g.inputs["input_ids"], Feed::NewTokens);
        assert_eq!(g.inputs["attention_mask"], Feed::ContextMask);
        assert_eq!(g.inputs["position_ids"], Feed::Positions);
        assert_eq!(
            g.inputs["past_key_values.0.value"].to_string(),
            "previous:present.0.value"
        );
        assert!(p.start.is_empty());
        assert_eq!(p.stop, vec![2, 7]);
        let infos = [("model".to_string(), dec.clone())].into_iter().collect();
        assert_eq!(p.empty_dims(&infos)["model"], vec!["past".to_string()]);
        let dims = &p.max_dims(&infos)["model"];
        assert_eq!(dims["past"], DEFAULT_MAX_PROMPT + DEFAULT_MAX_NEW_TOKENS);
    }

    #[test]
    fn what_cannot_be_wired_is_listed_in_one_error_and_a_manifest_fills_it() {
        let dir = tempfile::tempdir().unwrap();
        let dec = graph(
            vec![
                vi("input_ids", "i64", &["batch", "seq"]),
                vi("pixel_values", "f32", &["batch", "3", "224", "224"]),
                vi("encoder_hidden_states", "f32", &["batch", "enc", "8"]),
            ],
            vec![vi("scores", "f32", &["batch", "seq", "100"])],
        );
        let e = infer(
            &[named(dir.path().join("decoder.onnx"), &dec)],
            dir.path(),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("no feed known for input(s) pixel_values, encoder_hidden_states"),
            "{e}"
        );
        assert!(e.contains("no step graph has a logits output"), "{e}");
        assert!(e.contains("pipeline.json"), "{e}");
        let vision = graph(
            vec![vi("pixel_values", "f32", &["batch", "3", "224", "224"])],
            vec![vi("image_features", "f32", &["batch", "enc", "8"])],
        );
        std::fs::write(
            dir.path().join(MANIFEST),
            r#"{"graphs": [
                {"name": "vision", "run": "once", "inputs": {"pixel_values": "prompt"}},
                {"name": "decoder", "logits": "scores",
                 "inputs": {"pixel_values": "prompt", "encoder_hidden_states": "vision:image_features"}}
            ], "start": [5], "stop": [6]}"#,
        )
        .unwrap();
        let p = infer(
            &[
                named(dir.path().join("decoder.onnx"), &dec),
                named(dir.path().join("vision.onnx"), &vision),
            ],
            dir.path(),
            None,
        )
        .unwrap();
        assert_eq!(p.graphs[0].name, "vision");
        assert_eq!(p.logits().unwrap().1, "scores");
        assert_eq!((p.start.clone(), p.stop.clone()), (vec![5], vec![6]));
        // A feed that names a missing graph, or a step value fed to a once graph.
        std::fs::write(
            dir.path().join(MANIFEST),
            r#"{"graphs": [{"name": "vision", "run": "once", "inputs": {"pixel_values": "sequence"}},
                {"name": "decoder", "logits": "scores", "inputs": {"pixel_values": "prompt",
                 "encoder_hidden_states": "nowhere:x"}}], "start": [5]}"#,
        )
        .unwrap();
        let e = infer(
            &[
                named(dir.path().join("decoder.onnx"), &dec),
                named(dir.path().join("vision.onnx"), &vision),
            ],
            dir.path(),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("'sequence' changes every step, but 'vision' runs once"),
            "{e}"
        );
        assert!(e.contains("feed 'nowhere:x' names no graph"), "{e}");
    }

    #[test]
    fn feeds_parse_and_print() {
        for s in [
            "prompt",
            "new_tokens",
            "previous:present.3.value",
            "encoder:last_hidden_state",
        ] {
            assert_eq!(s.parse::<Feed>().unwrap().to_string(), s);
        }
        assert!("bogus".parse::<Feed>().is_err());
        assert!(":x".parse::<Feed>().is_err());
    }
}
