//! One Job's reconciliation, as pure synchronous logic over the store.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::kinds::Kind;
use crate::object::Object;
use crate::store::{DeleteOptions, Propagation, Store};

/// What the controller remembers per Job between reconciles, like the real
/// controller's tracking finalizers: which pods were already counted.
#[derive(Debug, Default)]
pub struct Tracking {
    succeeded: HashSet<String>,
    failed: HashSet<String>,
    known: HashSet<String>,
    last_failure: Option<Instant>,
}

/// Knobs of the controller.
#[derive(Clone, Copy, Debug)]
pub struct JobSettings {
    /// Base delay before replacing a failed pod (doubles per failure, capped at 6 minutes).
    pub pod_failure_backoff: Duration,
}

const COMPONENT: &str = "job-controller";
/// Retry period after a pod creation was refused (quota, ...).
const CREATE_RETRY: Duration = Duration::from_secs(1);

fn condition(type_: &str, reason: &str, message: &str) -> JobCondition {
    let t = Time(crate::clock::now());
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(t.clone()),
        last_transition_time: Some(t),
    }
}

fn has_condition(status: &JobStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

fn pod_phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn min_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

fn until(t: Timestamp, now: Timestamp) -> Duration {
    let d = t.duration_since(now);
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

/// Reconcile Job `ns/name`; returns when to look again if time alone will
/// change something (deadline, TTL, backoff).
pub fn reconcile(
    store: &mut Store,
    ns: &str,
    name: &str,
    tracking: &mut HashMap<String, Tracking>,
    settings: JobSettings,
) -> Option<Duration> {
    let obj = store.get(Kind::Job, ns, name)?;
    let Object::Job(job) = &*obj else { return None };
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let uid = obj.uid().to_string();
    let spec = job.spec.clone().unwrap_or_default();
    let mut status = job.status.clone().unwrap_or_default();
    let now = crate::clock::now();
    let track = tracking.entry(uid.clone()).or_default();

    if has_condition(&status, "Complete") || has_condition(&status, "Failed") {
        return ttl(store, ns, name, &spec, &status, now);
    }

    let pods: Vec<Pod> = store
        .dependents_of(&uid)
        .iter()
        .filter_map(|o| match &**o {
            Object::Pod(p) => Some((**p).clone()),
            _ => None,
        })
        .filter(|p| {
            p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == uid && r.controller == Some(true))
        })
        .collect();

    let mut active = Vec::new();
    let mut terminating = 0;
    let mut present = HashSet::new();
    for p in &pods {
        let puid = p.metadata.uid.clone().unwrap_or_default();
        present.insert(puid.clone());
        match pod_phase(p) {
            "Succeeded" => {
                track.succeeded.insert(puid);
            }
            "Failed" => {
                if track.failed.insert(puid) {
                    track.last_failure = Some(Instant::now());
                }
            }
            _ if p.metadata.deletion_timestamp.is_some() => terminating += 1,
            _ => {
                track.known.insert(puid);
                active.push(p);
            }
        }
    }
    // A pod that vanished before finishing counts as failed, as with the
    // real controller's tracking finalizer.
    let vanished: Vec<String> = track
        .known
        .iter()
        .filter(|u| !present.contains(*u) && !track.succeeded.contains(*u))
        .cloned()
        .collect();
    for u in vanished {
        track.known.remove(&u);
        if track.failed.insert(u) {
            track.last_failure = Some(Instant::now());
        }
    }
    track.known.retain(|u| present.contains(u));

    let succeeded = i32::try_from(track.succeeded.len()).unwrap_or(i32::MAX);
    let failed = i32::try_from(track.failed.len()).unwrap_or(i32::MAX);
    let mut requeue = None;
    let mut events: Vec<(&str, String, String)> = Vec::new();
    let mut to_delete: Vec<String> = Vec::new();

    let suspended = spec.suspend == Some(true);
    if suspended {
        to_delete.extend(active.iter().filter_map(|p| p.metadata.name.clone()));
        if !has_condition(&status, "Suspended") {
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .retain(|c| c.type_ != "Suspended");
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(condition("Suspended", "JobSuspended", "Job suspended"));
            status.start_time = None;
            events.push(("Normal", "Suspended".into(), "Job suspended".into()));
        }
    } else {
        if has_condition(&status, "Suspended") {
            for c in status
                .conditions
                .iter_mut()
                .flatten()
                .filter(|c| c.type_ == "Suspended")
            {
                *c = condition("Suspended", "JobResumed", "Job resumed");
                c.status = "False".into();
            }
            status.start_time = None;
            events.push(("Normal", "Resumed".into(), "Job resumed".into()));
        }
        status.start_time.get_or_insert(Time(now));
    }

    let failure_target = has_condition(&status, "FailureTarget");
    let success_target = has_condition(&status, "SuccessCriteriaMet");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);

    if !suspended && !failure_target && !success_target {
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let deadline = spec.active_deadline_seconds.and_then(|ads| {
            let start = status.start_time.as_ref()?.0;
            start.checked_add(SignedDuration::from_secs(ads)).ok()
        });
        let reached = match completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        };
        if reached {
            let msg = "Reached expected number of succeeded pods";
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(condition("SuccessCriteriaMet", "CompletionsReached", msg));
        } else if failed > backoff_limit {
            let msg = "Job has reached the specified backoff limit";
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(condition("FailureTarget", "BackoffLimitExceeded", msg));
            events.push(("Warning", "BackoffLimitExceeded".into(), msg.into()));
        } else if let Some(d) = deadline.filter(|d| now >= *d) {
            let _ = d;
            let msg = "Job was active longer than specified deadline";
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(condition("FailureTarget", "DeadlineExceeded", msg));
            events.push(("Warning", "DeadlineExceeded".into(), msg.into()));
        } else {
            if let Some(d) = deadline {
                requeue = min_opt(requeue, Some(until(d, now)));
            }
            let target = match completions {
                Some(c) => parallelism.min((c - succeeded).max(0)),
                None => parallelism,
            };
            let missing = target - i32::try_from(active.len()).unwrap_or(i32::MAX) - terminating;
            if missing > 0 {
                let wait = backoff_remaining(track, failed, settings.pod_failure_backoff);
                if let Some(w) = wait {
                    requeue = min_opt(requeue, Some(w));
                } else {
                    for _ in 0..missing {
                        match store.create(pod_for(job, &uid)) {
                            Ok(p) => {
                                track.known.insert(p.uid().to_string());
                                events.push((
                                    "Normal",
                                    "SuccessfulCreate".into(),
                                    format!("Created pod: {}", p.name()),
                                ));
                            }
                            Err(e) => {
                                events.push((
                                    "Warning",
                                    "FailedCreate".into(),
                                    format!("Error creating: {}", e.message),
                                ));
                                requeue = min_opt(requeue, Some(CREATE_RETRY));
                                break;
                            }
                        }
                    }
                }
            }
        }
    }

    // Once a terminal target is set, pods still running are removed and the
    // final condition lands when none are left, as the real controller does.
    let failure_target = has_condition(&status, "FailureTarget");
    let success_target = has_condition(&status, "SuccessCriteriaMet");
    if failure_target || success_target {
        to_delete.extend(active.iter().filter_map(|p| p.metadata.name.clone()));
    }
    for pod_name in &to_delete {
        let opts = DeleteOptions {
            propagation: Some(Propagation::Background),
            ..Default::default()
        };
        if store.delete(Kind::Pod, ns, pod_name, &opts).is_ok() {
            events.push((
                "Normal",
                "SuccessfulDelete".into(),
                format!("Deleted pod: {pod_name}"),
            ));
        }
    }
    // Count what is still running after the deletes above.
    let still_running = store
        .dependents_of(&uid)
        .iter()
        .filter(|o| match &***o {
            Object::Pod(p) => !matches!(pod_phase(p), "Succeeded" | "Failed"),
            _ => false,
        })
        .count();
    let (active_n, terminating_n) = if failure_target || success_target || suspended {
        (0, i32::try_from(still_running).unwrap_or(i32::MAX))
    } else {
        (
            i32::try_from(active.len()).unwrap_or(i32::MAX) + created_count(&events),
            terminating,
        )
    };
    if still_running == 0
        && !has_condition(&status, "Complete")
        && !has_condition(&status, "Failed")
    {
        if success_target {
            let msg = "Reached expected number of succeeded pods";
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(condition("Complete", "CompletionsReached", msg));
            status.completion_time = Some(Time(crate::clock::now()));
            events.push(("Normal", "Completed".into(), "Job completed".into()));
        } else if failure_target {
            let ft = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "FailureTarget")
                .cloned();
            if let Some(ft) = ft {
                let c = condition(
                    "Failed",
                    ft.reason.as_deref().unwrap_or_default(),
                    ft.message.as_deref().unwrap_or_default(),
                );
                status.conditions.get_or_insert_with(Vec::new).push(c);
            }
        }
    }

    let ready = active.iter().filter(|p| pod_ready(p)).count();
    status.active = (active_n > 0).then_some(active_n);
    status.succeeded = (succeeded > 0).then_some(succeeded);
    status.failed = (failed > 0).then_some(failed);
    status.ready = Some(if active_n > 0 {
        i32::try_from(ready).unwrap_or(0)
    } else {
        0
    });
    status.terminating = Some(terminating_n);
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());

    let updated = store.update_with(Kind::Job, ns, name, &uid, |o| {
        if let Object::Job(j) = o {
            j.status = Some(status.clone());
        }
    });
    if let Some(job_now) = updated {
        for (ty, reason, msg) in events {
            store.record_event(&job_now, ty, &reason, &msg, COMPONENT);
        }
    }
    if has_condition(&status, "Complete") || has_condition(&status, "Failed") {
        requeue = min_opt(requeue, ttl(store, ns, name, &spec, &status, now));
    }
    requeue
}

