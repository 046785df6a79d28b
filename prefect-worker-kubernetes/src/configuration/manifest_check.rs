//! The Job manifest check prefect-kubernetes runs when a configuration is built: a
//! JSON-patch diff ([`super::json_diff`], jsonpatch 1.48 `JsonPatch.from_diff`) from the
//! manifest to the minimal Job it must contain. "add" operations are missing attributes,
//! "replace" operations incompatible values; removals (extra keys and items) are fine.
//!
//! Because jsonpatch matches list items up rather than comparing them by position, the
//! containers pass when the first one is named `prefect-job` (extra fields are removals),
//! or when any one of them is exactly `{"name": "prefect-job"}` (everything else is then
//! removed around it) — which is how a sidecar can come before the flow-run container.

use serde_json::{Value, json};

use super::json_diff::{OpKind, diff};
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
    let ops = diff(manifest, &base_job_manifest());
    let mut missing: Vec<&str> = ops
        .iter()
        .filter(|o| o.op == OpKind::Add)
        .map(|o| o.path.as_str())
        .collect();
    missing.sort_unstable();
    if !missing.is_empty() {
        return Err(format!(
            "Job is missing required attributes at the following paths: {}",
            missing.join(", ")
        ));
    }
    let mut incompatible: Vec<String> = ops
        .iter()
        .filter(|o| o.op == OpKind::Replace)
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

    fn with_containers(containers: Value) -> Value {
        let mut v = valid();
        v["spec"]["template"]["spec"]["containers"] = containers;
        v
    }

    #[test]
    fn sidecars_before_after_and_around_the_main_container() {
        let main = json!({"name": "prefect-job", "image": "repo/flow:1"});
        let bare = json!({"name": "prefect-job"});
        let sidecar = json!({"name": "sidecar", "image": "envoy:1"});
        // After: the first container is the main one.
        assert_eq!(check(with_containers(json!([main, sidecar]))), Ok(()));
        // Before and around: only when the main container is exactly {"name": "prefect-job"}
        // can jsonpatch match it up; otherwise it compares the first container by position.
        assert_eq!(check(with_containers(json!([sidecar, bare]))), Ok(()));
        assert_eq!(
            check(with_containers(json!([sidecar, bare, sidecar]))),
            Ok(())
        );
        let rejected = Err("Job has incompatible values for the following attributes: \
             /spec/template/spec/containers/0/name must have value 'prefect-job'"
            .to_owned());
        assert_eq!(check(with_containers(json!([sidecar, main]))), rejected);
        assert_eq!(
            check(with_containers(json!([sidecar, main, sidecar]))),
            rejected
        );
        assert_eq!(
            check(with_containers(json!(["sidecar"]))),
            Err("Job has incompatible values for the following attributes: \
                 /spec/template/spec/containers/0 must have value {'name': 'prefect-job'}"
                .to_owned())
        );
    }
}
