//! Why a pod is not running (spec §6.3, plus InvalidImageName, CreateContainerConfigError
//! and FailedCreate): pure functions of the pod's status as the index keeps it
//! ([`PodState`]) and of Kubernetes events, so every rule is unit-tested.
//!
//! Categories and levels follow prefect-kubernetes' `diagnostics.py` (they are a stable
//! contract for automations); the wording is ours.

use k8s_openapi::api::core::v1::Event;

use crate::index_objects::PodState;

/// How bad a diagnosis is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiagnosisLevel {
    Error,
    Warning,
}

/// What kind of failure, and whether waiting can fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    ImagePullError,
    InvalidImageName,
    CreateContainerConfigError,
    CrashLoopBackOff,
    OomKilled,
    Evicted,
    Unschedulable,
    UnschedulableInsufficientResources,
    UnschedulableNodeAffinity,
    UnschedulableTaint,
    /// The Job controller cannot create the pod (quota, admission...).
    FailedCreate,
    /// The Job controller cannot create the pod because the pod template is invalid: no
    /// amount of waiting helps.
    FailedCreateInvalid,
    /// The container runtime could not start the container's process (exit 128).
    StartError,
}

impl Category {
    /// The stable category name (`kubernetes.diagnosis`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ImagePullError => "ImagePullError",
            Self::InvalidImageName => "InvalidImageName",
            Self::CreateContainerConfigError => "CreateContainerConfigError",
            Self::CrashLoopBackOff => "CrashLoopBackOff",
            Self::OomKilled => "OOMKilled",
            Self::Evicted => "Evicted",
            Self::Unschedulable => "Unschedulable",
            Self::UnschedulableInsufficientResources => "Unschedulable.InsufficientResources",
            Self::UnschedulableNodeAffinity => "Unschedulable.NodeAffinity",
            Self::UnschedulableTaint => "Unschedulable.Taint",
            Self::FailedCreate => "FailedCreate",
            Self::FailedCreateInvalid => "FailedCreate.Invalid",
            Self::StartError => "StartError",
        }
    }

    /// A failure of the container itself: it will not start however long we wait, so the
    /// pod-watch timeout crashes the run and deletes its Job.
    #[must_use]
    pub fn is_container_failure(self) -> bool {
        matches!(
            self,
            Self::ImagePullError
                | Self::InvalidImageName
                | Self::CreateContainerConfigError
                | Self::FailedCreateInvalid
        )
    }

    /// A scheduling delay that an autoscaling cluster may resolve by itself; only the
    /// optional pending timeout crashes it.
    #[cfg(test)]
    pub fn is_scheduling_delay(self) -> bool {
        matches!(
            self,
            Self::Unschedulable
                | Self::UnschedulableInsufficientResources
                | Self::UnschedulableNodeAffinity
                | Self::UnschedulableTaint
                | Self::FailedCreate
        )
    }
}

/// One diagnosis: what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub level: DiagnosisLevel,
    pub category: Category,
    pub summary: String,
    pub detail: String,
    pub resolution: &'static str,
}

impl Diagnosis {
    /// `<summary>: <detail> Resolution: <resolution>`, the flow-run log line.
    #[must_use]
    pub fn message(&self) -> String {
        format!(
            "{}: {} Resolution: {}",
            self.summary, self.detail, self.resolution
        )
    }
}

const NODE_PRESSURE: &str = "Check the nodes for memory, disk or PID pressure, and give the pod resource requests that place it on a node with room.";

fn join(a: &str, b: &str) -> String {
    format!("{a} {b}").trim().to_owned()
}

/// Diagnoses a pod from its status; the first matching rule wins (spec §6.3 order).
#[must_use]
pub fn diagnose_pod(status: &PodState) -> Option<Diagnosis> {
    waiting(status)
        .or_else(|| terminated(status))
        .or_else(|| unschedulable(status))
        .or_else(|| evicted(status))
}

