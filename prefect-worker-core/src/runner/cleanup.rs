//! Cleanup delivery's handler (spec §5.3, Python's `CancellingTimeoutTeardownHandler`): the
//! server gave up on a CANCELLING run, marked it Cancelled, and asks a worker of the pool to
//! tear its infrastructure down. Any worker implementation gets this through
//! `Worker::kill_infrastructure`, the same call the cancellation loop makes. The handler
//! never changes the flow run's state: the server already did.

use std::sync::Arc;

use super::cancel::KILL_GRACE;
use super::engine::Inner;
use crate::channel::{CleanupOutcome, CleanupTarget};
use crate::client::ClientError;
use crate::worker::{KillError, Worker};

fn release(reason: &str) -> CleanupOutcome {
    CleanupOutcome::Release(reason.to_owned())
}

impl<W: Worker> Inner<W> {
    /// `cancelling_timeout_teardown.v1`: read the run, find its configuration, kill.
    pub(super) async fn cancelling_timeout_teardown(
        self: &Arc<Self>,
        target: &CleanupTarget,
    ) -> CleanupOutcome {
        let id = target.flow_run_id;
        let flow_run = match self.client.read_flow_run(id).await {
            Ok(r) => r,
            // Nothing left to tear down for.
            Err(ClientError::NotFound(_)) => return CleanupOutcome::Ack,
            Err(e) => {
                tracing::warn!(flow_run_id = %id, error = %e, "cleanup: cannot read the flow run");
                return release("handler_failed");
            }
        };
        let Some(pid) = target.infrastructure_pid.clone().filter(|p| !p.is_empty()) else {
            // No handle in the message: fine if the run never had infrastructure.
            let stored = flow_run
                .infrastructure_pid
                .as_deref()
                .is_some_and(|p| !p.is_empty());
            return if stored {
                release("missing_infrastructure_handle")
            } else {
                CleanupOutcome::Ack
            };
        };
        // A run this worker still tracks has the configuration it was submitted with; mark it
        // so its own task does not report the infrastructure's end. Others are rebuilt.
        let tracked = {
            let mut tracked = self.lock_tracked();
            tracked.get_mut(&id).and_then(|t| {
                let c = t.configuration.clone()?;
                let marked_here = !t.cancelling;
                t.cancelling = true;
                Some((c, marked_here))
            })
        };
        let marked_here = tracked.as_ref().is_some_and(|(_, m)| *m);
        let configuration = match tracked {
            Some((c, _)) => c,
            None => match self.build_configuration(&flow_run).await {
                Ok((c, _)) => std::sync::Arc::new(c),
                Err(f) if f.is_not_found() => return release("configuration_context_unavailable"),
                Err(f) => {
                    tracing::warn!(flow_run_id = %id, error = %f, "cleanup: cannot build the run's configuration");
                    return release("handler_failed");
                }
            },
        };
        let logger = self.logs.logger(id);
        let outcome = match self
            .worker
            .kill_infrastructure(&pid, &configuration, KILL_GRACE)
            .await
        {
            Ok(()) => {
                logger.info(format!(
                    "Stopped infrastructure '{pid}' of flow run '{}': the server cancelled the run after its cancelling timeout",
                    flow_run.name
                ));
                return CleanupOutcome::Ack;
            }
            Err(KillError::NotFound(detail)) => {
                tracing::debug!(flow_run_id = %id, %detail, "cleanup: infrastructure already gone");
                return CleanupOutcome::Ack;
            }
            Err(KillError::Unsupported(_)) => release("unsupported_worker_type"),
            Err(KillError::NotAvailable(e)) => {
                tracing::warn!(flow_run_id = %id, "Cannot kill infrastructure: {e}");
                release("infrastructure_not_available")
            }
            Err(KillError::Other(e)) => {
                tracing::warn!(flow_run_id = %id, "Cannot kill infrastructure: {e}");
                release("handler_failed")
            }
        };
        // Not stopped: the run's own task may report its end again.
        if marked_here && let Some(t) = self.lock_tracked().get_mut(&id) {
            t.cancelling = false;
        }
        outcome
    }
}
