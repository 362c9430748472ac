//! `m2w`: install with `cargo install --path crates/cli`; `m2w --help` lists the commands.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    m2w_cli::prepare_process();
    let cli = m2w_cli::Cli::parse();
    m2w_cli::exit_code(m2w_cli::run(cli.command))
}
