//! The JSON types Kubernetes fixes for the Job fields templates usually fill, checked right
//! before the Job is created. A job variable of the wrong type (a template whose variables
//! schema declares no types lets one through) would otherwise reach the API server, whose
//! answer may not say which field; here the message names the field, its source and the fix.
//! Pure; only type errors are reported (values are the API server's business).

use serde_json::Value;

use prefect_worker_core::job_config::fields::describe;

/// What a field must hold.
#[derive(Clone, Copy)]
enum Want {
    Str,
    Int,
    StrList,
}

impl Want {
    fn accepts(self, v: &Value) -> bool {
        match self {
            Self::Str => v.is_string(),
            Self::Int => v.is_i64() || v.is_u64(),
            Self::StrList => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Str => "a string",
            Self::Int => "a whole number",
            Self::StrList => "a list of strings",
        }
    }
}

/// The job variable of Prefect's default template that fills a field, and what to set it to.
fn hint(field: &str) -> &'static str {
    match field {
        "image" => {
            "set the `image` job variable to an image reference such as \"prefecthq/prefect:3-python3.11\""
        }
        "imagePullPolicy" => {
            "set the `image_pull_policy` job variable to Always, IfNotPresent or Never"
        }
        "serviceAccountName" => {
            "set the `service_account_name` job variable to a service account's name"
        }
        "ttlSecondsAfterFinished" => {
            "set the `finished_job_ttl` job variable to a number of seconds"
        }
        "args" | "command" => "set the `command` job variable to a command line string",
        _ => "fix the job variables or the work pool's base job template",
    }
}

fn check(path: &str, field: &str, v: Option<&Value>, want: Want) -> Result<(), String> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(v) if want.accepts(v) => Ok(()),
        Some(v) => Err(format!(
            "job_manifest.{path}: expected {}, got {}; {}",
            want.name(),
            describe(v),
            hint(field)
        )),
    }
}

/// The first field of `manifest` whose JSON type Kubernetes would refuse, as a message that
/// names it and the fix.
pub fn check_field_types(manifest: &Value) -> Result<(), String> {
    let meta = manifest.get("metadata");
    for f in ["name", "generateName", "namespace"] {
        check(
            &format!("metadata.{f}"),
            f,
            meta.and_then(|m| m.get(f)),
            Want::Str,
        )?;
    }
    let Some(spec) = manifest.get("spec") else {
        return Ok(());
    };
    for f in [
        "ttlSecondsAfterFinished",
        "backoffLimit",
        "activeDeadlineSeconds",
        "completions",
        "parallelism",
    ] {
        check(&format!("spec.{f}"), f, spec.get(f), Want::Int)?;
    }
    let Some(pod) = spec.get("template").and_then(|t| t.get("spec")) else {
        return Ok(());
    };
    for f in ["serviceAccountName", "restartPolicy"] {
        check(&format!("spec.template.spec.{f}"), f, pod.get(f), Want::Str)?;
    }
    for (i, c) in pod
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = |f: &str| format!("spec.template.spec.containers[{i}].{f}");
        for f in ["name", "image", "imagePullPolicy", "workingDir"] {
            check(&at(f), f, c.get(f), Want::Str)?;
        }
        for f in ["args", "command"] {
            check(&at(f), f, c.get(f), Want::StrList)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(container: &Value) -> Value {
        json!({"metadata": {"generateName": "x-"}, "spec": {"ttlSecondsAfterFinished": null,
            "template": {"spec": {"containers": [container.clone()]}}}})
    }

    #[test]
    fn wrong_types_name_the_field_and_the_variable() {
        let e = check_field_types(&manifest(&json!({"name": "prefect-job", "image": 123})))
            .unwrap_err();
        assert_eq!(
            e,
            "job_manifest.spec.template.spec.containers[0].image: expected a string, got the number 123; set the `image` job variable to an image reference such as \"prefecthq/prefect:3-python3.11\""
        );
        let e = check_field_types(&json!({"spec": {"ttlSecondsAfterFinished": "forever"}}))
            .unwrap_err();
        assert!(e.contains("finished_job_ttl"), "{e}");
        let e = check_field_types(&manifest(&json!({"args": ["a", 1]}))).unwrap_err();
        assert!(
            e.contains("containers[0].args: expected a list of strings"),
            "{e}"
        );
    }

    #[test]
    fn right_types_and_nulls_pass() {
        let m = manifest(
            &json!({"name": "prefect-job", "image": "busybox", "imagePullPolicy": null,
            "args": ["prefect", "flow-run", "execute"]}),
        );
        assert_eq!(check_field_types(&m), Ok(()));
        assert_eq!(check_field_types(&json!({})), Ok(()));
    }
}
