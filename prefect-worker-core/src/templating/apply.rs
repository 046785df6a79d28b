//! `apply_values`: rendering a template against job variables (spec §3.5).

use serde_json::{Map, Value};

use super::path::get_from_map;
use super::placeholder::{
    ENV_VAR_PREFIX, PlaceholderType, find_placeholders, replace_placeholders,
};
use super::pyrepr::py_str;

/// Where `{{ $NAME }}` placeholders read from. The worker passes its configured
/// environment (not the live process env) so that rendering is deterministic.
pub trait EnvSource {
    /// The value of the variable `name`, if set.
    fn env_var(&self, name: &str) -> Option<String>;
}

impl<S: std::hash::BuildHasher> EnvSource for indexmap::IndexMap<String, String, S> {
    fn env_var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl<S: std::hash::BuildHasher> EnvSource for std::collections::HashMap<String, String, S> {
    fn env_var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// An environment with no variables.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEnv;

impl EnvSource for NoEnv {
    fn env_var(&self, _name: &str) -> Option<String> {
        None
    }
}

/// Renders `template` against `values` (Python `apply_values(..., remove_notset=True)`).
///
/// Returns `None` for Python's `NotSet`: the template was exactly one standard placeholder
/// whose value is missing. Inside dicts and lists such entries are removed.
///
/// - A string that is exactly one standard placeholder becomes the value with its JSON type.
/// - Any other string with placeholders gets Python `str()` of standard values (missing
///   ones become `""`) and of `$NAME` env vars (unset ones become `""`); block and variable
///   placeholders are left for the later passes. Replacement is single-pass.
/// - Dict keys are never templated; scalars are returned unchanged.
#[must_use]
pub fn apply_values(
    template: &Value,
    values: &Map<String, Value>,
    env: &dyn EnvSource,
) -> Option<Value> {
    match template {
        Value::String(s) => apply_to_str(s, values, env),
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                if let Some(rendered) = apply_values(v, values, env) {
                    out.insert(k.clone(), rendered);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .filter_map(|v| apply_values(v, values, env))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

fn apply_to_str(s: &str, values: &Map<String, Value>, env: &dyn EnvSource) -> Option<Value> {
    let placeholders = find_placeholders(s);
    if placeholders.is_empty() {
        return Some(Value::String(s.to_owned()));
    }
    if let [only] = placeholders.as_slice()
        && only.full_match == s
        && only.kind == PlaceholderType::Standard
    {
        return get_from_map(values, &only.name);
    }
    let rendered = replace_placeholders(s, |_, name| match PlaceholderType::of(name) {
        PlaceholderType::Standard => Some(
            get_from_map(values, name)
                .map(|v| py_str(&v))
                .unwrap_or_default(),
        ),
        PlaceholderType::EnvVar => {
            // Python strips every leading `$`, so `{{ $$X }}` reads `X`.
            Some(
                env.env_var(name.trim_start_matches(ENV_VAR_PREFIX))
                    .unwrap_or_default(),
            )
        }
        PlaceholderType::BlockDocument | PlaceholderType::Variable => None,
    });
    Some(Value::String(rendered))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Takes owned `json!` literals so the cases read as data.
    #[allow(clippy::needless_pass_by_value)]
    fn render(t: Value, v: Value) -> Option<Value> {
        let env: indexmap::IndexMap<String, String> = [("HOME".to_owned(), "/root".to_owned())]
            .into_iter()
            .collect();
        apply_values(&t, v.as_object().unwrap(), &env)
    }

    #[test]
    fn full_placeholder_keeps_json_type() {
        assert_eq!(
            render(json!("{{ a }}"), json!({"a": {"x": [1]}})),
            Some(json!({"x": [1]}))
        );
        assert_eq!(
            render(json!("{{ a }}"), json!({"a": 0.0})),
            Some(json!(0.0))
        );
        assert_eq!(
            render(json!("{{ a }}"), json!({"a": null})),
            Some(json!(null))
        );
        assert_eq!(render(json!("{{ a }}"), json!({})), None);
        assert_eq!(
            render(json!("{{ a.b[1] }}"), json!({"a": {"b": [1, 2]}})),
            Some(json!(2))
        );
    }

    #[test]
    fn missing_values_remove_keys_and_items() {
        let t = json!({"keep": "{{ a }}", "drop": "{{ b }}", "list": ["{{ b }}", "{{ a }}", "x"], "n": 1, "t": true});
        assert_eq!(
            render(t, json!({"a": 1})),
            Some(json!({"keep": 1, "list": [1, "x"], "n": 1, "t": true}))
        );
    }

    #[test]
    fn partial_strings_use_python_str() {
        let t = json!(
            "repo/{{ image }}:{{ backoff_limit }}-{{ stream_output }}-{{ name }}-{{ missing }}-{{ $HOME }}-{{ prefect.variables.nope }}"
        );
        let v = json!({"image": "img", "name": null, "backoff_limit": 0, "stream_output": true});
        assert_eq!(
            render(t, v),
            Some(json!(
                "repo/img:0-True-None--/root-{{ prefect.variables.nope }}"
            ))
        );
        assert_eq!(
            render(json!("{{ a }}Mi"), json!({"a": 2048})),
            Some(json!("2048Mi"))
        );
        assert_eq!(
            render(json!("x{{ a }}"), json!({"a": {"k": 'v'.to_string()}})),
            Some(json!("x{'k': 'v'}"))
        );
        assert_eq!(
            render(json!("{{ a }}{{ a }}"), json!({"a": 1.0})),
            Some(json!("1.01.0"))
        );
    }

    #[test]
    fn env_placeholders_are_always_strings() {
        assert_eq!(
            render(json!("{{ $HOME }}"), json!({})),
            Some(json!("/root"))
        );
        assert_eq!(
            render(json!("{{ $$HOME }}"), json!({})),
            Some(json!("/root"))
        );
        assert_eq!(render(json!("{{ $NOPE }}"), json!({})), Some(json!("")));
    }

    #[test]
    fn values_are_not_re_templated_and_keys_are_not_templated() {
        assert_eq!(
            render(json!("a-{{ x }}"), json!({"x": "{{ y }}", "y": 1})),
            Some(json!("a-{{ y }}"))
        );
        assert_eq!(
            render(json!({"{{ x }}": "v"}), json!({"x": 1})),
            Some(json!({"{{ x }}": "v"}))
        );
        assert_eq!(
            render(json!("no placeholders"), json!({})),
            Some(json!("no placeholders"))
        );
    }

    #[test]
    fn block_and_variable_placeholders_are_left_for_later() {
        assert_eq!(
            render(json!("{{ prefect.variables.x }}"), json!({})),
            Some(json!("{{ prefect.variables.x }}"))
        );
        assert_eq!(
            render(json!("{{ prefect.blocks.a.b }}"), json!({})),
            Some(json!("{{ prefect.blocks.a.b }}"))
        );
    }
}
