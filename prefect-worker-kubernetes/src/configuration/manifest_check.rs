//! The Job manifest check prefect-kubernetes runs when a configuration is built: a
//! JSON-patch diff (python-jsonpatch 1.x `JsonPatch.from_diff`) from the manifest to the
//! minimal Job it must contain. "add" operations are missing attributes, "replace"
//! operations incompatible values; removals (extra keys and items) are fine.
//!
//! The diff is reproduced with jsonpatch's pairing of equal removed/added values into
//! moves, which is why a container exactly `{"name": "prefect-job"}` anywhere in the
//! list can satisfy the check.

use serde_json::{Map, Value, json};

use prefect_worker_core::templating::py_repr;

/// The minimal Job every manifest must contain.
#[must_use]
pub fn base_job_manifest() -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"annotations": {}, "labels": {}},
        "spec": {"template": {"spec": {
            "parallelism": 1,
            "completions": 1,
            "restartPolicy": "Never",
            "containers": [{"name": "prefect-job"}]
        }}}
    })
}

/// Checks `manifest` against [`base_job_manifest`]; the error text is prefect-kubernetes'.
pub fn check_job_manifest(manifest: &Value) -> Result<(), String> {
    let mut diff = Diff::default();
    diff.compare_values("", None, manifest, &base_job_manifest());
    let live = || diff.ops.iter().filter(|o| o.alive);
    let mut missing: Vec<&str> = live()
        .filter(|o| o.kind == Kind::Add)
        .map(|o| o.path.as_str())
        .collect();
    missing.sort_unstable();
    if !missing.is_empty() {
        return Err(format!(
            "Job is missing required attributes at the following paths: {}",
            missing.join(", ")
        ));
    }
    let mut incompatible: Vec<String> = live()
        .filter(|o| o.kind == Kind::Replace)
        .map(|o| {
            format!(
                "{} must have value {}",
                o.path,
                o.value.as_ref().map(py_repr).unwrap_or_default()
            )
        })
        .collect();
    incompatible.sort_unstable();
    if !incompatible.is_empty() {
        return Err(format!(
            "Job has incompatible values for the following attributes: {}",
            incompatible.join(", ")
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Add,
    Remove,
    Replace,
    Move,
}

#[derive(Debug)]
struct Op {
    kind: Kind,
    path: String,
    value: Option<Value>,
    alive: bool,
}

#[derive(Debug, Default)]
struct Diff {
    ops: Vec<Op>,
    /// Added values not yet paired with a removal: (value, op index).
    added: Vec<(Value, usize)>,
    /// Removed values not yet paired with an addition.
    removed: Vec<(Value, usize)>,
}

/// RFC 6901 escaping of one path segment.
fn join(path: &str, key: &str) -> String {
    format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// Python `==` between JSON values (1 == 1.0 == True, nested too).
fn py_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)))
        }
        _ => match (num(a), num(b)) {
            (Some(p), Some(q)) => p == q,
            _ => a == b,
        },
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// jsonpatch keys its value index by `(value, type(value))`.
fn same_type(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.is_f64() == y.is_f64(),
        _ => std::mem::discriminant(a) == std::mem::discriminant(b),
    }
}

fn take(store: &mut Vec<(Value, usize)>, value: &Value) -> Option<usize> {
    let pos = store
        .iter()
        .rposition(|(v, _)| same_type(v, value) && py_eq(v, value))?;
    Some(store.remove(pos).1)
}

impl Diff {
    fn push(&mut self, kind: Kind, path: String, value: Option<Value>) -> usize {
        self.ops.push(Op {
            kind,
            path,
            value,
            alive: true,
        });
        self.ops.len() - 1
    }

    fn item_added(&mut self, path: &str, key: &str, item: &Value) {
        let location = join(path, key);
        if let Some(idx) = take(&mut self.removed, item) {
            self.ops[idx].alive = false;
            if self.ops[idx].path != location {
                self.push(Kind::Move, location, None);
            }
        } else {
            let idx = self.push(Kind::Add, location, Some(item.clone()));
            self.added.push((item.clone(), idx));
        }
    }

