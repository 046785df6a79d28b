//! A Prefect 3 worker that runs flow runs as Kubernetes Jobs.
//!
//! Drop-in for `prefect worker start --type kubernetes`: the same job templates, the same
//! manifests, and a `run` that waits for the Job to finish (through one shared watch per
//! namespace) so every run ends Completed, Failed or Crashed with a diagnosis.
//!
//! [`KubernetesWorker`] implements [`prefect_worker_core::Worker`]; hand it to the generic
//! [`prefect_worker_core::runner::Runner`], which talks to Prefect:
//!
//! ```no_run
//! use prefect_worker_core::client::{ClientOptions, PrefectClient};
//! use prefect_worker_core::runner::{Runner, RunnerOptions};
//! use prefect_worker_kubernetes::{KubernetesWorker, KubernetesWorkerOptions};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let worker = KubernetesWorker::new(KubernetesWorkerOptions::new("my-worker"));
//! let client = PrefectClient::new(ClientOptions::new("http://127.0.0.1:4200/api"))?;
//! let runner = Runner::new(worker, client, RunnerOptions::new("my-pool", "my-worker"));
//! let shutdown = CancellationToken::new(); // cancel it to stop the worker gracefully
//! runner.run(shutdown).await?;
//! # Ok(()) }
//! ```
//!
//! Events are on by default: the runner emits `prefect.worker.*` events and hands its
//! emitter to the worker (`Worker::attach_events`), whose shared Pod watch then emits
//! `prefect.kubernetes.pod.*` events ([`pod_replicator`]); turn them off with
//! `RunnerOptions::with_events(EventsOptions::default().with_enabled(false))` or
//! [`KubernetesSettings::replicate_pod_events`], and read `runner.events().stats()`.
//!
//! Modules, least I/O first: [`configuration`] (pure: template → prepared Job manifest),
//! [`diagnosis`], [`run_watch`] and [`pod_events`] (pure: Kubernetes objects → diagnoses,
//! outcomes and pod events),
//! [`tracker`] (the shared watches), [`clients`] (clients per cluster), [`worker`] (the
//! `Worker` implementation: secrets, Job creation, waiting, cancellation, adoption),
//! [`metrics`] (its Prometheus families, with
//! [`KubernetesWorkerOptions::with_metrics`]).

pub mod clients;
pub mod configuration;
pub mod diagnosis;
mod job_events;
pub mod metrics;
pub mod pod_events;
pub mod pod_replicator;
pub mod run_watch;
pub mod tracker;
pub mod worker;

pub use worker::{KubernetesSettings, KubernetesWorker, KubernetesWorkerOptions};

/// The prefect-kubernetes release whose behaviour this worker matches (reported as the
/// worker's metadata to Prefect).
pub const PREFECT_KUBERNETES_VERSION: &str = "0.8.0";

pub use configuration::{
    KubernetesWorkerJobConfiguration, KubernetesWorkerVariables, preview_from_golden_input,
};
