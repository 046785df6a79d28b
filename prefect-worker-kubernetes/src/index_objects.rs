//! What the namespace index (`tracker`) and each run's [`crate::run_watch::RunWatch`] keep of
//! a watched Job or Pod: small purpose-built types holding only the fields their readers
//! use. With 1,000 runs tracked, these objects are the largest memory per run. A k8s-openapi
//! `Pod` is 2,176 bytes before any heap (its `Option<PodSpec>` is inline, 1,416 bytes, even
//! when `None`; `ObjectMeta` is 360, each `ContainerStatus` 752), a `Job` 2,592 (an inline
//! `JobSpec` with a pod template); emptying the unused fields did not shrink them, so the
//! index converts each object as it arrives ([`IndexedJob::from`], [`IndexedPod::from`]).
//!
//! The readers, and what they read:
//! - the outcome rules (`run_watch`): the Job's uid and how it ended (a `Complete`
//!   condition, or the first `Failed` one's reason and message); a pod's name, creation
//!   time, phase and the primary container's state (running; terminated: exit code, start)
//!   or last termination (exit code);
//! - the diagnosis (`diagnosis`): the pod's `status.reason`/`message`, its `PodScheduled`
//!   condition when `Unschedulable` (message) and every container's name and state
//!   (waiting: reason, message; terminated: reason, message);
//! - the index itself: a pod's `job-name` label (its Job), whether the Job has ended;
//! - the output and crash logs (`worker::logs`): a pod's name and phase.
//!
//! Pod events (`pod_replicator`, `pod_events`) are built from the full object before it is
//! converted (their diagnosis label converts the status on the way, [`PodState::from`]), and
//! adoption reads Jobs from the API, not from the index.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;

/// The labels naming a pod's Job (the second is the newer, prefixed spelling).
pub(crate) const JOB_NAME_LABELS: [&str; 2] = ["job-name", "batch.kubernetes.io/job-name"];

/// The name of the Job that owns `pod`, from its labels.
pub(crate) fn pod_job_name(pod: &Pod) -> Option<&str> {
    let labels = pod.metadata.labels.as_ref()?;
    JOB_NAME_LABELS
        .iter()
        .find_map(|k| labels.get(*k))
        .map(String::as_str)
}

fn boxed(s: Option<&String>) -> Option<Box<str>> {
    s.map(|s| s.as_str().into())
}

/// A Job as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexedJob {
    pub name: Box<str>,
    pub uid: Option<Box<str>>,
    /// How the Job ended, from its conditions; `None` while it runs.
    pub end: Option<JobEnd>,
}

/// How a Job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobEnd {
    /// A `Complete` condition is `True` (it wins over a `Failed` one, should both be).
    Complete,
    /// The first `Failed` condition that is `True`: its reason and message.
    Failed {
        reason: Option<Box<str>>,
        message: Option<Box<str>>,
    },
}

impl From<&Job> for IndexedJob {
    fn from(job: &Job) -> Self {
        let conditions = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default();
        let is_true = |t: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == t && c.status == "True")
        };
        let end = if is_true("Complete").is_some() {
            Some(JobEnd::Complete)
        } else {
            is_true("Failed").map(|c| JobEnd::Failed {
                reason: boxed(c.reason.as_ref()),
                message: boxed(c.message.as_ref()),
            })
        };
        Self {
            name: job.metadata.name.as_deref().unwrap_or_default().into(),
            uid: boxed(job.metadata.uid.as_ref()),
            end,
        }
    }
}

impl IndexedJob {
    /// Whether the Job has a `Complete` or `Failed` condition.
    #[must_use]
    pub fn finished(&self) -> bool {
        self.end.is_some()
    }
}

/// A Pod as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexedPod {
    /// Empty for a pod without a name (the index and `explain_failure` skip those).
    pub name: Box<str>,
    pub creation_timestamp: Option<Timestamp>,
    /// Its Job, from the `job-name` labels.
    pub job_name: Option<Box<str>>,
    pub state: PodState,
}

impl From<&Pod> for IndexedPod {
    fn from(pod: &Pod) -> Self {
        Self {
            name: pod.metadata.name.as_deref().unwrap_or_default().into(),
            creation_timestamp: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
            job_name: pod_job_name(pod).map(Into::into),
            state: pod.status.as_ref().map(PodState::from).unwrap_or_default(),
        }
    }
}

/// A pod's phase. A pod without one yet is `Pending` (the API server has not defaulted its
/// status); a phase this worker does not know is `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum PodPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl PodPhase {
    fn parse(phase: Option<&str>) -> Self {
        match phase {
            None | Some("Pending") => Self::Pending,
            Some("Running") => Self::Running,
            Some("Succeeded") => Self::Succeeded,
            Some("Failed") => Self::Failed,
            Some(_) => Self::Unknown,
        }
    }
}

