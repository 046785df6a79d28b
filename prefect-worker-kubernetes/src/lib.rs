//! A Prefect 3 worker that runs flow runs as Kubernetes Jobs.
//!
//! Drop-in for `prefect worker start --type kubernetes`: the same job templates, the same
//! manifests, and a `run` that waits for the Job to finish (through one shared watch per
//! namespace) so every run ends Completed, Failed or Crashed with a diagnosis.

pub mod clients;
pub mod configuration;
pub mod diagnosis;
pub mod run_watch;
pub mod tracker;
pub mod worker;

pub use worker::{KubernetesSettings, KubernetesWorker, KubernetesWorkerOptions};

pub use configuration::{
    KubernetesWorkerJobConfiguration, KubernetesWorkerVariables, preview_from_golden_input,
};
