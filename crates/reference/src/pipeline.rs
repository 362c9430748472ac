//! The generation loop of a [`Pipeline`], written once and run by two backends: ONNX
//! Runtime here (the reference: [`loop_reference`]) and the GPU runners in the port (the
//! engine). The loop builds each graph's inputs from its feeds, runs the once graphs, then
//! the step graphs per token, and picks the next token greedily from the last position of
//! the logits.
//!
//! The reference writes `generation.json` ([`LoopRecord`]): every prompt with its ids, the
//! greedy tokens and their text; and, for the first prompt, every graph's inputs at the
//! first and the last step, from which the port dumps every checkpoint of that graph
//! through ONNX Runtime ([`crate::onnx_ref::reference`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use m2w_model::pipeline::{Feed, GraphSpec, Pipeline, Run};
use m2w_model::{Dim, GraphInfo};

use crate::npy::HostTensor;
use crate::{RefError, sanitize};

/// Runs one graph of a pipeline on some backend.
pub trait GraphRunner {
    /// Runs `graph` on `inputs` (every input it declares) and returns at least the outputs
    /// named in `want`.
    fn run(
        &mut self,
        graph: &GraphSpec,
        inputs: &[(String, HostTensor)],
        want: &[String],
    ) -> Result<BTreeMap<String, HostTensor>, String>;
}

/// Candidates behind the top token whose margins [`margin_shift`] follows.
pub const CANDIDATES: usize = 4;

/// How far `other` moves the margins between `base`'s top token and its next
/// [`CANDIDATES`] best: the largest |margin in other - margin in base| (NaN when a row
/// holds a NaN or the rows differ in length).
pub fn margin_shift(base: &[f32], other: &[f32]) -> f32 {
    if base.len() != other.len() || base.iter().chain(other).any(|v| v.is_nan()) {
        return f32::NAN;
    }
    let mut order: Vec<usize> = (0..base.len()).collect();
    order.sort_by(|&a, &b| base[b].total_cmp(&base[a]));
    let Some(&top) = order.first() else {
        return 0.0;
    };
    order[1..]
        .iter()
        .take(CANDIDATES)
        .map(|&c| ((other[top] - other[c]) - (base[top] - base[c])).abs())
        .fold(0f32, f32::max)
}

/// One greedy generation.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Generated {
    pub prompt_ids: Vec<i64>,
    /// The generated tokens (the stop token included when one ended the loop).
    pub tokens: Vec<i64>,
    pub stopped: bool,
    /// The last row of the logits at each step (what picked each token).
    #[serde(skip)]
    pub logits: Vec<Vec<f32>>,
    /// Per step, how far the runtime itself moved an earlier position's leading margins
    /// ([`margin_shift`]) when it computed that position again in this step's longer
    /// sequence (a decoder without a cache recomputes every position; a causal model's
    /// earlier logits do not depend on later tokens, so any shift is the runtime's own
    /// noise: quantization ranges computed over the whole sequence). 0 with a cache.
    #[serde(default)]
    pub self_noise: Vec<f32>,
}

/// A graph's inputs at one step of the loop.
pub struct Fed<'a> {
    pub step: usize,
    pub graph: &'a GraphSpec,
    pub inputs: &'a [(String, HostTensor)],
}

fn token_tensor(decl: &str, shape: Vec<u64>, ids: &[i64]) -> HostTensor {
    if decl == "i32" {
        HostTensor::I32(shape, ids.iter().map(|&v| v as i32).collect())
    } else {
        HostTensor::I64(shape, ids.to_vec())
    }
}

/// An empty cache: the declared shape with the batch at 1 and every other named dim at 0.
fn empty_like(decl: &m2w_model::ValueInfo) -> HostTensor {
    let shape: Vec<u64> = decl
        .shape
        .iter()
        .enumerate()
        .map(|(k, d)| match d {
            Dim::Fixed(n) => (*n).max(0) as u64,
            Dim::Symbolic(_) if k == 0 => 1,
            Dim::Symbolic(_) => 0,
        })
        .collect();
    match decl.dtype.as_str() {
        "f16" => HostTensor::F16(shape, vec![]),
        _ => HostTensor::F32(shape, vec![]),
    }
}