fn waiting(status: &PodState) -> Option<Diagnosis> {
    for cs in status.all_containers() {
        let Some(w) = cs.waiting.as_ref() else {
            continue;
        };
        let reason = w.reason.as_deref().unwrap_or("");
        let message = w.message.as_deref().unwrap_or("");
        let name = &cs.name;
        let d = match reason {
            "ImagePullBackOff" | "ErrImagePull" => Diagnosis {
                level: DiagnosisLevel::Error,
                category: Category::ImagePullError,
                summary: format!("Image pull failed for container '{name}'"),
                detail: join(
                    &format!("Kubernetes cannot pull the container image. Reason: {reason}."),
                    message,
                ),
                resolution: "Check the image name and tag, that the image exists in the registry, and that image pull secrets are set for a private registry.",
            },
            "InvalidImageName" => Diagnosis {
                level: DiagnosisLevel::Error,
                category: Category::InvalidImageName,
                summary: format!("Invalid image name for container '{name}'"),
                detail: join(
                    "Kubernetes cannot parse the container image reference.",
                    message,
                ),
                resolution: "Fix the `image` job variable (or the job template's image): it must be a valid image reference such as `repo/name:tag`.",
            },
            "CreateContainerConfigError" => Diagnosis {
                level: DiagnosisLevel::Error,
                category: Category::CreateContainerConfigError,
                summary: format!("Container '{name}' cannot be configured"),
                detail: join(
                    "Kubernetes cannot build the container's configuration.",
                    message,
                ),
                resolution: "Check that every Secret and ConfigMap the container references (env valueFrom, envFrom, volumes) exists in the Job's namespace with the referenced keys.",
            },
            "CrashLoopBackOff" => Diagnosis {
                level: DiagnosisLevel::Error,
                category: Category::CrashLoopBackOff,
                summary: format!("Container '{name}' is crash-looping"),
                detail: join(
                    "The container keeps crashing soon after it starts.",
                    message,
                ),
                resolution: "Read the container's logs for the cause, and check its command, environment variables and mounted volumes.",
            },
            _ => continue,
        };
        return Some(d);
    }
    None
}

fn terminated(status: &PodState) -> Option<Diagnosis> {
    for cs in status.all_containers() {
        let Some(t) = cs.terminated.as_ref() else {
            continue;
        };
        let name = &cs.name;
        match t.reason.as_deref() {
            Some("OOMKilled") => {
                return Some(Diagnosis {
                    level: DiagnosisLevel::Error,
                    category: Category::OomKilled,
                    summary: format!("Container '{name}' was killed for running out of memory (OOMKilled)"),
                    detail: "The container went over its memory limit and the kernel's OOM killer stopped it.".into(),
                    resolution: "Raise the container's memory limit in the job template (memory_limit), or make the flow use less memory.",
                });
            }
            Some("StartError" | "ContainerCannotRun") => {
                return Some(Diagnosis {
                    level: DiagnosisLevel::Error,
                    category: Category::StartError,
                    summary: format!("Container '{name}' could not be started"),
                    detail: t.message.as_deref().unwrap_or_default().to_owned(),
                    resolution: "Check the container's command, arguments and environment: the runtime's message says what it refused (a program that does not exist, or arguments or environment too large for the kernel).",
                });
            }
            Some("Evicted") => {
                return Some(Diagnosis {
                    level: DiagnosisLevel::Warning,
                    category: Category::Evicted,
                    summary: format!("Container '{name}' was evicted"),
                    detail:
                        "The pod was evicted, most likely because its node ran short of resources."
                            .into(),
                    resolution: NODE_PRESSURE,
                });
            }
            _ => {}
        }
    }
    None
}

/// The Unschedulable category, chosen from the scheduler's message (spec §6.3).
#[must_use]
pub fn unschedulable_category(message: &str) -> Category {
    let m = message.to_lowercase();
    if m.contains("taint") {
        Category::UnschedulableTaint
    } else if m.contains("affinity") || m.contains("node selector") {
        Category::UnschedulableNodeAffinity
    } else if m.contains("insufficient") {
        Category::UnschedulableInsufficientResources
    } else {
        Category::Unschedulable
    }
}

fn unschedulable(status: &PodState) -> Option<Diagnosis> {
    let message = status.unschedulable.as_deref()?;
    Some(Diagnosis {
        level: DiagnosisLevel::Warning,
        category: unschedulable_category(message),
        summary: "Pod is unschedulable".into(),
        detail: join(
            "Kubernetes cannot find a suitable node to run this pod.",
            message,
        ),
        resolution: "Check that the cluster has nodes with enough resources, matching node selectors and tolerations; scale the cluster up or lower the pod's resource requests.",
    })
}

fn evicted(status: &PodState) -> Option<Diagnosis> {
    if status.reason.as_deref() != Some("Evicted") {
        return None;
    }
    Some(Diagnosis {
        level: DiagnosisLevel::Warning,
        category: Category::Evicted,
        summary: "Pod was evicted".into(),
        detail: join(
            "The pod was evicted from its node.",
            status.message.as_deref().unwrap_or(""),
        ),
        resolution: NODE_PRESSURE,
    })
}

