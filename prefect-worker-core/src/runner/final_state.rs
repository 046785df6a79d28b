//! Runs whose infrastructure has ended but whose state says otherwise.
//!
//! The server has no compare-and-set on states, so a worker's read-then-propose (the
//! Kubernetes worker's InfrastructurePending) can land after the engine's final state —
//! the server accepts PENDING after a final state, as reruns need — and the finished run
//! shows Pending forever. Timestamps do not settle the order (a state is stamped when its
//! request is read, not when it is committed), so the rule is: a final state recorded since
//! the run's latest claim is the run's true end.

use crate::client::models::{FlowRun, State, StateCreate, StateType};
use crate::client::{ClientError, PrefectClient};

/// The latest final state in `states` (the run's history, oldest first) after its latest
/// claim (the last `Pending` or `Submitting` state), if any.
#[must_use]
pub fn final_state_since_claim(states: &[State]) -> Option<&State> {
    let claim = states.iter().rposition(|s| {
        s.state_type == StateType::Pending
            && matches!(s.name.as_deref(), Some("Pending" | "Submitting"))
    })?;
    states[claim + 1..]
        .iter()
        .rev()
        .find(|s| s.state_type.is_final())
}

/// If `flow_run`'s current state is not final although a final state was recorded since its
/// latest claim, proposes that final state again (forced). Returns the restored state.
pub async fn restore_final_state(
    client: &PrefectClient,
    flow_run: &FlowRun,
) -> Result<Option<State>, ClientError> {
    let current = client.read_flow_run(flow_run.id).await?;
    if current.state_type().is_none_or(StateType::is_final) {
        return Ok(None);
    }
    let states = client.read_flow_run_states(flow_run.id).await?;
    let Some(done) = final_state_since_claim(&states) else {
        return Ok(None);
    };
    let mut restore = StateCreate::new(done.state_type.clone(), done.display_name());
    restore.message = done.message.clone();
    restore.state_details = done.state_details.clone();
    restore.state_details.remove("transition_id");
    restore.data = done.extra.get("data").cloned().filter(|d| !d.is_null());
    client
        .set_flow_run_state(flow_run.id, &restore, true)
        .await?;
    Ok(Some(done.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: StateType, name: &str) -> State {
        State {
            id: Some(uuid::Uuid::new_v4()),
            state_type: t,
            name: Some(name.to_owned()),
            message: None,
            timestamp: None,
            state_details: serde_json::Map::new(),
            extra: serde_json::Map::new(),
        }
    }

    #[test]
    fn the_final_state_of_the_latest_claim_counts() {
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
            final_state_since_claim(&h).unwrap().name.as_deref(),
            Some("Completed")
        );
        // A final state of an earlier claim (a rerun) does not.
        let rerun = vec![
            s(Pending, "Pending"),
            s(Completed, "Completed"),
            s(Scheduled, "Scheduled"),
            s(Pending, "Pending"),
            s(Pending, "InfrastructurePending"),
        ];
        assert!(final_state_since_claim(&rerun).is_none());
        assert!(final_state_since_claim(&[]).is_none());
    }
}
