//! A second [`Worker`]: each flow run's command runs as a local process. Copy this page
//! to write a worker for another platform: a job configuration (what one run needs), the
//! trait's four methods, and a `main` that hands the worker to the generic [`Runner`].
//!
//! ```sh
//! PREFECT_API_URL=http://127.0.0.1:4200/api \
//!     cargo run -p prefect-worker-core --example process_worker -- my-pool
//! ```
//!
//! It serves work pools of type `process-example` (created with its template when
//! missing). Each run gets the worker's environment plus the run's `env`, runs in the
//! run's `working_dir` (a temporary directory when unset), in its own process group, and
//! its output goes to this program's stdout and stderr. Cancelling a run sends SIGTERM
//! to the group, then SIGKILL after the grace period; stopping the worker (Ctrl-C or
//! SIGTERM) does the same to the runs still in flight, since a restarted worker could
//! not adopt them. Unix only.
//!
//! What the runner does around it (claiming runs, Pending/Submitting, the configuration,
//! `infrastructure_pid`, Crashed on a non-zero exit, cancellation, flow-run logs) is the
//! same as for the Kubernetes worker; see `docs/architecture.md`.

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use prefect_worker_core::client::models::{FlowRun, JsonMap};
use prefect_worker_core::client::{ClientOptions, PrefectClient};
use prefect_worker_core::job_config::shlex;
use prefect_worker_core::runner::{Runner, RunnerOptions};
use prefect_worker_core::settings::{SettingsSources, WorkerSettings};
use prefect_worker_core::{
    BaseJobConfiguration, ConfigurationError, JobConfiguration, KillError, PrepareContext,
    RunContext, RunError, Worker, WorkerResult,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The work pool type this worker serves.
const WORKER_TYPE: &str = "process-example";

/// How long processes still running at shutdown get between SIGTERM and SIGKILL.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- the job configuration

/// What one flow run needs: the base fields every worker has (command, env, labels,
/// name; prepared by the base rules) plus where to run.
#[derive(Debug, Clone)]
struct ProcessJobConfiguration {
    base: BaseJobConfiguration,
    /// The directory the command runs in; a fresh temporary directory when `None`.
    working_dir: Option<PathBuf>,
    /// Copy the process's output to the worker's stdout and stderr.
    stream_output: bool,
}

impl JobConfiguration for ProcessJobConfiguration {
    fn from_populated(mut populated: JsonMap) -> Result<Self, ConfigurationError> {
        let working_dir = match populated.remove("working_dir") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(PathBuf::from(s)),
            Some(_) => {
                return Err(ConfigurationError::Validation(
                    "working_dir: expected a directory path or null; fix the `working_dir` job \
                     variable"
                        .to_owned(),
                ));
            }
        };
        let stream_output = match populated.remove("stream_output") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => b,
            Some(_) => {
                return Err(ConfigurationError::Validation(
                    "stream_output: expected true or false; fix the `stream_output` job variable"
                        .to_owned(),
                ));
            }
        };
        Ok(Self {
            base: BaseJobConfiguration::from_populated(populated)?,
            working_dir,
            stream_output,
        })
    }

    fn prepare_for_flow_run(&mut self, ctx: &PrepareContext<'_>) -> Result<(), ConfigurationError> {
        // Env (the worker's PREFECT_* settings, PREFECT__FLOW_RUN_ID, ...), labels, name
        // and the default command `prefect flow-run execute`.
        self.base.prepare_for_flow_run(ctx)
    }

    fn to_json(&self) -> Value {
        let mut out = self.base.to_json();
        out["working_dir"] = json!(self.working_dir);
        out["stream_output"] = json!(self.stream_output);
        out
    }
}

/// The base job template of a `process-example` pool: the job configuration is filled
/// from these variables (deployment and flow-run job variables override the defaults).
fn base_job_template() -> Value {
    json!({
        "job_configuration": {
            "command": "{{ command }}",
            "env": "{{ env }}",
            "labels": "{{ labels }}",
            "name": "{{ name }}",
            "working_dir": "{{ working_dir }}",
            "stream_output": "{{ stream_output }}"
        },
        "variables": {
            "type": "object",
            "properties": {
                "command": {"type": ["string", "null"], "default": null,
                    "description": "The command to run; `prefect flow-run execute` when unset."},
                "env": {"type": "object", "additionalProperties": {"type": ["string", "null"]},
                    "description": "Environment variables added to the worker's own."},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "name": {"type": ["string", "null"], "default": null},
                "working_dir": {"type": ["string", "null"], "default": null,
                    "description": "Directory to run in; a temporary directory when unset."},
                "stream_output": {"type": "boolean", "default": true,
                    "description": "Copy the process's output to the worker's output."}
            }
        }
    })
}

// ---------------------------------------------------------------- the worker

/// Runs flow runs as local processes, identified as `<host>:<pid>`.
#[derive(Debug, Default)]
struct ProcessWorker {
    /// Process groups started and not yet seen to exit: what `teardown` stops.
    running: Mutex<HashSet<i32>>,
}

