//! Command-line interface: the flags of `prefect worker start`, each also read from an
//! environment variable (flag > environment > active profile > default).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `--version`: this binary's version and the Python versions it stands in for.
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (compatible with prefect {} and prefect-kubernetes {})",
        env!("CARGO_PKG_VERSION"),
        prefect_worker_core::PREFECT_VERSION,
        prefect_worker_kubernetes::PREFECT_KUBERNETES_VERSION
    )
});

/// A Prefect 3 worker that runs flow runs as Kubernetes Jobs.
#[derive(Debug, Parser)]
#[command(name = "prefect-worker", version = VERSION.as_str(), about, long_about = None)]
pub struct Cli {
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
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a worker that polls a work pool (`prefect worker start`).
    Start(StartArgs),
    /// Print the job configuration the worker would build, without creating anything.
    Preview(PreviewArgs),
    /// Print the resolved worker settings (secrets redacted) and where each came from.
    Config(StartArgs),
}

/// `prefect worker start` flags.
#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// Worker name; defaults to `KubernetesWorker <uuid>`. May not contain `/` or `%`.
    #[arg(short = 'n', long, env = "PREFECT_WORKER_NAME")]
    pub name: Option<String>,

    /// The work pool to poll.
    #[arg(short = 'p', long, env = "PREFECT_WORKER_POOL")]
    pub pool: Option<String>,

    /// A work queue to poll (repeatable; all queues of the pool when omitted).
    #[arg(
        short = 'q',
        long = "work-queue",
        env = "PREFECT_WORKER_WORK_QUEUES",
        value_delimiter = ','
    )]
    pub work_queues: Vec<String>,

    /// Worker type; only `kubernetes` is served by this binary. Read from the pool when omitted.
    #[arg(short = 't', long = "type", env = "PREFECT_WORKER_TYPE")]
    pub worker_type: Option<String>,

    /// Submit runs scheduled up to this many seconds ahead (`PREFECT_WORKER_PREFETCH_SECONDS`, 10).
    #[arg(long, env = "PREFECT_WORKER_PREFETCH_SECONDS")]
    pub prefetch_seconds: Option<f64>,

    /// Sync once, poll once, wait for the runs it started, then exit.
    #[arg(long, env = "PREFECT_WORKER_RUN_ONCE")]
    pub run_once: bool,

    /// Maximum number of flow runs this worker has in flight at once.
    #[arg(short = 'l', long, env = "PREFECT_WORKER_LIMIT")]
    pub limit: Option<usize>,

    /// Serve `GET /health` on PREFECT_WORKER_WEBSERVER_HOST:PREFECT_WORKER_WEBSERVER_PORT.
    #[arg(long, env = "PREFECT_WORKER_WITH_HEALTHCHECK")]
    pub with_healthcheck: bool,

    /// Serve Prometheus metrics at `GET /metrics` on the same web server as `/health`.
    #[arg(long, env = "PREFECT_WORKER_WITH_METRICS")]
    pub with_metrics: bool,

    /// Accepted for compatibility; a Rust worker installs nothing.
    #[arg(
        long,
        value_enum,
        default_value = "prompt",
        env = "PREFECT_WORKER_INSTALL_POLICY"
    )]
    pub install_policy: InstallPolicy,

    /// JSON file with the base job template to use when this worker creates the pool.
    #[arg(long, env = "PREFECT_WORKER_BASE_JOB_TEMPLATE")]
    pub base_job_template: Option<PathBuf>,

    /// Create the work pool when it does not exist.
    #[arg(
        long,
        env = "PREFECT_WORKER_CREATE_POOL_IF_NOT_FOUND",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        overrides_with = "no_create_pool_if_not_found"
    )]
    pub create_pool_if_not_found: bool,

    /// Do not create the work pool when it does not exist.
    #[arg(long, overrides_with = "create_pool_if_not_found")]
    pub no_create_pool_if_not_found: bool,

    /// Most submissions (claim → Job created) in progress at once.
    #[arg(
        long,
        default_value_t = 64,
        env = "PREFECT_WORKER_MAX_CONCURRENT_SUBMISSIONS"
    )]
    pub max_concurrent_submissions: usize,

    /// Seconds a submission has from its Pending claim to creating the Job; past it, it
    /// gives the run back to the queue. Claims left Pending without a Job for twice this
    /// long (a worker died mid-submission) are returned to the queue by any worker.
    #[arg(
        long,
        default_value_t = 60.0,
        env = "PREFECT_WORKER_CLAIM_TIMEOUT_SECONDS"
    )]
    pub claim_timeout_seconds: f64,

    /// Return abandoned claims to the queue (`false`: only log them).
    #[arg(
        long,
        default_value_t = true,
        env = "PREFECT_WORKER_RECOVER_CLAIMS",
        action = clap::ArgAction::Set
    )]
    pub recover_claims: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InstallPolicy {
    Always,
    IfNotPresent,
    Never,
    Prompt,
}

/// `preview`: offline from a golden-case input, or online from the server.
#[derive(Debug, Clone, Args)]
pub struct PreviewArgs {
    /// A JSON file holding the `input` object of a golden case (offline mode).
    #[arg(long, conflicts_with_all = ["pool", "deployment"], env = "PREFECT_WORKER_PREVIEW_INPUT")]
    pub input: Option<PathBuf>,

    /// Work pool (online mode).
    #[arg(long, requires = "deployment", env = "PREFECT_WORKER_POOL")]
    pub pool: Option<String>,

    /// Deployment name (`flow/deployment`) or id (online mode).
    #[arg(long, requires = "pool", env = "PREFECT_WORKER_PREVIEW_DEPLOYMENT")]
    pub deployment: Option<String>,

    /// Flow-run job variables as a JSON object (online mode).
    #[arg(long, env = "PREFECT_WORKER_PREVIEW_JOB_VARIABLES")]
    pub job_variables: Option<String>,

    /// Worker name used for labels (online mode).
    #[arg(short = 'n', long, env = "PREFECT_WORKER_NAME")]
    pub name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn start_flags_parse() {
        let cli = Cli::try_parse_from([
            "prefect-worker",
            "start",
            "-p",
            "pool",
            "-q",
            "a",
            "--work-queue",
            "b",
            "--limit",
            "2",
            "--run-once",
            "--no-create-pool-if-not-found",
            "--type",
            "kubernetes",
        ])
        .unwrap();
        let Command::Start(a) = cli.command else {
            panic!("not start")
        };
        assert_eq!(a.pool.as_deref(), Some("pool"));
        assert_eq!(a.work_queues, ["a", "b"]);
        assert_eq!(a.limit, Some(2));
        assert!(a.run_once);
        assert!(a.no_create_pool_if_not_found);
    }
}
