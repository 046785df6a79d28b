//! The contract between the generic runner and one kind of infrastructure: the
//! [`Worker`] trait and everything its methods take and return ([`RunContext`] with its
//! [`FlowRunLogger`], [`WorkerResult`], [`RunError`], [`KillError`]).
//!
//! It sits below the runner: it names the client and the job configuration, never the
//! runner that drives it, so a worker for another platform depends on this module alone.

mod context;
mod logger;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::client::models::FlowRun;
use crate::events::EventEmitter;
use crate::job_config::JobConfiguration;

pub use context::{CLAIM_EXPIRED, RunContext};
pub use logger::{FlowRunLogger, Level};

/// What a finished [`Worker::run`] reports (Python's `BaseWorkerResult`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerResult {
    /// The infrastructure identifier, the same string reported through
    /// [`RunContext::started`] (for Kubernetes `"<namespace>:<job-name>"`).
    pub identifier: String,
    /// The infrastructure's exit status: `0` when the flow run's infrastructure
    /// finished cleanly. A non-zero code on a run that is not yet in a final state makes
    /// the runner report the run Crashed with an explanation of the code.
    pub status_code: i64,
    /// Why the infrastructure ended, when the worker knows more than the exit code
    /// (a diagnosis such as "image pull failed"). Appended to the Crashed message.
    pub detail: Option<String>,
}

/// Why [`Worker::run`] failed. Before [`RunContext::started`] was called, the runner
/// reports `Failed to submit flow run to infrastructure: <type_name>: <message>`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RunError {
    /// Python-style exception type name for the crash message, e.g. `InfrastructureError`.
    pub type_name: &'static str,
    /// The human message; names what failed and, where there is one, the fix.
    pub message: String,
}

impl RunError {
    /// A new error with a type name and message.
    #[must_use]
    pub fn new(type_name: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_name,
            message: message.into(),
        }
    }
}

/// Why [`Worker::kill_infrastructure`] failed.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    /// The infrastructure is already gone; the runner treats the run as cancelled.
    #[error("{0}")]
    NotFound(String),
    /// The infrastructure could not be reached; the runner leaves the state alone and retries
    /// on a later cancellation poll.
    #[error("{0}")]
    NotAvailable(String),
    /// The identifier is malformed or the kill failed otherwise.
    #[error("{0}")]
    Other(String),
    /// This worker cannot stop infrastructure at all (Python's `NotImplementedError`).
    /// Such a worker should also answer `false` from [`Worker::can_kill_infrastructure`].
    #[error("{0}")]
    Unsupported(String),
}

/// A package reported to Prefect as part of the worker's metadata (Python's
/// `Integration`: the installed Prefect collections and their versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Integration {
    /// The package name, e.g. `prefect-kubernetes`.
    pub name: String,
    /// Its version, e.g. `0.8.0`.
    pub version: String,
}

/// What [`Worker::find_infrastructure`] found for a flow run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundInfrastructure {
    /// Infrastructure exists for the run, with this identifier (as [`RunContext::started`]
    /// would report it).
    Exists(String),
    /// Looked where the run's configuration puts its infrastructure: none exists.
    Absent,
    /// This worker cannot tell (the default).
    Unknown,
}

