//! The REST worker heartbeat (spec §2.2C), sent only while the worker channel is not
//! healthy. On Prefect Cloud it also asks for the worker's id (`return_id`, until one is
//! known) and sends the worker's metadata once; a 422 to the id request is retried once
//! without it.

use super::engine::Inner;
use crate::client::ClientError;
use crate::client::models::WorkerHeartbeat;
use crate::worker::Worker;

impl<W: Worker> Inner<W> {
    /// `POST /work_pools/{pool}/workers/heartbeat`.
    pub(super) async fn heartbeat(&self) -> Result<(), ClientError> {
        let cloud = self.client.is_cloud();
        let want_id = cloud && self.worker_id().is_none();
        let metadata = if cloud {
            self.pending_worker_metadata()
        } else {
            None
        };
        let mut body = WorkerHeartbeat {
            return_id: want_id,
            metadata: metadata.as_ref(),
            ..WorkerHeartbeat::new(
                &self.options.worker_name,
                self.options.heartbeat_interval.as_secs().max(1),
            )
        };
        let pool = &self.options.work_pool_name;
        let id = match self.client.send_worker_heartbeat_with(pool, &body).await {
            Ok(id) => id,
            Err(e) if want_id && e.status() == Some(422) => {
                tracing::debug!(error = %e, "the server refused return_id; heartbeating without it");
                body.return_id = false;
                self.client.send_worker_heartbeat_with(pool, &body).await?
            }
            Err(e) => return Err(e),
        };
        if metadata.is_some() {
            self.mark_worker_metadata_sent();
        }
        match id {
            Some(id) => self.record_worker_id(id),
            None if want_id => {
                tracing::warn!("Failed to retrieve worker ID from the Prefect API server.");
            }
            None => {}
        }
        Ok(())
    }
}
