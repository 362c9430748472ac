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
use std::path::PathBuf;

use crate::{Dim, GraphInfo};

mod infer;
#[cfg(test)]
mod tests;

pub use infer::{DEFAULT_MAX_NEW_TOKENS, DEFAULT_MAX_PROMPT, graph_name, infer};

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

impl GraphSpec {
    /// Every input with its feed: `input_ids <- new_tokens, past_key_values.0.key <- ...`.
    pub fn wiring(&self) -> String {
        self.inputs
            .iter()
            .map(|(k, f)| format!("{k} <- {f}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
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

impl Pipeline {
    /// The graphs in order with when each runs: `encoder (once) -> decoder (per step)`.
    pub fn flow(&self) -> String {
        self.graphs
            .iter()
            .map(|g| {
                let when = match g.run {
                    Run::Once => "once",
                    Run::Step => "per step",
                };
                format!("{} ({when})", g.name)
            })
            .collect::<Vec<_>>()
            .join(" -> ")
    }

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