/// The index of the largest value of the last row (the first on ties; a NaN wins, as
/// numpy's argmax).
pub fn argmax_last(logits: &HostTensor) -> Result<i64, String> {
    let v = logits.to_f64();
    let width = *logits.shape().last().ok_or("logits are a scalar")? as usize;
    if width == 0 || v.len() < width {
        return Err("logits are empty".into());
    }
    let row = &v[v.len() - width..];
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x.is_nan() {
            return Ok(i as i64);
        }
        if x > row[best] {
            best = i;
        }
    }
    Ok(best as i64)
}

/// Greedy generation from `prompt_ids`: once graphs, then the step graphs per token until
/// a stop token or `max_new` tokens. `fed` sees every graph's inputs before it runs.
pub fn generate(
    p: &Pipeline,
    infos: &BTreeMap<String, GraphInfo>,
    prompt_ids: &[i64],
    max_new: usize,
    runner: &mut dyn GraphRunner,
    fed: &mut dyn FnMut(Fed) -> Result<(), String>,
) -> Result<Generated, String> {
    let (logits_graph, logits) = p.logits().ok_or("the pipeline has no logits output")?;
    let mut stream: Vec<i64> = p.start.clone();
    if p.start.is_empty() {
        stream.extend_from_slice(prompt_ids);
    }
    if stream.is_empty() {
        return Err("nothing to start from: an empty prompt and no start tokens".into());
    }
    // Outputs by "graph:output": once graphs', then this step's; the previous step's.
    let mut values: BTreeMap<String, HostTensor> = BTreeMap::new();
    let mut previous: BTreeMap<String, HostTensor> = BTreeMap::new();
    let wanted = |g: &GraphSpec| -> Vec<String> {
        let mut w: Vec<String> = p
            .graphs
            .iter()
            .flat_map(|o| o.inputs.values())
            .filter_map(|f| match f {
                Feed::Output { graph, output } if *graph == g.name => Some(output.clone()),
                _ => None,
            })
            .chain(g.inputs.values().filter_map(|f| match f {
                Feed::Previous { output } => Some(output.clone()),
                _ => None,
            }))
            .collect();
        if g.name == logits_graph.name {
            w.push(logits.to_string());
        }
        w.sort();
        w.dedup();
        w
    };
    let mut fed_len = 0usize;
    let mut tokens = Vec::new();
    let mut stopped = false;
    let mut step = 0usize;
    let mut rows: Vec<Vec<f32>> = Vec::new();
    let mut self_noise = Vec::new();
    let run_graph = |g: &GraphSpec,
                     step: usize,
                     stream: &[i64],
                     fed_len: usize,
                     values: &mut BTreeMap<String, HostTensor>,
                     previous: &BTreeMap<String, HostTensor>,
                     runner: &mut dyn GraphRunner,
                     fed: &mut dyn FnMut(Fed) -> Result<(), String>|
     -> Result<(), String> {
        let info = infos
            .get(&g.name)
            .ok_or_else(|| format!("no graph '{}'", g.name))?;
        let mut inputs = Vec::new();
        for decl in &info.inputs {
            let feed = g
                .inputs
                .get(&decl.name)
                .ok_or_else(|| format!("{}: no feed for '{}'", g.name, decl.name))?;
            let new = &stream[fed_len.min(stream.len())..];
            let ones = |n: usize| -> HostTensor {
                token_tensor(&decl.dtype, vec![1, n as u64], &vec![1; n])
            };
            let t = match feed {
                Feed::Prompt => {
                    token_tensor(&decl.dtype, vec![1, prompt_ids.len() as u64], prompt_ids)
                }
                Feed::PromptMask => ones(prompt_ids.len()),
                Feed::Sequence => token_tensor(&decl.dtype, vec![1, stream.len() as u64], stream),
                Feed::NewTokens => token_tensor(&decl.dtype, vec![1, new.len() as u64], new),
                Feed::ContextMask => ones(fed_len + new.len()),
                Feed::Positions => {
                    let pos: Vec<i64> = (fed_len..fed_len + new.len()).map(|v| v as i64).collect();
                    token_tensor(&decl.dtype, vec![1, pos.len() as u64], &pos)
                }
                Feed::HasPast => HostTensor::Bool(vec![1], vec![fed_len > 0]),
                Feed::Output { graph, output } => values
                    .get(&format!("{graph}:{output}"))
                    .cloned()
                    .ok_or_else(|| {
                        format!(
                            "{}.{}: '{graph}' did not give '{output}'",
                            g.name, decl.name
                        )
                    })?,
                Feed::Previous { output } => previous
                    .get(&format!("{}:{output}", g.name))
                    .cloned()
                    .unwrap_or_else(|| empty_like(decl)),
            };
            inputs.push((decl.name.clone(), t));
        }
        fed(Fed {
            step,
            graph: g,
            inputs: &inputs,
        })?;
        let out = runner.run(g, &inputs, &wanted(g))?;
        for (k, v) in out {
            values.insert(format!("{}:{k}", g.name), v);
        }
        Ok(())
    };
    for g in p.graphs.iter().filter(|g| g.run == Run::Once) {
        run_graph(g, 0, &stream, fed_len, &mut values, &previous, runner, fed)?;
    }
    while tokens.len() < max_new {
        for g in p.graphs.iter().filter(|g| g.run == Run::Step) {
            run_graph(
                g,
                step,
                &stream,
                fed_len,
                &mut values,
                &previous,
                runner,
                fed,
            )?;
        }
        let l = values
            .get(&format!("{}:{logits}", logits_graph.name))
            .ok_or("the logits were not read")?;
        let next = argmax_last(l)?;
        let width = *l.shape().last().unwrap_or(&0) as usize;
        let all: Vec<f32> = l.to_f64().iter().map(|&v| v as f32).collect();
        let count = all.len() / width.max(1);
        // Row `count - 1 - (step - j)` is step j's position computed again.
        let mut noise = 0f32;
        let from = step.saturating_sub(count.saturating_sub(1));
        for (j, earlier) in rows.iter().enumerate().skip(from) {
            let r = count - 1 - (step - j);
            let shift = margin_shift(earlier, &all[r * width..(r + 1) * width]);
            noise = if shift.is_nan() {
                f32::INFINITY
            } else {
                noise.max(shift)
            };
        }
        self_noise.push(noise);
        rows.push(all[all.len() - width..].to_vec());
        // This step's own outputs become the next step's caches.
        previous = values
            .iter()
            .filter(|(k, _)| {
                p.graphs
                    .iter()
                    .any(|g| g.run == Run::Step && k.starts_with(&format!("{}:", g.name)))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        fed_len = stream.len();
        stream.push(next);
        tokens.push(next);
        step += 1;
        if p.stop.contains(&next) {
            stopped = true;
            break;
        }
    }
    Ok(Generated {
        prompt_ids: prompt_ids.to_vec(),
        tokens,
        stopped,
        logits: rows,
        self_noise,
    })
}

/// A graph's inputs at one step of the first prompt, saved for its checkpoint dump.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RecordedStep {
    pub graph: String,
    pub step: usize,
    /// Folder of `<input>.npy` files (relative to the record's folder).
    pub dir: PathBuf,
    /// (input name, file name) in the graph's input order.
    pub inputs: Vec<(String, String)>,
}

/// One prompt's greedy generation.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PromptRecord {
    pub text: String,
    #[serde(flatten)]
    pub generated: Generated,
    /// The tokens as text (special tokens skipped).
    pub output: String,
}

