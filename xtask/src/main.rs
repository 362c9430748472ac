//! `cargo xtask`: the repository's automation around the `m2w` command line. Every `m2w`
//! subcommand runs here too (delegated to `m2w_cli::run`), plus the demo, the test suite,
//! ONNX conformance and the benchmarks, which need the checkout.
//!
//! Exit codes: 0 success; 1 a check failed; 2 bad input or a set-up step that cannot be
//! done (one clear line on stderr).

mod bench;
mod fuzz;
mod tools;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "m2w: port ML models to standalone WebGPU (the m2w commands, plus the repository's demo, tests and benchmarks)",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Tool(m2w_cli::Command),
    /// Phase 4-5 check: ONNX's backend node tests through the plan and wgpu; writes
    /// docs/OP_SUPPORT.md and fails (exit 1) when the pass count drops below the floor.
    Conformance {
        /// Only cases whose folder name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Print every case's outcome.
        #[arg(long)]
        verbose: bool,
    },
    /// The main job: set-up, then the bundled model (Silero VAD v6) through every phase,
    /// its package built and proven in headless Chromium; prints the report's and the demo
    /// page screenshot's paths.
    Demo {
        /// Output folder (default: target/demo).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The test suite: fixtures + set-up, then `cargo test --workspace`.
    Test {
        /// Extra arguments for cargo test (after --).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// The fuzz targets (fuzz/, cargo-fuzz on nightly): each reader for `--seconds` on its
    /// committed seeds and what earlier runs found; prints execs and crashes per target and
    /// fails (exit 1) on a crash. `--seed-corpus` rewrites the seeds from the fixtures.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (onnx, gguf, safetensors, tflite, npy, manifest, plan).
        #[arg(long)]
        target: Option<String>,
        /// Targets run side by side.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Rewrite fuzz/corpus/ from the real fixtures instead of fuzzing.
        #[arg(long)]
        seed_corpus: bool,
    },
    /// Benchmarks (not tests): extract throughput against `cp`; writes bench/RESULTS.md rows.
    Bench {
        #[arg(default_value = "extract")]
        what: String,
        /// Runs per measurement (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

fn main() -> ExitCode {
    m2w_cli::prepare_process();
    let cli = Cli::parse();
    m2w_cli::exit_code(match cli.command {
        Command::Tool(c) => m2w_cli::run(c),
        Command::Conformance { filter, verbose } => tools::conformance(filter.as_deref(), verbose),
        Command::Demo { out } => tools::demo(out),
        Command::Test { args } => tools::test(&args),
        Command::Bench { what, runs } => bench::run(&what, runs),
        Command::Fuzz {
            seconds,
            target,
            jobs,
            seed_corpus,
        } => fuzz::run(seconds, target.as_deref(), jobs, seed_corpus),
    })
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}
