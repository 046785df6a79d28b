//! Claims and the claim timeout: the promise that lets any worker recover a claim whose
//! worker died before its infrastructure existed.
//!
//! A worker claims a flow run by getting Pending accepted. The claim is a lease of
//! `claim_timeout` (D), in two steps, each measured from the moment a proposal is *sent*:
//!
//! 1. Pending → configuration and labels: the Submitting proposal is only sent within D of
//!    the Pending proposal; otherwise the run is given back to the queue.
//! 2. Submitting → infrastructure: no create attempt starts later than D after the
//!    Submitting proposal was sent ([`crate::runner::RunContext::check_claim`]); otherwise
//!    the run is given back.
//!
//! The server stamps each state after its proposal was sent, so a run whose *current*
//! Pending-type state is older than 2·D on the server's clock, and for which no
//! infrastructure exists, has no live submitter that will still create any: it is
//! abandoned and may be returned to the queue (`reconcile.rs`). The second D is the margin
//! for a request sent just before a deadline that is answered late.
//!
//! Infrastructure that appears later than that anyway (an API that held the create request
//! for longer than D) is checked: if the run was returned to the queue meanwhile, the late
//! infrastructure is removed at once instead of being reported.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::engine::Inner;
use super::propose::propose;
use crate::client::ClientError;
use crate::client::models::{FlowRun, SetStateStatus, State, StateCreate, StateType};
use crate::metrics::runner::RunOutcome;
use crate::worker::{FlowRunLogger, Worker};

/// The name of the Scheduled state a claim is returned to the queue with.
pub const RESCHEDULED: &str = "Rescheduled";

/// One accepted claim on a flow run, as its submitter knows it.
#[derive(Debug, Clone)]
pub(super) struct Claim {
    /// When the Pending proposal was sent: before the server stamped the state.
    sent_at: Instant,
    /// The states the claim put on the run (Pending, Submitting), to recognise them later.
    state_ids: Vec<Uuid>,
}

impl Claim {
    pub(super) fn new(sent_at: Instant, pending_state: Option<Uuid>) -> Self {
        Self {
            sent_at,
            state_ids: pending_state.into_iter().collect(),
        }
    }

    /// Records the Submitting state, which starts the claim's second step at `sent_at`.
    fn renew(&mut self, sent_at: Instant, id: Option<Uuid>) {
        self.sent_at = sent_at;
        self.state_ids.extend(id);
    }

    /// Whether `state` is one this claim put on the run (its Pending or Submitting).
    pub(super) fn created(&self, state: Uuid) -> bool {
        self.state_ids.contains(&state)
    }

    /// The id of the Pending state the claim created, when the server said.
    pub(super) fn pending_state(&self) -> Option<Uuid> {
        self.state_ids.first().copied()
    }

    /// No infrastructure may be created from this instant on.
    pub(super) fn deadline(&self, timeout: Duration) -> Instant {
        self.sent_at + timeout
    }

    /// Whether infrastructure reported at `at` came late enough that another worker may
    /// have returned the run to the queue first (recovery needs 2·D; checking from 1.5·D on
    /// leaves room for clocks that do not tick at quite the same rate).
    pub(super) fn is_late(&self, at: Instant, timeout: Duration) -> bool {
        at >= self.sent_at + timeout.mul_f64(1.5)
    }

    /// Whether `states` (the run's history, oldest first) show the run returned to the
    /// queue after this claim: a SCHEDULED state after the claim's last state.
    fn recovered_in(&self, states: &[crate::client::models::State]) -> Option<bool> {
        let last = states
            .iter()
            .rposition(|s| s.id.is_some_and(|id| self.state_ids.contains(&id)))?;
        Some(
            states[last + 1..]
                .iter()
                .any(|s| s.state_type == StateType::Scheduled),
        )
    }
}

/// What became of the Submitting proposal.
#[derive(Debug)]
pub(super) enum SubmittingOutcome {
    /// Go on and create the infrastructure; `accepted_at`: when Submitting was accepted
    /// (`None` when it was not, which Python ignores too).
    Proceed { accepted_at: Option<Instant> },
    /// The claim is over (timed out and given back, taken by another worker, or returned
    /// to the queue meanwhile): create nothing.
    Stop,
}

/// The state an unstarted claim goes back to the queue with: Scheduled for now (the server
/// stamps the time), so the next poll of any worker picks it up.
pub(super) fn rescheduled(message: impl Into<String>) -> StateCreate {
    StateCreate::new(StateType::Scheduled, RESCHEDULED).with_message(message)
}

