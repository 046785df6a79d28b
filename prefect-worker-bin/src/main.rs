#![doc = include_str!("../README.md")]

mod args;
mod json_log;
mod logging;
mod prefect_cli;
mod preview;
mod start;

use std::process::ExitCode;

use clap::Parser;

// glibc's malloc keeps the memory of finished runs (RSS grew +31 % over 1,500 short runs
// with only 4.8 MB live at the end); jemalloc's decay returns it (−25 %), and costs less
// CPU per run. Measured in bench/notes.md; the decision in docs/decisions.md.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// One thread: the worker waits on the network, and a single-threaded runtime keeps its
// memory small (no per-thread allocator arenas or stacks).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let result = if prefect_cli::invoked_as_prefect(std::env::args_os().next().as_deref()) {
        let cli = prefect_cli::PrefectCli::parse();
        logging::init(cli.log_format);
        prefect_cli::run(cli).await
    } else {
        let cli = args::Cli::parse();
        logging::init(cli.log_format);
        match cli.command {
            args::Command::Start(a) => start::start(a).await,
            args::Command::Preview(a) => preview::preview(a).await,
            args::Command::Config(a) => start::show_config(&a),
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
