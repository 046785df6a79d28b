#![doc = include_str!("../README.md")]
//!
//! # Layers
//!
//! Each module names only the ones before it: [`slug`], [`templating`], [`settings`] and
//! [`client`] (the REST client) at the bottom; then [`events`] (worker events and their
//! websocket) and [`job_config`] (a flow run's job configuration, with the client as
//! templating's lookups); then [`worker`] (the
//! contract: [`Worker`], [`RunContext`], results and errors); then [`runner`], which
//! drives any `Worker`.

// Every public item is documented: the crate is used as a library (docs/api.md).
#![warn(missing_docs)]

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

// What an implementor of [`Worker`] names, at the root: the trait, what its methods take
// and return, and the configuration it is built from. (The older module paths, e.g.
// `runner::RunContext`, keep working.)
pub use job_config::{BaseJobConfiguration, ConfigurationError, JobConfiguration, PrepareContext};
pub use worker::{
    FlowRunLogger, FoundInfrastructure, Integration, KillError, Level, RunContext, RunError,
    Worker, WorkerResult,
};