/// Diagnoses a Job that has no pod from its events: the newest `FailedCreate` (quota,
/// admission webhooks, pod security...).
#[must_use]
pub fn diagnose_job_events(events: &[Event]) -> Option<Diagnosis> {
    let e = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
        .max_by_key(|e| {
            e.last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or_else(|| e.event_time.as_ref().map(|t| t.0))
        })?;
    let message = e.message.as_deref().unwrap_or("");
    let quota = message.contains("exceeded quota");
    // A pod the API server rejects as invalid will be rejected on every retry.
    let invalid = [
        "is invalid",
        "Invalid value",
        "Unsupported value",
        "Required value",
    ]
    .iter()
    .any(|m| message.contains(m));
    if invalid {
        return Some(Diagnosis {
            level: DiagnosisLevel::Error,
            category: Category::FailedCreateInvalid,
            summary: "Kubernetes rejects the Job's pod template as invalid".into(),
            detail: message.to_owned(),
            resolution: "Fix the field the message names, in the job variables or the work pool's base job template.",
        });
    }
    Some(Diagnosis {
        level: DiagnosisLevel::Warning,
        category: Category::FailedCreate,
        summary: "Kubernetes cannot create the Job's pod".into(),
        detail: join("The Job controller's pod creation was refused.", message),
        resolution: if quota {
            "Check the resource quotas of the namespace: wait for other pods to finish, raise the quota, or lower the Job's resource requests."
        } else {
            "Check admission policies (pod security, webhooks) and quotas of the namespace against the Job's pod template."
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(v: serde_json::Value) -> PodState {
        let full: k8s_openapi::api::core::v1::PodStatus = serde_json::from_value(v).unwrap();
        PodState::from(&full)
    }

    #[test]
    fn image_pull_errors_come_first() {
        let s = status(json!({
            "containerStatuses": [{"name": "prefect-job", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}}}],
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes"}]
        }));
        let d = diagnose_pod(&s).unwrap();
        assert_eq!(d.category, Category::ImagePullError);
        assert!(d.category.is_container_failure());
        assert!(
            d.message().starts_with(
                "Image pull failed for container 'prefect-job': Kubernetes cannot pull"
            )
        );
        assert!(
            d.detail
                .contains("Reason: ImagePullBackOff. Back-off pulling image")
        );
    }

    #[test]
    fn unschedulable_categories() {
        assert_eq!(
            unschedulable_category(
                "0/3 nodes are available: 3 node(s) had untolerated taint {a: b}."
            ),
            Category::UnschedulableTaint
        );
        assert_eq!(
            unschedulable_category("didn't match Pod's node affinity/selector"),
            Category::UnschedulableNodeAffinity
        );
        assert_eq!(
            unschedulable_category("0/1 nodes are available: 1 Insufficient cpu."),
            Category::UnschedulableInsufficientResources
        );
        assert_eq!(unschedulable_category("weird"), Category::Unschedulable);
        let s = status(
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient cpu."}]}),
        );
        let d = diagnose_pod(&s).unwrap();
        assert!(d.category.is_scheduling_delay());
        assert_eq!(
            d.detail,
            "Kubernetes cannot find a suitable node to run this pod. 0/1 nodes are available: 1 Insufficient cpu."
        );
    }

    #[test]
    fn oom_and_eviction() {
        let s = status(
            json!({"phase": "Failed", "containerStatuses": [{"name": "prefect-job", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        );
        assert_eq!(diagnose_pod(&s).unwrap().category, Category::OomKilled);
        let s = status(
            json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}),
        );
        let d = diagnose_pod(&s).unwrap();
        assert_eq!(
            (d.category, d.level),
            (Category::Evicted, DiagnosisLevel::Warning)
        );
        assert!(d.detail.ends_with("low on resource: memory."));
    }

    #[test]
    fn config_and_invalid_image() {
        for (reason, cat) in [
            (
                "CreateContainerConfigError",
                Category::CreateContainerConfigError,
            ),
            ("InvalidImageName", Category::InvalidImageName),
        ] {
            let s = status(
                json!({"containerStatuses": [{"name": "prefect-job", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": "m"}}}]}),
            );
            let d = diagnose_pod(&s).unwrap();
            assert_eq!(d.category, cat);
            assert!(d.category.is_container_failure());
        }
    }

    #[test]
    fn failed_create_from_events() {
        let events: Vec<Event> = vec![serde_json::from_value(json!({
            "metadata": {"name": "e1"}, "involvedObject": {"kind": "Job", "name": "j"},
            "reason": "FailedCreate", "message": "Error creating: pods \"j-abcde\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1",
            "lastTimestamp": "2026-01-01T00:00:00Z"
        })).unwrap()];
        let d = diagnose_job_events(&events).unwrap();
        assert_eq!(d.category, Category::FailedCreate);
        assert!(d.resolution.contains("quota"));
        assert!(diagnose_job_events(&[]).is_none());
    }
}
