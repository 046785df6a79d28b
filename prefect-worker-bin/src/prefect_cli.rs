//! `prefect ...`: the part of Prefect's CLI that the prefect-worker Helm chart runs, when
//! this binary is invoked as `prefect` (a link to it, as in the container image):
//!
//! - `prefect worker start ...` — the worker container's command, with every flag of
//!   Prefect's `worker start` (an unknown flag is an error naming it);
//! - `prefect work-pool inspect NAME` and `prefect work-pool update NAME
//!   --base-job-template FILE` — the chart's `sync-base-job-template` init container.
//!
//! Messages and exit codes follow Prefect's CLI (`prefect/cli/work_pool.py`): inspect
//! exits 1 with `Work pool 'NAME' not found!` for a missing pool, update exits 1 with
//! `Work pool named 'NAME' does not exist.`, both on stdout as Prefect's console prints.
//! Anything else is refused with a message saying this image is the Kubernetes worker.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use prefect_worker_core::client::models::WorkPoolUpdate;
use prefect_worker_core::client::{ClientError, ClientOptions, PrefectClient};
use prefect_worker_core::settings::SettingsSources;
use serde_json::Value;

use crate::args::{LogFormat, StartArgs};
use crate::start::write_stdout;

/// The Prefect version whose CLI this entry point mirrors.
const PREFECT_VERSION: &str = "3.9.1";

/// `prefect`: Prefect's CLI, as far as the Kubernetes worker image needs it.
#[derive(Debug, Parser)]
#[command(
    name = "prefect",
    version = concat!(env!("CARGO_PKG_VERSION"), " (prefect-worker-rs; Prefect 3.9.1 Kubernetes worker)"),
    about = "Prefect's CLI as the prefect-worker Helm chart uses it: `worker start`, `work-pool inspect`, `work-pool update`. This image is the Rust Kubernetes worker.",
    long_about = None
)]
pub struct PrefectCli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "PREFECT_WORKER_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<PrefectCommand>,
}

#[derive(Debug, Subcommand)]
pub enum PrefectCommand {
    /// Workers: `prefect worker start`.
    Worker {
        #[command(subcommand)]
        command: Option<WorkerCommand>,
    },
    /// Work pools: `prefect work-pool inspect` and `update`.
    #[command(name = "work-pool")]
    WorkPool {
        #[command(subcommand)]
        command: Option<WorkPoolCommand>,
    },
    /// Print the version.
    Version,
    /// Any other command: not in this image.
    #[command(external_subcommand)]
    Other(Vec<String>),
}

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// Start a worker that polls a work pool (`--type kubernetes` only).
    Start(StartArgs),
    #[command(external_subcommand)]
    Other(Vec<String>),
}

#[derive(Debug, Subcommand)]
pub enum WorkPoolCommand {
    /// Inspect a work pool; exits 1 when it does not exist.
    Inspect {
        /// The name of the work pool to inspect.
        name: String,
        /// Output format: only `json` (the default output is JSON too).
        #[arg(short = 'o', long)]
        output: Option<String>,
    },
    /// Update a work pool; exits 1 when it does not exist.
    Update {
        /// The name of the work pool to update.
        name: String,
        /// A JSON file with the base job template to use (unchanged when omitted).
        #[arg(long)]
        base_job_template: Option<PathBuf>,
        /// The pool's concurrency limit (unchanged when omitted).
        #[arg(long)]
        concurrency_limit: Option<u64>,
        /// The pool's description (unchanged when omitted or empty).
        #[arg(long)]
        description: Option<String>,
    },
    #[command(external_subcommand)]
    Other(Vec<String>),
}

/// Whether the process was invoked as `prefect` (the file name of `argv[0]`).
#[must_use]
pub fn invoked_as_prefect(argv0: Option<&std::ffi::OsStr>) -> bool {
    argv0
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == "prefect")
}

/// What this image cannot do, said once, the same way for every refused command.
fn not_in_this_image(command: &str) -> ExitCode {
    let refused = if command.trim().is_empty() {
        String::new()
    } else {
        format!("`prefect {}` is not available: ", command.trim())
    };
    // Prefect's CLI prints its messages on stdout; so does this one.
    let _ = write_stdout(&format!(
        "{refused}this image is prefect-worker-rs, the Rust Kubernetes worker. \
It runs `prefect worker start --type kubernetes ...`, `prefect work-pool inspect NAME` and \
`prefect work-pool update NAME --base-job-template FILE` only; use a prefecthq/prefect image for other Prefect commands."
    ));
    ExitCode::from(2)
}

