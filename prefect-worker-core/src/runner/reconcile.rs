//! Reconciling the pool's unfinished flow runs with what this worker process tracks.
//!
//! Every `reconcile_interval` (the first pass right at startup) the runner reads the pool's
//! runs that are PENDING or CANCELLING (on the first pass also RUNNING and PAUSED) and, for
//! each one this process does not track:
//!
//! - **adoption** (first pass): a run with an `infrastructure_pid` whose labels name this
//!   worker is tracked again; its configuration is rebuilt from the pool's template, so its
//!   `cluster_config` says which cluster to watch;
//! - **abandoned claims**: a PENDING run without an `infrastructure_pid` whose state is
//!   older than twice the claim timeout (see `claim.rs`) is looked up on the infrastructure
//!   ([`Worker::find_infrastructure`]): if infrastructure exists, its identifier is
//!   recorded (and the run adopted when it is this worker's); if none does, the run is
//!   returned to the queue (Scheduled, "Rescheduled"); if the worker cannot tell, the run
//!   is crashed with a message that says why;
//! - **orphaned cancellations**: a CANCELLING run nobody is cancelling has its
//!   infrastructure stopped and is set Cancelled.
//!
//! Claims whose labels name *another* worker that the server reports ONLINE are left to
//! that worker. The age of a state is the larger of two lower bounds: the server's clock
//! (its `Date` header) minus the state's timestamp, and how long this process has seen
//! that very state; so neither clock skew nor a restart makes a claim look older than it is.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use tracing::Instrument as _;

use super::claim::rescheduled;
use super::engine::{Inner, Tracked};
use super::propose::{force_cancelled, propose, propose_crashed};
use super::{RunContext, final_state};
use crate::client::ClientError;
use crate::client::models::{FlowRun, SetStateStatus, StateType};
use crate::worker::{FoundInfrastructure, KillError, Worker};

/// The flow-run label naming the worker that claimed the run.
const WORKER_NAME_LABEL: &str = "prefect.worker.name";
/// Runs read per request.
const PAGE: usize = 200;

/// What the reconciler remembers between passes.
#[derive(Debug, Default)]
pub(super) struct ReconcileState {
    /// The startup adoption has been done (a pass got through).
    adopted: bool,
    /// State id → when this process first saw a run in that state without infrastructure.
    first_seen: HashMap<Uuid, Instant>,
}

/// The pool's workers the server reports ONLINE, read at most once per pass.
#[derive(Debug, Default)]
struct OnlineWorkers(Option<HashSet<String>>);

