//! Key paths into JSON values (`a.b[0].c`), as Prefect's `get_from_dict` / `set_in_dict`.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// Splits a path the way Prefect does: `[` becomes `.`, `]` is dropped, then split on `.`.
/// So `a.b[0].c` is `a`, `b`, `0`, `c` (and `a[0]b` is `a`, `0b`).
#[must_use]
pub fn split_path(path: &str) -> Vec<String> {
    path.replace('[', ".")
        .replace(']', "")
        .split('.')
        .map(str::to_owned)
        .collect()
}

/// Python `int(s)` for a path segment: optional sign, ASCII digits with single underscores
/// between them, surrounding whitespace allowed.
pub(crate) fn py_int(s: &str) -> Option<i64> {
    let t = s.trim();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    if !digits.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return None;
    }
    let clean: String = digits.chars().filter(|c| *c != '_').collect();
    let v: i64 = clean.parse().ok()?;
    Some(if neg { -v } else { v })
}

/// One step of a lookup. Mappings are indexed by the exact key (JSON keys are strings, so
/// Python's fallback to an int key can never match). Lists take an int index, negative
/// from the end. Strings are indexable too and give one character, as in Python.
fn step<'a>(value: Cow<'a, Value>, key: &str) -> Option<Cow<'a, Value>> {
    match value {
        Cow::Borrowed(Value::Object(m)) => m.get(key).map(Cow::Borrowed),
        Cow::Borrowed(Value::Array(items)) => {
            index(items.len(), key).map(|i| Cow::Borrowed(&items[i]))
        }
        other => match other.as_ref() {
            Value::Object(m) => m.get(key).cloned().map(Cow::Owned),
            Value::Array(items) => index(items.len(), key).map(|i| Cow::Owned(items[i].clone())),
            Value::String(s) => {
                let chars: Vec<char> = s.chars().collect();
                index(chars.len(), key).map(|i| Cow::Owned(Value::String(chars[i].to_string())))
            }
            _ => None,
        },
    }
}

fn index(len: usize, key: &str) -> Option<usize> {
    let i = py_int(key)?;
    let len = i64::try_from(len).ok()?;
    let i = if i < 0 { i + len } else { i };
    if (0..len).contains(&i) {
        usize::try_from(i).ok()
    } else {
        None
    }
}

/// Python `get_from_dict(values, path, NotSet)`: the value at `path`, or `None` when any
/// step is missing or has the wrong type.
#[must_use]
pub fn get_from_dict<'a>(values: &'a Value, path: &str) -> Option<Cow<'a, Value>> {
    let mut cur = Cow::Borrowed(values);
    for key in split_path(path) {
        cur = step(cur, &key)?;
    }
    Some(cur)
}

/// `get_from_dict` over a map of values (the usual shape of template variables).
#[must_use]
pub fn get_from_map(values: &Map<String, Value>, path: &str) -> Option<Value> {
    let keys = split_path(path);
    let (first, rest) = keys.split_first()?;
    let mut cur = Cow::Borrowed(values.get(first.as_str())?);
    for key in rest {
        cur = step(cur, key)?;
    }
    Some(cur.into_owned())
}

/// Why a dotted key could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Key path exists and contains a non-dict value: {0}")]
pub struct KeyPathConflict(pub String);

/// Python `set_in_dict`: sets `value` at `path`, creating dicts along the way. Fails when
/// a step already holds something that is not a dict.
pub fn set_in_dict(
    target: &mut Map<String, Value>,
    path: &str,
    value: Value,
) -> Result<(), KeyPathConflict> {
    let keys = split_path(path);
    let Some((last, parents)) = keys.split_last() else {
        return Ok(());
    };
    let mut cur = target;
    for k in parents {
        let entry = cur
            .entry(k.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        cur = match entry {
            Value::Object(m) => m,
            _ => return Err(KeyPathConflict(format!("{keys:?}"))),
        };
    }
    cur.insert(last.clone(), value);
    Ok(())
}

/// Python `deep_merge(dct, merge)`: a copy of `base` with `merge` applied; nested dicts
/// are merged recursively, anything else in `merge` wins.
#[must_use]
pub fn deep_merge(base: &Map<String, Value>, merge: &Map<String, Value>) -> Map<String, Value> {
    let mut out = base.clone();
    for (k, v) in merge {
        let merged = match (out.get(k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => Value::Object(deep_merge(a, b)),
            _ => v.clone(),
        };
        out.insert(k.clone(), merged);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get(v: &Value, p: &str) -> Option<Value> {
        get_from_dict(v, p).map(Cow::into_owned)
    }

    #[test]
    fn paths_follow_get_from_dict() {
        let v = json!({"a": {"b": [0, {"c": [1, 2]}]}, "years": {"2026": 42, "01": "x"}, "images": ["busybox"]});
        assert_eq!(get(&v, "a.b[1].c[1]"), Some(json!(2)));
        assert_eq!(get(&v, "a.b.1.c.1"), Some(json!(2)));
        assert_eq!(get(&v, "a.b[-1].c[-2]"), Some(json!(1)));
        assert_eq!(get(&v, "a.b[5]"), None);
        assert_eq!(get(&v, "a.b.x"), None);
        assert_eq!(get(&v, "years.2026"), Some(json!(42)));
        assert_eq!(get(&v, "years.01"), Some(json!("x")));
        assert_eq!(get(&v, "images[0][0]"), Some(json!("b")));
        assert_eq!(get(&v, "images[0][-1]"), Some(json!("x")));
        assert_eq!(get(&v, "a.b[0].c"), None);
        assert_eq!(get(&v, "missing"), None);
        assert_eq!(get(&v, "a.b[1_0]"), None);
    }

    #[test]
    fn set_in_dict_creates_and_conflicts() {
        let mut m = Map::new();
        set_in_dict(&mut m, "env.FOO", json!("1")).unwrap();
        set_in_dict(&mut m, "env.BAR", json!("2")).unwrap();
        assert_eq!(
            Value::Object(m.clone()),
            json!({"env": {"FOO": "1", "BAR": "2"}})
        );
        assert!(set_in_dict(&mut m, "env.FOO.X", json!(1)).is_err());
    }

    #[test]
    fn deep_merge_prefers_merge() {
        let a = json!({"x": {"a": 1, "b": 2}, "y": 1});
        let b = json!({"x": {"b": 3}, "y": {"z": 1}});
        let out = deep_merge(a.as_object().unwrap(), b.as_object().unwrap());
        assert_eq!(
            Value::Object(out),
            json!({"x": {"a": 1, "b": 3}, "y": {"z": 1}})
        );
    }
}
