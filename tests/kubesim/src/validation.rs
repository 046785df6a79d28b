//! Create/update validation, mirroring the checks the real API server makes
//! for the fields the simulator serves (and the wording it uses).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::error::{ApiError, FieldError};
use crate::kinds::Kind;
use crate::object::Object;

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// Longest name the real server accepts for a Job: its name becomes the
/// `job-name` label value on the pods, and label values stop at 63.
pub const MAX_LABEL_VALUE: usize = 63;

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Validate a name as the real server does (subdomain or label rules).
/// `prefix` is true for `generateName`, where a trailing `-` is allowed.
fn name_errors(field: &str, name: &str, dns_label: bool, prefix: bool) -> Vec<FieldError> {
    let checked = if prefix {
        name.trim_end_matches('-')
    } else {
        name
    };
    let (ok, msg) = if dns_label {
        (is_dns_label(checked), DNS1123_LABEL_MSG)
    } else {
        (is_dns_subdomain(checked), DNS1123_SUBDOMAIN_MSG)
    };
    let mut out = Vec::new();
    if !ok {
        out.push(FieldError::invalid(field, name, msg));
    }
    out
}

/// Validate label keys and values (`metadata.labels` or a template's).
pub fn label_errors(field: &str, labels: Option<&BTreeMap<String, String>>) -> Vec<FieldError> {
    let mut out = Vec::new();
    for (k, v) in labels.into_iter().flatten() {
        out.extend(key_errors(field, k));
        if v.len() > MAX_LABEL_VALUE {
            out.push(FieldError::invalid(
                field,
                v,
                "must be no more than 63 characters",
            ));
        } else if !v.is_empty() && !is_qualified_part(v) {
            out.push(FieldError::invalid(field, v, LABEL_VALUE_MSG));
        }
    }
    out
}

fn key_errors(field: &str, key: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            out.push(FieldError::invalid(
                field,
                key,
                "prefix part must be non-empty",
            ));
        } else if !is_dns_subdomain(p) {
            out.push(FieldError::invalid(
                field,
                key,
                &format!("prefix part {DNS1123_SUBDOMAIN_MSG}"),
            ));
        }
    }
    if name.is_empty() {
        out.push(FieldError::invalid(
            field,
            key,
            "name part must be non-empty",
        ));
    } else if name.len() > 63 {
        out.push(FieldError::invalid(
            field,
            key,
            "name part must be no more than 63 characters",
        ));
    } else if !is_qualified_part(name) {
        out.push(FieldError::invalid(field, key, QUALIFIED_NAME_MSG));
    }
    out
}

/// Metadata checks shared by every kind.
fn meta_errors(kind: Kind, meta: &ObjectMeta) -> Vec<FieldError> {
    let mut out = Vec::new();
    let dns_label = kind == Kind::Namespace;
    // As real: a bad generateName is reported on its own, and the name
    // generated from it is then not checked again.
    let gen_errs = meta
        .generate_name
        .as_deref()
        .filter(|g| !g.is_empty())
        .map(|g| name_errors("metadata.generateName", g, dns_label, true))
        .unwrap_or_default();
    if !gen_errs.is_empty() {
        out.extend(gen_errs);
    } else {
        match meta.name.as_deref().filter(|n| !n.is_empty()) {
            Some(n) => out.extend(name_errors("metadata.name", n, dns_label, false)),
            None => out.push(FieldError::required(
                "metadata.name",
                "name or generateName is required",
            )),
        }
    }
    out.extend(label_errors("metadata.labels", meta.labels.as_ref()));
    for k in meta.annotations.iter().flatten().map(|(k, _)| k) {
        out.extend(key_errors("metadata.annotations", k));
    }
    out
}

fn pod_spec_errors(base: &str, spec: Option<&PodSpec>, job: bool) -> Vec<FieldError> {
    let mut out = Vec::new();
    let Some(spec) = spec else {
        out.push(FieldError::required(&format!("{base}.containers"), ""));
        return out;
    };
    if spec.containers.is_empty() {
        out.push(FieldError::required(&format!("{base}.containers"), ""));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let f = format!("{base}.containers[{i}]");
        if c.name.is_empty() {
            out.push(FieldError::required(&format!("{f}.name"), ""));
        } else if !is_dns_label(&c.name) {
            out.push(FieldError::invalid(
                &format!("{f}.name"),
                &c.name,
                DNS1123_LABEL_MSG,
            ));
        } else if !seen.insert(c.name.as_str()) {
            out.push(FieldError {
                reason: "FieldValueDuplicate",
                field: format!("{f}.name"),
                message: format!("{f}.name: Duplicate value: \"{}\"", c.name),
            });
        }
        if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
            out.push(FieldError::required(&format!("{f}.image"), ""));
        }
        for (j, e) in c.env.iter().flatten().enumerate() {
            if e.name.is_empty() {
                out.push(FieldError::required(&format!("{f}.env[{j}].name"), ""));
            }
        }
        if let Some(p) = c.image_pull_policy.as_deref() {
            const POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
            if !POLICIES.contains(&p) {
                out.push(FieldError::unsupported(
                    &format!("{f}.imagePullPolicy"),
                    p,
                    POLICIES,
                ));
            }
        }
        if let Some(r) = &c.resources {
            for (kind, map) in [("limits", &r.limits), ("requests", &r.requests)] {
                for (name, q) in map.iter().flatten() {
                    if !is_quantity(&q.0) {
                        out.push(FieldError::invalid(
                            &format!("{f}.resources.{kind}[{name}]"),
                            &q.0,
                            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                        ));
                    }
                }
            }
        }
    }
    let rp = spec.restart_policy.as_deref().unwrap_or("Always");
    let allowed: &[&str] = if job {
        &["OnFailure", "Never"]
    } else {
        &["Always", "OnFailure", "Never"]
    };
    if !allowed.contains(&rp) {
        out.push(FieldError::unsupported(
            &format!("{base}.restartPolicy"),
            rp,
            allowed,
        ));
    }
    out
}

