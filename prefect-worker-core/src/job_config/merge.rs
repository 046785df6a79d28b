//! Job-variable merging (spec §3.4 steps 1–5): deployment and flow-run job variables,
//! the pool's variable defaults, dot-notation keys, and the env merge into the template.

use serde_json::{Map, Value};

use super::ConfigurationError;
use crate::client::models::JsonMap;
use crate::templating::{deep_merge, set_in_dict};

/// Merges deployment and flow-run job variables as `resolve_for_flow_run` does: when the
/// deployment `env` is a dict the flow-run `env` is merged into it key by key (flow run
/// wins); every other key, and a non-dict deployment env, is replaced whole.
pub fn merge_job_variables(
    deployment_vars: Option<&JsonMap>,
    flow_run_vars: Option<&JsonMap>,
) -> Result<JsonMap, ConfigurationError> {
    let mut merged = deployment_vars.cloned().unwrap_or_default();
    let mut run = flow_run_vars.cloned().unwrap_or_default();
    if let Some(Value::Object(env)) = merged.get_mut("env") {
        match run.shift_remove("env") {
            None => {}
            Some(Value::Object(run_env)) => {
                for (k, v) in run_env {
                    env.insert(k, v);
                }
            }
            Some(other) => dict_update_from_iterable(env, &other)?,
        }
    }
    for (k, v) in run {
        merged.insert(k, v);
    }
    Ok(merged)
}

/// Python `dict.update(x)` for a non-dict `x` (a flow-run `env` given as something other
/// than a dict over a dict deployment env). Each item must be a pair: a two-key dict
/// iterates as its two keys, a two-element list or two-character string as its elements.
/// `null` and anything else raise, as in Python.
fn dict_update_from_iterable(
    env: &mut Map<String, Value>,
    other: &Value,
) -> Result<(), ConfigurationError> {
    let bad = |why: &str| {
        ConfigurationError::Validation(format!(
            "env: the flow run's job variable `env` cannot be merged into the deployment's env \
             ({why}); set it to an object of NAME: value pairs"
        ))
    };
    let Value::Array(items) = other else {
        return Err(bad(if other.is_null() {
            "it is null"
        } else {
            "it is not an object"
        }));
    };
    for item in items {
        let pair: Vec<Value> = match item {
            Value::Object(m) => m.keys().map(|k| Value::String(k.clone())).collect(),
            Value::Array(a) => a.clone(),
            Value::String(s) => s.chars().map(|c| Value::String(c.to_string())).collect(),
            _ => return Err(bad("an item is not a pair")),
        };
        match pair.as_slice() {
            [Value::String(k), v] => {
                env.insert(k.clone(), v.clone());
            }
            _ => return Err(bad("an item is not a NAME/value pair")),
        }
    }
    Ok(())
}

/// The pool's variable defaults: every `variables.properties.<name>.default` that is
/// present and not `null`.
#[must_use]
pub fn variable_defaults(variables_schema: Option<&Value>) -> JsonMap {
    let mut defaults = Map::new();
    let Some(Value::Object(props)) = variables_schema.and_then(|v| v.get("properties")) else {
        return defaults;
    };
    for (name, attrs) in props {
        if let Some(d) = attrs.get("default")
            && !d.is_null()
        {
            defaults.insert(name.clone(), d.clone());
        }
    }
    defaults
}

/// Expands dot-notation keys (`"env.FOO": "1"`) into nested dicts, then applies plain keys
/// on top: a dict plain value is deep-merged over the dotted one (plain wins), any other
/// plain value overwrites.
pub fn expand_dot_keys(values: &JsonMap) -> Result<JsonMap, ConfigurationError> {
    let mut out = Map::new();
    for (k, v) in values.iter().filter(|(k, _)| k.contains('.')) {
        set_in_dict(&mut out, k, v.clone()).map_err(|e| {
            ConfigurationError::Validation(format!(
                "job variable {k:?}: {e}; do not set both a dotted key and a non-object value on its prefix"
            ))
        })?;
    }
    for (k, v) in values.iter().filter(|(k, _)| !k.contains('.')) {
        let merged = match (out.get(k), v) {
            (Some(Value::Object(dotted)), Value::Object(plain)) => {
                Value::Object(deep_merge(dotted, plain))
            }
            _ => v.clone(),
        };
        out.insert(k.clone(), merged);
    }
    Ok(out)
}

