//! `port` of a generation pipeline (several ONNX graphs and a loop: an encoder and a
//! decoder, an embed graph and a decoder with a KV cache): the manifest
//! ([`m2w_model::pipeline`]), the loop through ONNX Runtime on every prompt, then each graph
//! ported as a graph of its own from its inputs at the loop's first step, validated again
//! at the loop's last step, and the loop run on the GPU engines, whose greedy tokens must
//! equal ONNX Runtime's.
//!
//! Folder: `pipeline.json` (the resolved manifest), `reference/` (generation.json and
//! each graph's recorded inputs), one port folder per graph (`<graph>/inspect`, `weights`,
//! `reference` at the first step, `reference-step<K>` at the last, `engine`, `validate`),
//! and `validate/generation.json` (both loops' tokens).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use m2w_model::pipeline::{GraphSpec, Pipeline};
use m2w_reference::pipeline::{GraphRunner, LoopRecord};

use crate::port::{PortOptions, PortOutcome};
use crate::{PortError, fresh, input, mark, stamp, write_reports};

/// Texts the loop runs on when the user gives none: short, varied English.
pub const DEFAULT_PROMPTS: [&str; 5] = [
    "Install the dependencies, run the test suite and fix the failing parser test.",
    "The weather in Paris was sunny all week, so we walked along the river every evening.",
    "Refactor the billing module to use the new currency type and update its callers.",
    "A short history of the printing press and how it changed the way people read.",
    "Download the quarterly sales report, compare it with last year and email a summary.",
];

/// The pipelines' f32 checkpoints also take an error up to this times the checkpoint's
/// largest |value| ([`m2w_validate::Tolerance::scaled`]): generation runs deep f32 stacks
/// whose activations hold outliers (SmolLM2's residual stream reaches 2e4), and two f32
/// sums in different orders differ by up to about K·u of their terms' magnitudes: 1e-4 is
/// K·u for reductions of about 1700 terms.
pub const SCALED_F32: f64 = 1e-4;

/// The validate options of a pipeline's graphs: the user's, with [`SCALED_F32`] where the
/// f32 tolerance has no scaled part.
fn pipeline_validate(opts: &m2w_validate::Options) -> m2w_validate::Options {
    let mut v = opts.clone();
    let mut f32 = v.f32.unwrap_or(m2w_validate::F32_DEFAULT);
    if f32.scaled == 0.0 {
        f32.scaled = SCALED_F32;
    }
    v.f32 = Some(f32);
    v
}

/// Where the graphs of a pipeline are.
#[derive(Clone, Debug)]
pub struct Source {
    /// (name, file) of each graph.
    pub graphs: Vec<(String, PathBuf)>,
    /// The folder whose config.json, generation_config.json, tokenizer.json and
    /// pipeline.json are read.
    pub folder: PathBuf,
    pub tokenizer: Option<PathBuf>,
}

impl Source {
    /// Every .onnx file of a folder, named by [`m2w_model::pipeline::graph_name`].
    pub fn folder(dir: &Path) -> Result<Source, PortError> {
        let graphs = m2w_model::Model::files_in(dir)?
            .into_iter()
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
            })
            .map(|p| (m2w_model::pipeline::graph_name(&p), p))
            .collect::<Vec<_>>();
        if graphs.is_empty() {
            return Err(input(format!("{}: holds no .onnx graph", dir.display())));
        }
        Ok(Source {
            graphs,
            folder: dir.to_path_buf(),
            tokenizer: None,
        })
    }
}

/// The pipeline and its graphs, opened.
pub struct Opened {
    pub pipeline: Pipeline,
    pub models: BTreeMap<String, m2w_model::Model>,
    pub infos: BTreeMap<String, m2w_model::GraphInfo>,
}

