//! Submitting one flow run and reporting its outcome (spec §3.1), in Python's order:
//! deployment check → Pending → configuration → labels → Submitting → `Worker::run` →
//! `infrastructure_pid` → outcome.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use super::claim::{Claim, SubmittingOutcome};
use super::engine::Inner;
use super::exit_codes;
use super::propose::{PendingOutcome, force_cancelled, propose_crashed, propose_pending};
use super::shared_reads::SharedDeployment;
use crate::client::ClientError;
use crate::client::models::{Deployment, Flow, FlowRun, StateType};
use crate::events::Event;
use crate::job_config::{ConfigurationError, PrepareContext, resolve_for_flow_run};
use crate::metrics::runner::{CrashReason, RunOutcome};
use crate::worker::CLAIM_EXPIRED;
use crate::worker::{FlowRunLogger, RunContext, RunError, Worker, WorkerResult};

/// Why a configuration could not be built: a crash message's `<Type>: <message>`.
#[derive(Debug)]
pub(super) struct SubmitFailure {
    type_name: &'static str,
    message: String,
    /// The API could not answer (outage, 5xx, bad reply): asking again later may work.
    pub(super) transient: bool,
}

impl SubmitFailure {
    /// Something the configuration needs (the deployment) no longer exists.
    pub(super) fn is_not_found(&self) -> bool {
        self.type_name == "ObjectNotFound"
    }
}

impl std::fmt::Display for SubmitFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.type_name, self.message)
    }
}

impl From<ClientError> for SubmitFailure {
    fn from(e: ClientError) -> Self {
        let type_name = match e {
            ClientError::NotFound(_) => "ObjectNotFound",
            ClientError::Decode { .. } => "ValidationError",
            _ => "PrefectHTTPStatusError",
        };
        // A reply that could not be decoded may be a proxy's or a half-read one: try again.
        let transient = e.is_transient() || matches!(e, ClientError::Decode { .. });
        Self {
            type_name,
            message: e.to_string(),
            transient,
        }
    }
}

impl From<ConfigurationError> for SubmitFailure {
    fn from(e: ConfigurationError) -> Self {
        Self {
            type_name: e.type_name(),
            transient: matches!(
                e,
                ConfigurationError::Lookup(crate::job_config::LookupError::Api(_))
            ),
            message: e.to_string(),
        }
    }
}

/// What the steps before `run` hand over: the configuration, the submitted event, the
/// claim, and when Submitting was accepted (if it was).
type Prepared<C> = (C, Option<Event>, Claim, Option<Instant>);

/// Decrements the in-progress submission count when the submission phase ends, however it ends.
struct SubmittingGuard<'a>(Option<&'a tokio::sync::watch::Sender<usize>>);

