//! The outcome rules for one flow run's Job: a pure state machine fed with the Job, its
//! pods, its events and the clock, answering what to do next. The watch plumbing
//! (`tracker`) and the side effects (`worker::run`) live elsewhere, so every rule here is a
//! plain unit test.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Pod};

use crate::diagnosis::{Category, Diagnosis, diagnose_job_events, diagnose_pod};
use crate::index_objects::{ContainerSummary, IndexedJob, IndexedPod, JobEnd, PodPhase};

/// The container Prefect runs the flow in.
pub const PRIMARY_CONTAINER: &str = "prefect-job";

/// How the Job ended, as the runner's `WorkerResult` wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `0` on success; the failed container's exit code; `-1` when there is none.
    pub status_code: i64,
    /// Why, when the exit code alone does not say (a diagnosis, a deadline, a deletion).
    pub detail: Option<String>,
}

/// What the run should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Log this diagnosis to the flow run (it changed since the last one).
    Log(Diagnosis),
    /// The pod is pending: propose `InfrastructurePending` (once per pod).
    ProposeInfrastructurePending,
    /// The Job has finished; report this outcome.
    Finish(Outcome),
    /// Give up: delete the Job (so a run declared crashed can never start later) and
    /// report this outcome.
    DeleteJobAndFinish(Outcome),
    /// The Job disappeared; check for a replacement Job before reporting it deleted.
    CheckJobDeleted,
}

/// Time limits of one run (from its job configuration and the worker settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// `pod_watch_timeout_seconds`: a pod that has not started by then is crashed when its
    /// container cannot start (image pull, invalid image, container config).
    pub pod_start: Option<Duration>,
    /// `job_watch_timeout_seconds`: a Job not finished this long after its pod started is
    /// deleted and the run crashed. `None`: wait forever.
    pub job_run: Option<Duration>,
    /// `PREFECT_INTEGRATIONS_KUBERNETES_WORKER_PENDING_TIMEOUT_SECONDS`: also crash scheduling
    /// delays (Unschedulable, quota) after this long. `None`: never.
    pub pending: Option<Duration>,
}

/// The state of one tracked Job.
#[derive(Debug)]
pub struct RunWatch {
    limits: Limits,
    created_at: Instant,
    job_uid: Option<Box<str>>,
    // Shared with the namespace index (`tracker.rs`): thousands of runs each holding their
    // own deep copy of the Job and its pods were most of the worker's memory per run. The
    // compact types (`index_objects`) keep only what the rules below read.
    job: Option<Arc<IndexedJob>>,
    pods: BTreeMap<Box<str>, Arc<IndexedPod>>,
    /// When a pod of this Job was first seen Running.
    started_at: Option<Instant>,
    /// The last diagnosis logged, by category and summary: Kubernetes alternates
    /// ErrImagePull and ImagePullBackOff, which is one problem, logged once.
    last_diagnosis: Option<(Category, String)>,
    /// Pods we already proposed `InfrastructurePending` for.
    pending_proposed: Vec<Box<str>>,
    job_events_diagnosis: Option<Diagnosis>,
    /// The Job's FailedCreate events seen (newest kept per message), for the diagnosis.
    job_events: Vec<Event>,
    finished: bool,
}

impl RunWatch {
    /// Tracking starts when the Job is created (`now`).
    #[must_use]
    pub fn new(limits: Limits, now: Instant) -> Self {
        Self {
            limits,
            created_at: now,
            job_uid: None,
            job: None,
            pods: BTreeMap::new(),
            started_at: None,
            last_diagnosis: None,
            pending_proposed: Vec::new(),
            job_events_diagnosis: None,
            job_events: Vec::new(),
            finished: false,
        }
    }

    /// The uid of the tracked Job, once seen.
    #[must_use]
    pub fn job_uid(&self) -> Option<&str> {
        self.job_uid.as_deref()
    }

    /// Whether any pod of the Job exists.
    #[must_use]
    pub fn has_pods(&self) -> bool {
        !self.pods.is_empty()
    }

    /// Whether a pod of the Job has ever been Running.
    #[must_use]
    pub fn has_started(&self) -> bool {
        self.started_at.is_some()
    }

