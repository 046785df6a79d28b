//! The whole §3.4 pipeline: merge job variables, render the pool's template, resolve
//! blocks and variables, validate, prepare.

use serde_json::Value;

use super::merge::{merge_job_variables, prepare_template_and_variables};
use super::{ConfigurationError, Environment, JobConfiguration, PrepareContext, TemplateLookups};
use crate::client::models::JsonMap;
use crate::templating::{apply_values, resolve_block_document_references, resolve_variables};

/// Python `from_template_and_values` up to validation: the rendered and resolved
/// `job_configuration` object for these job variables.
pub async fn render_job_configuration(
    base_job_template: &JsonMap,
    values: &JsonMap,
    environment: &Environment,
    lookups: &dyn TemplateLookups,
) -> Result<JsonMap, ConfigurationError> {
    let (template, variables) = prepare_template_and_variables(base_job_template, values)?;
    let populated = apply_values(&template, &variables, environment).unwrap_or(Value::Null);
    let populated = resolve_block_document_references(populated, lookups).await?;
    let populated = resolve_variables(populated, lookups).await?;
    match populated {
        Value::Object(m) => Ok(m),
        other => Err(ConfigurationError::Validation(format!(
            "job_configuration: rendered to {} instead of an object; fix the work pool's base job template",
            super::fields::describe(&other)
        ))),
    }
}

/// Builds the prepared configuration for one flow run (Python `resolve_for_flow_run`):
/// deployment then flow-run job variables over the template's defaults, rendered,
/// resolved through `lookups`, validated into `C`, then prepared with `ctx`.
pub async fn resolve_for_flow_run<C: JobConfiguration>(
    base_job_template: &JsonMap,
    ctx: &PrepareContext<'_>,
    lookups: &dyn TemplateLookups,
) -> Result<C, ConfigurationError> {
    let values = merge_job_variables(
        ctx.deployment.and_then(|d| d.job_variables.as_ref()),
        ctx.flow_run.job_variables.as_ref(),
    )?;
    let populated =
        render_job_configuration(base_job_template, &values, ctx.environment, lookups).await?;
    let mut configuration = C::from_populated(populated)?;
    configuration.prepare_for_flow_run(ctx)?;
    Ok(configuration)
}
