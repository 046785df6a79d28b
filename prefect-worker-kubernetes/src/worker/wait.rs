//! Waiting for one Job to finish: feeds the shared tracker's observations to the run's
//! [`RunWatch`] and carries out what it decides (log, propose `InfrastructurePending`,
//! delete the Job, forward crash logs, report the outcome).

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PropagationPolicy};
use prefect_worker_core::client::models::{FlowRun, StateCreate, StateType};
use prefect_worker_core::runner::{Level, RunContext, final_state};
use prefect_worker_core::worker::WorkerResult;
use tokio::sync::watch;

use super::KubernetesWorker;
use super::logs::{forward_crash_logs, stream_output};
use crate::diagnosis::DiagnosisLevel;
use crate::index_objects::IndexedJob;
use crate::run_watch::{Action, Limits, Outcome, RunWatch};
use crate::tracker::{Observation, Subscription, Tracker, WatchKey};

/// A Job without a pod for this long asks for its FailedCreate events (the namespace's
/// shared events watch, `job_events`): pods normally appear well within it, so most runs
/// never need events.
const EVENTS_AFTER: Duration = Duration::from_secs(3);
/// How long after this worker's accepted `Submitting` the run's state counts as known
/// (PENDING) for the `InfrastructurePending` proposal.
const KNOWN_STATE_WINDOW: Duration = Duration::from_secs(10);
/// While the shared watch has not shown the Job yet, it is read directly this often: a Job
/// deleted before the watch ever saw it would otherwise be waited on forever.
const UNSEEN_JOB_EVERY: Duration = Duration::from_secs(5);

/// One Job being waited on.
pub(super) struct JobRef {
    pub client: Client,
    pub key: WatchKey,
    pub name: String,
    pub stream_output: bool,
    pub limits: Limits,
    /// When this worker created the Job (`None` for adopted Jobs): the start of the pod
    /// start latency.
    pub created: Option<Instant>,
}

impl JobRef {
    /// The shared watch's changes to this Job, from now on (and what it already knows).
    pub(super) fn subscribe(&self, tracker: &Tracker) -> Subscription {
        tracker.subscribe(&self.key, &self.client, &self.name)
    }
}

impl KubernetesWorker {
    /// Waits for the Job to end, from `subscription` (taken with [`JobRef::subscribe`] as
    /// soon as the Job is known, so that no change is missed before the wait starts).
    pub(super) async fn wait_for_job(
        &self,
        flow_run: &FlowRun,
        job: JobRef,
        mut subscription: Subscription,
        ctx: &RunContext,
    ) -> WorkerResult {
        let identifier = format!("{}:{}", job.key.namespace, job.name);
        let mut state = RunWatch::new(job.limits, Instant::now());
        // Whether this wait proposed InfrastructurePending (whatever the answer: one lost in
        // transit may still have been applied).
        let mut infra_pending = false;
        let (pod_tx, pod_rx) = watch::channel(None::<String>);
        let streamer = job.stream_output.then(|| {
            tokio::spawn(stream_output(
                job.client.clone(),
                job.key.namespace.clone(),
                flow_run.name.clone(),
                pod_rx,
                self.output.clone(),
                self.log_streams.clone(),
                self.metrics.clone(),
            ))
        });
        // When the Job, seen without a pod, should ask for its events; and whether it has.
        let mut events_at: Option<Instant> = None;
        let mut events_asked = false;
        let mut unseen_tick = tokio::time::interval_at(
            tokio::time::Instant::now() + UNSEEN_JOB_EVERY,
            UNSEEN_JOB_EVERY,
        );
        unseen_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome = loop {
            let podless = state.job_uid().is_some() && !state.has_pods();
            if podless {
                events_at.get_or_insert_with(|| Instant::now() + EVENTS_AFTER);
            } else if events_at.take().is_some() && events_asked {
                events_asked = false;
                subscription.want_events(false);
            }
            let deadline = state.next_deadline();
            let actions = tokio::select! {
                obs = subscription.observations.recv() => match obs {
                    Some(Observation::Job(j)) => state.on_job(j, Instant::now()),
                    Some(Observation::JobDeleted) => state.on_job_deleted(),
                    Some(Observation::Pod(p)) => {
                        let name = Some(p.name.to_string());
                        let was_started = state.has_started();
                        let actions = state.on_pod(p, Instant::now());
                        if let (false, true, Some(m), Some(created)) =
                            (was_started, state.has_started(), &self.metrics, job.created)
                        {
                            m.pod_started(created.elapsed());
                        }
                        if state.has_started() || pod_tx.borrow().is_none() {
                            pod_tx.send_replace(name);
                        }
                        actions
                    }
                    Some(Observation::PodDeleted(name)) => { state.on_pod_deleted(&name); Vec::new() }
                    Some(Observation::JobEvent(e)) => state.on_job_event(Event::clone(&e), Instant::now()),
                    // The tracker is shutting down (worker teardown): stop waiting quietly.
                    None => return WorkerResult { identifier, status_code: 0, detail: None },
                },
                () = sleep_until(deadline) => state.on_tick(Instant::now()),
                _ = unseen_tick.tick(), if state.job_uid().is_none() => {
                    let jobs: Api<Job> = Api::namespaced(job.client.clone(), &job.key.namespace);
                    match jobs.get_opt(&job.name).await {
                        Ok(Some(j)) => state.on_job(IndexedJob::from(&j), Instant::now()),
                        Ok(None) => state.on_job_deleted(),
                        Err(e) => { tracing::debug!(error = %e, "cannot read the job directly"); Vec::new() }
                    }
                }
                () = sleep_until(events_at), if podless && !events_asked => {
                    events_asked = true;
                    if !subscription.want_events(true) {
                        ctx.logger().named("prefect.flow_runs.observer").info(format!(
                            "Kubernetes job '{}' has no pod yet. Why (for example an exceeded quota) is in its FailedCreate events, which this worker may not read in namespace '{}' (RBAC: `list` and `watch` on `events`).",
                            job.name, job.key.namespace
                        ));
                    }
                    Vec::new()
                }
            };
            if let Some(outcome) = self
                .act(flow_run, &job, ctx, &mut state, actions, &mut infra_pending)
                .await
            {
                break outcome;
            }
        };
        drop(pod_tx);
        if infra_pending {
            restore_final_state(flow_run, ctx).await;
        }
        if let Some(s) = streamer {
            // Let the stream drain the last lines the container wrote.
            let _ = tokio::time::timeout(Duration::from_secs(2), s).await;
        }
        WorkerResult {
            identifier,
            status_code: outcome.status_code,
            detail: outcome.detail,
        }
    }