/// What the outcome and the diagnosis read of a pod's status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct PodState {
    pub phase: PodPhase,
    /// `status.reason` and `status.message` (`Evicted` and why).
    pub reason: Option<Box<str>>,
    pub message: Option<Box<str>>,
    /// The scheduler's message ("" when it has none), when a `PodScheduled` condition's
    /// reason is `Unschedulable` (the first such condition).
    pub unschedulable: Option<Box<str>>,
    pub init_containers: Box<[ContainerSummary]>,
    pub containers: Box<[ContainerSummary]>,
}

impl From<&PodStatus> for PodState {
    fn from(s: &PodStatus) -> Self {
        let containers = |v: &Option<Vec<ContainerStatus>>| {
            v.iter().flatten().map(ContainerSummary::from).collect()
        };
        Self {
            phase: PodPhase::parse(s.phase.as_deref()),
            reason: boxed(s.reason.as_ref()),
            message: boxed(s.message.as_ref()),
            unschedulable: s
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable"))
                .map(|c| c.message.as_deref().unwrap_or_default().into()),
            init_containers: containers(&s.init_container_statuses),
            containers: containers(&s.container_statuses),
        }
    }
}

impl PodState {
    /// Init containers first, as the kubelet runs them.
    pub fn all_containers(&self) -> impl Iterator<Item = &ContainerSummary> {
        self.init_containers.iter().chain(self.containers.iter())
    }
}

/// One container's status: its current state and the exit code of its last termination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContainerSummary {
    pub name: Box<str>,
    pub running: bool,
    pub waiting: Option<Waiting>,
    pub terminated: Option<Terminated>,
    /// The exit code of the previous instance, when it terminated (`lastState`).
    pub last_exit_code: Option<i32>,
}

/// A waiting container's reason and message (`ErrImagePull`...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Waiting {
    pub reason: Option<Box<str>>,
    pub message: Option<Box<str>>,
}

/// A terminated container: how and whether it had started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Terminated {
    pub exit_code: i32,
    pub started: bool,
    pub reason: Option<Box<str>>,
    pub message: Option<Box<str>>,
}