    /// The pods seen, newest first.
    #[must_use]
    pub fn pods_newest_first(&self) -> Vec<&IndexedPod> {
        let mut v: Vec<&IndexedPod> = self.pods.values().map(AsRef::as_ref).collect();
        v.sort_by_key(|p| std::cmp::Reverse(p.creation_timestamp));
        v
    }

    /// A new version of the Job.
    pub fn on_job(&mut self, job: impl Into<Arc<IndexedJob>>, now: Instant) -> Vec<Action> {
        let job = job.into();
        if self.finished {
            return Vec::new();
        }
        if self.job_uid.is_none() {
            self.job_uid.clone_from(&job.uid);
        } else if job.uid != self.job_uid {
            // A different Job with the same name (ours was replaced): not ours to judge.
            return Vec::new();
        }
        self.job = Some(job);
        let mut actions = Vec::new();
        if let Some(outcome) = self.job_outcome() {
            self.finished = true;
            actions.push(Action::Finish(outcome));
            return actions;
        }
        actions.extend(self.on_tick(now));
        actions
    }

    /// The Job is gone (deleted, or missing after a relist).
    pub fn on_job_deleted(&mut self) -> Vec<Action> {
        if self.finished {
            return Vec::new();
        }
        if let Some(o) = self.job.as_ref().and_then(|_| self.job_outcome()) {
            self.finished = true;
            return vec![Action::Finish(o)];
        }
        // Its pod succeeded, so the Job did (one completion): deleted by a short
        // `ttlSecondsAfterFinished` before the watch showed its Complete condition (a relist
        // after the deletion, on a loaded machine). Python, too, reports a deleted Job that
        // had succeeded as succeeded.
        if self.pods.values().any(|p| {
            p.state.phase == PodPhase::Succeeded && primary_exit_code(p).is_none_or(|c| c == 0)
        }) {
            self.finished = true;
            return vec![Action::Finish(Outcome {
                status_code: 0,
                detail: None,
            })];
        }
        vec![Action::CheckJobDeleted]
    }

    /// Reports the deletion after the replacement check found no other active Job.
    pub fn job_deleted_confirmed(&mut self) -> Action {
        self.finished = true;
        Action::Finish(Outcome {
            status_code: -1,
            detail: Some("Kubernetes job was deleted".into()),
        })
    }

    /// A new version of one of the Job's pods.
    pub fn on_pod(&mut self, pod: impl Into<Arc<IndexedPod>>, now: Instant) -> Vec<Action> {
        let pod = pod.into();
        if self.finished {
            return Vec::new();
        }
        let phase = pod.state.phase;
        let running = match phase {
            PodPhase::Running | PodPhase::Succeeded => true,
            PodPhase::Failed => primary_started(&pod),
            PodPhase::Pending | PodPhase::Unknown => false,
        };
        if running && self.started_at.is_none() {
            self.started_at = Some(now);
        }
        let mut actions = Vec::new();
        if phase == PodPhase::Pending && !self.pending_proposed.iter().any(|n| *n == pod.name) {
            self.pending_proposed.push(pod.name.clone());
            actions.push(Action::ProposeInfrastructurePending);
        }
        let diagnosis = diagnose_pod(&pod.state);
        self.pods.insert(pod.name.clone(), pod);
        if let Some(d) = diagnosis {
            actions.extend(self.note_diagnosis(d));
        }
        actions.extend(self.on_tick(now));
        actions
    }

    /// A pod of the Job was deleted.
    pub fn on_pod_deleted(&mut self, name: &str) {
        self.pods.remove(name);
    }

    /// One event about the Job (from the namespace's shared events watch). Events of an
    /// earlier Job with the same name (another uid) are ignored.
    pub fn on_job_event(&mut self, event: Event, now: Instant) -> Vec<Action> {
        if let (Some(uid), Some(theirs)) = (&self.job_uid, &event.involved_object.uid)
            && &**uid != theirs.as_str()
        {
            return Vec::new();
        }
        // Kubernetes folds repeats into one event (count); keep the newest per message.
        self.job_events.retain(|e| e.message != event.message);
        self.job_events.push(event);
        if self.job_events.len() > 8 {
            self.job_events.remove(0);
        }
        let events = std::mem::take(&mut self.job_events);
        let actions = self.on_job_events(&events, now);
        self.job_events = events;
        actions
    }