    /// Carries out `actions`; returns the outcome once the run is decided.
    async fn act(
        &self,
        flow_run: &FlowRun,
        job: &JobRef,
        ctx: &RunContext,
        state: &mut RunWatch,
        actions: Vec<Action>,
        infra_pending: &mut bool,
    ) -> Option<Outcome> {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Log(d) => {
                    if let Some(m) = &self.metrics {
                        m.diagnosed(d.category);
                    }
                    let level = match d.level {
                        DiagnosisLevel::Error => Level::Error,
                        DiagnosisLevel::Warning => Level::Warning,
                    };
                    ctx.logger()
                        .named("prefect.flow_runs.observer")
                        .log(level, d.message());
                }
                Action::ProposeInfrastructurePending => {
                    if self.propose_infrastructure_pending(flow_run, ctx).await {
                        *infra_pending = true;
                    }
                }
                Action::Finish(mut o) => {
                    if state.failure_needs_pods(&o) {
                        let pods: Api<Pod> =
                            Api::namespaced(job.client.clone(), &job.key.namespace);
                        match pods
                            .list(&ListParams::default().labels(&format!("job-name={}", job.name)))
                            .await
                        {
                            Ok(list) => o = state.explain_failure(&list.items).unwrap_or(o),
                            Err(e) => {
                                tracing::debug!(error = %e, "cannot read the failed Job's pods")
                            }
                        }
                    }
                    if o.status_code != 0 {
                        self.forward_logs(job, state, ctx).await;
                    }
                    return Some(o);
                }
                Action::DeleteJobAndFinish(o) => {
                    self.forward_logs(job, state, ctx).await;
                    let jobs: Api<Job> = Api::namespaced(job.client.clone(), &job.key.namespace);
                    let params = DeleteParams {
                        propagation_policy: Some(PropagationPolicy::Foreground),
                        grace_period_seconds: Some(0),
                        ..DeleteParams::default()
                    };
                    match jobs.delete(&job.name, &params).await {
                        Ok(_) => ctx.logger().info(format!(
                            "Deleted Kubernetes job '{}' in namespace '{}'",
                            job.name, job.key.namespace
                        )),
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => ctx.logger().warning(format!(
                            "Could not delete Kubernetes job '{}': {e}",
                            job.name
                        )),
                    }
                    return Some(o);
                }
                Action::CheckJobDeleted => {
                    if self
                        .replacement_exists(job, state.job_uid(), flow_run)
                        .await
                    {
                        // Someone (a rescheduled run) has a newer Job for this flow run; ours
                        // ending is not a crash.
                        return Some(Outcome {
                            status_code: 0,
                            detail: None,
                        });
                    }
                    self.forward_logs(job, state, ctx).await;
                    queue.push_back(state.job_deleted_confirmed());
                }
            }
        }
        None
    }

    async fn forward_logs(&self, job: &JobRef, state: &RunWatch, ctx: &RunContext) {
        if self.settings.forward_crashed_run_logs {
            let pods = state.pods_newest_first();
            forward_crash_logs(
                &job.client,
                &job.key.namespace,
                &pods,
                self.settings.crashed_run_log_tail_lines,
                ctx.logger(),
            )
            .await;
        }
    }

    /// Whether another Job of the same flow run (different uid) is active or succeeded.
    async fn replacement_exists(
        &self,
        job: &JobRef,
        uid: Option<&str>,
        flow_run: &FlowRun,
    ) -> bool {
        let jobs: Api<Job> = Api::namespaced(job.client.clone(), &job.key.namespace);
        let selector = format!("prefect.io/flow-run-id={}", flow_run.id);
        match jobs.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => list.items.iter().any(|j| {
                let other = match (j.metadata.uid.as_deref(), uid) {
                    (Some(a), Some(b)) => a != b,
                    _ => j.metadata.name.as_deref() != Some(job.name.as_str()),
                };
                let status = j.status.as_ref();
                let live = status
                    .is_some_and(|s| s.succeeded.unwrap_or(0) > 0 || s.active.unwrap_or(0) > 0);
                other && live
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot look for a replacement job");
                false
            }
        }
    }

    /// While the pod is Pending, show it in Prefect as `InfrastructurePending` (spec §6.1),
    /// unless the run has moved on. Returns whether a proposal was sent. (No local timeout,
    /// unlike Python's 5 s: a proposal abandoned by the client may still land on the server
    /// later, after the engine's final state, where nothing would undo it. Waiting on it
    /// only holds up this run's own wait.)
    ///
    /// Shortly after this worker's own `Submitting` was accepted, the run's state is known
    /// without reading it: it is PENDING, and the server's rules keep the proposal safe if
    /// it moved on meanwhile (`PreventPendingTransitions` aborts PENDING from RUNNING,
    /// CANCELLING, CANCELLED and from a PENDING of the same name; a PAUSED run may not go
    /// to PENDING). Only a run someone else finished or rescheduled within that window
    /// could be moved back, the same kind of window as the read-then-propose of Python's
    /// observer; a final state overwritten that way is restored when the Job ends
    /// (`restore_final_state`). Later (adopted runs, long pod start), the state is read
    /// first, as Python does. That saves one read per run in a burst, where the server is
    /// the bottleneck.
    async fn propose_infrastructure_pending(&self, flow_run: &FlowRun, ctx: &RunContext) -> bool {
        let client = ctx.client();
        let fresh = ctx
            .submitted_at()
            .is_some_and(|at| at.elapsed() <= KNOWN_STATE_WINDOW);
        if !fresh {
            let current = match client.read_flow_run(flow_run.id).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read flow run before proposing InfrastructurePending");
                    return false;
                }
            };
            let Some(s) = current.state.as_ref() else {
                return false;
            };
            if s.state_type != StateType::Pending
                || s.name.as_deref() == Some(INFRASTRUCTURE_PENDING)
            {
                return false;
            }
        }
        let state = StateCreate::infrastructure_pending(INFRASTRUCTURE_PENDING_MESSAGE);
        if let Err(e) = client.set_flow_run_state(flow_run.id, &state, false).await {
            tracing::debug!(error = %e, "InfrastructurePending proposal failed");
        }
        true
    }
}

const INFRASTRUCTURE_PENDING: &str = "InfrastructurePending";
const INFRASTRUCTURE_PENDING_MESSAGE: &str = "Kubernetes pod is pending.";

/// Undoes the one race of the InfrastructurePending proposal (Python's observer has it too):
/// the run is read as Pending, the engine in the pod then runs to its final state, and the
/// proposal lands after it — the server accepts PENDING after a final state (that is how
/// reruns work), so the finished run would show Pending forever (or be crashed by the
/// exit code of a flow that failed). Called when the Job has ended and this wait proposed
/// InfrastructurePending: a final state recorded in the run's current attempt is restored
/// (`prefect_worker_core::runner::final_state`).
async fn restore_final_state(flow_run: &FlowRun, ctx: &RunContext) {
    match final_state::restore_final_state(ctx.client(), flow_run).await {
        Ok(Some(done)) => ctx.logger().warning(format!(
            "Flow run '{}' finished while this worker marked it InfrastructurePending; its final state {} was restored",
            flow_run.name,
            done.display_name()
        )),
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "cannot check the run's final state after its Job ended"),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
