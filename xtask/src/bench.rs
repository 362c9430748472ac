//! Benchmarks (never tests): each prints a table row and the command that made it.

pub fn run(what: &str, runs: usize) -> anyhow::Result<()> {
    anyhow::bail!("unknown benchmark {what:?} ({runs} runs)")
}
