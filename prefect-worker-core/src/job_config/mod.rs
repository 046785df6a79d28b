//! Building a worker's job configuration for one flow run (spec §3.4–3.6).
//!
//! The pipeline, as Python's `resolve_for_flow_run`:
//! 1. merge job variables (deployment, then flow run) over the pool's variable defaults,
//! 2. render the pool's `job_configuration` template with them ([`crate::templating`]),
//! 3. resolve `prefect.blocks.*` / `$ref` and `prefect.variables.*` through [`TemplateLookups`]
//!    (the only I/O, behind a trait so tests and previews can serve it from memory; the
//!    REST client's implementation is in `lookups`),
//! 4. validate into the worker's [`JobConfiguration`] type,
//! 5. `prepare_for_flow_run`: env, labels, name, command (pure).

use serde_json::Value;

use crate::client::models::{Deployment, Flow, FlowRun, JsonMap, WorkPool};
use crate::templating::ResolveError;

pub mod base;
pub mod fields;
mod lookups;
pub mod merge;
pub mod pipeline;
mod settings_env;
pub mod shlex;

/// Templating's lookups, re-exported where configuration is built.
pub use crate::templating::{LookupError, MemoryLookups, TemplateLookups};
pub use base::{BaseJobConfiguration, DEFAULT_COMMAND, EnvMap, LabelSources};
/// Re-exported so worker crates can name the ordered maps used here without a direct dependency.
pub use indexmap::IndexMap;
pub use merge::merge_job_variables;
pub use pipeline::{render_job_configuration, resolve_for_flow_run};
pub use settings_env::settings_environment;

/// The worker's environment, re-exported from [`crate::settings`] (where it is read).
pub use crate::settings::Environment;

/// Versions the worker claims; they shape the default image and version labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    /// `prefect.__version__` the worker is compatible with, e.g. `3.9.1`.
    pub prefect_version: String,
    /// Python major.minor of the default image, e.g. `3.11`.
    pub python_version: String,
}

impl Default for Versions {
    /// Prefect 3.9.1 on Python 3.11, the versions this worker is wire-compatible with.
    fn default() -> Self {
        Self {
            prefect_version: crate::PREFECT_VERSION.to_owned(),
            python_version: "3.11".to_owned(),
        }
    }
}

/// Everything preparation may read. Nothing in it does I/O.
#[derive(Debug, Clone, Copy)]
pub struct PrepareContext<'a> {
    /// The flow run being prepared.
    pub flow_run: &'a FlowRun,
    /// Its deployment, when it has one.
    pub deployment: Option<&'a Deployment>,
    /// Its flow, when it could be read.
    pub flow: Option<&'a Flow>,
    /// The work pool the run came from.
    pub work_pool: &'a WorkPool,
    /// This worker's name (`PREFECT__WORKER_NAME`, the `prefect.io/worker-name` label).
    pub worker_name: &'a str,
    /// This worker's id, when the server assigned one (Prefect Cloud).
    pub worker_id: Option<&'a str>,
    /// The worker's environment, for `{{ $ENV }}` placeholders and the `PREFECT_*` settings passed on.
    pub environment: &'a Environment,
    /// The versions the worker claims (default image, version labels).
    pub versions: &'a Versions,
}

/// Why a job configuration could not be built. The runner reports it as
/// `Failed to submit flow run to infrastructure: <type_name>: <message>`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigurationError {
    /// The configuration does not validate (a field has the wrong type, the manifest is
    /// missing required parts...). The message names the field and the fix.
    #[error("{0}")]
    Validation(String),
    /// A value the template needs could not be produced (bad block path, bad command...).
    #[error("{0}")]
    Value(String),
    /// Reading a block document or variable failed.
    #[error(transparent)]
    Lookup(#[from] LookupError),
}

impl ConfigurationError {
    /// The Python-style exception type name used in crash messages.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Validation(_) => "ValidationError",
            Self::Value(_) => "ValueError",
            Self::Lookup(LookupError::NotFound(_)) => "ObjectNotFound",
            Self::Lookup(_) => "PrefectHTTPStatusError",
        }
    }
}

impl From<ResolveError> for ConfigurationError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::Value(m) => Self::Value(m),
            ResolveError::Lookup(l) => Self::Lookup(l),
        }
    }
}

/// A worker's job configuration: what one flow run needs to run on the infrastructure.
///
/// Implementations add their own validation and preparation (the Kubernetes one builds
/// the Job manifest). Both steps are pure, so configurations can be unit-tested and
/// previewed without a server.
pub trait JobConfiguration: Sized + Clone + Send + Sync + std::fmt::Debug + 'static {
    /// Validates the rendered, resolved `job_configuration` object into this type
    /// (pydantic's `model_validate`).
    fn from_populated(populated: JsonMap) -> Result<Self, ConfigurationError>;

    /// Fills in what depends on the flow run: env, labels, name, command, and the
    /// worker-specific parts. Pure.
    fn prepare_for_flow_run(&mut self, ctx: &PrepareContext<'_>) -> Result<(), ConfigurationError>;

    /// The configuration as Python's `model_dump(mode="json")`.
    fn to_json(&self) -> Value;
}
