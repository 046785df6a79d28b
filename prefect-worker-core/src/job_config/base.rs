//! The base preparation every worker's configuration goes through (spec §3.6): env,
//! labels, name and command, plus [`BaseJobConfiguration`], a complete configuration for
//! workers that need nothing more.

use indexmap::IndexMap;
use serde_json::{Map, Value};

use super::fields::{env_dict, optional_str, str_dict};
use super::settings_env::settings_environment;
use super::{ConfigurationError, JobConfiguration, PrepareContext};
use crate::client::models::JsonMap;
use crate::templating::apply_values;

/// The command a flow run's infrastructure runs when none is configured.
pub const DEFAULT_COMMAND: &str = "prefect flow-run execute";

/// An env as built by preparation: insertion-ordered, `None` meaning "remove".
pub type EnvMap = IndexMap<String, Option<String>>;

/// Steps 1–3 of the env: the worker's core settings, `PREFECT__FLOW_RUN_ID`, and the
/// attribution variables that are known.
#[must_use]
pub fn base_environment(ctx: &PrepareContext<'_>) -> EnvMap {
    let mut env: EnvMap = settings_environment(ctx.environment)
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    let fr = ctx.flow_run;
    env.insert("PREFECT__FLOW_RUN_ID".to_owned(), Some(fr.id.to_string()));
    if let Some(id) = ctx.worker_id {
        env.insert("PREFECT__WORKER_ID".to_owned(), Some(id.to_owned()));
    }
    env.insert(
        "PREFECT__WORKER_NAME".to_owned(),
        Some(ctx.worker_name.to_owned()),
    );
    env.insert("PREFECT__FLOW_ID".to_owned(), Some(fr.flow_id.to_string()));
    if let Some(flow) = ctx.flow.filter(|f| !f.name.is_empty()) {
        env.insert("PREFECT__FLOW_NAME".to_owned(), Some(flow.name.clone()));
    }
    if let Some(dep_id) = fr.deployment_id {
        env.insert(
            "PREFECT__DEPLOYMENT_ID".to_owned(),
            Some(dep_id.to_string()),
        );
    }
    if let Some(dep) = ctx.deployment.filter(|d| !d.name.is_empty()) {
        env.insert(
            "PREFECT__DEPLOYMENT_NAME".to_owned(),
            Some(dep.name.clone()),
        );
    }
    env
}

/// The full env: the base environment, then the configuration's own env on top (an
/// override keeps the first position), then every `None` dropped.
#[must_use]
pub fn prepare_environment(ctx: &PrepareContext<'_>, own: &EnvMap) -> IndexMap<String, String> {
    let mut env = base_environment(ctx);
    for (k, v) in own {
        env.insert(k.clone(), v.clone());
    }
    env.into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

/// The label groups the base preparation merges, in order. Workers adjust them (the
/// Kubernetes worker adds `app.kubernetes.io/*`) before [`LabelSources::merge`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSources {
    /// `prefect.io/flow-run-id`, `prefect.io/flow-run-name`, `prefect.io/version`.
    pub flow_run: IndexMap<String, String>,
    /// `prefect.io/work-pool-name`, `prefect.io/work-pool-id`.
    pub work_pool: IndexMap<String, String>,
    /// `prefect.io/worker-name`.
    pub worker: IndexMap<String, String>,
    /// `prefect.io/flow-id`, `prefect.io/flow-name` (when the flow is known).
    pub flow: IndexMap<String, String>,
    /// `prefect.io/deployment-id`, `-name`, `-updated` (when there is a deployment).
    pub deployment: IndexMap<String, String>,
}

impl LabelSources {
    /// The base worker's labels for `ctx`.
    #[must_use]
    pub fn for_context(ctx: &PrepareContext<'_>) -> Self {
        let s = |pairs: &[(&str, String)]| -> IndexMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect()
        };
        let fr = ctx.flow_run;
        let flow = ctx
            .flow
            .map(|f| {
                s(&[
                    ("prefect.io/flow-id", f.id.to_string()),
                    ("prefect.io/flow-name", f.name.clone()),
                ])
            })
            .unwrap_or_default();
        let deployment = ctx
            .deployment
            .map(|d| {
                let mut m = s(&[
                    ("prefect.io/deployment-id", d.id.to_string()),
                    ("prefect.io/deployment-name", d.name.clone()),
                ]);
                if let Some(updated) = &d.updated {
                    m.insert(
                        "prefect.io/deployment-updated".to_owned(),
                        utc_isoformat(updated),
                    );
                }
                m
            })
            .unwrap_or_default();
        Self {
            flow_run: s(&[
                ("prefect.io/flow-run-id", fr.id.to_string()),
                ("prefect.io/flow-run-name", fr.name.clone()),
                ("prefect.io/version", ctx.versions.prefect_version.clone()),
            ]),
            work_pool: s(&[
                ("prefect.io/work-pool-name", ctx.work_pool.name.clone()),
                ("prefect.io/work-pool-id", ctx.work_pool.id.to_string()),
            ]),
            worker: s(&[("prefect.io/worker-name", ctx.worker_name.to_owned())]),
            flow,
            deployment,
        }
    }

    /// All groups in order, then the configuration's own labels; later entries win.
    #[must_use]
    pub fn merge(&self, own: &IndexMap<String, String>) -> IndexMap<String, String> {
        let mut out = IndexMap::new();
        for group in [
            &self.flow_run,
            &self.work_pool,
            &self.worker,
            &self.flow,
            &self.deployment,
            own,
        ] {
            for (k, v) in group {
                out.insert(k.clone(), v.clone());
            }
        }
        out
    }
}