/// Opens every graph and resolves the manifest (inferred, then the folder's pipeline.json).
pub fn open(source: &Source) -> Result<Opened, PortError> {
    let mut models = BTreeMap::new();
    for (name, file) in &source.graphs {
        let m = m2w_model::Model::open(file)?;
        if m.graph.is_none() {
            return Err(input(format!(
                "{}: a pipeline's graphs are ONNX files",
                file.display()
            )));
        }
        models.insert(name.clone(), m);
    }
    let listed: Vec<(String, PathBuf, &m2w_model::GraphInfo)> = source
        .graphs
        .iter()
        .map(|(n, f)| {
            (
                n.clone(),
                f.clone(),
                models[n].graph.as_ref().expect("checked"),
            )
        })
        .collect();
    let pipeline =
        m2w_model::pipeline::infer(&listed, &source.folder, source.tokenizer.as_deref())?;
    // A manifest may add a graph the source did not list.
    for g in &pipeline.graphs {
        if !models.contains_key(&g.name) {
            let m = m2w_model::Model::open(&g.file)?;
            models.insert(g.name.clone(), m);
        }
    }
    let infos = models
        .iter()
        .filter_map(|(k, m)| m.graph.clone().map(|g| (k.clone(), g)))
        .collect();
    Ok(Opened {
        pipeline,
        models,
        infos,
    })
}

/// One graph's validation at one step of the loop.
#[derive(Clone, Debug)]
pub struct StepReport {
    pub graph: String,
    pub step: usize,
    pub report: m2w_validate::Report,
}

/// One prompt through both loops.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Compared {
    pub text: String,
    pub reference: Vec<i64>,
    pub engine: Vec<i64>,
    pub reference_text: String,
    pub engine_text: String,
    pub identical: bool,
    /// On the steps both loops took with the same tokens, the most the engine moved a
    /// margin between ONNX Runtime's token and its runners-up: the end-to-end noise (graphs
    /// that quantize activations at run time move by whole quantization steps when a last
    /// bit differs upstream).
    pub logits_noise: f32,
    /// The most ONNX Runtime moved those margins itself up to the parting, computing an
    /// earlier position again in a longer sequence (0 for a decoder with a cache).
    pub reference_noise: f32,
    /// The first step whose token differs, if one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_divergence: Option<usize>,
    /// ONNX Runtime's own preference there: its logit of its token minus its logit of the
    /// engine's token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub margin: Option<f32>,
    /// `identical`; `near tie` when the loops part at a step where ONNX Runtime's margin is
    /// within either noise; `DIFFER` otherwise.
    pub verdict: String,
}

/// Where two greedy runs from the same prompt part, and why that is or is not a near tie.
#[derive(Clone, Debug, PartialEq)]
pub struct Parting {
    /// [`Compared::logits_noise`].
    pub noise: f32,
    /// The reference's own noise up to the parting ([`m2w_reference::pipeline::Generated::self_noise`]).
    pub reference_noise: f32,
    pub at: Option<usize>,
    pub margin: Option<f32>,
    pub verdict: String,
}

impl std::fmt::Display for Parting {
    /// The verdict, and where the runs part.
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", self.verdict)?;
        match (self.at, self.margin) {
            (Some(d), Some(m)) => write!(
                f,
                " (parts at step {d}, where ONNX Runtime's margin is {m:.3})"
            ),
            (Some(d), None) => write!(f, " (parts at step {d})"),
            _ => Ok(()),
        }
    }
}

/// Compares two greedy runs that start from the same prompt: where they part and whether
/// ONNX Runtime's margin there is within the noise measured without that step: the
/// engine's on the steps before, or ONNX Runtime's own (`reference_self_noise`).
pub fn compare_runs(
    reference: &[i64],
    reference_logits: &[Vec<f32>],
    reference_self_noise: &[f32],
    engine: &[i64],
    engine_logits: &[Vec<f32>],
) -> Parting {
    let worst = |m: f32, d: f32| if d.is_nan() { f32::INFINITY } else { m.max(d) };
    let same = reference
        .iter()
        .zip(engine)
        .take_while(|(a, b)| a == b)
        .count();
    let diverged = (reference != engine).then_some(same);
    // How far the engine moves ONNX Runtime's leading candidates against its choice, on
    // the steps before the parting (including it would make the test circular).
    let noise = reference_logits
        .iter()
        .zip(engine_logits)
        .take(same)
        .map(|(o, e)| m2w_reference::pipeline::margin_shift(o, e))
        .fold(0f32, worst);
    let reference_noise = reference_self_noise
        .iter()
        .take(same + 1)
        .copied()
        .fold(0f32, worst);
    let mut out = Parting {
        noise,
        reference_noise,
        at: diverged,
        margin: None,
        verdict: "identical".into(),
    };
    let Some(d) = diverged else {
        return out;
    };
    out.verdict = "DIFFER".into();
    // One run stopped where the other went on.
    let (Some(row), Some(&want), Some(&got)) =
        (reference_logits.get(d), reference.get(d), engine.get(d))
    else {
        return out;
    };
    out.margin = row
        .get(want as usize)
        .zip(row.get(got as usize))
        .map(|(a, b)| a - b);
    let within = noise.max(reference_noise);
    if let Some(m) = out.margin
        && within.is_finite()
        && m <= within
    {
        out.verdict = "near tie".into();
    }
    out
}