impl<W: Worker> Inner<W> {
    /// Reconciles every `reconcile_interval` (±30 %) until `stop`; the first pass at once.
    pub(super) async fn reconcile_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut state = ReconcileState::default();
        let mut failures = 0u32;
        let mut wait = Duration::ZERO;
        loop {
            if !wait.is_zero() && !Self::pause(wait, &stop).await {
                return;
            }
            if stop.is_cancelled() {
                return;
            }
            match self.reconcile(&mut state).await {
                // Until the pool is known (API down at startup), try again at poll pace.
                Ok(()) if self.work_pool().is_none() => wait = self.options.query_interval,
                Ok(()) => {
                    failures = 0;
                    wait = self.options.reconcile_interval;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    wait = Self::backoff(self.options.reconcile_interval, failures);
                    tracing::warn!(error = %e, failures, "reconciling the pool's unfinished flow runs failed; will retry");
                }
            }
        }
    }

    /// One pass. `Err` only when the pool's runs cannot be read at all.
    pub(super) async fn reconcile(
        self: &Arc<Self>,
        state: &mut ReconcileState,
    ) -> Result<(), ClientError> {
        if self.work_pool().is_none() {
            return Ok(()); // not synced yet
        }
        if !state.adopted {
            // Jobs found on the default cluster (by this worker's label), as before.
            self.adopt().await;
        }
        let mut types = vec!["PENDING", "CANCELLING"];
        if !state.adopted {
            types.extend(["RUNNING", "PAUSED"]);
        }
        let (runs, server_now) = self.unfinished_runs(&types).await?;
        let now = Instant::now();
        let seen: HashSet<Uuid> = runs
            .iter()
            .filter_map(|r| r.state.as_ref().and_then(|s| s.id))
            .collect();
        state.first_seen.retain(|id, _| seen.contains(id));
        let mut online = OnlineWorkers::default();
        for run in runs {
            let age = state_age(&run, server_now, now, &mut state.first_seen);
            self.reconcile_run(run, age, !state.adopted, &mut online)
                .await;
        }
        self.record_missing_pids().await;
        state.adopted = true;
        Ok(())
    }

    /// The pool's runs in `types` that this process does not track, with the server's clock.
    /// (Tracked runs are the worker's own business; dropping them page by page keeps a pass
    /// over a pool with thousands of running flow runs from holding them all at once.)
    async fn unfinished_runs(
        &self,
        types: &[&str],
    ) -> Result<(Vec<FlowRun>, Option<DateTime<Utc>>), ClientError> {
        let mut all = Vec::new();
        let mut server_now = None;
        for page in 0.. {
            let filter = json!({
                "flow_runs": {"state": {"type": {"any_": types}}},
                "work_pools": {"name": {"any_": [self.options.work_pool_name]}},
                "sort": "ID_DESC",
                "limit": PAGE,
                "offset": page * PAGE,
            });
            let (runs, date) = self
                .client
                .filter_flow_runs_with_server_time(&filter)
                .await?;
            // The earliest answer's clock: ages measured against it are lower bounds.
            server_now = server_now.or(date);
            let full = runs.len() == PAGE;
            {
                let tracked = self.lock_tracked();
                all.extend(runs.into_iter().filter(|r| !tracked.contains_key(&r.id)));
            }
            if !full {
                break;
            }
        }
        Ok((all, server_now))
    }

    async fn reconcile_run(
        self: &Arc<Self>,
        run: FlowRun,
        age: Duration,
        adopting: bool,
        online: &mut OnlineWorkers,
    ) {
        if self.lock_tracked().contains_key(&run.id) {
            return;
        }
        let Some(state_type) = run.state_type().cloned() else {
            return;
        };
        let owner = run.label(WORKER_NAME_LABEL);
        let mine = owner.as_deref() == Some(self.options.worker_name.as_str());
        let abandoned = age >= self.options.claim_timeout * 2;
        match (state_type, run.infrastructure_pid.clone()) {
            (StateType::Pending | StateType::Running | StateType::Paused, Some(pid))
                if adopting && mine =>
            {
                self.adopt_run(run, pid).await;
            }
            // With the cancellation loop off, Job teardown is the server's cleanup delivery's.
            (StateType::Cancelling, pid)
                if abandoned
                    && self.options.cancellation_enabled
                    && (mine || !self.is_online(owner.as_deref(), online).await) =>
            {
                self.cancel_orphan(run, pid).await;
            }
            (StateType::Pending, None) if abandoned => {
                if !mine && self.is_online(owner.as_deref(), online).await {
                    return; // its own worker is alive and will deal with it
                }
                if self.options.recover_claims {
                    self.recover_claim(run, owner.as_deref(), age).await;
                } else {
                    tracing::warn!(flow_run_id = %run.id, owner = ?owner, age_s = age.as_secs(),
                        "flow run has been Pending without infrastructure since its worker claimed it; recovery is off");
                }
            }
            _ => {}
        }
    }

    /// Whether `owner` is another worker of the pool the server reports ONLINE. Unknown
    /// owners (no label) are not; when the workers cannot be read, everyone is.
    async fn is_online(&self, owner: Option<&str>, online: &mut OnlineWorkers) -> bool {
        let Some(owner) = owner else {
            return false;
        };
        if online.0.is_none() {
            match self.client.read_workers(&self.options.work_pool_name).await {
                Ok(workers) => {
                    online.0 = Some(
                        workers
                            .into_iter()
                            .filter(|w| w.status.as_deref() == Some("ONLINE"))
                            .map(|w| w.name)
                            .collect(),
                    );
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the pool's workers; treating them as online");
                    return true;
                }
            }
        }
        online.0.as_ref().is_some_and(|s| s.contains(owner))
    }

    /// Tracks a run whose infrastructure this worker created before a restart.
    async fn adopt_run(self: &Arc<Self>, run: FlowRun, pid: String) {
        match self.build_configuration(&run).await {
            Ok((configuration, _)) => {
                let logger = self.logs.logger(run.id);
                self.resume_tracking(run, pid, configuration, logger);
            }
            Err(e) => {
                self.logs.logger(run.id).warning(format!(
                    "Cannot resume tracking of infrastructure '{pid}': {e}"
                ));
            }
        }
    }

    /// Starts waiting on `pid` for `run` (already created), unless this process already
    /// tracks the run. Used for every adoption.
    pub(super) fn resume_tracking(
        self: &Arc<Self>,
        run: FlowRun,
        pid: String,
        configuration: W::Configuration,
        logger: crate::runner::FlowRunLogger,
    ) {
        {
            let mut tracked = self.lock_tracked();
            if tracked.contains_key(&run.id) {
                return;
            }
            tracked.insert(
                run.id,
                Tracked {
                    configuration: Some(Arc::new(
                        self.worker
                            .configuration_to_keep(&configuration)
                            .unwrap_or_else(|| configuration.clone()),
                    )),
                    infrastructure_pid: Some(pid.clone()),
                    pid_recorded: run.infrastructure_pid.as_deref() == Some(pid.as_str()),
                    cancelling: false,
                },
            );
        }
        let limit_permit = self
            .limiter
            .as_ref()
            .and_then(|l| l.clone().try_acquire_owned().ok());
        tracing::info!(flow_run_id = %run.id, infrastructure_pid = %pid, "resuming tracking of flow run '{}'", run.name);
        let (mut ctx, _started) = RunContext::new(logger.clone(), self.client.clone());
        ctx.started(pid.clone());
        let me = self.clone();
        let span = super::flow_run_logs::flow_run_span(run.id);
        self.runs.spawn(
            async move {
                let _limit = limit_permit;
                let result = tokio::select! {
                    r = me.worker.resume(&run, &pid, configuration, ctx) => Some(r),
                    () = me.stop_runs.cancelled() => None,
                };
                if let Some(r) = result {
                    if matches!(&r, Ok(w) if w.status_code == 0) {
                        me.settle_exit_zero(&run, &pid, &logger).await;
                    }
                    me.finish(&run, &logger, r).await;
                }
            }
            .instrument(span),
        );
    }

    /// An adopted run whose infrastructure exited 0: its engine should have reported a final
    /// state. If one was recorded in the run's current attempt but a later proposal hid it,
    /// it is restored; if none was, the run is crashed (left alone it would stay Pending or
    /// Running forever, and be adopted again on every pass if its pid is not recorded).
    async fn settle_exit_zero(
        &self,
        run: &FlowRun,
        pid: &str,
        logger: &crate::runner::FlowRunLogger,
    ) {
        // One read serves both: the hidden end's check and the crash's. (A final state
        // committed after it makes the server abort the crash proposal.)
        let current = match self.client.read_flow_run(run.id).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(flow_run_id = %run.id, error = %e, "cannot check an adopted run's end");
                return;
            }
        };
        match final_state::restore_hidden_final_state(&self.client, &current).await {
            Ok(Some(done)) => {
                logger.warning(format!(
                    "Flow run '{}' had finished ({}) but did not show it; restored",
                    run.name,
                    done.display_name()
                ));
                return;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(flow_run_id = %run.id, error = %e, "cannot check an adopted run's end");
                return;
            }
        }
        if current
            .state_type()
            .is_some_and(|t| matches!(t, StateType::Pending | StateType::Running))
        {
            let state = current
                .state
                .as_ref()
                .map_or_else(String::new, crate::client::models::State::display_name);
            let message = format!(
                "Flow run infrastructure '{pid}' exited with status code 0, but the flow run is still {state}: its engine did not report a final state. Check the container's command and logs."
            );
            propose_crashed(&self.client, run, &message, logger).await;
        }
    }

    /// Retries the `infrastructure_pid` PATCH of tracked runs where it failed.
    async fn record_missing_pids(&self) {
        let missing: Vec<(Uuid, String)> = self
            .lock_tracked()
            .iter()
            .filter(|(_, t)| !t.pid_recorded)
            .filter_map(|(id, t)| t.infrastructure_pid.clone().map(|p| (*id, p)))
            .collect();
        for (id, pid) in missing {
            if self.client.set_infrastructure_pid(id, &pid).await.is_ok()
                && let Some(t) = self.lock_tracked().get_mut(&id)
            {
                t.pid_recorded = true;
            }
        }
    }

    /// A claim left Pending without an `infrastructure_pid` for at least twice the claim
    /// timeout: no live worker will create its infrastructure any more.
    async fn recover_claim(self: &Arc<Self>, run: FlowRun, owner: Option<&str>, age: Duration) {
        let logger = self.logs.logger(run.id);
        let claimant = owner.map_or_else(
            || "a worker that stopped before labelling it".to_owned(),
            |o| format!("worker '{o}'"),
        );
        let me = &self.options.worker_name;
        let since = format!(
            "it was claimed by {claimant} at least {} s ago and has no infrastructure_pid",
            age.as_secs()
        );
        let deployment = match run.deployment_id {
            None => None,
            Some(id) => match self.client.read_deployment(id).await {
                Ok(d) => Some(d),
                Err(ClientError::NotFound(_)) => {
                    let msg = format!("Deployment {id} no longer exists, cancelled run.");
                    if let Err(e) = force_cancelled(&self.client, &run, &msg).await {
                        tracing::warn!(flow_run_id = %run.id, error = %e, "cannot cancel an abandoned claim");
                    }
                    return;
                }
                Err(e) => {
                    tracing::debug!(flow_run_id = %run.id, error = %e, "abandoned claim: deployment unreadable; next pass");
                    return;
                }
            },
        };
        let configuration = match self.configuration_for(&run, deployment.as_ref()).await {
            Ok((c, _flow)) => c,
            Err(f) if f.transient => {
                tracing::debug!(flow_run_id = %run.id, error = %f, "abandoned claim: configuration unreadable; next pass");
                return;
            }
            Err(f) => {
                let message = format!(
                    "Worker '{me}' cannot return this flow run to the queue: {since}, and its job configuration cannot be built to check whether infrastructure exists for it: {f}. Fix the configuration, make sure no infrastructure runs for it, then run it again."
                );
                propose_crashed(&self.client, &run, &message, &logger).await;
                return;
            }
        };
        // Still the same abandoned claim? (Read right before looking and acting, so the
        // window in which a change goes unseen is as short as it can be.)
        let current = match self.client.read_flow_run(run.id).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(flow_run_id = %run.id, error = %e, "abandoned claim: run unreadable; next pass");
                return;
            }
        };
        let same = |r: &FlowRun| r.state.as_ref().and_then(|s| s.id);
        if same(&current) != same(&run) || current.infrastructure_pid.is_some() {
            return;
        }
        match self
            .worker
            .find_infrastructure(&current, &configuration)
            .await
        {
            Err(e) => {
                tracing::warn!(flow_run_id = %run.id, error = %e, "abandoned claim: cannot look for its infrastructure; next pass");
            }
            Ok(FoundInfrastructure::Exists(pid)) => {
                // Created, but its worker stopped before recording it.
                if let Err(e) = self.client.set_infrastructure_pid(run.id, &pid).await {
                    tracing::warn!(flow_run_id = %run.id, error = %e, "cannot record infrastructure_pid");
                    return;
                }
                logger.info(format!(
                    "Worker '{me}' found infrastructure '{pid}' for flow run '{}', claimed by {claimant}, and recorded it",
                    run.name
                ));
                if owner == Some(me.as_str()) {
                    let mut current = current;
                    current.infrastructure_pid = Some(pid.clone());
                    self.resume_tracking(current, pid, configuration, logger);
                }
            }
            Ok(FoundInfrastructure::Unknown) => {
                let message = format!(
                    "Worker '{me}' cannot return this flow run to the queue: {since}, and this worker type cannot look up infrastructure to prove none exists. Crashed rather than risk running it twice; run it again if no infrastructure is running for it."
                );
                propose_crashed(&self.client, &run, &message, &logger).await;
            }
            Ok(FoundInfrastructure::Absent) => {
                let message = format!(
                    "Returned to the queue by worker '{me}': {since}, and no infrastructure exists for it (its worker stopped or lost contact while submitting it)."
                );
                match propose(&self.client, run.id, &rescheduled(&message), false).await {
                    Ok(r) if r.status == SetStateStatus::Accept => {
                        logger.warning(format!("Flow run '{}': {message}", run.name));
                    }
                    Ok(r) => tracing::info!(flow_run_id = %run.id, status = ?r.status,
                        "the server kept the abandoned claim's state"),
                    Err(e) => tracing::warn!(flow_run_id = %run.id, error = %e,
                        "cannot return an abandoned claim to the queue; next pass"),
                }
            }
        }
    }

    /// A CANCELLING run nobody is cancelling: stop its infrastructure, then set Cancelled.
    async fn cancel_orphan(self: &Arc<Self>, run: FlowRun, pid: Option<String>) {
        let logger = self.logs.logger(run.id);
        let configuration = match self.build_configuration(&run).await {
            Ok((c, _)) => c,
            Err(e) if e.transient => return,
            Err(e) => {
                let msg = format!(
                    "Flow run was cancelled; its infrastructure could not be looked up because its job configuration cannot be built: {e}"
                );
                if let Err(e) = force_cancelled(&self.client, &run, &msg).await {
                    tracing::warn!(flow_run_id = %run.id, error = %e, "cannot cancel");
                }
                return;
            }
        };
        let pid = match pid {
            Some(p) => Some(p),
            None => match self.worker.find_infrastructure(&run, &configuration).await {
                Ok(FoundInfrastructure::Exists(p)) => Some(p),
                Ok(_) => None,
                Err(_) => return,
            },
        };
        let message = match &pid {
            None => "Flow run was cancelled by the worker; it had no infrastructure.".to_owned(),
            Some(pid) => match self
                .worker
                .kill_infrastructure(pid, &configuration, Duration::from_secs(30))
                .await
            {
                Ok(()) => {
                    logger.info(format!(
                        "Stopped infrastructure '{pid}' of cancelled flow run '{}'",
                        run.name
                    ));
                    "Flow run was cancelled by the worker; its infrastructure was stopped."
                        .to_owned()
                }
                Err(KillError::NotFound(detail)) => format!(
                    "Flow run was cancelled by the worker; its infrastructure was not found ({detail})."
                ),
                Err(e) => {
                    logger.warning(format!("Cannot kill infrastructure: {e}"));
                    return;
                }
            },
        };
        match force_cancelled(&self.client, &run, &message).await {
            Ok(()) => logger.info(format!("Cancelled flow run '{}'", run.id)),
            Err(e) => logger.error(format!(
                "Failed to mark flow run '{}' as cancelled: {e}",
                run.id
            )),
        }
    }
}

