//! The Kubernetes worker's job configuration (prefect-kubernetes 0.8.0
//! `KubernetesWorkerJobConfiguration`, spec §3.4 step 9 and §3.7): validation of the
//! rendered template, preparation of the Job manifest for one flow run, the worker's
//! variables and default base job template, and the golden-case preview.

#[doc(hidden)] // Public for the parity test of tests/e2e; not API (docs/api.md).
pub mod json_diff;
mod manifest_check;
mod manifest_types;
mod prepare;
mod preview;
mod variables;

use serde_json::{Map, Value};

use prefect_worker_core::client::models::JsonMap;
use prefect_worker_core::job_config::fields::{
    bool_with_default, describe, int_with_default, optional_int, optional_str, str_dict,
    str_with_default,
};
use prefect_worker_core::job_config::{
    ConfigurationError, EnvMap, IndexMap, JobConfiguration, PrepareContext,
};

pub use manifest_check::{base_job_manifest, check_job_manifest};
pub(crate) use manifest_types::check_field_types;
pub(crate) use prepare::main_container_mut;
pub use preview::{preview_from_golden_input, preview_from_golden_input_async};
pub use variables::{KubernetesWorkerVariables, default_base_job_template};

/// The block type slug of [`KubernetesClusterConfig`] documents.
pub const CLUSTER_CONFIG_BLOCK_TYPE_SLUG: &str = "kubernetes-cluster-config";

/// A `KubernetesClusterConfig` block: a whole kubeconfig and the context to use.
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesClusterConfig {
    /// The parsed kubeconfig (a YAML string is parsed, like the block's validator).
    pub config: JsonMap,
    /// The kubeconfig context to use.
    pub context_name: String,
}

impl KubernetesClusterConfig {
    fn from_value(v: &Value) -> Result<Self, ConfigurationError> {
        let bad = |why: &str| {
            ConfigurationError::Validation(format!(
                "cluster_config: {why}; reference a KubernetesClusterConfig block (with `config` and `context_name`)"
            ))
        };
        let Value::Object(m) = v else {
            return Err(bad(&format!(
                "expected an object or null, got {}",
                describe(v)
            )));
        };
        let config = match m.get("config") {
            Some(Value::Object(c)) => c.clone(),
            Some(Value::String(s)) => match serde_yaml::from_str::<Value>(s) {
                Ok(Value::Object(c)) => c,
                _ => return Err(bad("`config` is a string that is not a YAML mapping")),
            },
            Some(other) => {
                return Err(bad(&format!(
                    "`config` must be an object, got {}",
                    describe(other)
                )));
            }
            None => return Err(bad("`config` is required")),
        };
        let context_name = match m.get("context_name") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(bad(&format!(
                    "`context_name` must be a string, got {}",
                    describe(other)
                )));
            }
            None => return Err(bad("`context_name` is required")),
        };
        Ok(Self {
            config,
            context_name,
        })
    }

    /// The block as Python dumps it (with its `block_type_slug`).
    #[must_use]
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "block_type_slug".to_owned(),
            Value::String(CLUSTER_CONFIG_BLOCK_TYPE_SLUG.to_owned()),
        );
        m.insert("config".to_owned(), Value::Object(self.config.clone()));
        m.insert(
            "context_name".to_owned(),
            Value::String(self.context_name.clone()),
        );
        Value::Object(m)
    }
}

/// The configuration's `env`: a dict (values are Python-`str()`ed, `None` removes a
/// variable) or a list of Kubernetes env entries (`{"name", "value"}` or `valueFrom`).
#[derive(Debug, Clone, PartialEq)]
pub enum KubernetesEnv {
    /// `{"NAME": "value" | null}`.
    Dict(EnvMap),
    /// Kubernetes `EnvVar` objects, kept as given.
    List(Vec<JsonMap>),
}

impl Default for KubernetesEnv {
    fn default() -> Self {
        Self::Dict(EnvMap::new())
    }
}

impl KubernetesEnv {
    fn to_json(&self) -> Value {
        match self {
            Self::Dict(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String)))
                    .collect(),
            ),
            Self::List(items) => Value::Array(items.iter().cloned().map(Value::Object).collect()),
        }
    }
}

/// The Kubernetes worker's job configuration for one flow run.
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesWorkerJobConfiguration {
    /// The name given to the Job (`generateName` is derived from it when the template's is unusable).
    pub name: Option<String>,
    /// The configured command. Not used for the container: the template's `{{ command }}` fills `args`.
    pub command: Option<String>,
    /// Environment variables for the flow-run container.
    pub env: KubernetesEnv,
    /// Labels for the Job and its pods (unslugified; the slugged ones are in the manifest).
    pub labels: IndexMap<String, String>,
    /// The namespace the Job is created in.
    pub namespace: String,
    /// Annotations for the Job and its pods (unslugified keys).
    pub annotations: IndexMap<String, String>,
    /// The Job manifest sent to Kubernetes.
    pub job_manifest: JsonMap,
    /// The cluster to create the Job in; `None` for the worker's own cluster.
    pub cluster_config: Option<KubernetesClusterConfig>,
    /// Validated but unused by prefect-kubernetes 0.8.0 (the observer watches jobs).
    pub job_watch_timeout_seconds: Option<i64>,
    /// Validated but unused by prefect-kubernetes 0.8.0.
    pub pod_watch_timeout_seconds: i64,
    /// Validated but unused by prefect-kubernetes 0.8.0.
    pub stream_output: bool,
}