    /// The Job's events (looked up while it has no pod).
    pub fn on_job_events(&mut self, events: &[Event], now: Instant) -> Vec<Action> {
        if self.finished {
            return Vec::new();
        }
        let Some(d) = diagnose_job_events(events) else {
            return Vec::new();
        };
        self.job_events_diagnosis = Some(d.clone());
        let mut actions = self.note_diagnosis(d);
        actions.extend(self.on_tick(now));
        actions
    }

    fn note_diagnosis(&mut self, d: Diagnosis) -> Vec<Action> {
        let key = (d.category, d.summary.clone());
        if self.last_diagnosis.as_ref() == Some(&key) {
            return Vec::new();
        }
        self.last_diagnosis = Some(key);
        vec![Action::Log(d)]
    }

    /// The diagnosis of why the Job's pod is not running now, if any.
    #[must_use]
    pub fn current_diagnosis(&self) -> Option<Diagnosis> {
        if let Some(d) = self
            .pods_newest_first()
            .into_iter()
            .find_map(|p| diagnose_pod(&p.state))
        {
            return Some(d);
        }
        if self.pods.is_empty() {
            self.job_events_diagnosis.clone()
        } else {
            None
        }
    }

    /// Checks the time limits.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Action> {
        if self.finished {
            return Vec::new();
        }
        let since_created = now.saturating_duration_since(self.created_at);
        if let (Some(limit), Some(started)) = (self.limits.job_run, self.started_at)
            && now.saturating_duration_since(started) >= limit
            && self.job_outcome().is_none()
        {
            self.finished = true;
            return vec![Action::DeleteJobAndFinish(Outcome {
                status_code: -1,
                detail: Some(format!(
                    "Job did not complete within timeout of {}s (job_watch_timeout_seconds); the Job was deleted.",
                    limit.as_secs()
                )),
            })];
        }
        if self.started_at.is_some() {
            return Vec::new();
        }
        let diagnosis = self.current_diagnosis();
        if let (Some(limit), Some(d)) = (self.limits.pod_start, &diagnosis)
            && since_created >= limit
            && d.category.is_container_failure()
        {
            self.finished = true;
            return vec![Action::DeleteJobAndFinish(Outcome {
                status_code: -1,
                detail: Some(format!(
                    "Pod did not start within {}s (pod_watch_timeout_seconds). {}",
                    limit.as_secs(),
                    d.message()
                )),
            })];
        }
        if let Some(limit) = self.limits.pending
            && since_created >= limit
        {
            self.finished = true;
            let why =
                diagnosis.map_or_else(|| "No diagnosis is available.".to_owned(), |d| d.message());
            return vec![Action::DeleteJobAndFinish(Outcome {
                status_code: -1,
                detail: Some(format!(
                    "Pod did not start within {}s (PREFECT_INTEGRATIONS_KUBERNETES_WORKER_PENDING_TIMEOUT_SECONDS). {why}",
                    limit.as_secs()
                )),
            })];
        }
        Vec::new()
    }

    /// When `on_tick` should next be called for a time limit to fire, if ever.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        let mut deadlines = Vec::new();
        if let (Some(l), Some(s)) = (self.limits.job_run, self.started_at) {
            deadlines.push(s + l);
        }
        if self.started_at.is_none() {
            if let Some(l) = self.limits.pod_start {
                deadlines.push(self.created_at + l);
            }
            if let Some(l) = self.limits.pending {
                deadlines.push(self.created_at + l);
            }
        }
        deadlines.into_iter().min()
    }

    /// Whether the Job has failed and no pod seen explains it yet: the pod watch can lag the
    /// Job watch (they are separate streams), so the caller should read the pods directly and
    /// pass them to [`RunWatch::explain_failure`].
    #[must_use]
    pub fn failure_needs_pods(&self, outcome: &Outcome) -> bool {
        outcome.status_code == -1
            && self.job.is_some()
            && self
                .pods
                .values()
                .all(|p| primary_exit_code(p).is_none() && diagnose_pod(&p.state).is_none())
    }

    /// Recomputes the outcome of a failed Job with `pods` read directly from the API.
    pub fn explain_failure(&mut self, pods: &[Pod]) -> Option<Outcome> {
        for pod in pods.iter().filter(|p| p.metadata.name.is_some()) {
            let pod = IndexedPod::from(pod);
            self.pods.insert(pod.name.clone(), Arc::new(pod));
        }
        self.job_outcome()
    }

    /// Complete → 0; Failed → the failed container's exit code, or -1 with the reason.
    fn job_outcome(&self) -> Option<Outcome> {
        let (reason, message) = match self.job.as_ref()?.end.as_ref()? {
            JobEnd::Complete => {
                return Some(Outcome {
                    status_code: 0,
                    detail: None,
                });
            }
            JobEnd::Failed { reason, message } => (
                reason.as_deref().unwrap_or_default(),
                message.as_deref().unwrap_or_default(),
            ),
        };
        let condition_text = format!("Job failed: {reason}: {message}")
            .trim_end_matches([' ', ':'])
            .to_owned();
        // The newest failed pod says why.
        for pod in self.pods_newest_first() {
            let diagnosis = diagnose_pod(&pod.state);
            if let Some(code) = primary_exit_code(pod) {
                let detail = diagnosis.map_or_else(
                    || condition_text.clone(),
                    |d| format!("{} {condition_text}", d.message()),
                );
                return Some(Outcome {
                    status_code: code,
                    detail: Some(detail),
                });
            }
            if let Some(d) = diagnosis {
                return Some(Outcome {
                    status_code: -1,
                    detail: Some(format!("{} {condition_text}", d.message())),
                });
            }
        }
        Some(Outcome {
            status_code: -1,
            detail: Some(condition_text),
        })
    }
}

