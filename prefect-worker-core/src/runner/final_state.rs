//! Runs whose infrastructure has ended but whose state says otherwise.
//!
//! The server has no compare-and-set on states, so a worker's read-then-propose (the
//! Kubernetes worker's InfrastructurePending) can land after the engine's final state —
//! the server accepts PENDING after a final state, as reruns need — and the finished run
//! shows Pending forever. A worker's claim can do the same: a Pending proposal sent while
//! the run was Scheduled and delayed (a retry after a transport error, a busy server) is
//! accepted after another worker ran the run to the end. Timestamps do not settle the
//! order (a state is stamped when its request is read, not when it is committed), and a
//! late claim is stamped after the final state it hides, so the rule is: a final state
//! recorded in the run's current attempt, since it last entered the queue (its latest
//! SCHEDULED-type state: Scheduled, Late, AwaitingRetry, Rescheduled), is the run's true
//! end. A rerun enters the queue again first, so an earlier attempt's end never counts.

use crate::client::models::{FlowRun, State, StateCreate, StateType};
use crate::client::{ClientError, PrefectClient};

/// The latest final state in `states` (the run's history, oldest first) of its current
/// attempt: after its latest SCHEDULED-type state (the whole history if it has none).
#[must_use]
pub fn final_state_of_current_attempt(states: &[State]) -> Option<&State> {
    let queued = states
        .iter()
        .rposition(|s| s.state_type == StateType::Scheduled)
        .map_or(0, |i| i + 1);
    states[queued..]
        .iter()
        .rev()
        .find(|s| s.state_type.is_final())
}

/// If `flow_run`'s current state is not final although a final state was recorded in its
/// current attempt ([`final_state_of_current_attempt`]), proposes that final state again
/// (forced). Returns the restored state.
///
/// An answer that is not the promised JSON (a proxy's error page with status 200, a
/// truncated body) is retried, 5 attempts over about 7 s: this is the last chance to undo
/// a late Pending, and a run left showing Pending after its end stays so until someone
/// notices. (Transport errors, 5xx and 429 are already retried by the client's own
/// policy, `client::retry`.)
pub async fn restore_final_state(
    client: &PrefectClient,
    flow_run: &FlowRun,
) -> Result<Option<State>, ClientError> {
    let mut delay = std::time::Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        let result = match client.read_flow_run(flow_run.id).await {
            Ok(current) => restore_hidden_final_state(client, &current).await,
            Err(e) => Err(e),
        };
        match result {
            Err(e @ ClientError::Decode { .. }) if attempt < 5 => {
                tracing::debug!(flow_run_id = %flow_run.id, error = %e, attempt, "restoring the final state failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// [`restore_final_state`] for a run just read (`current`).
pub async fn restore_hidden_final_state(
    client: &PrefectClient,
    current: &FlowRun,
) -> Result<Option<State>, ClientError> {
    if current.state_type().is_none_or(StateType::is_final) {
        return Ok(None);
    }
    let states = client.read_flow_run_states(current.id).await?;
    let Some(done) = final_state_of_current_attempt(&states) else {
        return Ok(None);
    };
    let mut restore = StateCreate::new(done.state_type.clone(), done.display_name());
    restore.message = done.message.clone();
    restore.state_details = done.state_details.to_map();
    restore.state_details.remove("transition_id");
    restore.data = done.extra.get("data").filter(|d| !d.is_null());
    client
        .set_flow_run_state(current.id, &restore, true)
        .await?;
    Ok(Some(done.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::models::RawFields;

    fn s(t: StateType, name: &str) -> State {
        State {
            id: Some(uuid::Uuid::new_v4()),
            state_type: t,
            name: Some(name.to_owned()),
            message: None,
            timestamp: None,
            state_details: RawFields::new(),
            extra: RawFields::new(),
        }
    }

    #[test]
    fn the_final_state_of_the_current_attempt_counts() {
        use StateType::*;
        // Stamped out of commit order: the final state sorts before the late proposal.
        let h = vec![
            s(Scheduled, "Scheduled"),
            s(Pending, "Pending"),
            s(Pending, "Submitting"),
            s(Running, "Running"),
            s(Completed, "Completed"),
            s(Pending, "InfrastructurePending"),
        ];
        assert_eq!(
            final_state_of_current_attempt(&h).unwrap().name.as_deref(),
            Some("Completed")
        );
        // A late claim of another worker, stamped after the end it hides (and its
        // Submitting), does not hide it.
        let overtaken = vec![
            s(Scheduled, "Scheduled"),
            s(Pending, "Pending"),
            s(Pending, "Submitting"),
            s(Pending, "InfrastructurePending"),
            s(Running, "Running"),
            s(Completed, "Completed"),
            s(Pending, "Pending"),
            s(Pending, "InfrastructurePending"),
        ];
        assert_eq!(
            final_state_of_current_attempt(&overtaken)
                .unwrap()
                .name
                .as_deref(),
            Some("Completed")
        );
        // A final state of an earlier attempt (a rerun, a run returned to the queue) does not.
        let rerun = vec![
            s(Pending, "Pending"),
            s(Completed, "Completed"),
            s(Scheduled, "Scheduled"),
            s(Pending, "Pending"),
            s(Pending, "InfrastructurePending"),
        ];
        assert!(final_state_of_current_attempt(&rerun).is_none());
        let retried = vec![
            s(Scheduled, "Scheduled"),
            s(Running, "Running"),
            s(Crashed, "Crashed"),
            s(Scheduled, "Rescheduled"),
            s(Pending, "Pending"),
            s(Running, "Running"),
        ];
        assert!(final_state_of_current_attempt(&retried).is_none());
        // No queue state at all: the whole history is the attempt.
        assert_eq!(
            final_state_of_current_attempt(&[
                s(Pending, "Pending"),
                s(Failed, "Failed"),
                s(Pending, "Pending")
            ])
            .unwrap()
            .name
            .as_deref(),
            Some("Failed")
        );
        assert!(final_state_of_current_attempt(&[]).is_none());
    }
}