/// Kubernetes' resource quantity syntax: a number, then an optional suffix (`m`, `Ki`,
/// `M`, `e3`, ...).
fn is_quantity(q: &str) -> bool {
    let q = q.strip_prefix(['+', '-']).unwrap_or(q);
    let digits = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(digits);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return false;
    }
    const SUFFIXES: &[&str] = &[
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    SUFFIXES.contains(&suffix)
        || suffix.strip_prefix(['e', 'E']).is_some_and(|e| {
            e.strip_prefix(['+', '-'])
                .unwrap_or(e)
                .parse::<u32>()
                .is_ok()
        })
}

fn job_errors(job: &Job) -> Vec<FieldError> {
    let mut out = Vec::new();
    let Some(spec) = job.spec.as_ref() else {
        out.push(FieldError::required("spec.template.spec.containers", ""));
        return out;
    };
    let tpl_meta = spec.template.metadata.as_ref();
    out.extend(label_errors(
        "spec.template.labels",
        tpl_meta.and_then(|m| m.labels.as_ref()),
    ));
    out.extend(pod_spec_errors(
        "spec.template.spec",
        spec.template.spec.as_ref(),
        true,
    ));
    let nonneg = |field: &str, v: Option<i32>, out: &mut Vec<FieldError>| {
        if let Some(v) = v.filter(|v| *v < 0) {
            out.push(FieldError::invalid(
                field,
                &v.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    };
    nonneg("spec.backoffLimit", spec.backoff_limit, &mut out);
    nonneg("spec.completions", spec.completions, &mut out);
    nonneg("spec.parallelism", spec.parallelism, &mut out);
    nonneg(
        "spec.ttlSecondsAfterFinished",
        spec.ttl_seconds_after_finished,
        &mut out,
    );
    if let Some(d) = spec.active_deadline_seconds.filter(|d| *d <= 0) {
        out.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            &d.to_string(),
            "must be greater than or equal to 1",
        ));
    }
    if let Some(mode) = spec.completion_mode.as_deref()
        && !matches!(mode, "NonIndexed" | "Indexed")
    {
        out.push(FieldError::unsupported(
            "spec.completionMode",
            mode,
            &["NonIndexed", "Indexed"],
        ));
    }
    out
}

/// Validate an object about to be stored (after defaulting). `name` is the
/// final name, used in the Status message.
pub fn validate(obj: &Object) -> Result<(), ApiError> {
    let kind = obj.kind();
    let mut errs = meta_errors(kind, obj.meta());
    match obj {
        Object::Job(j) => errs.extend(job_errors(j)),
        Object::Pod(p) => errs.extend(pod_errors(p)),
        _ => {}
    }
    if errs.is_empty() {
        Ok(())
    } else {
        let name = obj
            .meta()
            .name
            .clone()
            .or_else(|| obj.meta().generate_name.clone())
            .unwrap_or_default();
        Err(ApiError::invalid(kind, &name, errs))
    }
}

fn pod_errors(p: &Pod) -> Vec<FieldError> {
    pod_spec_errors("spec", p.spec.as_ref(), false)
}

/// Update checks: the fields the real server makes immutable.
pub fn validate_update(old: &Object, new: &Object) -> Result<(), ApiError> {
    let mut errs = Vec::new();
    match (old, new) {
        (Object::Job(o), Object::Job(n)) => {
            let (os, ns) = (o.spec.as_ref(), n.spec.as_ref());
            if os.map(|s| &s.selector) != ns.map(|s| &s.selector) {
                errs.push(FieldError::invalid(
                    "spec.selector",
                    "",
                    "field is immutable",
                ));
            }
            if os.map(|s| &s.template) != ns.map(|s| &s.template) {
                errs.push(FieldError::invalid(
                    "spec.template",
                    "",
                    "field is immutable",
                ));
            }
            if os.and_then(|s| s.completions) != ns.and_then(|s| s.completions) {
                errs.push(FieldError::invalid(
                    "spec.completions",
                    "",
                    "field is immutable",
                ));
            }
            errs.extend(job_errors(n));
        }
        (Object::Pod(o), Object::Pod(n)) => {
            // Only container images (and a few scheduling fields we do not
            // model) may change on a pod; compare with images masked.
            let mask = |p: &Pod| {
                let mut s = p.spec.clone().unwrap_or_default();
                for c in &mut s.containers {
                    c.image = None;
                }
                s
            };
            if mask(o) != mask(n) {
                errs.push(FieldError {
                    reason: "FieldValueForbidden",
                    field: "spec".into(),
                    message: "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into(),
                });
            }
        }
        _ => {}
    }
    errs.extend(label_errors("metadata.labels", new.meta().labels.as_ref()));
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(new.kind(), new.name(), errs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns_subdomain("my-job.x"));
        assert!(!is_dns_subdomain("My-Job"));
        assert!(!is_dns_label("a.b"));
        assert!(is_qualified_part("A_b.c"));
        assert!(!key_errors("f", "example.com/ok").iter().any(|_| true));
        assert!(!key_errors("f", "bad key").is_empty());
    }

    #[test]
    fn quantities() {
        for ok in ["1", "500m", "0.5", "128Mi", "2Gi", "1e3", "+1", ".5"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["lots", "", "1.2.3", "5 Mi", "1x", "m"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}