/// Runs a parsed `prefect` command line.
pub async fn run(cli: PrefectCli) -> Result<ExitCode> {
    match cli.command {
        Some(PrefectCommand::Worker {
            command: Some(WorkerCommand::Start(args)),
        }) => crate::start::start(args).await,
        Some(PrefectCommand::Worker {
            command: Some(WorkerCommand::Other(rest)),
        }) => Ok(not_in_this_image(&format!("worker {}", rest.join(" ")))),
        Some(PrefectCommand::Worker { command: None }) => Ok(not_in_this_image("worker")),
        Some(PrefectCommand::WorkPool {
            command: Some(WorkPoolCommand::Inspect { name, output }),
        }) => inspect(&name, output.as_deref()).await,
        Some(PrefectCommand::WorkPool {
            command:
                Some(WorkPoolCommand::Update {
                    name,
                    base_job_template,
                    concurrency_limit,
                    description,
                }),
        }) => {
            update(
                &name,
                base_job_template.as_deref(),
                concurrency_limit,
                description,
            )
            .await
        }
        Some(PrefectCommand::WorkPool {
            command: Some(WorkPoolCommand::Other(rest)),
        }) => Ok(not_in_this_image(&format!("work-pool {}", rest.join(" ")))),
        Some(PrefectCommand::WorkPool { command: None }) => Ok(not_in_this_image("work-pool")),
        Some(PrefectCommand::Version) => {
            write_stdout(&format!(
                "Version:             {PREFECT_VERSION} (prefect-worker-rs {}, Kubernetes worker only)",
                env!("CARGO_PKG_VERSION")
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(PrefectCommand::Other(rest)) => Ok(not_in_this_image(&rest.join(" "))),
        None => Ok(not_in_this_image("")),
    }
}

fn client() -> Result<PrefectClient> {
    let sources = SettingsSources::from_process().context("reading Prefect settings")?;
    let options = ClientOptions::from_env(&|k: &str| sources.get(k).map(str::to_owned))?;
    if sources
        .get("PREFECT_API_URL")
        .is_none_or(|u| u.trim().is_empty())
    {
        anyhow::bail!(
            "PREFECT_API_URL must be set: this image has no local Prefect server to fall back on"
        );
    }
    Ok(PrefectClient::new(options)?)
}

/// Python's `repr()` of a string, as Prefect's messages quote names (`{name!r}`).
#[must_use]
pub fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `prefect work-pool inspect NAME [--output json]`.
async fn inspect(name: &str, output: Option<&str>) -> Result<ExitCode> {
    if output.is_some_and(|o| !o.eq_ignore_ascii_case("json")) {
        write_stdout("Only 'json' output format is supported.")?;
        return Ok(ExitCode::FAILURE);
    }
    match client()?.read_work_pool(name).await {
        Ok(pool) => {
            // Prefect prints a rich repr without --output json; JSON here either way.
            write_stdout(&serde_json::to_string_pretty(&pool)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(ClientError::NotFound(_)) => {
            write_stdout(&format!("Work pool {} not found!", py_repr(name)))?;
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            Err(anyhow::Error::new(e).context(format!("reading work pool {}", py_repr(name))))
        }
    }
}

/// `prefect work-pool update NAME [--base-job-template FILE] [--concurrency-limit N]
/// [--description TEXT]`: sends only what is given, as Prefect does.
async fn update(
    name: &str,
    base_job_template: Option<&std::path::Path>,
    concurrency_limit: Option<u64>,
    description: Option<String>,
) -> Result<ExitCode> {
    let mut body = WorkPoolUpdate {
        concurrency_limit,
        description: description.filter(|d| !d.is_empty()),
        ..WorkPoolUpdate::default()
    };
    if let Some(path) = base_job_template.filter(|p| !p.as_os_str().is_empty()) {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--base-job-template: cannot read {}", path.display()))?;
        let template: Value = serde_json::from_str(&text).with_context(|| {
            format!("--base-job-template: {} is not valid JSON", path.display())
        })?;
        body.base_job_template = Some(template);
    }
    match client()?.update_work_pool(name, &body).await {
        Ok(()) => {
            write_stdout(&format!("Updated work pool {}", py_repr(name)))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(ClientError::NotFound(_)) => {
            write_stdout(&format!(
                "Work pool named {} does not exist.",
                py_repr(name)
            ))?;
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            Err(anyhow::Error::new(e).context(format!("updating work pool {}", py_repr(name))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        PrefectCli::command().debug_assert();
    }

    #[test]
    fn names_are_quoted_as_python_repr() {
        assert_eq!(py_repr("my-pool"), "'my-pool'");
        assert_eq!(py_repr("it's"), "\"it's\"");
        assert_eq!(py_repr("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(py_repr("back\\slash"), "'back\\\\slash'");
    }

    #[test]
    fn argv0_decides() {
        use std::ffi::OsStr;
        assert!(invoked_as_prefect(Some(OsStr::new("/usr/bin/prefect"))));
        assert!(invoked_as_prefect(Some(OsStr::new("prefect"))));
        assert!(!invoked_as_prefect(Some(OsStr::new(
            "/usr/bin/prefect-worker"
        ))));
        assert!(!invoked_as_prefect(None));
    }

    #[test]
    fn every_flag_the_chart_passes_parses() {
        // deployment.yaml's args with every optional part on, then extraArgs.
        let cli = PrefectCli::try_parse_from([
            "prefect",
            "worker",
            "start",
            "--type",
            "kubernetes",
            "--pool",
            "p",
            "--work-queue",
            "a",
            "--work-queue",
            "b",
            "--install-policy",
            "prompt",
            "--limit",
            "5",
            "--with-healthcheck",
            "--name",
            "n",
            "--base-job-template",
            "baseJobTemplate.json",
            "--prefetch-seconds",
            "30",
            "--no-create-pool-if-not-found",
        ])
        .unwrap();
        let Some(PrefectCommand::Worker {
            command: Some(WorkerCommand::Start(a)),
        }) = cli.command
        else {
            panic!("not worker start")
        };
        assert_eq!(a.work_queues, ["a", "b"]);
        assert_eq!(a.limit, Some(5));
        assert!(a.with_healthcheck && a.no_create_pool_if_not_found);
        assert_eq!(
            a.base_job_template.unwrap(),
            PathBuf::from("baseJobTemplate.json")
        );
    }

    #[test]
    fn an_unknown_flag_is_an_error_naming_it() {
        let e = PrefectCli::try_parse_from([
            "prefect",
            "worker",
            "start",
            "--pool",
            "p",
            "--frobnicate",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("--frobnicate"), "{e}");
    }
}