fn env_field(populated: &JsonMap) -> Result<KubernetesEnv, ConfigurationError> {
    match populated.get("env") {
        None => Ok(KubernetesEnv::default()),
        Some(Value::Object(m)) => Ok(KubernetesEnv::Dict(prefect_worker_core::job_config::fields::env_dict(m))),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(m) => Ok(m.clone()),
                other => Err(ConfigurationError::Validation(format!(
                    "env[{i}]: expected a Kubernetes env entry object, got {}; use {{\"name\": ..., \"value\": ...}}",
                    describe(other)
                ))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(KubernetesEnv::List),
        Some(other) => Err(ConfigurationError::Validation(format!(
            "env: expected an object of NAME: value pairs or a list of Kubernetes env entries, got {}; \
             fix the `env` job variable",
            describe(other)
        ))),
    }
}

impl KubernetesWorkerJobConfiguration {
    /// The value of `name` in the container env of the prepared manifest, if set there.
    #[must_use]
    pub fn get_environment_variable_value(&self, name: &str) -> Option<String> {
        let env = prepare::main_container(&self.job_manifest)?
            .get("env")?
            .as_array()?;
        let entry = env
            .iter()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?;
        match entry.get("value")? {
            Value::Null => None,
            v => Some(prefect_worker_core::templating::py_str(v)),
        }
    }

    /// The configuration's own validation, after the fields (pydantic model validator):
    /// fills `metadata` defaults, then checks the manifest contains a minimal Job.
    fn validate_job_manifest(&mut self) -> Result<(), ConfigurationError> {
        let metadata = self
            .job_manifest
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(metadata) = metadata else {
            return Err(ConfigurationError::Validation(
                "job_manifest.metadata: expected an object; fix the work pool's base job template"
                    .to_owned(),
            ));
        };
        metadata
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        metadata
            .entry("labels")
            .or_insert_with(|| Value::Object(Map::new()));
        metadata
            .entry("namespace")
            .or_insert_with(|| Value::String(self.namespace.clone()));
        check_job_manifest(&Value::Object(self.job_manifest.clone())).map_err(|msg| {
            ConfigurationError::Validation(format!(
                "job_manifest: Value error, {msg} (fix the work pool's base job template)"
            ))
        })
    }
}

impl JobConfiguration for KubernetesWorkerJobConfiguration {
    fn from_populated(populated: JsonMap) -> Result<Self, ConfigurationError> {
        let job_manifest = match populated.get("job_manifest") {
            Some(Value::Object(m)) => m.clone(),
            None => {
                return Err(ConfigurationError::Validation(
                    "job_manifest: Field required; the work pool's base job template must have a \
                     `job_manifest` in `job_configuration`"
                        .to_owned(),
                ));
            }
            Some(other) => {
                return Err(ConfigurationError::Validation(format!(
                    "job_manifest: expected an object, got {}; fix the work pool's base job template",
                    describe(other)
                )));
            }
        };
        let cluster_config = match populated.get("cluster_config") {
            None | Some(Value::Null) => None,
            Some(v) => Some(KubernetesClusterConfig::from_value(v)?),
        };
        let mut configuration = Self {
            command: optional_str(&populated, "command")?.filter(|c| !c.is_empty()),
            env: env_field(&populated)?,
            labels: str_dict(&populated, "labels")?,
            name: optional_str(&populated, "name")?,
            annotations: str_dict(&populated, "annotations")?,
            namespace: str_with_default(&populated, "namespace", "default")?,
            job_manifest,
            cluster_config,
            job_watch_timeout_seconds: optional_int(&populated, "job_watch_timeout_seconds")?,
            pod_watch_timeout_seconds: int_with_default(
                &populated,
                "pod_watch_timeout_seconds",
                60,
            )?,
            stream_output: bool_with_default(&populated, "stream_output", true)?,
        };
        configuration.validate_job_manifest()?;
        Ok(configuration)
    }

    fn prepare_for_flow_run(&mut self, ctx: &PrepareContext<'_>) -> Result<(), ConfigurationError> {
        prepare::prepare_for_flow_run(self, ctx)
    }

    fn to_json(&self) -> Value {
        let strs = |m: &IndexMap<String, String>| -> Value {
            Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )
        };
        let opt = |s: &Option<String>| s.clone().map_or(Value::Null, Value::String);
        let mut out = Map::new();
        out.insert("command".to_owned(), opt(&self.command));
        out.insert("env".to_owned(), self.env.to_json());
        out.insert("labels".to_owned(), strs(&self.labels));
        out.insert("name".to_owned(), opt(&self.name));
        out.insert("annotations".to_owned(), strs(&self.annotations));
        out.insert(
            "namespace".to_owned(),
            Value::String(self.namespace.clone()),
        );
        out.insert(
            "job_manifest".to_owned(),
            Value::Object(self.job_manifest.clone()),
        );
        out.insert(
            "cluster_config".to_owned(),
            self.cluster_config
                .as_ref()
                .map_or(Value::Null, KubernetesClusterConfig::to_json),
        );
        out.insert(
            "job_watch_timeout_seconds".to_owned(),
            self.job_watch_timeout_seconds
                .map_or(Value::Null, Value::from),
        );
        out.insert(
            "pod_watch_timeout_seconds".to_owned(),
            Value::from(self.pod_watch_timeout_seconds),
        );
        out.insert("stream_output".to_owned(), Value::Bool(self.stream_output));
        Value::Object(out)
    }
}