/// `generation.json` of a pipeline's reference.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct LoopRecord {
    pub runtime: String,
    pub max_new_tokens: usize,
    pub prompts: Vec<PromptRecord>,
    pub recorded: Vec<RecordedStep>,
}

impl LoopRecord {
    pub const FILE: &'static str = "generation.json";
    pub fn read(dir: &Path) -> Result<LoopRecord, RefError> {
        let p = dir.join(Self::FILE);
        let text = std::fs::read_to_string(&p).map_err(|e| RefError::Io(p.clone(), e))?;
        serde_json::from_str(&text).map_err(|e| RefError::Usage(format!("{}: {e}", p.display())))
    }
}

/// The file of prompt `k`'s logits rows (`[steps, vocabulary]`) in the reference folder.
pub fn logits_file(k: usize) -> String {
    format!("logits-prompt{k}.npy")
}

/// The pipeline's tokenizer.
pub fn tokenizer(p: &Pipeline) -> Result<tokenizers::Tokenizer, RefError> {
    let path = p.tokenizer.as_ref().ok_or_else(|| {
        RefError::Usage("the pipeline has no tokenizer: put tokenizer.json beside the graphs or name it in pipeline.json".into())
    })?;
    tokenizers::Tokenizer::from_file(path)
        .map_err(|e| RefError::Usage(format!("{}: not a tokenizer.json: {e}", path.display())))
}

