//! What the namespace index (`tracker`) keeps of each watched Job and Pod: only the fields
//! its readers use. With 1,000 runs tracked, the index's objects are the largest memory per
//! run, and a Pod as the API sends it carries tens of fields nobody here reads (IPs, image
//! digests, QoS class, condition timestamps, every label and annotation).
//!
//! The readers of the index's objects, and what they read:
//! - the outcome rules (`run_watch`): the Job's name, uid and conditions (type and status;
//!   reason and message of `Failed`); a pod's name, creation time, phase and containers'
//!   states;
//! - the diagnosis (`diagnosis`): the pod's `status.reason`/`message`, its `PodScheduled`
//!   condition (reason, message) and every container's name and state (waiting: reason,
//!   message; terminated: reason, message, exit code, start);
//! - the index itself: a pod's `job-name` label (its Job), the Job's conditions (finished);
//! - the output and crash logs (`worker::logs`): a pod's name and phase.
//!
//! Pod events (`pod_replicator`) are built from the full object before it is stripped, and
//! adoption reads Jobs from the API, not from the index.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The labels naming a pod's Job (the second is the newer, prefixed spelling).
pub(crate) const JOB_NAME_LABELS: [&str; 2] = ["job-name", "batch.kubernetes.io/job-name"];

/// The Job as the index keeps it: name, uid and conditions.
#[must_use]
pub(crate) fn strip_job(job: Job) -> Job {
    let status = job.status.map(|s| JobStatus {
        conditions: s
            .conditions
            .map(|cs| cs.into_iter().map(strip_job_condition).collect()),
        ..JobStatus::default()
    });
    Job {
        metadata: ObjectMeta {
            name: job.metadata.name,
            namespace: job.metadata.namespace,
            uid: job.metadata.uid,
            ..ObjectMeta::default()
        },
        spec: None,
        status,
    }
}

fn strip_job_condition(c: JobCondition) -> JobCondition {
    // Only a Failed condition's reason and message are reported (the outcome's detail).
    let failed = c.type_ == "Failed";
    JobCondition {
        reason: c.reason.filter(|_| failed),
        message: c.message.filter(|_| failed),
        status: c.status,
        type_: c.type_,
        ..JobCondition::default()
    }
}

/// The Pod as the index keeps it: name, creation time, the Job's name label, and the status
/// fields the outcome and the diagnosis read.
#[must_use]
pub(crate) fn strip_pod(pod: Pod) -> Pod {
    let labels = pod.metadata.labels.map(|labels| {
        labels
            .into_iter()
            .filter(|(k, _)| JOB_NAME_LABELS.contains(&k.as_str()))
            .collect::<BTreeMap<_, _>>()
    });
    Pod {
        metadata: ObjectMeta {
            name: pod.metadata.name,
            namespace: pod.metadata.namespace,
            uid: pod.metadata.uid,
            creation_timestamp: pod.metadata.creation_timestamp,
            labels,
            ..ObjectMeta::default()
        },
        spec: None,
        status: pod.status.map(strip_pod_status),
    }
}

fn strip_pod_status(s: PodStatus) -> PodStatus {
    let containers = |v: Option<Vec<ContainerStatus>>| {
        v.map(|v| v.into_iter().map(strip_container_status).collect())
    };
    PodStatus {
        phase: s.phase,
        reason: s.reason,
        message: s.message,
        conditions: s.conditions.map(|cs| {
            cs.into_iter()
                .filter(|c| c.type_ == "PodScheduled")
                .map(|c| PodCondition {
                    message: c.message,
                    reason: c.reason,
                    status: c.status,
                    type_: c.type_,
                    ..PodCondition::default()
                })
                .collect()
        }),
        init_container_statuses: containers(s.init_container_statuses),
        container_statuses: containers(s.container_statuses),
        ..PodStatus::default()
    }
}

fn strip_container_status(c: ContainerStatus) -> ContainerStatus {
    ContainerStatus {
        name: c.name,
        ready: c.ready,
        restart_count: c.restart_count,
        started: c.started,
        state: c.state.map(strip_container_state),
        last_state: c.last_state.map(strip_container_state),
        ..ContainerStatus::default()
    }
}

