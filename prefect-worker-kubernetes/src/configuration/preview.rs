//! Preparing a configuration from a golden-case `input` object (format in
//! `tests/golden/README` of the spec): what `preview --input FILE` prints. Variables are
//! served from the input; no network is used.

use serde_json::Value;

use prefect_worker_core::client::models::{Deployment, Flow, FlowRun, JsonMap, WorkPool};
use prefect_worker_core::job_config::{
    ConfigurationError, Environment, JobConfiguration, MemoryLookups, PrepareContext, Versions,
    resolve_for_flow_run,
};

use super::KubernetesWorkerJobConfiguration;

fn bad_input(field: &str, why: impl std::fmt::Display) -> ConfigurationError {
    ConfigurationError::Validation(format!("input.{field}: {why}"))
}

fn parse<T: serde::de::DeserializeOwned>(
    input: &Value,
    field: &str,
) -> Result<T, ConfigurationError> {
    let v = input.get(field).cloned().unwrap_or(Value::Null);
    serde_json::from_value(v).map_err(|e| bad_input(field, e))
}

/// [`preview_from_golden_input`], for callers already in async code.
pub async fn preview_from_golden_input_async(input: &Value) -> Result<Value, ConfigurationError> {
    let base_job_template: JsonMap = parse(input, "base_job_template")?;
    let mut work_pool: WorkPool = parse(input, "work_pool")?;
    work_pool.base_job_template = base_job_template.clone();
    let deployment: Option<Deployment> = parse(input, "deployment")?;
    let flow_run: FlowRun = parse(input, "flow_run")?;
    let flow: Option<Flow> = parse(input, "flow")?;
    let worker_name: String = parse(input, "worker_name")?;
    let worker_id: Option<String> = parse(input, "worker_id")?;
    let environment: Environment =
        parse::<Option<Environment>>(input, "environment")?.unwrap_or_default();
    let variables: JsonMap =
        parse::<Option<JsonMap>>(input, "prefect_variables")?.unwrap_or_default();
    let defaults = Versions::default();
    let versions = Versions {
        prefect_version: parse::<Option<String>>(input, "prefect_version")?
            .unwrap_or(defaults.prefect_version),
        python_version: parse::<Option<String>>(input, "python_version")?
            .unwrap_or(defaults.python_version),
    };
    let lookups = MemoryLookups::with_variables(variables);
    let ctx = PrepareContext {
        flow_run: &flow_run,
        deployment: deployment.as_ref(),
        flow: flow.as_ref(),
        work_pool: &work_pool,
        worker_name: &worker_name,
        worker_id: worker_id.as_deref(),
        environment: &environment,
        versions: &versions,
    };
    let configuration: KubernetesWorkerJobConfiguration =
        resolve_for_flow_run(&base_job_template, &ctx, &lookups).await?;
    Ok(configuration.to_json())
}

/// Prepares the configuration described by a golden case's `input` object and returns
/// it as Python's `model_dump(mode="json")`.
pub fn preview_from_golden_input(input: &Value) -> Result<Value, ConfigurationError> {
    // Every lookup is in memory, so the future completes without an async runtime.
    futures::executor::block_on(preview_from_golden_input_async(input))
}