fn primary_status(pod: &IndexedPod) -> Option<&ContainerSummary> {
    let statuses = &pod.state.containers;
    statuses
        .iter()
        .find(|c| &*c.name == PRIMARY_CONTAINER)
        .or_else(|| statuses.first())
}

fn primary_started(pod: &IndexedPod) -> bool {
    primary_status(pod)
        .is_some_and(|c| c.running || c.terminated.as_ref().is_some_and(|t| t.started))
}

/// The exit code of the primary container's last termination.
#[must_use]
pub fn primary_exit_code(pod: &IndexedPod) -> Option<i64> {
    let c = primary_status(pod)?;
    let code = c
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
        .or(c.last_exit_code)?;
    Some(i64::from(code))
}

#[cfg(test)]
#[allow(clippy::needless_pass_by_value)] // JSON fixtures read best passed by value
mod tests {
    use super::*;
    use serde_json::json;

    fn job(conditions: serde_json::Value) -> IndexedJob {
        let full: k8s_openapi::api::batch::v1::Job = serde_json::from_value(json!({"metadata": {"name": "j", "uid": "u1"}, "spec": {"template": {}}, "status": {"conditions": conditions}})).unwrap();
        IndexedJob::from(&full)
    }

    fn full_pod(name: &str, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"}, "status": status})).unwrap()
    }

    fn pod(name: &str, status: serde_json::Value) -> IndexedPod {
        IndexedPod::from(&full_pod(name, status))
    }

    fn container(state: serde_json::Value) -> serde_json::Value {
        json!([{"name": "prefect-job", "image": "x", "imageID": "", "ready": false, "restartCount": 0, "state": state}])
    }