/// ONNX Runtime's logits rows for prompt `k` of the reference folder `ref_dir`, one per step.
pub fn reference_rows(ref_dir: &Path, k: usize) -> Result<Vec<Vec<f32>>, PortError> {
    let ort =
        m2w_reference::HostTensor::read_npy(&ref_dir.join(m2w_reference::pipeline::logits_file(k)))
            .map_err(|e| input(format!("{}: {e}", ref_dir.display())))?;
    let width = ort.shape().get(1).copied().unwrap_or(0) as usize;
    Ok(ort
        .to_f64()
        .chunks(width.max(1))
        .map(|c| c.iter().map(|&v| v as f32).collect())
        .collect())
}

/// Judges other greedy runs of a pipeline port's reference prompts (`port`: the port
/// folder), as the port judges its own engine's: each run's tokens with the logits row
/// behind each (a package's run in a browser), in prompt order; fewer runs than prompts
/// judge the first ones.
pub fn judge_runs(
    port: &Path,
    runs: &[(Vec<i64>, Vec<Vec<f32>>)],
) -> Result<Vec<Parting>, PortError> {
    let ref_dir = port.join("reference");
    let record = LoopRecord::read(&ref_dir)?;
    if runs.len() > record.prompts.len() {
        return Err(input(format!(
            "{} runs for the reference's {} prompts",
            runs.len(),
            record.prompts.len()
        )));
    }
    runs.iter()
        .zip(&record.prompts)
        .enumerate()
        .map(|(k, ((tokens, rows), r))| {
            Ok(compare_runs(
                &r.generated.tokens,
                &reference_rows(&ref_dir, k)?,
                &r.generated.self_noise,
                tokens,
                rows,
            ))
        })
        .collect()
}

/// What the pipeline's port found.
#[derive(Clone, Debug)]
pub struct PipelineOutcome {
    pub reports: Vec<StepReport>,
    pub prompts: Vec<Compared>,
}

impl PipelineOutcome {
    pub fn failure(&self) -> Option<String> {
        let failed: usize = self.reports.iter().map(|r| r.report.failed).sum();
        let differ = self
            .prompts
            .iter()
            .filter(|p| p.verdict == "DIFFER")
            .count();
        if failed > 0 || differ > 0 {
            Some(format!(
                "{failed} checkpoint(s) out of tolerance; greedy tokens differ from ONNX Runtime's on {differ} of {} prompt(s)",
                self.prompts.len()
            ))
        } else {
            None
        }
    }
}

/// The GPU engines of a pipeline's graphs, run by the generation loop.
pub struct GpuGraphs<'g> {
    runners: BTreeMap<String, m2w_engine::gpu::Runner<'g>>,
}

impl<'g> GpuGraphs<'g> {
    /// Each graph's plan compiled at its engine's maxima (as validate and the package do).
    pub fn new(
        gpu: &'g m2w_engine::gpu::Gpu,
        out: &Path,
        opened: &Opened,
    ) -> Result<Self, PortError> {
        let mut runners = BTreeMap::new();
        for g in &opened.pipeline.graphs {
            let layout = crate::Layout::new(&out.join(&g.name));
            let saved: m2w_engine::Plan = serde_json::from_str(
                &std::fs::read_to_string(layout.engine().join("plan.json"))
                    .map_err(|e| input(format!("{}: plan.json: {e}", g.name)))?,
            )
            .map_err(|e| input(format!("{}: plan.json: {e}", g.name)))?;
            let max: Vec<(String, usize)> =
                saved.dims.iter().map(|d| (d.name.clone(), d.max)).collect();
            let (mut plan, _, _) = m2w_validate::compile_for_dims(
                &opened.models[&g.name],
                &layout.reference(),
                &max,
                &saved.empty_input_dims(),
            )?;
            plan.assign_buffers(true);
            let r = m2w_engine::gpu::Runner::new(gpu, plan).map_err(PortError::Input)?;
            runners.insert(g.name.clone(), r);
        }
        Ok(GpuGraphs { runners })
    }
}

