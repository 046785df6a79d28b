//! Cancelling flow runs whose infrastructure this worker started (better than Python's
//! worker, which leaves running Jobs behind: upstream issue #21616).
//!
//! Every cancellation poll interval, the runner asks which of its started runs are
//! CANCELLING (or the legacy CANCELLED-named-"Cancelling"), stops their infrastructure with
//! `kill_infrastructure`, then force-sets Cancelled.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::engine::Inner;
use super::propose::force_cancelled;
use crate::client::models::FlowRun;
use crate::worker::{KillError, Worker};

/// Grace period given to infrastructure being cancelled (and torn down by cleanup delivery).
pub(super) const KILL_GRACE: Duration = Duration::from_secs(30);

impl<W: Worker> Inner<W> {
    pub(super) async fn cancellation_loop(self: Arc<Self>, stop: CancellationToken) {
        while Self::pause(self.options.cancellation_poll_interval, &stop).await {
            if let Err(e) = self.cancel_cancelling_runs().await {
                tracing::warn!(error = %e, "looking up cancelling flow runs failed; will retry");
            }
        }
    }

    /// One cancellation pass.
    pub(super) async fn cancel_cancelling_runs(
        self: &Arc<Self>,
    ) -> Result<(), crate::client::ClientError> {
        let ids: Vec<String> = self
            .lock_tracked()
            .iter()
            .filter(|(_, t)| t.infrastructure_pid.is_some() && !t.cancelling)
            .map(|(id, _)| id.to_string())
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut found: Vec<FlowRun> = Vec::new();
        for state in [
            json!({"type": {"any_": ["CANCELLING"]}}),
            json!({"type": {"any_": ["CANCELLED"]}, "name": {"any_": ["Cancelling"]}}),
        ] {
            let filter = json!({
                "flows": null,
                "flow_runs": {"id": {"any_": ids}, "state": state},
                "task_runs": null, "deployments": null, "work_pools": null, "work_pool_queues": null,
                "sort": null, "limit": null, "offset": 0
            });
            found.extend(self.client.filter_flow_runs(&filter).await?);
        }
        for flow_run in found {
            let claimed = {
                let mut tracked = self.lock_tracked();
                match tracked.get_mut(&flow_run.id) {
                    Some(t) if !t.cancelling => match (&t.infrastructure_pid, &t.configuration) {
                        (Some(pid), Some(c)) => {
                            t.cancelling = true;
                            Some((pid.clone(), c.clone()))
                        }
                        _ => None,
                    },
                    _ => None,
                }
            };
            let Some((pid, configuration)) = claimed else {
                continue;
            };
            let me = self.clone();
            let span = super::flow_run_logs::flow_run_span(flow_run.id);
            self.runs.spawn(
                async move { me.cancel_one(flow_run, pid, configuration).await }.instrument(span),
            );
        }
        Ok(())
    }

    async fn cancel_one(
        &self,
        flow_run: FlowRun,
        pid: String,
        configuration: std::sync::Arc<W::Configuration>,
    ) {
        let logger = self.logs.logger(flow_run.id);
        let message = match self
            .worker
            .kill_infrastructure(&pid, &configuration, KILL_GRACE)
            .await
        {
            Ok(()) => {
                logger.info(format!(
                    "Stopped infrastructure '{pid}' of cancelled flow run '{}'",
                    flow_run.name
                ));
                "Flow run was cancelled by the worker; its infrastructure was stopped.".to_owned()
            }
            Err(KillError::NotFound(detail)) => {
                logger.info(format!(
                    "Infrastructure of cancelled flow run '{}' was already gone: {detail}",
                    flow_run.name
                ));
                format!(
                    "Flow run was cancelled by the worker; its infrastructure was not found ({detail})."
                )
            }
            Err(e) => {
                logger.warning(format!("Cannot kill infrastructure: {e}"));
                // Leave the state alone and try again on a later pass.
                if let Some(t) = self.lock_tracked().get_mut(&flow_run.id) {
                    t.cancelling = false;
                }
                return;
            }
        };
        match force_cancelled(&self.client, &flow_run, &message).await {
            Ok(()) => logger.info(format!("Cancelled flow run '{}'", flow_run.id)),
            Err(e) => logger.error(format!(
                "Failed to mark flow run '{}' as cancelled: {e}",
                flow_run.id
            )),
        }
    }
}
