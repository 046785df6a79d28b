//! Defaulting applied on create, as the real API server (and its built-in
//! admission plugins) would before the object is stored.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Namespace, NamespaceSpec, NamespaceStatus, Pod, PodSpec, PodStatus, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use rand::Rng;

use crate::object::Object;

/// The alphabet the real server uses for generated suffixes: no vowels, so
/// no accidental words, and no look-alike characters.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Real `generateName` keeps at most this much of the prefix so that the
/// result (prefix + 5 chars) still fits a 63-character label.
const MAX_GENERATE_PREFIX: usize = 58;

/// `prefix` truncated as the real server does, plus five random characters.
pub fn generate_name(prefix: &str) -> String {
    let mut base: String = prefix.chars().take(MAX_GENERATE_PREFIX).collect();
    let mut rng = rand::rng();
    for _ in 0..5 {
        let i = rng.random_range(0..SUFFIX_ALPHABET.len());
        base.push(char::from(SUFFIX_ALPHABET[i]));
    }
    base
}

/// Label keys the Job controller relies on (set on the pod template).
pub const LABEL_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// Job name label (new form).
pub const LABEL_JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// Legacy controller uid label, still set by the real server.
pub const LABEL_CONTROLLER_UID_LEGACY: &str = "controller-uid";
/// Legacy job name label, still set by the real server.
pub const LABEL_JOB_NAME_LEGACY: &str = "job-name";

/// Kind-specific defaults; `uid` is the uid already assigned to the object.
pub fn apply_defaults(obj: &mut Object, uid: &str) {
    match obj {
        Object::Job(j) => default_job(j, uid),
        Object::Pod(p) => default_pod(p),
        Object::Secret(s) => default_secret(s),
        Object::Namespace(n) => default_namespace(n),
        Object::Event(_) => {}
    }
}

fn default_job(job: &mut Job, uid: &str) {
    let name = job.metadata.name.clone().unwrap_or_default();
    let spec = job.spec.get_or_insert_with(Default::default);
    let manual = spec.manual_selector == Some(true);
    if !manual {
        spec.selector = Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                LABEL_CONTROLLER_UID.to_string(),
                uid.to_string(),
            )])),
            match_expressions: None,
        });
        let labels = spec
            .template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default);
        labels.insert(LABEL_CONTROLLER_UID.into(), uid.into());
        labels.insert(LABEL_JOB_NAME.into(), name.clone());
        labels.insert(LABEL_CONTROLLER_UID_LEGACY.into(), uid.into());
        labels.insert(LABEL_JOB_NAME_LEGACY.into(), name);
    }
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    spec.backoff_limit.get_or_insert(6);
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".into());
    spec.suspend.get_or_insert(false);
    spec.pod_replacement_policy
        .get_or_insert_with(|| "TerminatingOrFailed".into());
    if let Some(ps) = spec.template.spec.as_mut() {
        default_pod_spec(ps);
    }
}

fn default_pod_spec(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    spec.security_context.get_or_insert_with(Default::default);
    for c in &mut spec.containers {
        c.termination_message_path
            .get_or_insert_with(|| "/dev/termination-log".into());
        c.termination_message_policy
            .get_or_insert_with(|| "File".into());
        c.resources.get_or_insert_with(Default::default);
        if c.image_pull_policy.is_none() {
            let image = c.image.as_deref().unwrap_or_default();
            // The real rule: no tag or `:latest` means Always.
            let last = image.rsplit('/').next().unwrap_or(image);
            let latest = !last.contains(':') || last.ends_with(":latest");
            c.image_pull_policy = Some(if latest { "Always" } else { "IfNotPresent" }.into());
        }
    }
}

fn default_pod(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    default_pod_spec(spec);
    // ServiceAccount admission fills these on pods (not on templates).
    spec.service_account_name
        .get_or_insert_with(|| "default".into());
    spec.service_account.get_or_insert_with(|| "default".into());
    spec.enable_service_links.get_or_insert(true);
    spec.priority.get_or_insert(0);
    spec.preemption_policy
        .get_or_insert_with(|| "PreemptLowerPriority".into());
    let status = pod.status.get_or_insert_with(PodStatus::default);
    status.phase.get_or_insert_with(|| "Pending".into());
    status.qos_class.get_or_insert_with(|| "BestEffort".into());
}

fn default_secret(secret: &mut Secret) {
    secret.type_.get_or_insert_with(|| "Opaque".into());
    // The real server folds stringData into data and never stores stringData.
    if let Some(sd) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(Default::default);
        for (k, v) in sd {
            data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
        }
    }
}

fn default_namespace(ns: &mut Namespace) {
    let name = ns.metadata.name.clone().unwrap_or_default();
    ns.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("kubernetes.io/metadata.name".into(), name);
    ns.spec.get_or_insert_with(|| NamespaceSpec {
        finalizers: Some(vec!["kubernetes".into()]),
    });
    ns.status.get_or_insert_with(|| NamespaceStatus {
        phase: Some("Active".into()),
        conditions: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_name_truncates_long_prefixes() {
        let long = "a".repeat(80);
        let n = generate_name(&long);
        assert_eq!(n.len(), 63);
        let short = generate_name("job-");
        assert_eq!(short.len(), 9);
        assert!(short.starts_with("job-"));
    }
}