impl<W: Worker> Inner<W> {
    /// Proposes Submitting within the claim's first step, renewing the claim for the create
    /// step.
    pub(super) async fn propose_submitting(
        &self,
        flow_run: &FlowRun,
        logger: &FlowRunLogger,
        claim: &mut Claim,
    ) -> SubmittingOutcome {
        let timeout = self.options.claim_timeout;
        if Instant::now() >= claim.deadline(timeout) {
            self.release_claim(flow_run, logger, Some(claim), &self.claim_expired_reason())
                .await;
            return SubmittingOutcome::Stop;
        }
        let sent_at = Instant::now();
        match propose(&self.client, flow_run.id, &StateCreate::submitting(), false).await {
            Ok(r) if r.status == SetStateStatus::Accept => {
                // A Submitting answered this late may have landed after the run was returned
                // to the queue (the server accepts Submitting from Scheduled).
                if claim.is_late(Instant::now(), timeout)
                    && self.claim_was_recovered(flow_run, claim).await
                {
                    logger.warning(format!(
                        "Flow run '{}' was returned to the queue while this worker was submitting it; not submitting",
                        flow_run.name
                    ));
                    self.metrics.finished(RunOutcome::Rescheduled);
                    return SubmittingOutcome::Stop;
                }
                claim.renew(sent_at, r.state.as_ref().and_then(|s| s.id));
                SubmittingOutcome::Proceed {
                    accepted_at: Some(Instant::now()),
                }
            }
            // An ABORT means another worker renamed the run to Submitting first: the Pending
            // proposals of both were accepted at once, and the run is theirs.
            Ok(r) if r.status == SetStateStatus::Abort => {
                logger.info(format!(
                    "Aborted submission of flow run '{}': another worker is submitting it ({})",
                    flow_run.id,
                    r.details.reason.unwrap_or_default()
                ));
                self.metrics.finished(RunOutcome::ClaimLost);
                SubmittingOutcome::Stop
            }
            // Other errors and refusals here are not worth failing the run for (Python
            // ignores them); the claim keeps running from its Pending proposal.
            Ok(r) => {
                tracing::debug!(flow_run_id = %flow_run.id, status = ?r.status, "Submitting not accepted");
                SubmittingOutcome::Proceed { accepted_at: None }
            }
            Err(e) => {
                tracing::debug!(flow_run_id = %flow_run.id, error = %e, "could not set Submitting state");
                SubmittingOutcome::Proceed { accepted_at: None }
            }
        }
    }

    pub(super) fn claim_expired_reason(&self) -> String {
        format!(
            "worker '{}' could not create its infrastructure within the claim timeout ({} s) and gave the run back to the queue",
            self.options.worker_name,
            self.options.claim_timeout.as_secs_f64()
        )
    }

    /// Gives an unstarted claim back to the queue (Scheduled, "Rescheduled"), but only while
    /// the run is still in a state this claim created: the server accepts SCHEDULED from
    /// any state, a final one included, so a run that another worker claimed and finished
    /// meanwhile would otherwise be queued (and run) again. There is no compare-and-set;
    /// the read right before the proposal leaves one request's window. Without the claim
    /// (it is not known), the run must at least still be Pending with no infrastructure.
    /// If the run cannot be read, it is left Pending: the reconciler of any worker returns
    /// it once the claim is 2·D old, after its own checks.
    pub(super) async fn release_claim(
        &self,
        flow_run: &FlowRun,
        logger: &FlowRunLogger,
        claim: Option<&Claim>,
        why: &str,
    ) {
        match self.client.read_flow_run(flow_run.id).await {
            Ok(current) => {
                let state = current.state.as_ref();
                let ours = match (claim, state.and_then(|s| s.id)) {
                    (Some(c), Some(id)) if c.pending_state().is_some() => c.created(id),
                    _ => {
                        current.state_type() == Some(&StateType::Pending)
                            && current.infrastructure_pid.is_none()
                    }
                };
                if !ours {
                    logger.info(format!(
                        "Flow run '{}' moved on while this worker was submitting it (now {}); leaving it as it is",
                        flow_run.name,
                        state.map_or_else(|| "none".to_owned(), State::display_name)
                    ));
                    self.metrics.finished(RunOutcome::ClaimLost);
                    return;
                }
            }
            Err(ClientError::NotFound(_)) => return,
            Err(e) => {
                logger.warning(format!(
                    "Could not check flow run '{}' before returning it to the queue ({e}); a worker of the pool will do so once the claim is {} s old",
                    flow_run.name,
                    (self.options.claim_timeout * 2).as_secs_f64()
                ));
                return;
            }
        }
        let message = format!("Returned to the queue: {why}.");
        match propose(&self.client, flow_run.id, &rescheduled(&message), false).await {
            Ok(r) if r.status == SetStateStatus::Accept => {
                self.metrics.finished(RunOutcome::Rescheduled);
                logger.warning(format!("Flow run '{}' {message}", flow_run.name));
            }
            Ok(r) => tracing::info!(flow_run_id = %flow_run.id, status = ?r.status,
                reason = ?r.details.reason, "the server kept the run's state instead of rescheduling it"),
            Err(ClientError::NotFound(_)) => {}
            Err(e) => logger.warning(format!(
                "Could not return flow run '{}' to the queue ({e}); a worker of the pool will do so once the claim is {} s old",
                flow_run.name,
                (self.options.claim_timeout * 2).as_secs_f64()
            )),
        }
    }

