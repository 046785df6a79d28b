//! Field validation for job configurations, with pydantic's lax-mode rules (what the
//! Python worker accepts), and errors that name the field and the fix.

use indexmap::IndexMap;
use serde_json::Value;

use super::ConfigurationError;
use crate::client::models::JsonMap;
use crate::templating::py_str;

fn invalid(field: &str, expected: &str, got: &Value) -> ConfigurationError {
    ConfigurationError::Validation(format!(
        "{field}: expected {expected}, got {}; fix the job variable or the work pool's base job template",
        describe(got)
    ))
}

/// A short description of a value for error messages (`null`, `a list`, `the number 5`).
#[must_use]
pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// `Optional[str]`: absent or `null` give `None`.
pub fn optional_str(map: &JsonMap, field: &str) -> Result<Option<String>, ConfigurationError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(field, "a string or null", other)),
    }
}

/// `str` with a default: absent gives the default, `null` is an error.
pub fn str_with_default(
    map: &JsonMap,
    field: &str,
    default: &str,
) -> Result<String, ConfigurationError> {
    match map.get(field) {
        None => Ok(default.to_owned()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(invalid(field, "a string", other)),
    }
}

/// `dict[str, str]` defaulting to `{}`: every value must be a string (no coercion).
pub fn str_dict(
    map: &JsonMap,
    field: &str,
) -> Result<IndexMap<String, String>, ConfigurationError> {
    match map.get(field) {
        None => Ok(IndexMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(invalid(
                    &format!("{field}.{k}"),
                    "a string (quote the value)",
                    other,
                )),
            })
            .collect(),
        Some(other) => Err(invalid(field, "an object of string values", other)),
    }
}

/// The `env` dict coercion shared by all workers: values become Python `str(value)`,
/// `null` stays `None` (it later removes the variable).
#[must_use]
pub fn env_dict(m: &JsonMap) -> IndexMap<String, Option<String>> {
    m.iter()
        .map(|(k, v)| (k.clone(), if v.is_null() { None } else { Some(py_str(v)) }))
        .collect()
}

/// pydantic lax `int`: ints, floats without a fractional part, booleans, and integer
/// strings. `None` when the value is not an int.
#[must_use]
pub fn lax_int(v: &Value) -> Option<i64> {
    match v {
        Value::Bool(b) => Some(i64::from(*b)),
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => crate::templating::path::py_int(s),
        _ => None,
    }
}

/// `int` with a default: absent gives the default, `null` and non-ints are errors.
pub fn int_with_default(
    map: &JsonMap,
    field: &str,
    default: i64,
) -> Result<i64, ConfigurationError> {
    match map.get(field) {
        None => Ok(default),
        Some(v) => lax_int(v).ok_or_else(|| invalid(field, "an integer", v)),
    }
}

/// `Optional[int]`.
pub fn optional_int(map: &JsonMap, field: &str) -> Result<Option<i64>, ConfigurationError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => lax_int(v)
            .map(Some)
            .ok_or_else(|| invalid(field, "an integer or null", v)),
    }
}

/// pydantic lax `bool`: booleans, `0`/`1`, and the usual true/false words.
#[must_use]
pub fn lax_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_f64() {
            Some(0.0) => Some(false),
            Some(1.0) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "on" | "t" | "true" | "y" | "yes" => Some(true),
            "0" | "off" | "f" | "false" | "n" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// `bool` with a default.
pub fn bool_with_default(
    map: &JsonMap,
    field: &str,
    default: bool,
) -> Result<bool, ConfigurationError> {
    match map.get(field) {
        None => Ok(default),
        Some(v) => lax_bool(v).ok_or_else(|| invalid(field, "a boolean", v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(v: Value) -> JsonMap {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn lax_coercions() {
        assert_eq!(lax_int(&json!(3.0)), Some(3));
        assert_eq!(lax_int(&json!(3.5)), None);
        assert_eq!(lax_int(&json!("42")), Some(42));
        assert_eq!(lax_bool(&json!("yes")), Some(true));
        assert_eq!(lax_bool(&json!(2)), None);
    }

    #[test]
    fn errors_name_the_field() {
        let e = str_dict(&m(json!({"labels": {"a": 5}})), "labels")
            .unwrap_err()
            .to_string();
        assert!(e.contains("labels.a"), "{e}");
        let e = str_with_default(&m(json!({"namespace": null})), "namespace", "default")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("namespace: expected a string, got null"),
            "{e}"
        );
    }

    #[test]
    fn env_values_become_python_strings() {
        let env = env_dict(&m(
            json!({"A": 5, "B": true, "C": 1.5, "D": null, "E": "x"}),
        ));
        let got: Vec<_> = env.into_iter().collect();
        assert_eq!(
            got,
            vec![
                ("A".into(), Some("5".into())),
                ("B".into(), Some("True".into())),
                ("C".into(), Some("1.5".into())),
                ("D".into(), None),
                ("E".into(), Some("x".into()))
            ]
        );
    }
}
