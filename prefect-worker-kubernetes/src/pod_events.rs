//! `prefect.kubernetes.pod.*` events from pod snapshots (spec §6.1), as prefect-kubernetes'
//! observer builds them: deterministic ids (so the server stores each once), Kubernetes
//! lifecycle times as `occurred`, the diagnosis and termination reason as labels, and
//! related resources from the pod's labels. Pure: [`crate::pod_replicator`] decides when
//! to emit.
//!
//! One deliberate difference: Python names every failed pod with a terminated container
//! `evicted` (a `reason` of `Error`, `OOMKilled` or `Completed` included); here only a
//! real eviction is `evicted`, any other failure is `failed` — both carry
//! `kubernetes.reason`.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use prefect_worker_core::events::{Event, Resource};
use prefect_worker_core::slug::slugify_default;
use uuid::Uuid;

use crate::diagnosis::diagnose_pod;
use crate::index_objects::PodState;

/// A pod event and what the replicator needs to de-duplicate it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodEvent {
    /// The event, `follows` not yet set.
    pub event: Event,
    /// The pod's uid.
    pub uid: String,
    /// The pod's `creationTimestamp` (where a start-up lookup of earlier events begins).
    pub created: Option<DateTime<Utc>>,
}

/// The event for `pod` as it is now; `None` for a pod without uid, name or phase.
#[must_use]
pub fn pod_event(pod: &Pod) -> Option<PodEvent> {
    let meta = &pod.metadata;
    let uid = meta.uid.as_deref().filter(|u| !u.is_empty())?;
    let name = meta.name.as_deref()?;
    let status = pod.status.as_ref()?;
    let phase = status.phase.as_deref().filter(|p| !p.is_empty())?;
    let created = meta.creation_timestamp.as_ref().and_then(|t| utc(&t.0));
    let diagnosis = diagnose_pod(&PodState::from(status)).map(|d| d.category.as_str());

    let mut resource = Resource::new(format!("prefect.kubernetes.pod.{uid}"))
        .with("prefect.resource.name", name)
        .with(
            "kubernetes.namespace",
            meta.namespace.as_deref().unwrap_or("default"),
        );
    if let Some(d) = diagnosis {
        resource.set("kubernetes.diagnosis", d);
    }
    let mut kind = phase.to_lowercase();
    if phase == "Failed" {
        if is_evicted(status) {
            kind = "evicted".to_owned();
            resource.set("kubernetes.reason", "Evicted");
        } else if let Some(reason) = terminated_reason(status) {
            resource.set("kubernetes.reason", reason);
        }
    }
    let occurred = occurred(&kind, status, created).unwrap_or_else(Utc::now);
    let event = Event::new(format!("prefect.kubernetes.pod.{kind}"), resource)
        .with_id(event_id(uid, phase, restart_count(status), diagnosis))
        .occurred_at(occurred)
        .with_related(related_from_labels(pod));
    Some(PodEvent {
        event,
        uid: uid.to_owned(),
        created,
    })
}

/// The `pending` event a pod had at creation, for a pod first seen past Pending (its
/// namespace's watch started after the pod did): the same id Python's observer gave it
/// (phase `Pending`, no restarts, no diagnosis) and its creation time. `None` for a pod
/// still Pending or without a creation time.
#[must_use]
pub fn creation_event(pod: &Pod) -> Option<PodEvent> {
    let current = pod_event(pod)?;
    let created = current.created?;
    if current.event.event == "prefect.kubernetes.pod.pending" {
        return None;
    }
    let mut resource = Resource::new(current.event.resource.id());
    for (k, v) in current.event.resource.labels() {
        if matches!(k, "prefect.resource.name" | "kubernetes.namespace") {
            resource.set(k, v);
        }
    }
    let event = Event::new("prefect.kubernetes.pod.pending", resource)
        .with_id(event_id(&current.uid, "Pending", 0, None))
        .occurred_at(created)
        .with_related(current.event.related);
    Some(PodEvent {
        event,
        uid: current.uid,
        created: Some(created),
    })
}