impl ProcessWorker {
    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// SIGTERM to the process group `pid`, then SIGKILL if it is still there after `grace`.
/// `Err(Errno::ESRCH)`: there was no such process group.
async fn terminate_group(pid: i32, grace: Duration) -> Result<(), Errno> {
    let group = Pid::from_raw(pid);
    killpg(group, Signal::SIGTERM)?;
    let deadline = tokio::time::Instant::now() + grace;
    // Signal 0 only asks whether the group still exists.
    while killpg(group, None).is_ok() {
        if tokio::time::Instant::now() >= deadline {
            let _ = killpg(group, Signal::SIGKILL);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[async_trait]
impl Worker for ProcessWorker {
    type Configuration = ProcessJobConfiguration;

    fn worker_type(&self) -> &'static str {
        WORKER_TYPE
    }

    fn default_base_job_template(&self) -> Value {
        base_job_template()
    }

    async fn run(
        &self,
        flow_run: &FlowRun,
        configuration: ProcessJobConfiguration,
        mut ctx: RunContext,
    ) -> Result<WorkerResult, RunError> {
        // Errors before `ctx.started` become "Failed to submit flow run to infrastructure:
        // <type>: <message>" on the run.
        let command = configuration.base.command.as_deref().unwrap_or_default();
        let argv = shlex::split(command)
            .map_err(|e| RunError::new("ValueError", format!("command {command:?}: {e}")))?;
        let Some((program, args)) = argv.split_first() else {
            return Err(RunError::new(
                "ValueError",
                "command: empty; set the `command` job variable",
            ));
        };
        // A temporary directory lives as long as this call (removed when the run ends).
        let temporary;
        let working_dir = match &configuration.working_dir {
            Some(dir) => dir.clone(),
            None => {
                temporary = tempfile::Builder::new()
                    .prefix("prefect-process-")
                    .tempdir()
                    .map_err(|e| {
                        RunError::new("OSError", format!("cannot create a working directory: {e}"))
                    })?;
                temporary.path().to_owned()
            }
        };
        let output = || {
            if configuration.stream_output {
                Stdio::inherit()
            } else {
                Stdio::null()
            }
        };
        let mut child = tokio::process::Command::new(program)
            .args(args)
            // The worker's environment, then the run's (prepared: every value is set).
            .envs(
                configuration
                    .base
                    .env
                    .iter()
                    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v))),
            )
            .current_dir(&working_dir)
            .stdin(Stdio::null())
            .stdout(output())
            .stderr(output())
            // Its own process group, so a kill reaches the processes it starts too.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                RunError::new(
                    "OSError",
                    format!("cannot start {program:?} in {}: {e}", working_dir.display()),
                )
            })?;
        let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
            return Err(RunError::new("OSError", "the process exited at once"));
        };
        self.running().insert(pid);
        let identifier = format!("{}:{pid}", host_name());
        ctx.logger().info(format!(
            "Opening process {pid} for flow run '{}' in {}",
            flow_run.name,
            working_dir.display()
        ));
        // The runner records this as the run's infrastructure_pid: from now on the run
        // can be cancelled, and errors are reported as the infrastructure's.
        ctx.started(identifier.clone());

        let status = child.wait().await;
        self.running().remove(&pid);
        let status = status.map_err(|e| RunError::new("OSError", e.to_string()))?;
        // A process ended by a signal reports minus the signal number, as Python does.
        let status_code = status
            .code()
            .map_or_else(|| -i64::from(status.signal().unwrap_or(0)), i64::from);
        ctx.logger().info(format!(
            "Process {pid} exited with status code {status_code}"
        ));
        Ok(WorkerResult {
            identifier,
            status_code,
            detail: None,
        })
    }

    async fn kill_infrastructure(
        &self,
        infrastructure_pid: &str,
        _configuration: &ProcessJobConfiguration,
        grace: Duration,
    ) -> Result<(), KillError> {
        let Some((host, pid)) = infrastructure_pid
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<i32>().ok()?)))
        else {
            return Err(KillError::Other(format!(
                "infrastructure pid {infrastructure_pid:?} is not of the form <host>:<pid>"
            )));
        };
        let here = host_name();
        if host != here {
            return Err(KillError::NotAvailable(format!(
                "process {pid} runs on host {host:?}, this worker on {here:?}"
            )));
        }
        match terminate_group(pid, grace).await {
            Ok(()) => Ok(()),
            Err(Errno::ESRCH) => Err(KillError::NotFound(format!(
                "process {pid} is no longer running"
            ))),
            Err(e) => Err(KillError::Other(format!(
                "cannot signal process {pid}: {e}"
            ))),
        }
    }

    async fn teardown(&self) {
        // Runs whose `run` the runner stopped waiting on: nobody could report their end
        // (a restarted worker cannot adopt a process), so stop them.
        let left: Vec<i32> = self.running().drain().collect();
        for pid in &left {
            tracing::info!(pid, "stopping a flow run process left at shutdown");
        }
        // In parallel; a group already gone (ESRCH) is fine.
        futures::future::join_all(
            left.into_iter()
                .map(|pid| terminate_group(pid, SHUTDOWN_GRACE)),
        )
        .await;
    }
}

// ---------------------------------------------------------------- main

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let pool = args.next().unwrap_or_else(|| "process-pool".to_owned());
    let name = args
        .next()
        .unwrap_or_else(|| format!("ProcessWorker {}", uuid::Uuid::new_v4()));

    // Settings the way `prefect worker start` reads them: environment over the profile.
    let sources = SettingsSources::from_process()?;
    let settings = WorkerSettings::from_sources(&sources)?;
    let client = PrefectClient::new(ClientOptions::from_env(&|k: &str| {
        sources.get(k).map(str::to_owned)
    })?)?;
    let options = RunnerOptions::from_settings(&pool, &name, &settings)
        .with_environment(sources.environment());
    let runner = Runner::new(ProcessWorker::default(), client, options);

    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            Some(()) = async { term.as_mut()?.recv().await } => {}
        }
        trigger.cancel();
    });
    runner.run(shutdown).await?;
    Ok(())
}