impl SubmittingGuard<'_> {
    fn done(&mut self) {
        if let Some(tx) = self.0.take() {
            tx.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

impl Drop for SubmittingGuard<'_> {
    fn drop(&mut self) {
        self.done();
    }
}

impl<W: Worker> Inner<W> {
    /// Everything that happens to one claimed flow run until this worker is done with it.
    pub(super) async fn submit_and_run(
        self: Arc<Self>,
        flow_run: FlowRun,
        deployment: Option<SharedDeployment>,
        logger: FlowRunLogger,
    ) {
        let mut submitting = SubmittingGuard(Some(&self.submitting));
        let Ok(slot) = self.submissions.clone().acquire_owned().await else {
            return;
        };
        let mut slot = Some(slot);
        let claim_started = std::time::Instant::now();
        // Boxed: the preparation's requests are a large part of this task's state, which
        // would otherwise stay allocated for as long as the run is tracked.
        let (configuration, submitted, claim, submitted_at) = match Box::pin(
            self.prepare_submission(&flow_run, deployment.as_ref(), &logger),
        )
        .await
        {
            Ok(Some(c)) => c,
            Ok(None) => {
                self.untrack(flow_run.id);
                return;
            }
            Err(failure) => {
                logger.error(format!(
                    "Failed to submit flow run '{}' to infrastructure.",
                    flow_run.name
                ));
                let message = format!("Failed to submit flow run to infrastructure: {failure}");
                self.metrics.crashed(CrashReason::SubmissionFailed);
                propose_crashed(&self.client, &flow_run, &message, &logger).await;
                self.untrack(flow_run.id);
                return;
            }
        };
        drop(deployment);
        let configuration = Arc::new(configuration);
        if let Some(t) = self.lock_tracked().get_mut(&flow_run.id) {
            t.configuration = Some(configuration.clone());
        }
        // The claim timeout: past it, another worker may return the run to the queue, so
        // creating infrastructure now could run it twice.
        let deadline = claim.deadline(self.options.claim_timeout);
        if std::time::Instant::now() >= deadline {
            self.give_back_expired(&flow_run, &logger, &claim).await;
            return;
        }

        let (mut ctx, started) = RunContext::new(logger.clone(), self.client.clone());
        if let Some(at) = submitted_at {
            ctx.set_submitted_at(at);
        }
        let ctx = ctx.with_claim_deadline(deadline);
        let run = self
            .worker
            .run(&flow_run, W::Configuration::clone(&configuration), ctx);
        tokio::pin!(run);
        // Phase 1, not interrupted by shutdown: until the infrastructure exists (or the run
        // ends without it).
        let early = tokio::select! {
            r = &mut run => Some(r),
            pid = started => {
                if let Ok(pid) = pid {
                    if claim.is_late(std::time::Instant::now(), self.options.claim_timeout)
                        && self.claim_was_recovered(&flow_run, &claim).await
                    {
                        self.discard_late_infrastructure(&flow_run, &logger, &pid, &configuration).await;
                        return;
                    }
                    self.metrics.submitted(claim_started.elapsed());
                    // The slot bounds claims on their way to infrastructure: this one has
                    // arrived, so the next run's claim starts beside the pid PATCH, not
                    // after it (one round trip less per slot in a burst).
                    drop(slot.take());
                    self.on_started(&flow_run, &logger, pid.clone()).await;
                    self.emit_executed(submitted.as_ref(), &pid, 0);
                }
                None
            }
        };
        if let Some(Ok(r)) = &early {
            self.emit_executed(submitted.as_ref(), &r.identifier, r.status_code);
        }
        // The worker gave up creating infrastructure at the claim deadline: give the run
        // back, checked against this claim.
        if let Some(Err(e)) = &early
            && e.type_name == CLAIM_EXPIRED
        {
            self.give_back_expired(&flow_run, &logger, &claim).await;
            return;
        }
        // From here on the configuration is only needed to kill the infrastructure: the
        // tracked entry keeps what the worker says that needs, for as long as the run lasts.
        if early.is_none()
            && let Some(kept) = self.worker.configuration_to_keep(&configuration)
            && let Some(t) = self.lock_tracked().get_mut(&flow_run.id)
        {
            t.configuration = Some(Arc::new(kept));
        }
        drop(configuration);
        drop(slot);
        submitting.done();
        let result = match early {
            Some(r) => Some(r),
            // Phase 2: wait for the infrastructure to finish, unless shutting down (then it
            // keeps running and a restarted worker adopts it).
            None => tokio::select! {
                r = &mut run => Some(r),
                () = self.stop_runs.cancelled() => None,
            },
        };
        if let Some(r) = result {
            self.finish(&flow_run, &logger, r).await;
        }
    }

    /// Steps before `run`: the configuration, the submitted event, the claim, and when
    /// Submitting was accepted (if it was). `Ok(None)`: the run is not ours to submit
    /// (already logged).
    async fn prepare_submission(
        &self,
        flow_run: &FlowRun,
        shared_deployment: Option<&SharedDeployment>,
        logger: &FlowRunLogger,
    ) -> Result<Option<Prepared<W::Configuration>>, SubmitFailure> {
        // 1. Deployment existence check (one read per poll and deployment).
        let mut unreadable = None;
        let deployment = match (flow_run.deployment_id, shared_deployment) {
            (None, _) => None,
            (Some(id), shared) => match match shared {
                Some(s) => s.get(&self.client).await,
                None => self.client.read_deployment(id).await,
            } {
                Ok(d) => Some(d),
                // An answer that is not a deployment will not become one on the next poll:
                // claim the run and crash it with what was wrong, rather than retry forever.
                Err(e @ ClientError::Decode { .. }) => {
                    unreadable = Some(e);
                    None
                }
                Err(ClientError::NotFound(_)) => {
                    logger.error(format!(
                        "Deployment {id} no longer exists. Flow run {} will not be submitted for execution",
                        flow_run.id
                    ));
                    let msg = format!("Deployment {id} no longer exists, cancelled run.");
                    if let Err(e) = force_cancelled(&self.client, flow_run, &msg).await {
                        logger.error(format!("Failed to cancel flow run '{}': {e}", flow_run.id));
                    }
                    return Ok(None);
                }
                Err(e) => {
                    // Python lets this kill the worker; we leave the run Scheduled for the next poll.
                    logger.warning(format!(
                        "Could not read deployment {id} of flow run '{}' ({e}); it will be retried on the next poll",
                        flow_run.id
                    ));
                    return Ok(None);
                }
            },
        };
        // 2. Pending. The server accepts PENDING from a *finished* run (that is how reruns
        // work), so a run this poll saw as Scheduled that another worker has since claimed
        // and run to the end would be run again (Python has this race). No read before the
        // proposal (one request per run in a burst, where the server is the bottleneck):
        // the server aborts a Pending from a run being submitted, running or cancelled, and
        // `verify_claim` catches one that ran since the poll (its `run_count` grew), puts
        // its end back and stops.
        let sent_at = std::time::Instant::now();
        let mut claim = match propose_pending(&self.client, flow_run, logger).await {
            PendingOutcome::Accepted(id) => {
                self.metrics.claimed();
                Claim::new(sent_at, id)
            }
            PendingOutcome::NotSubmitted => return Ok(None),
        };
        if let Some(e) = unreadable {
            return Err(e.into());
        }
        // 3. Configuration.
        let (configuration, flow) = self
            .configuration_for(flow_run, deployment.as_ref())
            .await?;
        if !self.verify_claim(flow_run, &claim, logger).await {
            self.metrics.finished(RunOutcome::ClaimLost);
            return Ok(None);
        }
        let submitted = self.emit_submitted(flow_run, deployment.as_ref(), &flow);
        // 4. Labels.
        let pool = self.work_pool();
        let mut labels = serde_json::Map::new();
        labels.insert(
            "prefect.worker.name".into(),
            json!(self.options.worker_name),
        );
        labels.insert(
            "prefect.worker.type".into(),
            json!(self.worker.worker_type()),
        );
        labels.insert(
            "prefect.work-pool.name".into(),
            json!(self.options.work_pool_name),
        );
        if let Some(p) = &pool {
            labels.insert("prefect.work-pool.id".into(), json!(p.id.to_string()));
        }
        self.label_flow_run(flow_run, &labels).await?;
        // Confirm the claim once more right before Submitting: the server accepts Submitting
        // (a PENDING) from any state, a final one included, so a claim overtaken while the
        // labels were written (its rival already ran the run to the end) would otherwise
        // run it a second time. Seen under load in the two-runner test: the two Pending
        // proposals were accepted a second apart, the first check came before the second
        // was committed, and the labels PATCH took seconds.
        if !self.verify_claim(flow_run, &claim, logger).await {
            self.metrics.finished(RunOutcome::ClaimLost);
            return Ok(None);
        }
        // 5. Submitting, which also renews the claim for the create step (`claim.rs`).
        let submitted_at = match self.propose_submitting(flow_run, logger, &mut claim).await {
            SubmittingOutcome::Proceed { accepted_at } => accepted_at,
            SubmittingOutcome::Stop => return Ok(None),
        };
        Ok(Some((configuration, submitted, claim, submitted_at)))
    }

    /// PATCHes the worker's labels onto the run. Idempotent, so a server error (a 500 from a
    /// database busy with a burst, which Prefect's client does not retry) is retried a few
    /// times before it fails the submission: a run should not crash for the server's
    /// momentary trouble with a write that can simply be repeated.
    async fn label_flow_run(
        &self,
        flow_run: &FlowRun,
        labels: &serde_json::Map<String, Value>,
    ) -> Result<(), ClientError> {
        const ATTEMPTS: u32 = 4;
        let mut attempt = 1;
        loop {
            match self
                .client
                .update_flow_run_labels(flow_run.id, labels)
                .await
            {
                Err(ClientError::Server(e)) if attempt < ATTEMPTS => {
                    tracing::debug!(flow_run_id = %flow_run.id, error = %e, attempt, "labelling the flow run failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(250 << attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Whether the run is still in the Pending state this worker's claim created.
    ///
    /// The server checks a Pending proposal against the run's state without locking it,
    /// so two workers proposing at the same moment can both be accepted (seen in the
    /// two-runner test: both went on, and the slower one ran the run a second time after
    /// the other had completed it). Right before labelling the run and proposing
    /// Submitting, the run's current state must still be the one our proposal created:
    /// of two accepted claims only the later-written one passes, and a run that has moved
    /// on (Submitting, Running, Completed) is someone else's. A failed read does not stop
    /// the submission (the Submitting proposal still catches a second claimant).
    async fn verify_claim(
        &self,
        flow_run: &FlowRun,
        claim: &Claim,
        logger: &FlowRunLogger,
    ) -> bool {
        let Some(pending) = claim.pending_state() else {
            return true;
        };
        match self.client.read_flow_run(flow_run.id).await {
            Ok(current) => {
                let state = current.state.as_ref();
                if state.and_then(|s| s.id) == Some(pending) {
                    if current.run_count() <= flow_run.run_count() {
                        return true;
                    }
                    self.give_back_overtaken_run(flow_run, logger).await;
                    return false;
                }
                logger.info(format!(
                    "Aborted submission of flow run '{}': another worker claimed it at the same time (its state is now {})",
                    flow_run.id,
                    state.map_or_else(|| "none".to_owned(), crate::client::models::State::display_name)
                ));
                false
            }
            Err(ClientError::NotFound(_)) => false,
            Err(e) => {
                tracing::debug!(flow_run_id = %flow_run.id, error = %e, "cannot re-read the flow run to confirm the claim");
                true
            }
        }
    }

    /// Our claim is the run's current state, but the run has entered Running since it was
    /// polled: the Pending proposal was held up (a retry after a transport error, a busy
    /// server) until another worker had run the run to its end, and the server accepts
    /// PENDING from a final state. Submitting would run it a second time; stopping here
    /// would leave it Pending, hiding its end. Its final state is put back.
    async fn give_back_overtaken_run(&self, flow_run: &FlowRun, logger: &FlowRunLogger) {
        match super::final_state::restore_final_state(&self.client, flow_run).await {
            Ok(Some(done)) => logger.warning(format!(
                "Aborted submission of flow run '{}': it ran to {} on another worker while this worker's claim was in flight; its final state was restored",
                flow_run.id,
                done.display_name()
            )),
            Ok(None) => logger.warning(format!(
                "Aborted submission of flow run '{}': it has run since it was polled, on another worker",
                flow_run.id
            )),
            Err(e) => {
                logger.error(format!(
                    "Aborted submission of flow run '{}': it has run to its end on another worker while this worker's claim was in flight, and its final state could not be restored ({e}); it shows Pending until its final state is set again",
                    flow_run.id
                ));
            }
        }
    }

    /// Reads what the configuration needs (flow, deployment) and builds it.
    pub(super) async fn build_configuration(
        &self,
        flow_run: &FlowRun,
    ) -> Result<(W::Configuration, Option<Deployment>), SubmitFailure> {
        let deployment = match flow_run.deployment_id {
            Some(id) => Some(self.client.read_deployment(id).await?),
            None => None,
        };
        let (c, _) = self
            .configuration_for(flow_run, deployment.as_ref())
            .await?;
        Ok((c, deployment))
    }

    pub(super) async fn configuration_for(
        &self,
        flow_run: &FlowRun,
        deployment: Option<&Deployment>,
    ) -> Result<(W::Configuration, Arc<Flow>), SubmitFailure> {
        let flow = self.flows.get(&self.client, flow_run.flow_id).await?;
        let Some(pool) = self.work_pool() else {
            return Err(SubmitFailure {
                type_name: "RuntimeError",
                message: "the work pool is not known yet".into(),
                transient: true,
            });
        };
        let default_template;
        let template = if pool.base_job_template.is_empty() {
            default_template = match self.worker.default_base_job_template() {
                Value::Object(m) => m,
                _ => serde_json::Map::new(),
            };
            &default_template
        } else {
            &pool.base_job_template
        };
        // The id Prefect Cloud gave this worker so far (PREFECT__WORKER_ID in the job).
        let worker_id = self.worker_id();
        let ctx = PrepareContext {
            flow_run,
            deployment,
            flow: Some(flow.as_ref()),
            work_pool: &pool,
            worker_name: &self.options.worker_name,
            worker_id: worker_id.as_deref(),
            environment: &self.options.environment,
            versions: &self.options.versions,
        };
        let c = resolve_for_flow_run::<W::Configuration>(template, &ctx, &self.client).await?;
        Ok((c, flow))
    }

    async fn on_started(&self, flow_run: &FlowRun, logger: &FlowRunLogger, pid: String) {
        if let Some(t) = self.lock_tracked().get_mut(&flow_run.id) {
            t.infrastructure_pid = Some(pid.clone());
        }
        match self.client.set_infrastructure_pid(flow_run.id, &pid).await {
            Ok(()) => {
                if let Some(t) = self.lock_tracked().get_mut(&flow_run.id) {
                    t.pid_recorded = true;
                }
            }
            // Python's wording; the reconciler records it later (`Tracked::pid_recorded`).
            Err(e) => logger.error(format!(
                "An error occurred while setting the `infrastructure_pid` on flow run '{}'. The flow run will not be cancellable. ({e})",
                flow_run.id
            )),
        }
        logger.info(format!(
            "Flow run '{}' submitted to infrastructure",
            flow_run.name
        ));
    }

    /// Reports how the run's infrastructure ended and forgets the run.
    pub(super) async fn finish(
        &self,
        flow_run: &FlowRun,
        logger: &FlowRunLogger,
        result: Result<WorkerResult, RunError>,
    ) {
        let (cancelling, started) = self
            .lock_tracked()
            .get(&flow_run.id)
            .map_or((false, false), |t| {
                (t.cancelling, t.infrastructure_pid.is_some())
            });
        if cancelling {
            // The cancellation loop stopped this infrastructure and reports Cancelled itself.
            self.metrics.finished(RunOutcome::Cancelled);
            self.untrack(flow_run.id);
            return;
        }
        // A run that has moved on (finished, rescheduled by SIGTERM, paused, being cancelled)
        // is not ours to crash: its infrastructure ending is expected.
        let failed = !matches!(&result, Ok(r) if r.status_code == 0);
        if failed && started {
            match self.client.read_flow_run(flow_run.id).await {
                Ok(current) => {
                    if let Some(t) = current.state_type()
                        && (t.is_final()
                            || matches!(
                                t,
                                StateType::Scheduled | StateType::Paused | StateType::Cancelling
                            ))
                    {
                        tracing::info!(flow_run_id = %flow_run.id, state = %t, "infrastructure ended; the flow run is already {t}");
                        self.metrics.finished(RunOutcome::Failed);
                        self.untrack(flow_run.id);
                        return;
                    }
                    // Pending although its engine has run: a late InfrastructurePending (any
                    // worker's: adopters of one Job each propose one) landed after the
                    // engine's final state, which the server accepts. Put that end back
                    // rather than crash the run (seen in the replicas chaos run: a failed
                    // flow reported Crashed).
                    if current.state_type() == Some(&StateType::Pending)
                        && current.run_count() > 0
                        && let Ok(Some(done)) =
                            super::final_state::restore_hidden_final_state(&self.client, &current)
                                .await
                    {
                        logger.warning(format!(
                            "Flow run '{}' had finished ({}) but a later Pending proposal hid it; restored",
                            flow_run.name,
                            done.display_name()
                        ));
                        self.metrics.finished(RunOutcome::Failed);
                        self.untrack(flow_run.id);
                        return;
                    }
                }
                Err(ClientError::NotFound(_)) => {
                    self.metrics.finished(RunOutcome::Deleted);
                    self.untrack(flow_run.id);
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the flow run before reporting its end")
                }
            }
        }
        match result {
            Ok(r) if r.status_code == 0 => {
                self.metrics.finished(RunOutcome::Completed);
                tracing::info!(flow_run_id = %flow_run.id, identifier = %r.identifier, "infrastructure finished");
            }
            Ok(r) => {
                self.metrics.crashed(if r.status_code == -1 {
                    CrashReason::NoExitCode
                } else {
                    CrashReason::ExitCode
                });
                let message = exit_codes::crashed_message(r.status_code, r.detail.as_deref());
                propose_crashed(&self.client, flow_run, &message, logger).await;
                if r.status_code != -1 {
                    logger.info(exit_codes::explain(r.status_code).resolution);
                }
            }
            Err(e) if !started && e.type_name == CLAIM_EXPIRED => {
                self.release_claim(flow_run, logger, None, &self.claim_expired_reason())
                    .await;
            }
            Err(e) if !started => {
                self.metrics.crashed(CrashReason::SubmissionFailed);
                logger.error(format!(
                    "Failed to submit flow run '{}' to infrastructure.",
                    flow_run.name
                ));
                let message = format!(
                    "Failed to submit flow run to infrastructure: {}: {}",
                    e.type_name, e.message
                );
                propose_crashed(&self.client, flow_run, &message, logger).await;
            }
            Err(e) => {
                self.metrics.crashed(CrashReason::InfrastructureError);
                let message = format!(
                    "Flow run infrastructure failed: {}: {}",
                    e.type_name, e.message
                );
                logger.error(message.clone());
                propose_crashed(&self.client, flow_run, &message, logger).await;
            }
        }
        self.untrack(flow_run.id);
    }

    pub(super) fn untrack(&self, id: uuid::Uuid) {
        self.lock_tracked().remove(&id);
    }
}
