//! The command line's clap definitions: every subcommand, its flags and help text.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "m2w",
    about = "m2w: port ML models to standalone WebGPU",
    version
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Phase 1: report ops, weights, quantization, components, I/O of a model file or folder.
    Inspect {
        /// A model file (.onnx, .gguf, .safetensors) or a folder of them.
        model: PathBuf,
        /// Print the stable JSON schema (m2w.inspect/1) instead of the table.
        #[arg(long, conflicts_with = "markdown")]
        json: bool,
        /// Print a Markdown architecture section.
        #[arg(long)]
        markdown: bool,
        /// Also write the output to this file (atomically).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Phase 2: weights to a GPU-ready blob (or shards) plus manifest.json.
    Extract {
        /// The model file (.onnx, .gguf, .safetensors, .tflite).
        model: PathBuf,
        /// Output folder (created); holds manifest.json and weights*.bin.
        #[arg(long)]
        out: PathBuf,
        /// Split the blob into shards of at most this many bytes (at tensor boundaries).
        #[arg(long)]
        shard_bytes: Option<u64>,
        /// f32 (default) or f16 for float weights.
        #[arg(long, default_value = "f32")]
        precision: String,
        /// Re-read what was written and compare every tensor with the source.
        #[arg(long)]
        verify: bool,
        /// Write nothing; only verify an existing output folder against the model.
        #[arg(long, conflicts_with_all = ["shard_bytes", "verify"])]
        verify_only: bool,
    },
    /// Phase 3: reference activations (.npy oracles + index.json) through ONNX Runtime
    /// (ONNX) or the candle llama (GGUF).
    Reference {
        /// The model file (.onnx, .tflite, .gguf).
        model: PathBuf,
        /// Output folder: one .npy per checkpoint, the inputs and index.json.
        #[arg(long)]
        out: PathBuf,
        /// Symbolic dim values (`sequence=16`) or one input axis (`x.2=640`); repeatable.
        #[arg(long = "dim", value_parser = parse_kv::<u64>)]
        dims: Vec<(String, u64)>,
        /// An input from a .npy file (`input_ids=ids.npy`); repeatable.
        #[arg(long = "input", value_parser = parse_kv::<PathBuf>)]
        inputs: Vec<(String, PathBuf)>,
        /// Fill an input with one value (`sr=16000`); repeatable.
        #[arg(long = "value", value_parser = parse_kv::<f64>)]
        values: Vec<(String, f64)>,
        /// Seed of the generated inputs.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Run twice; fail (exit 1) unless every checkpoint is bit-identical.
        #[arg(long)]
        check_determinism: bool,
        /// GGUF: the prompt for prefill and greedy decoding.
        #[arg(long, default_value = "The capital of France is")]
        prompt: String,
        /// GGUF: tokens to generate greedily.
        #[arg(long, default_value_t = 8)]
        max_new: usize,
    },
    /// Phases 4-5: compile an ONNX model to a plan (plan.json + shaders/*.wgsl) for the input
    /// shapes of a reference folder, run it on wgpu and compare every checkpoint.
    Engine {
        /// The ONNX or TFLite model file.
        model: PathBuf,
        /// A reference folder (cargo xtask reference): its inputs fix the shapes.
        #[arg(long)]
        reference: PathBuf,
        /// Output folder: plan.json, shaders/*.wgsl and engine.json.
        #[arg(long)]
        out: PathBuf,
        /// Give every tensor its own buffer (no lifetime-based reuse).
        #[arg(long)]
        no_reuse: bool,
    },
    /// Phase 6: every checkpoint of the engine against the reference. Exit 0 all pass,
    /// 1 any mismatch, 2 bad input.
    Validate {
        /// An engine folder (cargo xtask engine); its engine.json names the model.
        #[arg(long, required_unless_present = "model")]
        engine: Option<PathBuf>,
        /// The model file (instead of --engine).
        #[arg(long)]
        model: Option<PathBuf>,
        /// The reference folder (m2w reference, or PORT/reference).
        #[arg(long)]
        reference: PathBuf,
        /// Feed every node the oracle values of its inputs (as Polygraphy does).
        #[arg(long)]
        per_layer: bool,
        /// f32 absolute tolerance (default 1e-4).
        #[arg(long)]
        atol: Option<f64>,
        /// f32 relative tolerance (default 1e-3).
        #[arg(long)]
        rtol: Option<f64>,
        /// Per-checkpoint tolerance: PATTERN=ATOL,RTOL[,SCALED] (glob on the name; SCALED
        /// raises ATOL to SCALED x the checkpoint's largest |value|); repeatable.
        #[arg(long = "tol")]
        tol: Vec<String>,
        /// Print the JSON report (schema m2w.validate/1) instead of the table.
        #[arg(long)]
        json: bool,
        /// Also write a JUnit XML report here (one test case per checkpoint).
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Also write the HTML report here (error plot per layer, the worst elements).
        #[arg(long)]
        html: Option<PathBuf>,
        /// Also write the per-node error here as Model Explorer node data (load it beside the
        /// model in Google's Model Explorer to colour the graph by error).
        #[arg(long, value_name = "FILE")]
        model_explorer: Option<PathBuf>,
        /// Write the engine's values of every checkpoint out of tolerance into DIR, one .npy
        /// each under the oracle's file name, to study beside the reference.
        #[arg(long, value_name = "DIR")]
        save_mismatches: Option<PathBuf>,
        /// Compare oracles that hold NaN or nothing but infinities (exactly) instead of
        /// refusing them (exit 2): for a model whose reference output is meant to be so.
        #[arg(long)]
        allow_nonfinite_oracle: bool,
        /// Also time every dispatch with GPU timestamps and print where the pass's time goes,
        /// by kernel and by op, with each one's bound bytes against the copy bandwidth
        /// measured in the same run (also in the JSON report under "profile").
        #[arg(long)]
        profile: bool,
    },
    /// All phases: inspect -> extract -> reference -> engine -> validate, one folder each;
    /// phases whose inputs did not change are skipped. A folder of ONNX graphs (or
    /// `--graph` repeated) is a generation pipeline: the graphs are wired from their input
    /// names and the folder's configs (or its pipeline.json), the greedy loop runs through
    /// ONNX Runtime and on the GPU, and each graph is validated at the loop's first and
    /// last step.
    Port {
        /// A model file, or a folder of ONNX graphs forming a generation pipeline.
        #[arg(required_unless_present = "graphs")]
        model: Option<PathBuf>,
        /// Output folder: inspect/ weights/ reference/ engine/ validate/ (created; unchanged phases are skipped on a re-run).
        #[arg(long)]
        out: PathBuf,
        /// A graph of a generation pipeline, NAME=FILE; repeatable (instead of a folder).
        #[arg(long = "graph", value_parser = parse_kv::<PathBuf>, conflicts_with = "model")]
        graphs: Vec<(String, PathBuf)>,
        /// A pipeline's tokenizer.json (default: the one beside the graphs).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// A pipeline's prompts (texts); repeatable. Default: five built-in texts.
        #[arg(long = "prompt")]
        prompts: Vec<String>,
        /// Symbolic dim values for the reference inputs (`sequence=16`); repeatable.
        #[arg(long = "dim", value_parser = parse_kv::<u64>)]
        dims: Vec<(String, u64)>,
        /// The largest value a named dim may take at run time (`sequence=512`): one plan
        /// and one package serve every size up to it; default: the reference's size.
        #[arg(long = "max-dim", value_parser = parse_kv::<u64>)]
        max_dims: Vec<(String, u64)>,
        /// Fill an input with one value (`sr=16000`); repeatable.
        #[arg(long = "value", value_parser = parse_kv::<f64>)]
        values: Vec<(String, f64)>,
        /// An input from a .npy file (`tokens=tokens.npy`); repeatable.
        #[arg(long = "input", value_parser = parse_kv::<PathBuf>)]
        inputs: Vec<(String, PathBuf)>,
        /// Write this output of an end-to-end run as a 16-bit WAV at this rate
        /// (`audio=24000`), in the validate folder.
        #[arg(long, value_parser = parse_kv::<u32>)]
        wav: Option<(String, u32)>,
        /// Validate layer by layer: feed every node the oracle values of its inputs.
        #[arg(long)]
        per_layer: bool,
        /// Per-checkpoint tolerance: PATTERN=ATOL,RTOL[,SCALED] (glob on the name; SCALED
        /// raises ATOL to SCALED x the checkpoint's largest |value|); repeatable.
        #[arg(long = "tol")]
        tol: Vec<String>,
        /// When the model cannot run: list every refused node, not five per op.
        #[arg(long)]
        verbose: bool,
        /// Print one JSON summary (schema m2w.port/1: verdict, dims, reports, next command)
        /// on stdout; the steps go to stderr.
        #[arg(long)]
        json: bool,
    },
    /// Inputs of a Kokoro-style TTS model from a phoneme string and a voice of the
    /// `kokoro-voices` pack: tokens.npy, style.npy and speed.npy (for `port --input`).
    TtsInputs {
        /// The phoneme string (each character one phoneme of the voice pack's vocabulary).
        #[arg(long)]
        phonemes: String,
        /// The voice of the pack (its style vectors).
        #[arg(long, default_value = "jf_alpha")]
        voice: String,
        /// Speech speed (1 = the voice's own).
        #[arg(long, default_value_t = 1.0)]
        speed: f32,
        /// Output folder for tokens.npy, style.npy and speed.npy.
        #[arg(long)]
        out: PathBuf,
    },
    /// Phase 9: generate the npm package from a port folder's engine.
    Package {
        /// A port folder (cargo xtask port): its engine/ is packaged, or, for a pipeline, every
        /// graph's engine with the loop and the tokenizer, or, for hand tracking (a folder
        /// of a palm detector and a hand landmark model), both engines with the glue.
        #[arg(long)]
        port: PathBuf,
        /// npm package name.
        #[arg(long)]
        name: String,
        /// Output folder of the npm package (replaced whole).
        #[arg(long)]
        out: PathBuf,
        /// GGUF decoders: KV cache positions (prompt + generated tokens at most).
        #[arg(long, default_value_t = 512)]
        context: usize,
        /// GGUF decoders: prompt tokens per prefill pass.
        #[arg(long, default_value_t = 16)]
        prefill_chunk: usize,
        /// GGUF decoders: the device classes the package must run on (repeatable; see
        /// limits.json): tables past the smallest maxStorageBufferBindingSize among them
        /// run as row slices. One of webgpu-default, compat, ios-safari, android-chrome,
        /// desktop.
        #[arg(
            long = "device",
            value_name = "PROFILE",
            default_value = "webgpu-default"
        )]
        devices: Vec<String>,
        /// GGUF decoders: split tables at this many bytes instead (a device that binds
        /// less than any profile).
        #[arg(long, value_name = "BYTES")]
        max_binding_bytes: Option<usize>,
        /// A Kokoro-style TTS: add a speaking demo (tts.html) with these voices (.npz of
        /// style vectors per phoneme count; the vocabulary is vocab.json beside it).
        #[arg(long, value_name = "NPZ")]
        tts_voices: Option<PathBuf>,
        /// The TTS model's token, style and speed inputs and audio output.
        #[arg(long, default_value = "tokens,style,speed,audio")]
        tts_names: String,
        /// The TTS audio's sample rate.
        #[arg(long, default_value_t = 24000)]
        tts_rate: u32,
        /// The phoneme string the demo page starts with.
        #[arg(long, default_value = "")]
        tts_sample: String,
    },
    /// Browser proof: build the package with npm and run its test in headless Chromium
    /// (WebGPU) against the port's reference: every checkpoint (tests/activation-match.spec.ts)
    /// or, for a GGUF decoder, tokenizer, sampler and greedy tokens (tests/generate.spec.ts).
    PackageTest {
        /// The package folder (m2w package --out).
        #[arg(long)]
        package: PathBuf,
        /// The reference folder (PORT/reference); repeatable: references of the same model
        /// at other input sizes (`cargo xtask reference --dim`) run through one loaded
        /// package, which must take every size. A hand-tracking package takes MediaPipe's
        /// oracle folder (fixture hands-oracle), then the photos' folder (the demo's image).
        #[arg(long, required = true)]
        reference: Vec<PathBuf>,
        /// Save a screenshot of the demo page here.
        #[arg(long)]
        screenshot: Option<PathBuf>,
        /// Per-checkpoint tolerance NAME=ATOL,RTOL; repeatable.
        #[arg(long = "tol")]
        tol: Vec<String>,
        /// Run layer by layer, each node fed the oracle values of its inputs (as `validate
        /// --per-layer`): for models whose own dynamic quantization makes an end-to-end
        /// pass drift from the reference.
        #[arg(long)]
        per_layer: bool,
        /// A TTS package's demo page: the native engine's end-to-end samples for the first
        /// reference's inputs (.npy, e.g. PORT/validate/audio.npy), compared with what the page
        /// plays for the record. The page's gate is that it feeds the engine exactly the
        /// reference's inputs and plays what the engine computes (proven per layer).
        #[arg(long, value_name = "NPY")]
        tts_audio: Option<PathBuf>,
    },
    /// Generate text natively on wgpu from a GGUF llama-family model (tokens stream out).
    Generate {
        /// The GGUF model file.
        model: PathBuf,
        /// The prompt text.
        #[arg(long)]
        prompt: String,
        /// Render the prompt as one user turn through the model's chat template (its own, or
        /// the one m2w keeps for its family).
        #[arg(long)]
        chat: bool,
        /// Tokens to generate at most (stops earlier at an end-of-sequence token).
        #[arg(long, default_value_t = 64)]
        max_new: usize,
        /// 0 = greedy (argmax on the GPU).
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Sample from the k most likely tokens only (0 = all).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// Sample from the smallest set of tokens whose probabilities sum to p (1 = all).
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// Divide the logits of tokens already seen by this (1 = none).
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f32,
        /// Seed of the sampler.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Write every WGSL kernel variant as a named .wgsl file into DIR.
    Kernels {
        /// Output folder for the .wgsl files.
        #[arg(long)]
        out: PathBuf,
    },
    /// Fetch (or check) the fixture models of fixtures/fixtures.json into the cache.
    Fixtures {
        /// Only these fixtures (default: all but the heavy ones, which are fetched only by name).
        names: Vec<String>,
        /// Print the cached path of each fixture.
        #[arg(long)]
        list: bool,
    },
    /// Get the ONNX Runtime library and check for a WebGPU adapter.
    Setup,
}

pub fn parse_kv<T: std::str::FromStr>(s: &str) -> Result<(String, T), String>
where
    T::Err: std::fmt::Display,
{
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))?;
    let v = v.parse::<T>().map_err(|e| format!("{s:?}: {e}"))?;
    Ok((k.to_string(), v))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand and every argument says what it is in `--help`.
    #[test]
    fn every_command_and_argument_has_help_text() {
        let cli = super::Cli::command();
        let mut missing = Vec::new();
        for sub in cli.get_subcommands() {
            if sub.get_about().is_none() {
                missing.push(sub.get_name().to_string());
            }
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{} {id}", sub.get_name()));
                }
            }
        }
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
