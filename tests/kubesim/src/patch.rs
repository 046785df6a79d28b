//! JSON merge patch (RFC 7386), JSON patch (RFC 6902) and the subset of
//! strategic merge patch the served kinds need.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// The patch flavour, from the request's `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    StrategicMerge,
    /// `application/json-patch+json`
    Json,
}

impl PatchType {
    /// Map a `Content-Type` to a patch type.
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/json-patch+json" => Some(PatchType::Json),
            _ => None,
        }
    }
}

/// Apply `patch` of type `ty` to `target`.
pub fn apply(ty: PatchType, target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    match ty {
        PatchType::Merge => {
            merge(target, patch);
            Ok(())
        }
        PatchType::StrategicMerge => {
            strategic(target, patch, "");
            Ok(())
        }
        PatchType::Json => json_patch(target, patch),
    }
}

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Merge keys for the lists the served kinds carry (from the Kubernetes
/// OpenAPI `x-kubernetes-patch-merge-key`); other lists are replaced.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "volumeMounts"
        | "imagePullSecrets"
        | "containerStatuses"
        | "initContainerStatuses" => "name",
        "ownerReferences" => "uid",
        "conditions" => "type",
        "ports" => "containerPort",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        _ => return None,
    })
}

/// Lists of scalars that strategic merge treats as sets.
fn is_primitive_set(field: &str) -> bool {
    matches!(field, "finalizers")
}

fn strategic(target: &mut Value, patch: &Value, _field: &str) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut clean = p.clone();
        clean.remove("$patch");
        *target = Value::Object(clean);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(cur)), Value::Array(del)) = (t.get_mut(field), v) {
                cur.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            // $setElementOrder/..., $retainKeys: ordering hints we do not need.
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match (t.get_mut(k), v) {
            (Some(Value::Array(cur)), Value::Array(items)) => {
                if let Some(key) = merge_key(k) {
                    merge_list(cur, items, key);
                } else if is_primitive_set(k) {
                    for i in items {
                        if !cur.contains(i) {
                            cur.push(i.clone());
                        }
                    }
                } else {
                    *cur = items.clone();
                }
            }
            (Some(cur @ Value::Object(_)), Value::Object(_)) => strategic(cur, v, k),
            _ => {
                let mut fresh = Value::Null;
                strategic(&mut fresh, v, k);
                strip_directives(&mut fresh);
                t.insert(k.clone(), fresh);
            }
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

fn merge_list(cur: &mut Vec<Value>, items: &[Value], key: &str) {
    for item in items {
        let id = item.get(key).cloned();
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        let pos = id
            .as_ref()
            .and_then(|id| cur.iter().position(|c| c.get(key) == Some(id)));
        match (pos, delete) {
            (Some(i), true) => {
                cur.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic(&mut cur[i], item, ""),
            (None, false) => {
                let mut fresh = item.clone();
                strip_directives(&mut fresh);
                cur.push(fresh);
            }
        }
    }
}

fn pointer_parts(path: &str) -> Result<Vec<String>, ApiError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| ApiError::bad_request(format!("invalid JSON pointer {path:?}")))?;
    Ok(rest
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| ApiError::bad_request("json patch must be an array of operations"))?;
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).unwrap_or_default();
        let path = op.get("path").and_then(Value::as_str).unwrap_or_default();
        let parts = pointer_parts(path)?;
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        match name {
            "add" | "replace" => set_at(target, &parts, value, name == "add")?,
            "remove" => remove_at(target, &parts)?,
            "test" => {
                if target.pointer(path) != Some(&value) {
                    return Err(ApiError::invalid_patch(format!(
                        "testing value {path} failed"
                    )));
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unsupported json patch op {other:?}"
                )));
            }
        }
    }
    Ok(())
}

fn set_at(target: &mut Value, parts: &[String], value: Value, add: bool) -> Result<(), ApiError> {
    let Some((last, parents)) = parts.split_last() else {
        *target = value;
        return Ok(());
    };
    let mut cur = target;
    for p in parents {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(p)
                .ok_or_else(|| ApiError::invalid_patch(format!("doc is missing path: {p}")))?,
            Value::Array(a) => {
                let i: usize = p
                    .parse()
                    .map_err(|_| ApiError::invalid_patch(format!("invalid index {p}")))?;
                a.get_mut(i)
                    .ok_or_else(|| ApiError::invalid_patch(format!("index {i} out of range")))?
            }
            _ => return Err(ApiError::invalid_patch(format!("doc is missing path: {p}"))),
        };
    }
    match cur {
        Value::Object(m) => {
            if !add && !m.contains_key(last) {
                return Err(ApiError::invalid_patch(format!(
                    "doc is missing key: {last}"
                )));
            }
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
            } else {
                let i: usize = last
                    .parse()
                    .map_err(|_| ApiError::invalid_patch(format!("invalid index {last}")))?;
                if add && i <= a.len() {
                    a.insert(i, value);
                } else if !add && i < a.len() {
                    a[i] = value;
                } else {
                    return Err(ApiError::invalid_patch(format!("index {i} out of range")));
                }
            }
        }
        _ => {
            return Err(ApiError::invalid_patch(format!(
                "doc is missing path: {last}"
            )));
        }
    }
    Ok(())
}

fn remove_at(target: &mut Value, parts: &[String]) -> Result<(), ApiError> {
    let Some((last, parents)) = parts.split_last() else {
        return Err(ApiError::invalid_patch("cannot remove the whole document"));
    };
    let pointer: String = parents
        .iter()
        .map(|p| format!("/{}", p.replace('~', "~0").replace('/', "~1")))
        .collect();
    let parent = target
        .pointer_mut(&pointer)
        .ok_or_else(|| ApiError::invalid_patch(format!("doc is missing path: {pointer}")))?;
    let removed = match parent {
        Value::Object(m) => m.remove(last).is_some(),
        Value::Array(a) => match last.parse::<usize>() {
            Ok(i) if i < a.len() => {
                a.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    };
    if removed {
        Ok(())
    } else {
        Err(ApiError::invalid_patch(format!(
            "unable to remove nonexistent key: {last}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_deletes_with_null() {
        let mut t = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        merge(
            &mut t,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
        );
        assert_eq!(t, json!({"metadata": {"labels": {"b": "2", "c": "3"}}}));
    }

    #[test]
    fn strategic_merges_lists_by_key() {
        let mut t = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}], "finalizers": ["x"]}});
        let p = json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}, {"uid": "1", "$patch": "delete"}], "finalizers": ["y"], "$setElementOrder/finalizers": ["x", "y"]}});
        strategic(&mut t, &p, "");
        assert_eq!(
            t,
            json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}], "finalizers": ["x", "y"]}})
        );
    }

    #[test]
    fn json_patch_ops() {
        let mut t = json!({"spec": {"suspend": false}, "a": [1, 2]});
        json_patch(
            &mut t,
            &json!([
                {"op": "replace", "path": "/spec/suspend", "value": true},
                {"op": "add", "path": "/a/-", "value": 3},
                {"op": "remove", "path": "/a/0"}
            ]),
        )
        .unwrap();
        assert_eq!(t, json!({"spec": {"suspend": true}, "a": [2, 3]}));
    }
}