/// How long `run` has certainly been in its current state: the larger of the server's
/// clock minus the state's timestamp and how long this process has seen the state.
fn state_age(
    run: &FlowRun,
    server_now: Option<DateTime<Utc>>,
    now: Instant,
    first_seen: &mut HashMap<Uuid, Instant>,
) -> Duration {
    let Some(state) = &run.state else {
        return Duration::ZERO;
    };
    let observed = state
        .id
        .map(|id| now.saturating_duration_since(*first_seen.entry(id).or_insert(now)))
        .unwrap_or_default();
    let on_server = match (server_now, state.timestamp.as_deref()) {
        (Some(server_now), Some(ts)) => DateTime::parse_from_rfc3339(ts)
            .ok()
            .and_then(|t| (server_now - t.with_timezone(&Utc)).to_std().ok())
            .unwrap_or_default(),
        _ => Duration::ZERO,
    };
    observed.max(on_server)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(state_id: Uuid, timestamp: &str) -> FlowRun {
        serde_json::from_value(json!({
            "id": Uuid::new_v4(), "flow_id": Uuid::new_v4(),
            "state": {"id": state_id, "type": "PENDING", "timestamp": timestamp, "state_details": {}}
        }))
        .unwrap()
    }

    #[test]
    fn age_is_the_larger_lower_bound() {
        let id = Uuid::new_v4();
        let r = run(id, "2030-01-01T00:00:00.500000Z");
        let mut seen = HashMap::new();
        let t0 = Instant::now();
        let server = DateTime::parse_from_rfc3339("2030-01-01T00:01:00Z")
            .unwrap()
            .with_timezone(&Utc);
        // The server says 59.5 s; this process just saw it.
        let a = state_age(&r, Some(server), t0, &mut seen);
        assert_eq!(a, Duration::from_millis(59_500));
        // Without the server's clock, only what this process saw counts.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(
            state_age(&r, None, later, &mut seen),
            Duration::from_secs(5)
        );
        // A server clock behind the state (skew) counts as zero, not negative.
        let behind = DateTime::parse_from_rfc3339("2029-12-31T23:59:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            state_age(&r, Some(behind), later, &mut seen),
            Duration::from_secs(5)
        );
    }
}