/// Python's `uuid5(NAMESPACE_URL, json.dumps({"uid", "phase", "restart_count",
/// "diagnosis"}, sort_keys=True))`: the same pod in the same phase, restart count and
/// diagnosis always gets the same id (the phase before the `evicted` rename).
#[must_use]
pub fn event_id(uid: &str, phase: &str, restart_count: i64, diagnosis: Option<&str>) -> Uuid {
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let diagnosis = diagnosis.map_or_else(|| "null".to_owned(), quoted);
    let text = format!(
        "{{\"diagnosis\": {diagnosis}, \"phase\": {}, \"restart_count\": {restart_count}, \"uid\": {}}}",
        quoted(phase),
        quoted(uid)
    );
    Uuid::new_v5(&Uuid::NAMESPACE_URL, text.as_bytes())
}

fn restart_count(status: &PodStatus) -> i64 {
    status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| i64::from(c.restart_count))
        .sum()
}

/// A real eviction: the kubelet's `status.reason`, or a container terminated as `Evicted`.
fn is_evicted(status: &PodStatus) -> bool {
    status.reason.as_deref() == Some("Evicted")
        || all_statuses(status).any(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.reason.as_deref())
                == Some("Evicted")
        })
}

/// The first container's termination reason (`Error`, `OOMKilled`, ...), as Python reads it.
fn terminated_reason(status: &PodStatus) -> Option<&str> {
    status.container_statuses.iter().flatten().find_map(|c| {
        c.state
            .as_ref()?
            .terminated
            .as_ref()?
            .reason
            .as_deref()
            .filter(|r| !r.is_empty())
    })
}

fn all_statuses(status: &PodStatus) -> impl Iterator<Item = &ContainerStatus> {
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
}

/// When the phase began, from Kubernetes' own timestamps: Pending at creation; Running at
/// the latest container start (else `startTime`); Succeeded, Failed and evicted at the
/// latest container finish (init containers included). `None`: use now.
fn occurred(
    kind: &str,
    status: &PodStatus,
    created: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    match kind {
        "pending" => created,
        "running" => status
            .container_statuses
            .iter()
            .flatten()
            .filter_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
            .filter_map(|t| utc(&t.0))
            .max()
            .or_else(|| status.start_time.as_ref().and_then(|t| utc(&t.0))),
        "succeeded" | "failed" | "evicted" => all_statuses(status)
            .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
            .filter_map(|t| utc(&t.0))
            .max(),
        _ => None,
    }
}

fn utc(t: &k8s_openapi::jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.as_second(), u32::try_from(t.subsec_nanosecond()).ok()?)
}

/// The flow run, deployment, flow, work pool and worker named by the pod's `prefect.io/*`
/// labels (their values are the slugged label values, as in Python).
fn related_from_labels(pod: &Pod) -> Vec<Resource> {
    let Some(labels) = pod.metadata.labels.as_ref() else {
        return Vec::new();
    };
    let get = |k: &str| labels.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let mut related = Vec::new();
    for (id_label, name_label, kind) in [
        (
            "prefect.io/flow-run-id",
            "prefect.io/flow-run-name",
            "flow-run",
        ),
        (
            "prefect.io/deployment-id",
            "prefect.io/deployment-name",
            "deployment",
        ),
        ("prefect.io/flow-id", "prefect.io/flow-name", "flow"),
        (
            "prefect.io/work-pool-id",
            "prefect.io/work-pool-name",
            "work-pool",
        ),
    ] {
        if let Some(id) = get(id_label) {
            related.push(Resource::related(
                format!("prefect.{kind}.{id}"),
                kind,
                get(name_label),
            ));
        }
    }
    if let Some(worker) = get("prefect.io/worker-name") {
        related.push(
            Resource::related(
                format!("prefect.worker.kubernetes.{}", slugify_default(worker)),
                "worker",
                Some(worker),
            )
            .with("prefect.worker-type", "kubernetes")
            .with("prefect.version", prefect_worker_core::PREFECT_VERSION),
        );
    }
    related
}