fn strip_container_state(s: ContainerState) -> ContainerState {
    ContainerState {
        running: s.running,
        terminated: s.terminated.map(|t| ContainerStateTerminated {
            exit_code: t.exit_code,
            signal: t.signal,
            reason: t.reason,
            message: t.message,
            started_at: t.started_at,
            finished_at: t.finished_at,
            ..ContainerStateTerminated::default()
        }),
        waiting: s.waiting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnosis::diagnose_pod;
    use crate::run_watch::primary_exit_code;
    use serde_json::json;

    fn full_pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "j-abc", "namespace": "ns", "uid": "pu",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"job-name": "j", "batch.kubernetes.io/job-name": "j",
                           "controller-uid": "ju", "prefect.io/flow-run-id": "f"},
                "annotations": {"a": "b"},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "ju"}]
            },
            "spec": {"containers": [{"name": "prefect-job", "image": "i"}]},
            "status": {
                "phase": "Failed", "reason": "Evicted", "message": "low memory",
                "hostIP": "10.0.0.1", "podIP": "10.1.0.1", "podIPs": [{"ip": "10.1.0.1"}],
                "qosClass": "BestEffort", "startTime": "2026-01-01T00:00:01Z",
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "PodFailed", "message": "m"},
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "message": "0/1 nodes are available: 1 Insufficient cpu.",
                     "lastTransitionTime": "2026-01-01T00:00:00Z"}
                ],
                "initContainerStatuses": [{"name": "init", "image": "i", "imageID": "sha", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "ErrImagePull", "message": "no such image"}}}],
                "containerStatuses": [{"name": "prefect-job", "image": "i", "imageID": "sha", "containerID": "c",
                    "ready": false, "restartCount": 2,
                    "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "containerID": "c",
                                             "startedAt": "2026-01-01T00:00:01Z"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_stripped_pod_keeps_what_the_outcome_and_the_diagnosis_read() {
        let full = full_pod();
        let stripped = strip_pod(full.clone());
        let (f, s) = (
            full.status.as_ref().unwrap(),
            stripped.status.as_ref().unwrap(),
        );
        assert_eq!(diagnose_pod(s), diagnose_pod(f));
        assert_eq!(primary_exit_code(&stripped), primary_exit_code(&full));
        assert_eq!(stripped.metadata.name, full.metadata.name);
        assert_eq!(
            stripped.metadata.creation_timestamp,
            full.metadata.creation_timestamp
        );
        assert_eq!(s.phase, f.phase);
        // Each diagnosis on its own, with the others' inputs taken away.
        let only = |f: &dyn Fn(&mut PodStatus)| {
            let mut full = f_status(&full);
            f(&mut full);
            let stripped = strip_pod_status(full.clone());
            assert_eq!(diagnose_pod(&stripped), diagnose_pod(&full));
            assert!(diagnose_pod(&full).is_some());
        };
        only(&|s| s.init_container_statuses = None);
        only(&|s| {
            s.init_container_statuses = None;
            s.container_statuses = None;
        });
        only(&|s| {
            s.init_container_statuses = None;
            s.container_statuses = None;
            s.conditions = None;
        });
        let labels: Vec<&String> = stripped.metadata.labels.as_ref().unwrap().keys().collect();
        assert_eq!(labels, ["batch.kubernetes.io/job-name", "job-name"]);
        assert!(stripped.metadata.annotations.is_none());
        assert!(stripped.metadata.owner_references.is_none());
        assert!(stripped.spec.is_none());
        assert!(s.pod_ips.is_none() && s.host_ip.is_none() && s.qos_class.is_none());
        assert_eq!(s.conditions.as_ref().unwrap().len(), 1, "only PodScheduled");
        let c = &s.container_statuses.as_ref().unwrap()[0];
        assert!(c.image_id.is_empty() && c.container_id.is_none());
    }

    fn f_status(pod: &Pod) -> PodStatus {
        pod.status.clone().unwrap()
    }

    #[test]
    fn a_stripped_job_keeps_its_identity_and_the_failed_condition() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "j", "namespace": "ns", "uid": "ju", "labels": {"a": "b"},
                         "annotations": {"c": "d"}},
            "spec": {"backoffLimit": 0, "template": {"spec": {"containers": [{"name": "c"}]}}},
            "status": {"active": 1, "startTime": "2026-01-01T00:00:00Z", "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "x"},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ]}
        }))
        .unwrap();
        let stripped = strip_job(job);
        assert_eq!(stripped.metadata.name.as_deref(), Some("j"));
        assert_eq!(stripped.metadata.uid.as_deref(), Some("ju"));
        assert!(stripped.metadata.labels.is_none() && stripped.spec.is_none());
        let cs = stripped.status.unwrap().conditions.unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].reason, None, "only Failed keeps its reason");
        assert_eq!(cs[1].reason.as_deref(), Some("BackoffLimitExceeded"));
        assert_eq!(
            cs[1].message.as_deref(),
            Some("Job has reached the specified backoff limit")
        );
        assert!(cs[1].last_transition_time.is_none());
    }
}