fn created_count(events: &[(&str, String, String)]) -> i32 {
    i32::try_from(events.iter().filter(|e| e.1 == "SuccessfulCreate").count()).unwrap_or(0)
}

/// Time still to wait before replacing a failed pod, if any.
fn backoff_remaining(track: &Tracking, failed: i32, base: Duration) -> Option<Duration> {
    if failed == 0 || base.is_zero() {
        return None;
    }
    let exp = u32::try_from(failed - 1).unwrap_or(0).min(16);
    let delay = base.saturating_mul(1 << exp).min(Duration::from_secs(360));
    let since = track.last_failure?.elapsed();
    delay.checked_sub(since).filter(|d| !d.is_zero())
}

/// `ttlSecondsAfterFinished`: delete the finished Job (and, in the
/// background, its pods) once the TTL has passed.
fn ttl(
    store: &mut Store,
    ns: &str,
    name: &str,
    spec: &k8s_openapi::api::batch::v1::JobSpec,
    status: &JobStatus,
    now: Timestamp,
) -> Option<Duration> {
    let ttl = spec.ttl_seconds_after_finished?;
    let finished_at = status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
        .or_else(|| status.completion_time.as_ref().map(|t| t.0))?;
    let due = finished_at
        .checked_add(SignedDuration::from_secs(i64::from(ttl)))
        .ok()?;
    if now >= due {
        let opts = DeleteOptions {
            propagation: Some(Propagation::Background),
            ..Default::default()
        };
        let _ = store.delete(Kind::Job, ns, name, &opts);
        None
    } else {
        Some(until(due, now))
    }
}

/// The pod the controller creates for `job`.
fn pod_for(job: &Job, uid: &str) -> Object {
    let name = job.metadata.name.clone().unwrap_or_default();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let pod = Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: job.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name,
                uid: uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    Object::Pod(Box::new(pod))
}