#[cfg(test)]
#[allow(clippy::needless_pass_by_value)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const UID: &str = "0b8e5a4e-1111-2222-3333-444455556666";

    fn pod(status: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "muskrat-abcde", "namespace": "prefect", "uid": UID,
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {
                    "prefect.io/flow-run-id": "6e1d43e4-cd49-4040-95f7-50ae7be06196",
                    "prefect.io/flow-run-name": "scrupulous-muskrat",
                    "prefect.io/deployment-id": "ec987eee-55a1-4b59-ad3b-b5b4e77cf0f6",
                    "prefect.io/deployment-name": "my-deploy",
                    "prefect.io/flow-id": "6e1b5c2c-c4bc-4410-8d63-1cb54778ddf2",
                    "prefect.io/flow-name": "My-Flow_Name",
                    "prefect.io/work-pool-id": "3783ef14-e097-4921-a327-4634e7c24be2",
                    "prefect.io/work-pool-name": "k8s-pool",
                    "prefect.io/worker-name": "Trace_Worker",
                    "job-name": "muskrat"
                }
            },
            "status": status
        }))
        .unwrap()
    }

    fn container(state: Value, restarts: i32) -> Value {
        json!({"name": "prefect-job", "image": "x", "imageID": "", "ready": false,
               "restartCount": restarts, "state": state})
    }

    #[test]
    fn ids_are_pythons_uuid5() {
        // The spec's vector and one checked with Python's uuid/json.
        assert_eq!(
            event_id(UID, "Pending", 0, None).to_string(),
            "dc2fdaa0-4f88-5805-b59d-edf4ea0d8374"
        );
        assert_eq!(
            event_id(UID, "Failed", 2, Some("OOMKilled")).to_string(),
            "9de1c2a9-84a9-5465-a095-962d82a83f83"
        );
    }

    #[test]
    fn pending_is_stamped_at_creation_with_related_from_labels() {
        let e = pod_event(&pod(json!({"phase": "Pending"}))).unwrap();
        assert_eq!(e.uid, UID);
        let v = serde_json::to_value(&e.event).unwrap();
        assert_eq!(v["event"], "prefect.kubernetes.pod.pending");
        assert_eq!(v["id"], "dc2fdaa0-4f88-5805-b59d-edf4ea0d8374");
        assert_eq!(v["occurred"], "2026-01-01T00:00:00.000000Z");
        assert_eq!(
            v["resource"],
            json!({"prefect.resource.id": format!("prefect.kubernetes.pod.{UID}"),
                   "prefect.resource.name": "muskrat-abcde", "kubernetes.namespace": "prefect"})
        );
        assert_eq!(
            v["related"],
            json!([
                {"prefect.resource.id": "prefect.flow-run.6e1d43e4-cd49-4040-95f7-50ae7be06196",
                 "prefect.resource.role": "flow-run", "prefect.resource.name": "scrupulous-muskrat"},
                {"prefect.resource.id": "prefect.deployment.ec987eee-55a1-4b59-ad3b-b5b4e77cf0f6",
                 "prefect.resource.role": "deployment", "prefect.resource.name": "my-deploy"},
                {"prefect.resource.id": "prefect.flow.6e1b5c2c-c4bc-4410-8d63-1cb54778ddf2",
                 "prefect.resource.role": "flow", "prefect.resource.name": "My-Flow_Name"},
                {"prefect.resource.id": "prefect.work-pool.3783ef14-e097-4921-a327-4634e7c24be2",
                 "prefect.resource.role": "work-pool", "prefect.resource.name": "k8s-pool"},
                {"prefect.resource.id": "prefect.worker.kubernetes.trace-worker",
                 "prefect.resource.role": "worker", "prefect.resource.name": "Trace_Worker",
                 "prefect.worker-type": "kubernetes", "prefect.version": "3.9.1"}
            ])
        );
        let key_order: Vec<&str> = e.event.related[4].labels().map(|(k, _)| k).collect();
        assert_eq!(
            key_order,
            [
                "prefect.resource.id",
                "prefect.resource.role",
                "prefect.resource.name",
                "prefect.worker-type",
                "prefect.version"
            ]
        );
    }

    #[test]
    fn running_at_the_latest_container_start() {
        let e = pod_event(&pod(json!({"phase": "Running", "startTime": "2026-01-01T00:00:01Z",
            "containerStatuses": [container(json!({"running": {"startedAt": "2026-01-01T00:00:05Z"}}), 0)]})))
        .unwrap();
        assert_eq!(e.event.event, "prefect.kubernetes.pod.running");
        assert_eq!(e.event.occurred.to_rfc3339(), "2026-01-01T00:00:05+00:00");
        let e = pod_event(&pod(
            json!({"phase": "Running", "startTime": "2026-01-01T00:00:01Z"}),
        ))
        .unwrap();
        assert_eq!(e.event.occurred.to_rfc3339(), "2026-01-01T00:00:01+00:00");
    }

    #[test]
    fn failed_is_failed_with_its_reason_and_only_evictions_are_evicted() {
        let exit3 = pod(
            json!({"phase": "Failed", "containerStatuses": [container(json!({"terminated":
            {"exitCode": 3, "reason": "Error", "finishedAt": "2026-01-01T00:01:00Z"}}), 0)]}),
        );
        let e = pod_event(&exit3).unwrap();
        assert_eq!(e.event.event, "prefect.kubernetes.pod.failed");
        assert_eq!(e.event.resource.get("kubernetes.reason"), Some("Error"));
        assert_eq!(e.event.resource.get("kubernetes.diagnosis"), None);
        assert_eq!(e.event.occurred.to_rfc3339(), "2026-01-01T00:01:00+00:00");
        assert_eq!(e.event.id, event_id(UID, "Failed", 0, None));

        let oom = pod(
            json!({"phase": "Failed", "containerStatuses": [container(json!({"terminated":
            {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-01-01T00:01:00Z"}}), 1)]}),
        );
        let e = pod_event(&oom).unwrap();
        assert_eq!(e.event.event, "prefect.kubernetes.pod.failed");
        assert_eq!(
            e.event.resource.get("kubernetes.diagnosis"),
            Some("OOMKilled")
        );
        assert_eq!(e.event.resource.get("kubernetes.reason"), Some("OOMKilled"));
        assert_eq!(e.event.id, event_id(UID, "Failed", 1, Some("OOMKilled")));

        let evicted = pod(json!({"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory."}));
        let e = pod_event(&evicted).unwrap();
        assert_eq!(e.event.event, "prefect.kubernetes.pod.evicted");
        assert_eq!(e.event.resource.get("kubernetes.reason"), Some("Evicted"));
        assert_eq!(
            e.event.resource.get("kubernetes.diagnosis"),
            Some("Evicted")
        );
        assert_eq!(
            e.event.id,
            event_id(UID, "Failed", 0, Some("Evicted")),
            "the id uses the phase"
        );
        let labels: Vec<&str> = e.event.resource.labels().map(|(k, _)| k).collect();
        assert_eq!(
            labels,
            [
                "prefect.resource.id",
                "prefect.resource.name",
                "kubernetes.namespace",
                "kubernetes.diagnosis",
                "kubernetes.reason"
            ]
        );
    }

    #[test]
    fn a_diagnosis_changes_the_id_and_labels_the_resource() {
        let pulling = pod(
            json!({"phase": "Pending", "containerStatuses": [container(json!({"waiting":
            {"reason": "ErrImagePull", "message": "not found"}}), 0)]}),
        );
        let e = pod_event(&pulling).unwrap();
        assert_eq!(e.event.event, "prefect.kubernetes.pod.pending");
        assert_eq!(
            e.event.resource.get("kubernetes.diagnosis"),
            Some("ImagePullError")
        );
        assert_ne!(e.event.id, event_id(UID, "Pending", 0, None));
    }

    #[test]
    fn a_pod_first_seen_running_had_a_pending_event_at_creation() {
        let running = pod(json!({"phase": "Running", "startTime": "2026-01-01T00:00:01Z"}));
        let e = creation_event(&running).unwrap();
        assert_eq!(
            e.event,
            pod_event(&pod(json!({"phase": "Pending"})))
                .unwrap()
                .event
                .with_id(e.event.id)
                .occurred_at(e.event.occurred),
        );
        assert_eq!(
            e.event.id.to_string(),
            "dc2fdaa0-4f88-5805-b59d-edf4ea0d8374"
        );
        assert_eq!(e.event.occurred.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert!(creation_event(&pod(json!({"phase": "Pending"}))).is_none());
    }

    #[test]
    fn pods_without_identity_or_phase_are_skipped() {
        assert!(pod_event(&pod(json!({}))).is_none());
        let mut p = pod(json!({"phase": "Pending"}));
        p.metadata.uid = None;
        assert!(pod_event(&p).is_none());
    }
}