    /// Gives a claim back at its deadline (see [`Self::release_claim`]) and forgets the run.
    pub(super) async fn give_back_expired(
        &self,
        flow_run: &FlowRun,
        logger: &FlowRunLogger,
        claim: &Claim,
    ) {
        self.release_claim(flow_run, logger, Some(claim), &self.claim_expired_reason())
            .await;
        self.untrack(flow_run.id);
    }

    /// For infrastructure that appeared late ([`Claim::is_late`]): whether the run was
    /// returned to the queue after this claim. Unreadable history counts as "no" (the
    /// infrastructure is kept and reported as usual).
    pub(super) async fn claim_was_recovered(&self, flow_run: &FlowRun, claim: &Claim) -> bool {
        match self.client.read_flow_run_states(flow_run.id).await {
            Ok(states) => claim.recovered_in(&states).unwrap_or(false),
            Err(e) => {
                tracing::warn!(flow_run_id = %flow_run.id, error = %e,
                    "infrastructure appeared late and the run's history cannot be read; keeping it");
                false
            }
        }
    }

    /// Removes infrastructure whose claim another worker recovered while the create request
    /// was held, and forgets the run: it is someone else's now.
    pub(super) async fn discard_late_infrastructure(
        &self,
        flow_run: &FlowRun,
        logger: &FlowRunLogger,
        pid: &str,
        configuration: &W::Configuration,
    ) {
        logger.warning(format!(
            "Infrastructure '{pid}' was created after the claim timeout, and flow run '{}' had been returned to the queue meanwhile; removing it",
            flow_run.name
        ));
        if let Err(e) = self
            .worker
            .kill_infrastructure(pid, configuration, Duration::ZERO)
            .await
        {
            logger.error(format!("Could not remove late infrastructure '{pid}': {e}"));
        }
        self.untrack(flow_run.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::models::{RawFields, State};

    fn state(t: StateType, id: Uuid) -> State {
        State {
            id: Some(id),
            state_type: t,
            name: None,
            message: None,
            timestamp: None,
            state_details: RawFields::new(),
            extra: RawFields::new(),
        }
    }

    #[test]
    fn deadlines_count_from_the_proposal() {
        let t0 = Instant::now();
        let c = Claim::new(t0, None);
        let d = Duration::from_secs(10);
        assert_eq!(c.deadline(d), t0 + d);
        assert!(!c.is_late(t0 + Duration::from_secs(14), d));
        assert!(c.is_late(t0 + Duration::from_secs(15), d));
    }

    #[test]
    fn a_schedule_after_the_claim_means_recovered() {
        let (pending, submitting) = (Uuid::new_v4(), Uuid::new_v4());
        let mut c = Claim::new(Instant::now(), Some(pending));
        c.renew(Instant::now(), Some(submitting));
        let ours = vec![
            state(StateType::Scheduled, Uuid::new_v4()),
            state(StateType::Pending, pending),
            state(StateType::Pending, submitting),
        ];
        assert_eq!(c.recovered_in(&ours), Some(false));
        let mut taken = ours.clone();
        taken.push(state(StateType::Scheduled, Uuid::new_v4()));
        taken.push(state(StateType::Pending, Uuid::new_v4()));
        assert_eq!(c.recovered_in(&taken), Some(true));
        assert_eq!(
            Claim::new(Instant::now(), None).recovered_in(&ours),
            None,
            "a claim not in the history is not judged"
        );
    }
}