/// One kind of infrastructure (Kubernetes Jobs, processes, ...).
///
/// The runner drives it: for every flow run it builds a [`Worker::Configuration`] from the
/// work pool's base job template, calls [`Worker::run`], and reports the outcome to
/// Prefect. To support another platform, implement this trait and hand the worker to
/// [`crate::runner::Runner`].
///
/// Contract:
/// - `run` creates the infrastructure, calls [`RunContext::started`] with its identifier as
///   soon as it exists (the runner records it as the flow run's `infrastructure_pid`),
///   then waits until the infrastructure has finished and returns its status. It must be
///   cancel-safe: the runner drops the future at shutdown, and the infrastructure keeps
///   running (a restarted worker may adopt it).
/// - `run` must not create infrastructure once [`RunContext::check_claim`] fails (the
///   claim timeout has passed): another worker may be about to return the run to the
///   queue. Check it right before each create attempt.
/// - `kill_infrastructure` stops the infrastructure named by a previous `started` identifier,
///   given the run's configuration as [`Worker::configuration_to_keep`] kept it.
/// - `teardown` releases what the worker holds (watches, temporary secrets) at shutdown.
#[async_trait]
pub trait Worker: Send + Sync + 'static {
    /// The configuration type this worker runs with.
    type Configuration: JobConfiguration;

    /// The work pool type this worker serves, e.g. `"kubernetes"`.
    fn worker_type(&self) -> &'static str;

    /// The base job template used when the worker creates a pool or finds one with an
    /// empty template (`{"job_configuration": ..., "variables": ...}`).
    fn default_base_job_template(&self) -> Value;

    /// Runs one flow run to the end of its infrastructure. See the trait docs.
    async fn run(
        &self,
        flow_run: &FlowRun,
        configuration: Self::Configuration,
        ctx: RunContext,
    ) -> Result<WorkerResult, RunError>;

    /// Stops the infrastructure `infrastructure_pid`, giving it `grace` to shut down. Used by
    /// the cancellation loop and by the server's cleanup delivery (the worker channel's
    /// `cancelling_timeout_teardown.v1`).
    async fn kill_infrastructure(
        &self,
        infrastructure_pid: &str,
        configuration: &Self::Configuration,
        grace: Duration,
    ) -> Result<(), KillError>;

    /// What the runner keeps of a run's configuration once the run's infrastructure exists,
    /// to hand to [`Worker::kill_infrastructure`] later (cancellation, cleanup): thousands of
    /// runs may be tracked at once, so a worker whose `kill_infrastructure` reads only a
    /// few fields may return a copy without the rest (a Job manifest, say). `None` (the
    /// default) keeps the configuration `run` was given. `run` and [`Worker::resume`] always
    /// get the whole configuration.
    fn configuration_to_keep(
        &self,
        configuration: &Self::Configuration,
    ) -> Option<Self::Configuration> {
        let _ = configuration;
        None
    }

    /// Whether [`Worker::kill_infrastructure`] can stop infrastructure. Only a worker that can
    /// asks the server for cleanup delivery over the worker channel (Python offers it only
    /// when the worker class implements `kill_infrastructure`). Default: `true`.
    fn can_kill_infrastructure(&self) -> bool {
        true
    }

    /// The integrations this worker reports as its metadata (`{"integrations": [...]}`): in
    /// the first worker-channel hello, or once in a Prefect Cloud heartbeat. Default: none,
    /// and then no metadata is sent.
    fn integrations(&self) -> Vec<Integration> {
        Vec::new()
    }

    /// Infrastructure this worker started before it was restarted and that has not finished:
    /// `(flow run id, identifier)` pairs. The runner resumes waiting on the ones whose flow
    /// runs are not final (see [`Worker::resume`]), so a restart loses nothing. `work_pool`
    /// tells where to look (e.g. its default namespace). The default finds none.
    async fn running_infrastructure(
        &self,
        work_pool: &crate::client::models::WorkPool,
    ) -> Result<Vec<(uuid::Uuid, String)>, RunError> {
        let _ = work_pool;
        Ok(Vec::new())
    }

    /// Whether infrastructure exists for `flow_run`, looking where `configuration` puts it
    /// (cluster, namespace) and matching every worker's infrastructure for the run, not
    /// only this worker's. The runner asks before it returns an abandoned claim (a run left
    /// Pending with no `infrastructure_pid`) to the queue: only [`FoundInfrastructure::Absent`]
    /// lets it do so; [`FoundInfrastructure::Unknown`] (the default) makes it crash the run
    /// instead, since running it again might run it twice. An `Err` means "ask again later".
    async fn find_infrastructure(
        &self,
        flow_run: &FlowRun,
        configuration: &Self::Configuration,
    ) -> Result<FoundInfrastructure, RunError> {
        let _ = (flow_run, configuration);
        Ok(FoundInfrastructure::Unknown)
    }

    /// Waits for infrastructure found by [`Worker::running_infrastructure`] as `run` would
    /// after creating it. `ctx` has already been marked started with `identifier`.
    async fn resume(
        &self,
        flow_run: &FlowRun,
        identifier: &str,
        configuration: Self::Configuration,
        ctx: RunContext,
    ) -> Result<WorkerResult, RunError> {
        let _ = (flow_run, configuration, ctx);
        Err(RunError::new(
            "NotImplementedError",
            format!("this worker cannot resume infrastructure '{identifier}'"),
        ))
    }

    /// Releases resources at shutdown. Runs once, after the last `run` has ended or been dropped.
    async fn teardown(&self) {}

    /// Receives the runner's event emitter, once, when the runner is built (before any
    /// `run`), so the worker can emit events of its own (the Kubernetes worker's pod
    /// events). The emitter is [`EventEmitter::disabled`] when events are off. The default
    /// ignores it.
    fn attach_events(&self, events: &EventEmitter) {
        let _ = events;
    }
}