/// `from_template_and_values` up to rendering: returns the job-configuration template
/// (with the env merges applied) and the variables to render it with.
pub fn prepare_template_and_variables(
    base_job_template: &JsonMap,
    values: &JsonMap,
) -> Result<(Value, JsonMap), ConfigurationError> {
    let mut config = match base_job_template.get("job_configuration") {
        Some(Value::Object(m)) => m.clone(),
        _ => {
            return Err(ConfigurationError::Validation(
                "base_job_template: `job_configuration` is missing or not an object; \
                 fix the work pool's base job template"
                    .to_owned(),
            ));
        }
    };
    let mut variables = variable_defaults(base_job_template.get("variables"));

    // Pool-level env defaults survive a deployment env: merged into a dict template env,
    // or replacing a `"{{ env }}"` template before job variables are applied.
    if let Some(default_env) = variables.get("env").filter(|v| py_truthy(v)).cloned() {
        let merged = match (config.get("env"), &default_env) {
            (Some(Value::Object(base)), Value::Object(d)) => Value::Object(dict_or(base, d)),
            _ => default_env,
        };
        config.insert("env".to_owned(), merged);
    }

    for (k, v) in expand_dot_keys(values)? {
        variables.insert(k, v);
    }

    if let (Some(Value::Object(base)), Some(env)) = (config.get("env"), variables.get("env"))
        && py_truthy(env)
    {
        let Value::Object(env) = env else {
            return Err(ConfigurationError::Validation(
                "env: the job variable `env` must be an object when the template's env is an object"
                    .to_owned(),
            ));
        };
        let merged = dict_or(base, env);
        config.insert("env".to_owned(), Value::Object(merged));
    }
    Ok((Value::Object(config), variables))
}

/// Python `a | b` for dicts: `b` wins, keys keep their first position.
fn dict_or(a: &JsonMap, b: &JsonMap) -> JsonMap {
    let mut out = a.clone();
    for (k, v) in b {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// Python truthiness of a JSON value.
#[must_use]
pub fn py_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> JsonMap {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn env_merges_key_by_key_and_other_keys_replace() {
        let dep = obj(
            json!({"env": {"A": "dep-a", "B": "dep-b"}, "labels": {"x": "1", "y": "2"}, "image": "d"}),
        );
        let run = obj(json!({"env": {"B": "run-b", "C": "run-c"}, "labels": {"y": "3"}}));
        let m = merge_job_variables(Some(&dep), Some(&run)).unwrap();
        assert_eq!(
            Value::Object(m),
            json!({"env": {"A": "dep-a", "B": "run-b", "C": "run-c"}, "labels": {"y": "3"}, "image": "d"})
        );
    }

    #[test]
    fn null_run_env_over_dict_env_fails_and_non_dict_dep_env_is_replaced() {
        let dep = obj(json!({"env": {"A": "1"}}));
        assert!(merge_job_variables(Some(&dep), Some(&obj(json!({"env": null})))).is_err());
        let dep = obj(json!({"env": [{"name": "A", "value": "1"}]}));
        let m = merge_job_variables(Some(&dep), Some(&obj(json!({"env": {"B": "2"}})))).unwrap();
        assert_eq!(m["env"], json!({"B": "2"}));
    }

    #[test]
    fn defaults_skip_null_and_absent() {
        let d = variable_defaults(Some(
            &json!({"properties": {"a": {"default": 0}, "b": {"default": null}, "c": {}}}),
        ));
        assert_eq!(Value::Object(d), json!({"a": 0}));
    }

    #[test]
    fn dot_keys_expand_and_plain_wins() {
        let v = obj(
            json!({"env.FROM_DOT": "dot", "env": {"PLAIN": "p", "FROM_DOT": "plain"}, "labels.team": "x"}),
        );
        let out = expand_dot_keys(&v).unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"env": {"FROM_DOT": "plain", "PLAIN": "p"}, "labels": {"team": "x"}})
        );
        let v = obj(json!({"env.A": "1", "env": "scalar"}));
        assert_eq!(expand_dot_keys(&v).unwrap()["env"], json!("scalar"));
    }

    #[test]
    fn pool_env_defaults_merge_under_job_env() {
        let tmpl = obj(json!({
            "job_configuration": {"env": "{{ env }}"},
            "variables": {"properties": {"env": {"default": {"POOL": "p", "FOO": "pool"}}}}
        }));
        let (config, vars) =
            prepare_template_and_variables(&tmpl, &obj(json!({"env": {"FOO": "dep"}}))).unwrap();
        assert_eq!(config["env"], json!({"POOL": "p", "FOO": "dep"}));
        assert_eq!(vars["env"], json!({"FOO": "dep"}));
    }
}