impl GraphRunner for GpuGraphs<'_> {
    fn run(
        &mut self,
        graph: &GraphSpec,
        inputs: &[(String, m2w_reference::HostTensor)],
        want: &[String],
    ) -> Result<BTreeMap<String, m2w_reference::HostTensor>, String> {
        let r = self
            .runners
            .get(&graph.name)
            .ok_or_else(|| format!("no engine for '{}'", graph.name))?;
        // Inputs the plan fixed at plan time (they decide shapes) are not fed.
        let feed = inputs
            .iter()
            .filter(|(k, _)| r.plan.inputs.contains(k))
            .map(|(k, v)| (k.clone(), m2w_validate::to_engine(v)))
            .collect();
        let out = r
            .run(&feed, want)
            .map_err(|e| format!("{}: {e}", graph.name))?;
        Ok(out
            .iter()
            .map(|(k, v)| (k.clone(), m2w_validate::to_oracle(v)))
            .collect())
    }
}

/// Runs every phase of a pipeline into `out`; `say` gets one line per step.
pub fn port_pipeline(
    source: &Source,
    out: &Path,
    opts: &PortOptions,
    prompts: &[String],
    say: &mut dyn FnMut(String),
) -> Result<PipelineOutcome, PortError> {
    let opened = open(source)?;
    let p = &opened.pipeline;
    say(format!(
        "pipeline: {}; start {:?}, stop {:?}, up to {} new tokens, prompts up to {} tokens",
        p.flow(),
        p.start,
        p.stop,
        p.max_new_tokens,
        p.max_prompt
    ));
    for n in &p.notes {
        say(format!("  {n}"));
    }
    let f32 = pipeline_validate(&opts.validate).f32.expect("set");
    say(format!(
        "  f32 checkpoints: |engine - ORT| <= max({}, {} x the checkpoint's largest |value|) + {} x |ORT|",
        f32.atol, f32.scaled, f32.rtol
    ));
    for g in &p.graphs {
        say(format!("  {}: {}", g.name, g.wiring()));
    }
    // What cannot run is refused before any ORT or GPU work, every graph at once.
    let mut refused = Vec::new();
    for g in &p.graphs {
        let list = m2w_engine::ops::precheck(opened.models[&g.name].graph.as_ref().expect("onnx"));
        if !list.is_empty() {
            let r = m2w_engine::ops::Refusal(&list);
            refused.push(format!(
                "{}: {}",
                g.name,
                if opts.verbose {
                    format!("{r:#}")
                } else {
                    r.to_string()
                }
            ));
        }
    }
    if !refused.is_empty() {
        return Err(PortError::Input(refused.join("\n")));
    }
    std::fs::create_dir_all(out).map_err(|e| input(format!("{}: {e}", out.display())))?;
    let manifest = serde_json::to_string_pretty(p).expect("pipeline serialises") + "\n";
    m2w_model::io::write_atomic(
        &out.join(m2w_model::pipeline::MANIFEST),
        manifest.as_bytes(),
    )
    .map_err(|e| input(format!("{}: {e}", out.display())))?;

    // The loop through ONNX Runtime.
    let mut shas = String::new();
    for g in &p.graphs {
        shas.push_str(&opened.models[&g.name].sources_sha256()?);
    }
    let tok_sha = match &p.tokenizer {
        Some(t) => std::fs::read(t)
            .map(|b| m2w_model::io::sha256_bytes(&b))
            .unwrap_or_default(),
        None => String::new(),
    };
    let ref_dir = out.join("reference");
    let st = stamp(
        &shas,
        &format!(
            "pipeline reference with logits rows and self noise {manifest} {tok_sha} {prompts:?}"
        ),
    );
    if !fresh(&ref_dir, &st) {
        let lib = m2w_setup::onnxruntime_library()?;
        m2w_reference::pipeline::loop_reference(&lib, p, &opened.infos, prompts, &ref_dir)?;
        mark(&ref_dir, &st).map_err(input)?;
    }
    let record = LoopRecord::read(&ref_dir)?;
    for r in &record.prompts {
        say(format!(
            "reference loop (ONNX Runtime): {} prompt tokens -> {} tokens {:?}",
            r.generated.prompt_ids.len(),
            r.generated.tokens.len(),
            r.output
        ));
    }

    // Each graph as a port of its own, from its inputs at the loop's first step, with the
    // pipeline's maxima; then its last step against the same engine.
    let maxima = p.max_dims(&opened.infos);
    let empty = p.empty_dims(&opened.infos);
    let mut reports = Vec::new();
    for g in &p.graphs {
        let steps: Vec<&m2w_reference::pipeline::RecordedStep> = record
            .recorded
            .iter()
            .filter(|r| r.graph == g.name)
            .collect();
        let first = steps
            .iter()
            .find(|r| r.step == 0)
            .ok_or_else(|| input(format!("{}: the reference recorded no first step", g.name)))?;
        let mut gopts = opts.clone();
        gopts.validate = pipeline_validate(&opts.validate);
        gopts.dims.clear();
        gopts.values.clear();
        gopts.inputs = first
            .inputs
            .iter()
            .map(|(name, file)| (name.clone(), ref_dir.join(&first.dir).join(file)))
            .collect();
        let mut max: BTreeMap<String, usize> = maxima.get(&g.name).cloned().unwrap_or_default();
        for (k, v) in &opts.validate.max_dims {
            max.insert(k.clone(), *v);
        }
        gopts.validate.max_dims = max.into_iter().collect();
        gopts.validate.empty_dims = empty.get(&g.name).cloned().unwrap_or_default();
        let gdir = out.join(&g.name);
        let outcome = crate::port::port(&g.file, &gdir, &gopts, &mut |s| {
            say(format!("{} {s}", g.name))
        })?;
        let PortOutcome::Graph(report) = outcome else {
            return Err(input(format!("{}: not an ONNX graph", g.name)));
        };
        reports.push(StepReport {
            graph: g.name.clone(),
            step: 0,
            report,
        });
        for later in steps.iter().filter(|r| r.step != 0) {
            let dir = gdir.join(format!("reference-step{}", later.step));
            let files: BTreeMap<String, PathBuf> = later
                .inputs
                .iter()
                .map(|(name, file)| (name.clone(), ref_dir.join(&later.dir).join(file)))
                .collect();
            let lst = stamp(
                &shas,
                &format!(
                    "{} step {} {}",
                    g.name,
                    later.step,
                    crate::stamp_of(&ref_dir)
                ),
            );
            if !fresh(&dir, &lst) {
                let lib = m2w_setup::onnxruntime_library()?;
                m2w_reference::onnx_ref::reference(
                    &lib,
                    &g.file,
                    &dir,
                    &m2w_reference::onnx_ref::OnnxOptions {
                        input_files: files,
                        check_determinism: true,
                        ..Default::default()
                    },
                )?;
                mark(&dir, &lst).map_err(input)?;
            }
            let mut vopts = pipeline_validate(&opts.validate);
            if !crate::port::run_time_quantizers(&opened.models[&g.name]).is_empty() {
                vopts.per_layer = true;
            }
            let layout = crate::Layout::new(&gdir);
            let report = crate::validate_engine(&layout.engine(), &dir, &vopts)?;
            write_reports(&layout.validate(), &format!("-step{}", later.step), &report)?;
            say(format!(
                "{} step {}: {} passed, {} failed, {} not compared ({})",
                g.name, later.step, report.passed, report.failed, report.not_compared, report.mode
            ));
            reports.push(StepReport {
                graph: g.name.clone(),
                step: later.step,
                report,
            });
        }
    }

    // The loop on the GPU engines, every prompt.
    let gpu = m2w_engine::gpu::Gpu::new().map_err(PortError::Input)?;
    let mut engines = GpuGraphs::new(&gpu, out, &opened)?;
    let tok = m2w_reference::pipeline::tokenizer(p)?;
    let mut compared = Vec::new();
    for r in &record.prompts {
        let g = m2w_reference::pipeline::generate(
            p,
            &opened.infos,
            &r.generated.prompt_ids,
            record.max_new_tokens,
            &mut engines,
            &mut |_| Ok(()),
        )
        .map_err(PortError::Input)?;
        let engine_text = m2w_reference::pipeline::decode(&tok, &g.tokens)?;
        let identical = g.tokens == r.generated.tokens;
        let ort_rows = reference_rows(&ref_dir, compared.len())?;
        let parting = compare_runs(
            &r.generated.tokens,
            &ort_rows,
            &r.generated.self_noise,
            &g.tokens,
            &g.logits,
        );
        say(format!(
            "engine loop: {} tokens {:?}: {parting}; leading margins moved by the engine up to {:.3}, by ONNX Runtime itself up to {:.3}",
            g.tokens.len(),
            engine_text,
            parting.noise,
            parting.reference_noise
        ));
        let Parting {
            noise: logits_noise,
            reference_noise,
            at: first_divergence,
            margin,
            verdict,
        } = parting;
        compared.push(Compared {
            text: r.text.clone(),
            reference: r.generated.tokens.clone(),
            engine: g.tokens,
            reference_text: r.output.clone(),
            engine_text,
            identical,
            logits_noise,
            reference_noise,
            first_divergence,
            margin,
            verdict,
        });
    }
    let vdir = out.join("validate");
    std::fs::create_dir_all(&vdir).map_err(|e| input(format!("{}: {e}", vdir.display())))?;
    let text = serde_json::to_string_pretty(&compared).expect("serialises") + "\n";
    m2w_model::io::write_atomic(&vdir.join("generation.json"), text.as_bytes())
        .map_err(|e| input(format!("{}: {e}", vdir.display())))?;
    Ok(PipelineOutcome {
        reports,
        prompts: compared,
    })
}