    fn item_removed(&mut self, path: &str, key: &str, item: &Value) {
        let location = join(path, key);
        let new = self.push(Kind::Remove, location.clone(), None);
        if let Some(idx) = take(&mut self.added, item) {
            self.ops[idx].alive = false;
            if self.ops[idx].path != location {
                self.ops[new].kind = Kind::Move;
            } else {
                self.ops[new].alive = false;
            }
        } else {
            self.removed.push((item.clone(), new));
        }
    }

    fn compare_dicts(&mut self, path: &str, src: &Map<String, Value>, dst: &Map<String, Value>) {
        for (k, v) in src.iter().filter(|(k, _)| !dst.contains_key(*k)) {
            self.item_removed(path, k, v);
        }
        for (k, v) in dst.iter().filter(|(k, _)| !src.contains_key(*k)) {
            self.item_added(path, k, v);
        }
        for (k, s) in src {
            if let Some(d) = dst.get(k) {
                self.compare_values(path, Some(k), s, d);
            }
        }
    }

    fn compare_lists(&mut self, path: &str, src: &[Value], dst: &[Value]) {
        let (ls, ld) = (src.len(), dst.len());
        for key in 0..ls.max(ld) {
            if key < ls.min(ld) {
                let (old, new) = (&src[key], &dst[key]);
                if py_eq(old, new) {
                    continue;
                }
                match (old, new) {
                    (Value::Object(o), Value::Object(n)) => {
                        self.compare_dicts(&join(path, &key.to_string()), o, n)
                    }
                    (Value::Array(o), Value::Array(n)) => {
                        self.compare_lists(&join(path, &key.to_string()), o, n)
                    }
                    _ => {
                        self.item_removed(path, &key.to_string(), old);
                        self.item_added(path, &key.to_string(), new);
                    }
                }
            } else if ls > ld {
                self.item_removed(path, &ld.to_string(), &src[key]);
            } else {
                self.item_added(path, &key.to_string(), &dst[key]);
            }
        }
    }

    /// Compares the values at `path/key` (the whole documents when `key` is `None`).
    fn compare_values(&mut self, path: &str, key: Option<&str>, src: &Value, dst: &Value) {
        let here = key.map_or_else(|| path.to_owned(), |k| join(path, k));
        match (src, dst) {
            (Value::Object(s), Value::Object(d)) => self.compare_dicts(&here, s, d),
            (Value::Array(s), Value::Array(d)) => self.compare_lists(&here, s, d),
            // jsonpatch compares JSON texts, so 1, 1.0 and true all differ.
            _ if serde_json::to_string(src).ok() == serde_json::to_string(dst).ok() => {}
            _ => {
                self.push(Kind::Replace, here, Some(dst.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Takes owned `json!` values so the cases read as data.
    #[allow(clippy::needless_pass_by_value)]
    fn check(v: Value) -> Result<(), String> {
        check_job_manifest(&v)
    }

    fn valid() -> Value {
        base_job_manifest()
    }

    #[test]
    fn base_is_valid_and_extras_are_fine() {
        assert_eq!(check(valid()), Ok(()));
        let mut v = valid();
        v["spec"]["template"]["spec"]["containers"][0]["image"] = json!("x");
        v["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "sidecar"}));
        v["spec"]["backoffLimit"] = json!(0);
        assert_eq!(check(v), Ok(()));
    }

    #[test]
    fn missing_and_incompatible_messages() {
        let mut v = valid();
        v["spec"]["template"]["spec"]
            .as_object_mut()
            .unwrap()
            .shift_remove("containers");
        assert_eq!(
            check(v),
            Err("Job is missing required attributes at the following paths: /spec/template/spec/containers".into())
        );
        let mut v = valid();
        v["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        v["spec"]["template"]["spec"]["completions"] = json!(2);
        v["spec"]["template"]["spec"]["parallelism"] = json!(1.0);
        assert_eq!(
            check(v),
            Err("Job has incompatible values for the following attributes: /spec/template/spec/completions must have value 1, /spec/template/spec/parallelism must have value 1, /spec/template/spec/restartPolicy must have value 'Never'".into())
        );
    }

    #[test]
    fn exact_prefect_job_container_elsewhere_is_paired_into_a_move() {
        let mut v = valid();
        v["spec"]["template"]["spec"]["containers"] = json!(["sidecar", {"name": "prefect-job"}]);
        assert_eq!(check(v), Ok(()));
    }
}