impl From<&ContainerStatus> for ContainerSummary {
    fn from(c: &ContainerStatus) -> Self {
        let state: Option<&ContainerState> = c.state.as_ref();
        Self {
            name: c.name.as_str().into(),
            running: state.is_some_and(|s| s.running.is_some()),
            waiting: state.and_then(|s| s.waiting.as_ref()).map(|w| Waiting {
                reason: boxed(w.reason.as_ref()),
                message: boxed(w.message.as_ref()),
            }),
            terminated: state
                .and_then(|s| s.terminated.as_ref())
                .map(|t| Terminated {
                    exit_code: t.exit_code,
                    started: t.started_at.is_some(),
                    reason: boxed(t.reason.as_ref()),
                    message: boxed(t.message.as_ref()),
                }),
            last_exit_code: c
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::diagnosis::diagnose_pod;
    use crate::run_watch::{Limits, RunWatch, primary_exit_code};
    use serde_json::{Value, json};

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
    fn an_indexed_pod_keeps_what_the_outcome_the_diagnosis_and_the_index_read() {
        let full = full_pod();
        let pod = IndexedPod::from(&full);
        assert_eq!(&*pod.name, "j-abc");
        assert_eq!(
            pod.creation_timestamp,
            full.metadata.creation_timestamp.as_ref().map(|t| t.0)
        );
        assert_eq!(pod.job_name.as_deref(), Some("j"));
        let s = &pod.state;
        assert_eq!(s.phase, PodPhase::Failed);
        assert_eq!(
            (s.reason.as_deref(), s.message.as_deref()),
            (Some("Evicted"), Some("low memory"))
        );
        assert_eq!(
            s.unschedulable.as_deref(),
            Some("0/1 nodes are available: 1 Insufficient cpu.")
        );
        assert_eq!(
            s.init_containers[..],
            [ContainerSummary {
                name: "init".into(),
                running: false,
                waiting: Some(Waiting {
                    reason: Some("ErrImagePull".into()),
                    message: Some("no such image".into()),
                }),
                terminated: None,
                last_exit_code: None,
            }]
        );
        assert_eq!(
            s.containers[..],
            [ContainerSummary {
                name: "prefect-job".into(),
                running: false,
                waiting: None,
                terminated: Some(Terminated {
                    exit_code: 137,
                    started: true,
                    reason: Some("OOMKilled".into()),
                    message: None,
                }),
                last_exit_code: Some(1),
            }]
        );
        assert_eq!(primary_exit_code(&pod), Some(137));
    }

    #[test]
    fn a_pod_without_a_status_is_pending_and_one_with_a_strange_phase_unknown() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
        let pod = IndexedPod::from(&pod);
        assert_eq!(pod.state, PodState::default());
        assert_eq!(pod.state.phase, PodPhase::Pending);
        assert_eq!(pod.job_name, None);
        let status: PodStatus = serde_json::from_value(json!({"phase": "Weird"})).unwrap();
        assert_eq!(PodState::from(&status).phase, PodPhase::Unknown);
        let prefixed: Pod = serde_json::from_value(
            json!({"metadata": {"name": "p", "labels": {"batch.kubernetes.io/job-name": "j"}}}),
        )
        .unwrap();
        assert_eq!(IndexedPod::from(&prefixed).job_name.as_deref(), Some("j"));
    }

    /// The diagnoses, exit codes and outcomes below were recorded from the rules as they
    /// read the full k8s-openapi objects (before the compact types): the compact types must
    /// give the same, byte for byte.
    #[test]
    fn diagnoses_exit_codes_and_outcomes_are_those_the_full_objects_gave() {
        let cases: Vec<Value> =
            serde_json::from_str(include_str!("../testdata/indexed_pod_golden.json")).unwrap();
        assert!(cases.len() >= 20);
        for case in cases {
            let full: Pod = serde_json::from_value(json!({
                "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"},
                "status": case["status"],
            }))
            .unwrap();
            let pod = IndexedPod::from(&full);
            let diagnosis = diagnose_pod(&pod.state)
                .map(|d| json!({"category": d.category.as_str(), "message": d.message()}));
            assert_eq!(
                diagnosis.unwrap_or(Value::Null),
                case["diagnosis"],
                "{case}"
            );
            assert_eq!(
                json!(primary_exit_code(&pod)),
                case["primary_exit_code"],
                "{case}"
            );

            let t = Instant::now();
            let mut w = RunWatch::new(Limits::default(), t);
            let on_pod = w.on_pod(pod.clone(), t);
            assert_eq!(json!(format!("{on_pod:?}")), case["on_pod"], "{case}");
            assert_eq!(json!(w.has_started()), case["started"], "{case}");
            let failed: Job = serde_json::from_value(json!({
                "metadata": {"name": "j", "uid": "u"},
                "status": {"conditions": [{"type": "Failed", "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit"}]}
            }))
            .unwrap();
            let on_job = w.on_job(IndexedJob::from(&failed), t);
            assert_eq!(json!(format!("{on_job:?}")), case["failed_job"], "{case}");

            let mut w = RunWatch::new(Limits::default(), t);
            let running: Job = serde_json::from_value(
                json!({"metadata": {"name": "j", "uid": "u"}, "status": {}}),
            )
            .unwrap();
            w.on_job(IndexedJob::from(&running), t);
            w.on_pod(pod, t);
            let deleted = w.on_job_deleted();
            assert_eq!(json!(format!("{deleted:?}")), case["job_deleted"], "{case}");
        }
    }

    #[test]
    fn an_indexed_job_keeps_its_identity_and_how_it_ended() {
        let job = |conditions: Value| -> IndexedJob {
            let full: Job = serde_json::from_value(json!({
                "metadata": {"name": "j", "namespace": "ns", "uid": "ju", "labels": {"a": "b"},
                             "annotations": {"c": "d"}},
                "spec": {"backoffLimit": 0, "template": {"spec": {"containers": [{"name": "c"}]}}},
                "status": {"active": 1, "startTime": "2026-01-01T00:00:00Z", "conditions": conditions}
            }))
            .unwrap();
            IndexedJob::from(&full)
        };
        let failed = job(json!([
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "x"},
            {"type": "Failed", "status": "False", "reason": "NotYet", "message": "y"},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ]));
        assert_eq!(
            failed,
            IndexedJob {
                name: "j".into(),
                uid: Some("ju".into()),
                end: Some(JobEnd::Failed {
                    reason: Some("BackoffLimitExceeded".into()),
                    message: Some("Job has reached the specified backoff limit".into()),
                }),
            }
        );
        assert!(failed.finished());
        let complete = job(json!([
            {"type": "Failed", "status": "True", "reason": "R"},
            {"type": "SuccessCriteriaMet", "status": "True"},
            {"type": "Complete", "status": "True"}
        ]));
        assert_eq!(complete.end, Some(JobEnd::Complete), "Complete wins");
        let running = job(json!([{"type": "Complete", "status": "False"}]));
        assert_eq!(running.end, None);
        assert!(!running.finished());
        let no_status: Job = serde_json::from_value(json!({"metadata": {"name": "j"}})).unwrap();
        assert_eq!(IndexedJob::from(&no_status).end, None);
    }
}
