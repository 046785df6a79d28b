//! Proposing flow-run states the way Python's worker does (spec §3.3).

use std::time::Duration;

use uuid::Uuid;

use crate::client::models::{FlowRun, OrchestrationResult, SetStateStatus, StateCreate, StateType};
use crate::client::{ClientError, PrefectClient};
use crate::worker::FlowRunLogger;

/// Longest WAIT the worker honours in one step; the server asks again if it still wants to wait.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Proposes `state`, re-proposing after each WAIT for the delay the server asked for.
pub(crate) async fn propose(
    client: &PrefectClient,
    flow_run_id: Uuid,
    state: &StateCreate,
    force: bool,
) -> Result<OrchestrationResult, ClientError> {
    loop {
        let result = client.set_flow_run_state(flow_run_id, state, force).await?;
        if result.status != SetStateStatus::Wait {
            return Ok(result);
        }
        let delay = result
            .details
            .delay_seconds
            .filter(|d| d.is_finite() && *d > 0.0)
            .unwrap_or(1.0);
        tracing::debug!(%flow_run_id, delay, "server asked to wait before proposing again");
        tokio::time::sleep(Duration::from_secs_f64(delay).min(MAX_WAIT)).await;
    }
}

/// What became of a Pending proposal.
#[derive(Debug)]
pub(crate) enum PendingOutcome {
    /// Accepted, as the state with this id. The worker owns the run unless another
    /// worker's proposal was accepted at the same moment (see `Inner::verify_claim`).
    Accepted(Option<Uuid>),
    /// Someone else has it, or the server chose another state: do not submit.
    NotSubmitted,
}

/// `_propose_pending_state`: only an accepted PENDING lets the submission go on.
pub(crate) async fn propose_pending(
    client: &PrefectClient,
    flow_run: &FlowRun,
    logger: &FlowRunLogger,
) -> PendingOutcome {
    match propose(client, flow_run.id, &StateCreate::pending(), false).await {
        Ok(r) if r.status == SetStateStatus::Abort => {
            let reason = r.details.reason.unwrap_or_default();
            logger.info(format!(
                "Aborted submission of flow run '{}'. Server sent an abort signal: {reason}",
                flow_run.id
            ));
            PendingOutcome::NotSubmitted
        }
        Ok(r) => match r.state {
            Some(s) if s.state_type == StateType::Pending => PendingOutcome::Accepted(s.id),
            Some(s) => {
                logger.info(format!(
                    "Aborted submission of flow run '{}': Server returned a non-pending state '{}'",
                    flow_run.id, s.state_type
                ));
                PendingOutcome::NotSubmitted
            }
            None => {
                logger.info(format!(
                    "Aborted submission of flow run '{}': Server returned no state",
                    flow_run.id
                ));
                PendingOutcome::NotSubmitted
            }
        },
        Err(e) => {
            logger.error(format!(
                "Failed to update state of flow run '{}': {e}",
                flow_run.id
            ));
            PendingOutcome::NotSubmitted
        }
    }
}

/// `_propose_crashed_state`: an ABORT (the run is already final) and a deleted run are fine.
pub(crate) async fn propose_crashed(
    client: &PrefectClient,
    flow_run: &FlowRun,
    message: &str,
    logger: &FlowRunLogger,
) {
    match propose(client, flow_run.id, &StateCreate::crashed(message), false).await {
        Ok(r) if r.status == SetStateStatus::Abort => {
            tracing::debug!(flow_run_id = %flow_run.id, "crash report aborted: the run is already final");
        }
        Ok(r) => {
            if r.state
                .as_ref()
                .is_some_and(|s| s.state_type == StateType::Crashed)
            {
                logger.info(format!(
                    "Reported flow run '{}' as crashed: {message}",
                    flow_run.id
                ));
            }
        }
        Err(ClientError::NotFound(_)) => {
            tracing::debug!(flow_run_id = %flow_run.id, "flow run was deleted; nothing to crash");
        }
        Err(e) => logger.error(format!(
            "Failed to update state of flow run '{}': {e}",
            flow_run.id
        )),
    }
}

/// `_mark_flow_run_as_cancelled`: force Cancelled, keeping the current state's details.
pub(crate) async fn force_cancelled(
    client: &PrefectClient,
    flow_run: &FlowRun,
    message: &str,
) -> Result<(), ClientError> {
    let state = StateCreate::cancelled_from(flow_run.state.as_ref(), message);
    match propose(client, flow_run.id, &state, true).await {
        Ok(_) | Err(ClientError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