#[cfg(test)]
mod tests {
    use super::compare_runs;

    #[test]
    fn runs_that_part_at_a_near_tie_are_told_from_runs_that_differ() {
        let row = |v: &[f32]| v.to_vec();
        // Step 0: ORT's margins 4 and 5 become 4.2 and 5.2 in the engine (noise 0.2).
        let ort = vec![row(&[0.0, 5.0, 1.0]), row(&[3.0, 2.9, 0.0])];
        let close = vec![row(&[0.0, 5.2, 1.0]), row(&[2.9, 3.0, 0.0])];
        let p = compare_runs(&[1, 0], &ort, &[], &[1, 1], &close);
        assert!((p.noise - 0.2).abs() < 1e-6, "{p:?}");
        assert_eq!(p.at, Some(1));
        assert!((p.margin.unwrap() - 0.1).abs() < 1e-6);
        assert_eq!(p.verdict, "near tie");
        // The same parting with a margin over the noise measured before it...
        let far = vec![row(&[0.0, 5.0, 1.0]), row(&[0.0, 3.0, 0.0])];
        let ort_far = vec![row(&[0.0, 5.0, 1.0]), row(&[3.0, 0.0, 0.0])];
        assert_eq!(
            compare_runs(&[1, 0], &ort_far, &[], &[1, 1], &far).verdict,
            "DIFFER"
        );
        // ...unless ONNX Runtime's own noise up to that step is as large.
        let p = compare_runs(&[1, 0], &ort_far, &[0.0, 3.5], &[1, 1], &far);
        assert_eq!((p.reference_noise, p.verdict.as_str()), (3.5, "near tie"));
        // Noise after the parting does not count.
        let p = compare_runs(&[1, 0], &ort_far, &[0.0, 0.0, 9.0], &[1, 1], &far);
        assert_eq!(p.verdict, "DIFFER");
        // Parting at the first step has no engine noise to hide in.
        assert_eq!(
            compare_runs(&[0], &ort_far[1..], &[], &[1], &far[1..]).verdict,
            "DIFFER"
        );
        assert_eq!(
            compare_runs(&[1, 0], &ort, &[], &[1, 0], &ort).verdict,
            "identical"
        );
        // One run stopped where the other went on.
        assert_eq!(
            compare_runs(&[1], &ort, &[], &[1, 0], &ort).verdict,
            "DIFFER"
        );
        // A NaN in the engine's logits is no noise to hide in either.
        let nan = vec![row(&[0.0, f32::NAN, 1.0]), row(&[2.9, 3.0, 0.0])];
        let p = compare_runs(&[1, 0], &ort, &[], &[1, 1], &nan);
        assert_eq!((p.noise, p.verdict.as_str()), (f32::INFINITY, "DIFFER"));
    }
}
