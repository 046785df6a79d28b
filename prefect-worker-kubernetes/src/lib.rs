#![doc = include_str!("../README.md")]
//!
//! # Modules
//!
//! Least I/O first: [`configuration`] (pure: template → prepared Job manifest),
//! [`diagnosis`] and [`run_watch`] (pure: Kubernetes objects → diagnoses and outcomes),
//! [`tracker`] (the shared watches), [`clients`] (clients per cluster), [`worker`] (the
//! [`prefect_worker_core::Worker`] implementation: secrets, Job creation, waiting,
//! cancellation, adoption).

pub mod clients;
pub mod configuration;
pub mod diagnosis;
pub mod run_watch;
pub mod tracker;
pub mod worker;

pub use worker::{KubernetesSettings, KubernetesWorker, KubernetesWorkerOptions};

/// The prefect-kubernetes version whose job templates, manifests and behaviour this
/// worker reproduces (with [`prefect_worker_core::PREFECT_VERSION`]).
pub const PREFECT_KUBERNETES_VERSION: &str = "0.8.0";

pub use configuration::{
    KubernetesWorkerJobConfiguration, KubernetesWorkerVariables, preview_from_golden_input,
};
