#![doc = include_str!("../README.md")]

pub mod channel;
pub mod client;
pub mod events;
pub mod job_config;
pub mod metrics;
pub mod runner;
pub mod settings;
pub mod slug;
pub mod templating;
pub mod worker;

/// The Prefect version this worker is wire-compatible with.
pub const PREFECT_VERSION: &str = "3.9.1";
/// The Prefect REST API version sent in `X-PREFECT-API-VERSION`.
pub const API_VERSION: &str = "0.8.4";

pub use worker::{Integration, KillError, RunError, Worker, WorkerResult};