/// An RFC 3339 timestamp as Python's `datetime.astimezone(UTC).isoformat()`: no fraction
/// when the microseconds are 0. Unparseable input is returned unchanged.
#[must_use]
pub fn utc_isoformat(timestamp: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(timestamp) {
        Ok(dt) => {
            let utc = dt.with_timezone(&chrono::Utc);
            let micros = utc.timestamp_subsec_micros();
            let base = utc.format("%Y-%m-%dT%H:%M:%S");
            if micros == 0 {
                format!("{base}+00:00")
            } else {
                format!("{base}.{micros:06}+00:00")
            }
        }
        Err(_) => timestamp.to_owned(),
    }
}

/// The configured `name` rendered against `{"ctx": {"flow": ..., "flow_run": ...}}`, then
/// `name or flow_run.name`. A name that is exactly one missing placeholder stays raw.
#[must_use]
pub fn prepare_name(name: Option<&str>, ctx: &PrepareContext<'_>) -> String {
    let rendered = name.filter(|n| !n.is_empty()).map(|n| {
        let flow = ctx
            .flow
            .and_then(|f| serde_json::to_value(f).ok())
            .unwrap_or_else(|| Value::Object(Map::new()));
        let flow_run =
            serde_json::to_value(ctx.flow_run).unwrap_or_else(|_| Value::Object(Map::new()));
        let mut inner = Map::new();
        inner.insert("flow".to_owned(), flow);
        inner.insert("flow_run".to_owned(), flow_run);
        let mut values = Map::new();
        values.insert("ctx".to_owned(), Value::Object(inner));
        match apply_values(&Value::String(n.to_owned()), &values, ctx.environment) {
            None => Value::String(n.to_owned()),
            Some(v) => v,
        }
    });
    match rendered {
        // A full placeholder can render to a non-string; Python keeps whatever it got
        // when it is truthy, so it is shown with `str()`.
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(v) if super::merge::py_truthy(&v) => crate::templating::py_str(&v),
        _ => ctx.flow_run.name.clone(),
    }
}

/// `command or "prefect flow-run execute"`.
#[must_use]
pub fn prepare_command(command: Option<&str>) -> String {
    command
        .filter(|c| !c.is_empty())
        .unwrap_or(DEFAULT_COMMAND)
        .to_owned()
}

/// Validates the `env` field of a base configuration: a dict (values coerced with
/// Python `str()`, `null` kept); absent means `{}`.
pub fn env_field(map: &JsonMap) -> Result<EnvMap, ConfigurationError> {
    match map.get("env") {
        None => Ok(EnvMap::new()),
        Some(Value::Object(m)) => Ok(env_dict(m)),
        Some(_) => Err(ConfigurationError::Validation(
            "env: expected an object of NAME: value pairs; fix the `env` job variable or the \
             work pool's base job template"
                .to_owned(),
        )),
    }
}

/// Python's `BaseJobConfiguration`: command, env, labels and name, prepared by the base
/// rules only. A complete [`JobConfiguration`] for simple workers, and the reference for
/// what the base preparation does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseJobConfiguration {
    /// The command to run; `""` is treated as unset.
    pub command: Option<String>,
    /// Environment variables; `None` removes an inherited variable.
    pub env: EnvMap,
    /// Labels for the infrastructure.
    pub labels: IndexMap<String, String>,
    /// The infrastructure name; may contain `{{ ctx.* }}` placeholders until prepared.
    pub name: Option<String>,
}

impl JobConfiguration for BaseJobConfiguration {
    fn from_populated(populated: JsonMap) -> Result<Self, ConfigurationError> {
        Ok(Self {
            command: optional_str(&populated, "command")?.filter(|c| !c.is_empty()),
            env: env_field(&populated)?,
            labels: str_dict(&populated, "labels")?,
            name: optional_str(&populated, "name")?,
        })
    }

    fn prepare_for_flow_run(&mut self, ctx: &PrepareContext<'_>) -> Result<(), ConfigurationError> {
        self.env = prepare_environment(ctx, &self.env)
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        self.labels = LabelSources::for_context(ctx).merge(&self.labels);
        self.name = Some(prepare_name(self.name.as_deref(), ctx));
        self.command = Some(prepare_command(self.command.as_deref()));
        Ok(())
    }

    fn to_json(&self) -> Value {
        let env: Map<String, Value> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String)))
            .collect();
        let labels: Map<String, Value> = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let mut out = Map::new();
        out.insert(
            "command".to_owned(),
            self.command.clone().map_or(Value::Null, Value::String),
        );
        out.insert("env".to_owned(), Value::Object(env));
        out.insert("labels".to_owned(), Value::Object(labels));
        out.insert(
            "name".to_owned(),
            self.name.clone().map_or(Value::Null, Value::String),
        );
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isoformat_like_python() {
        assert_eq!(
            utc_isoformat("2026-05-01T09:30:00+02:00"),
            "2026-05-01T07:30:00+00:00"
        );
        assert_eq!(
            utc_isoformat("2026-03-14T15:09:26.535897Z"),
            "2026-03-14T15:09:26.535897+00:00"
        );
        assert_eq!(
            utc_isoformat("2026-03-14T15:09:26.5Z"),
            "2026-03-14T15:09:26.500000+00:00"
        );
    }

    #[test]
    fn command_default() {
        assert_eq!(prepare_command(None), DEFAULT_COMMAND);
        assert_eq!(prepare_command(Some("")), DEFAULT_COMMAND);
        assert_eq!(prepare_command(Some("python x.py")), "python x.py");
    }
}
