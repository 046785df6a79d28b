#![doc = include_str!("../README.md")]
//!
//! # Events
//!
//! Events are on by default: the runner emits `prefect.worker.*` events and hands its
//! emitter to the worker (`Worker::attach_events`), whose shared Pod watch then emits
//! `prefect.kubernetes.pod.*` events (`pod_replicator`); turn them off with
//! `RunnerOptions::with_events(EventsOptions::default().with_enabled(false))` or
//! [`KubernetesSettings::replicate_pod_events`], and read `runner.events().stats()`.
//!
//! # Modules
//!
//! Least I/O first: [`configuration`] (pure: template → prepared Job manifest), then,
//! internal to the crate, `diagnosis`, `run_watch` and `pod_events` (pure: Kubernetes
//! objects → diagnoses, outcomes and pod events) and `tracker` (the shared watches);
//! [`clients`] (clients per
//! cluster), [`worker`] (the [`prefect_worker_core::Worker`] implementation: secrets, Job
//! creation, waiting, cancellation, adoption), [`metrics`] (its Prometheus families, with
//! [`KubernetesWorkerOptions::with_metrics`]).

// Every public item is documented: the crate is used as a library (docs/api.md).
#![warn(missing_docs)]

pub mod clients;
pub mod configuration;
mod diagnosis;
mod index_objects;
mod job_events;
pub mod metrics;
mod pod_events;
mod pod_replicator;
mod run_watch;
mod tracker;
pub mod worker;

pub use worker::{KubernetesSettings, KubernetesWorker, KubernetesWorkerOptions};

/// The prefect-kubernetes version whose job templates, manifests and behaviour this
/// worker reproduces (with [`prefect_worker_core::PREFECT_VERSION`]), reported as the
/// worker's metadata to Prefect.
pub const PREFECT_KUBERNETES_VERSION: &str = "0.8.0";

pub use configuration::{
    KubernetesWorkerJobConfiguration, KubernetesWorkerVariables, preview_from_golden_input,
};