    #[test]
    fn failed_create_events_of_this_job_are_diagnosed_once() {
        let t = Instant::now();
        let mut w = RunWatch::new(Limits::default(), t);
        w.on_job(job(json!([])), t);
        let event = |uid: &str, count: i32| -> Event {
            serde_json::from_value(json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Job", "name": "j", "uid": uid}, "reason": "FailedCreate", "count": count, "message": "Error creating: pods \"j-x\" is forbidden: exceeded quota: q"})).unwrap()
        };
        assert!(
            w.on_job_event(event("old-uid", 1), t).is_empty(),
            "an earlier Job of the same name is not ours"
        );
        let a = w.on_job_event(event("u1", 1), t);
        assert!(matches!(&a[..], [Action::Log(d)] if d.category == Category::FailedCreate));
        assert!(
            w.on_job_event(event("u1", 2), t).is_empty(),
            "the same problem is logged once"
        );
        assert_eq!(w.job_events.len(), 1, "repeats replace each other");
    }

    #[test]
    fn complete_job_is_success() {
        let t = Instant::now();
        let mut w = RunWatch::new(Limits::default(), t);
        assert!(w.on_job(job(json!([])), t).is_empty());
        let a = w.on_job(job(json!([{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}])), t);
        assert_eq!(
            a,
            vec![Action::Finish(Outcome {
                status_code: 0,
                detail: None
            })]
        );
        assert!(
            w.on_job(job(json!([])), t).is_empty(),
            "finished runs report once"
        );
    }

    #[test]
    fn failed_job_reports_the_container_exit_code() {
        let t = Instant::now();
        let mut w = RunWatch::new(Limits::default(), t);
        w.on_pod(pod("p1", json!({"phase": "Failed", "containerStatuses": container(json!({"terminated": {"exitCode": 3, "reason": "Error", "startedAt": "2026-01-01T00:00:01Z"}}))})), t);
        let a = w.on_job(job(json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}])), t);
        let Action::Finish(o) = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!(o.status_code, 3);
        assert!(
            o.detail
                .as_deref()
                .unwrap()
                .contains("BackoffLimitExceeded")
        );
    }

    #[test]
    fn a_failed_job_seen_before_its_pod_is_explained_by_the_pods_read_later() {
        let t = Instant::now();
        let mut w = RunWatch::new(Limits::default(), t);
        let a = w.on_job(
            job(json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])),
            t,
        );
        let Action::Finish(o) = &a[0] else {
            panic!("{a:?}")
        };
        assert!(w.failure_needs_pods(o));
        let p = full_pod(
            "p1",
            json!({"phase": "Failed", "containerStatuses": container(json!({"terminated": {"exitCode": 3, "reason": "Error"}}))}),
        );
        assert_eq!(w.explain_failure(&[p]).unwrap().status_code, 3);
    }

    #[test]
    fn oom_killed_pod_gives_137_and_diagnosis() {
        let t = Instant::now();
        let mut w = RunWatch::new(Limits::default(), t);
        let a = w.on_pod(pod("p1", json!({"phase": "Failed", "containerStatuses": container(json!({"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": "2026-01-01T00:00:01Z"}}))})), t);
        assert!(matches!(&a[..], [Action::Log(d)] if d.category == Category::OomKilled));
        let a = w.on_job(
            job(json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])),
            t,
        );
        let Action::Finish(o) = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!(o.status_code, 137);
        assert!(o.detail.as_deref().unwrap().contains("OOMKilled"));
    }

    #[test]
    fn evicted_pod_without_exit_code_is_minus_one_with_reason() {
        let t = Instant::now();
        let mut w = RunWatch::new(Limits::default(), t);
        w.on_pod(
            pod(
                "p1",
                json!({"phase": "Failed", "reason": "Evicted", "message": "low memory"}),
            ),
            t,
        );
        let a = w.on_job(
            job(json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])),
            t,
        );
        let Action::Finish(o) = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!(o.status_code, -1);
        assert!(o.detail.as_deref().unwrap().starts_with("Pod was evicted"));
    }

    #[test]
    fn a_failed_pod_under_backoff_keeps_waiting() {
        let t = Instant::now();
        let mut w = RunWatch::new(Limits::default(), t);
        w.on_pod(
            pod("p1", json!({"phase": "Failed", "reason": "Evicted"})),
            t,
        );
        assert!(
            w.on_job(job(json!([])), t).is_empty(),
            "no Failed condition yet: Kubernetes retries"
        );
    }

    #[test]
    fn image_pull_error_crashes_at_pod_watch_timeout_and_deletes_the_job() {
        let t = Instant::now();
        let limits = Limits {
            pod_start: Some(Duration::from_secs(60)),
            ..Limits::default()
        };
        let mut w = RunWatch::new(limits, t);
        let a = w.on_pod(pod("p1", json!({"phase": "Pending", "containerStatuses": container(json!({"waiting": {"reason": "ErrImagePull"}}))})), t);
        assert!(a.contains(&Action::ProposeInfrastructurePending));
        assert!(a.iter().any(|x| matches!(x, Action::Log(_))));
        assert_eq!(w.next_deadline(), Some(t + Duration::from_secs(60)));
        assert!(w.on_tick(t + Duration::from_secs(59)).is_empty());
        let a = w.on_tick(t + Duration::from_secs(60));
        let [Action::DeleteJobAndFinish(o)] = &a[..] else {
            panic!("{a:?}")
        };
        assert!(o.detail.as_deref().unwrap().contains("Image pull failed"));
    }

    #[test]
    fn unschedulable_is_not_crashed_by_pod_watch_timeout_only_by_pending_timeout() {
        let t = Instant::now();
        let unsched = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient cpu."}]});
        let mut w = RunWatch::new(
            Limits {
                pod_start: Some(Duration::from_secs(5)),
                ..Limits::default()
            },
            t,
        );
        w.on_pod(pod("p1", unsched.clone()), t);
        assert!(w.on_tick(t + Duration::from_secs(3600)).is_empty());
        let mut w = RunWatch::new(
            Limits {
                pod_start: Some(Duration::from_secs(5)),
                pending: Some(Duration::from_secs(30)),
                ..Limits::default()
            },
            t,
        );
        w.on_pod(pod("p1", unsched), t);
        assert!(w.on_tick(t + Duration::from_secs(29)).is_empty());
        let a = w.on_tick(t + Duration::from_secs(30));
        let [Action::DeleteJobAndFinish(o)] = &a[..] else {
            panic!("{a:?}")
        };
        assert!(
            o.detail
                .as_deref()
                .unwrap()
                .contains("Pod is unschedulable")
        );
    }

    #[test]
    fn job_watch_timeout_counts_from_pod_start() {
        let t = Instant::now();
        let mut w = RunWatch::new(
            Limits {
                job_run: Some(Duration::from_secs(10)),
                ..Limits::default()
            },
            t,
        );
        assert_eq!(w.next_deadline(), None, "no pod started yet");
        w.on_pod(pod("p1", json!({"phase": "Running", "containerStatuses": container(json!({"running": {"startedAt": "2026-01-01T00:00:01Z"}}))})), t + Duration::from_secs(100));
        assert_eq!(w.next_deadline(), Some(t + Duration::from_secs(110)));
        let a = w.on_tick(t + Duration::from_secs(110));
        assert!(
            matches!(&a[..], [Action::DeleteJobAndFinish(o)] if o.detail.as_deref().unwrap().contains("job_watch_timeout_seconds"))
        );
    }

    #[test]
    fn a_job_deleted_after_its_pod_succeeded_succeeded() {
        let t = Instant::now();
        let mut w = RunWatch::new(Limits::default(), t);
        w.on_job(job(json!([])), t);
        w.on_pod(
            pod(
                "p1",
                json!({"phase": "Succeeded", "containerStatuses": container(json!({"terminated": {"exitCode": 0}}))}),
            ),
            t,
        );
        assert_eq!(
            w.on_job_deleted(),
            vec![Action::Finish(Outcome {
                status_code: 0,
                detail: None
            })]
        );
    }

    #[test]
    fn deleted_job_is_checked_then_reported() {
        let t = Instant::now();
        let mut w = RunWatch::new(Limits::default(), t);
        w.on_job(job(json!([])), t);
        assert_eq!(w.on_job_deleted(), vec![Action::CheckJobDeleted]);
        assert_eq!(
            w.job_deleted_confirmed(),
            Action::Finish(Outcome {
                status_code: -1,
                detail: Some("Kubernetes job was deleted".into())
            })
        );
    }

    #[test]
    fn diagnoses_are_logged_once_per_change() {
        let t = Instant::now();
        let mut w = RunWatch::new(Limits::default(), t);
        let p = pod(
            "p1",
            json!({"phase": "Pending", "containerStatuses": container(json!({"waiting": {"reason": "ErrImagePull"}}))}),
        );
        assert_eq!(
            w.on_pod(p.clone(), t)
                .iter()
                .filter(|a| matches!(a, Action::Log(_)))
                .count(),
            1
        );
        assert_eq!(
            w.on_pod(p, t)
                .iter()
                .filter(|a| matches!(a, Action::Log(_)))
                .count(),
            0
        );
        let p2 = pod(
            "p1",
            json!({"phase": "Pending", "containerStatuses": container(json!({"waiting": {"reason": "ImagePullBackOff"}}))}),
        );
        assert_eq!(
            w.on_pod(p2, t)
                .iter()
                .filter(|a| matches!(a, Action::Log(_)))
                .count(),
            0,
            "the same problem, another reason"
        );
        let p3 = pod(
            "p1",
            json!({"phase": "Pending", "containerStatuses": container(json!({"waiting": {"reason": "CreateContainerConfigError"}}))}),
        );
        assert_eq!(
            w.on_pod(p3, t)
                .iter()
                .filter(|a| matches!(a, Action::Log(_)))
                .count(),
            1,
            "a new problem is logged"
        );
    }
}