/// A prompt's ids as the tokenizer's post-processor gives them (T5 appends `</s>`,
/// Llama-style tokenizers prepend `<s>`).
pub fn encode(tok: &tokenizers::Tokenizer, text: &str) -> Result<Vec<i64>, RefError> {
    Ok(tok
        .encode(text, true)
        .map_err(|e| RefError::Runtime(format!("tokenizer: {e}")))?
        .get_ids()
        .iter()
        .map(|&i| i as i64)
        .collect())
}

pub fn decode(tok: &tokenizers::Tokenizer, ids: &[i64]) -> Result<String, RefError> {
    let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
    tok.decode(&ids, true)
        .map_err(|e| RefError::Runtime(format!("tokenizer: {e}")))
}

/// A graph's named inputs.
type Inputs = Vec<(String, HostTensor)>;

struct OrtRunner {
    sessions: BTreeMap<String, ort::session::Session>,
}

impl GraphRunner for OrtRunner {
    fn run(
        &mut self,
        graph: &GraphSpec,
        inputs: &[(String, HostTensor)],
        _want: &[String],
    ) -> Result<BTreeMap<String, HostTensor>, String> {
        let s = self
            .sessions
            .get_mut(&graph.name)
            .ok_or_else(|| format!("no session for '{}'", graph.name))?;
        let out =
            crate::onnx_ref::run_once(s, inputs).map_err(|e| format!("{}: {e}", graph.name))?;
        Ok(out
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }
}

/// Runs the loop through ONNX Runtime for every prompt; writes `generation.json` and, for
/// the first prompt, every graph's inputs at its first and last step into `out`
/// (replaced atomically).
pub fn loop_reference(
    lib: &Path,
    p: &Pipeline,
    infos: &BTreeMap<String, GraphInfo>,
    prompts: &[String],
    out: &Path,
) -> Result<LoopRecord, RefError> {
    if prompts.is_empty() {
        return Err(RefError::Usage("no prompt to generate from".into()));
    }
    let tok = tokenizer(p)?;
    let mut sessions = BTreeMap::new();
    for g in &p.graphs {
        // Graphs with integer GEMMs get the oracle's exact form (`exact_int8`); the rest
        // go to ORT as their file holds them.
        let bytes = match infos.get(&g.name) {
            Some(info) if crate::exact_int8::has_integer_gemm(info) => {
                let model = m2w_model::Model::open(&g.file)?;
                crate::onnx_ref::oracle_model_bytes(&model, false)?.0
            }
            _ => std::fs::read(&g.file).map_err(|e| RefError::Io(g.file.clone(), e))?,
        };
        sessions.insert(
            g.name.clone(),
            crate::onnx_ref::open_session(lib, &bytes, &g.file)?,
        );
    }
    let mut runner = OrtRunner { sessions };
    let mut records = Vec::new();
    // The first prompt's inputs of every graph at every step (the last is chosen after).
    let mut steps: Vec<(String, usize, Inputs)> = Vec::new();
    for (k, text) in prompts.iter().enumerate() {
        let ids = encode(&tok, text)?;
        if ids.len() > p.max_prompt {
            return Err(RefError::Usage(format!(
                "prompt {k} has {} tokens, more than max_prompt {}",
                ids.len(),
                p.max_prompt
            )));
        }
        let mut keep = |f: Fed| {
            if k == 0 {
                steps.push((f.graph.name.clone(), f.step, f.inputs.to_vec()));
            }
            Ok(())
        };
        let g = generate(p, infos, &ids, p.max_new_tokens, &mut runner, &mut keep)
            .map_err(RefError::Runtime)?;
        let output = decode(&tok, &g.tokens)?;
        records.push(PromptRecord {
            text: text.clone(),
            generated: g,
            output,
        });
    }
    let last = steps.iter().map(|s| s.1).max().unwrap_or(0);
    let mut record = LoopRecord {
        runtime: "onnxruntime 1.31.1 via ort 2.0.0-rc.15, graph optimizations off".into(),
        max_new_tokens: p.max_new_tokens,
        prompts: records,
        recorded: vec![],
    };
    crate::write_dir(out, |dir| {
        for (k, r) in record.prompts.iter().enumerate() {
            let rows = &r.generated.logits;
            let width = rows.first().map_or(0, Vec::len);
            let t = HostTensor::F32(
                vec![rows.len() as u64, width as u64],
                rows.iter().flatten().copied().collect(),
            );
            crate::write_npy(&dir.join(logits_file(k)), &t)?;
        }
        for (graph, step, inputs) in &steps {
            if *step != 0 && *step != last {
                continue;
            }
            let rel = PathBuf::from(format!("{graph}-step{step}"));
            std::fs::create_dir_all(dir.join(&rel)).map_err(|e| RefError::Io(dir.join(&rel), e))?;
            let mut files = Vec::new();
            for (name, t) in inputs {
                let file = format!("{}.npy", sanitize(name));
                crate::write_npy(&dir.join(&rel).join(&file), t)?;
                files.push((name.clone(), file));
            }
            record.recorded.push(RecordedStep {
                graph: graph.clone(),
                step: *step,
                dir: rel,
                inputs: files,
            });
        }
        let text = serde_json::to_string_pretty(&record).expect("record serialises") + "\n";
        std::fs::write(dir.join(LoopRecord::FILE), text)
            .map_err(|e| RefError::Io(dir.join(LoopRecord::FILE), e))?;
        std::fs::write(
            dir.join(m2w_model::pipeline::MANIFEST),
            serde_json::to_string_pretty(p).expect("pipeline serialises") + "\n",
        )
        .map_err(|e| RefError::Io(dir.join(m2w_model::pipeline::MANIFEST), e))?;
        Ok(())
    })?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_last_row_the_first_maximum_and_nan() {
        let t = HostTensor::F32(vec![1, 2, 3], vec![9.0, 0.0, 0.0, 1.0, 3.0, 3.0]);
        assert_eq!(argmax_last(&t).unwrap(), 1);
        let t = HostTensor::F32(vec![1, 3], vec![1.0, f32::NAN, 5.0]);
        assert_eq!(argmax_last(&t).unwrap(), 1);
        let t = HostTensor::F32(vec![1, 0], vec![]);
        assert!(argmax_last(&t).is_err());
    }

    /// A fake backend: the "decoder" returns logits that pick (last input token + 1), the
    /// "encoder" returns its ids as floats; the cache grows by the new tokens.
    struct Counting;
    impl GraphRunner for Counting {
        fn run(
            &mut self,
            graph: &GraphSpec,
            inputs: &[(String, HostTensor)],
            _want: &[String],
        ) -> Result<BTreeMap<String, HostTensor>, String> {
            let get = |n: &str| inputs.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            let mut out = BTreeMap::new();
            if graph.name == "encoder" {
                let ids = get("input_ids").unwrap().to_f64();
                out.insert(
                    "last_hidden_state".into(),
                    HostTensor::F32(
                        vec![1, ids.len() as u64, 1],
                        ids.iter().map(|&v| v as f32).collect(),
                    ),
                );
                return Ok(out);
            }
            let ids = get("input_ids").unwrap().to_f64();
            let last = *ids.last().unwrap() as usize;
            let mut logits = vec![0f32; 8];
            logits[(last + 1) % 8] = 1.0;
            out.insert("logits".into(), HostTensor::F32(vec![1, 1, 8], logits));
            if let Some(past) = get("past") {
                let mut v = past.to_f64();
                v.extend(ids.iter());
                out.insert(
                    "present".into(),
                    HostTensor::F32(
                        vec![1, v.len() as u64],
                        v.iter().map(|&x| x as f32).collect(),
                    ),
                );
            }
            Ok(out)
        }
    }

    fn vi(name: &str, dtype: &str, shape: &[Dim]) -> m2w_model::ValueInfo {
        m2w_model::ValueInfo {
            name: name.into(),
            dtype: dtype.into(),
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn the_loop_feeds_sequences_caches_masks_and_positions() {
        let s = |n: &str| Dim::Symbolic(n.into());
        let dec = GraphInfo {
            inputs: vec![
                vi("input_ids", "i32", &[s("b"), s("n")]),
                vi("attention_mask", "i64", &[s("b"), s("t")]),
                vi("position_ids", "i64", &[s("b"), s("n")]),
                vi("past", "f32", &[s("b"), s("p")]),
            ],
            outputs: vec![
                vi("logits", "f32", &[s("b"), s("n"), Dim::Fixed(8)]),
                vi("present", "f32", &[s("b"), s("t")]),
            ],
            ..Default::default()
        };
        let mut p = Pipeline {
            schema: m2w_model::pipeline::SCHEMA.into(),
            graphs: vec![GraphSpec {
                name: "decoder".into(),
                file: "decoder.onnx".into(),
                run: Run::Step,
                inputs: [
                    ("input_ids", Feed::NewTokens),
                    ("attention_mask", Feed::ContextMask),
                    ("position_ids", Feed::Positions),
                    (
                        "past",
                        Feed::Previous {
                            output: "present".into(),
                        },
                    ),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
                logits: Some("logits".into()),
            }],
            start: vec![],
            stop: vec![6],
            max_new_tokens: 10,
            max_prompt: 8,
            tokenizer: None,
            notes: vec![],
        };
        let infos: BTreeMap<String, GraphInfo> =
            [("decoder".to_string(), dec)].into_iter().collect();
        let mut seen = Vec::new();
        let g = generate(&p, &infos, &[2, 3], 10, &mut Counting, &mut |f| {
            let v = |n: &str| f.inputs.iter().find(|(k, _)| k == n).unwrap().1.clone();
            seen.push((
                v("input_ids"),
                v("attention_mask"),
                v("position_ids"),
                v("past").shape().to_vec(),
            ));
            Ok(())
        })
        .unwrap();
        assert_eq!(g.tokens, vec![4, 5, 6]);
        assert!(g.stopped);
        assert_eq!(seen[0].0, HostTensor::I32(vec![1, 2], vec![2, 3]));
        assert_eq!(seen[0].2, HostTensor::I64(vec![1, 2], vec![0, 1]));
        assert_eq!(seen[0].3, vec![1, 0]);
        assert_eq!(seen[1].0, HostTensor::I32(vec![1, 1], vec![4]));
        assert_eq!(seen[1].1, HostTensor::I64(vec![1, 3], vec![1, 1, 1]));
        assert_eq!(seen[1].2, HostTensor::I64(vec![1, 1], vec![2]));
        assert_eq!(seen[2].3, vec![1, 3]);
        // Without stop tokens the loop runs max_new steps.
        p.stop.clear();
        let g = generate(&p, &infos, &[2, 3], 4, &mut Counting, &mut |_| Ok(())).unwrap();
        assert_eq!((g.tokens, g.stopped), (vec![4, 5, 6, 7], false));
    }
}
