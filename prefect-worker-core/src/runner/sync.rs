//! Keeping the work pool in sync and heartbeating over REST (spec §2.2 B–C) while the
//! worker channel is not healthy, and adopting infrastructure left running by an earlier
//! worker process.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::engine::Inner;
use crate::client::ClientError;
use crate::client::models::{WorkPool, WorkPoolCreate};
use crate::worker::Worker;
use tokio_util::sync::CancellationToken;

impl<W: Worker> Inner<W> {
    /// One sync: nothing while the worker channel is healthy (it heartbeats and pushes the
    /// pool); otherwise read (or create) the pool, give an empty pool the default template,
    /// cache it, heartbeat.
    pub(super) async fn sync(&self) -> Result<(), ClientError> {
        if self.channel_healthy() {
            tracing::debug!("worker channel healthy; no REST heartbeat or work-pool read");
            return Ok(());
        }
        if self.sync_pool().await? {
            self.heartbeat().await?;
        }
        Ok(())
    }

    /// Reads (or creates) the pool and caches it. `Ok(false)`: the pool does not exist and
    /// may not be created, so there is nothing to heartbeat for. A channel snapshot that
    /// lands while the read is in flight wins over it.
    pub(super) async fn sync_pool(&self) -> Result<bool, ClientError> {
        let generation = self.sync_state.pool_generation.load(Ordering::SeqCst);
        let name = &self.options.work_pool_name;
        let pool = match self.client.read_work_pool(name).await {
            Ok(p) => p,
            Err(ClientError::NotFound(_)) if self.options.create_pool_if_not_found => {
                let body = WorkPoolCreate {
                    name: name.clone(),
                    pool_type: self.worker.worker_type().to_owned(),
                    base_job_template: self.options.base_job_template.clone(),
                };
                match self.client.create_work_pool(&body).await {
                    Ok(p) => {
                        tracing::info!(pool = %name, "created work pool '{name}'");
                        p
                    }
                    // Another worker created it between our read and our create.
                    Err(ClientError::AlreadyExists(_)) => self.client.read_work_pool(name).await?,
                    Err(e) => return Err(e),
                }
            }
            Err(ClientError::NotFound(_)) => {
                tracing::warn!(pool = %name, "Work pool '{name}' not found!");
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        self.install_pool_read_at(pool, generation).await
    }

    /// Caches `pool` as the runner's pool, after giving an empty pool the worker's default
    /// template and warning about a type mismatch. Always `Ok(true)` unless the PATCH fails.
    pub(super) async fn install_pool(&self, pool: WorkPool) -> Result<bool, ClientError> {
        let generation = self.sync_state.pool_generation.load(Ordering::SeqCst);
        self.install_pool_read_at(pool, generation).await
    }

    /// [`Self::install_pool`] for a pool read when the snapshot generation was `generation`:
    /// a channel snapshot applied since then is newer and is kept.
    async fn install_pool_read_at(
        &self,
        mut pool: WorkPool,
        generation: u64,
    ) -> Result<bool, ClientError> {
        let overtaken = || {
            self.channel_healthy()
                && self.sync_state.pool_generation.load(Ordering::SeqCst) != generation
        };
        if overtaken() {
            tracing::debug!("a channel snapshot arrived during the REST work-pool read; kept it");
            return Ok(true);
        }
        let name = &self.options.work_pool_name;
        if pool.base_job_template.is_empty() {
            let template = self.worker.default_base_job_template();
            self.client
                .update_work_pool_base_job_template(name, &template)
                .await?;
            if let serde_json::Value::Object(map) = template {
                pool.base_job_template = map;
            }
        }
        if overtaken() {
            return Ok(true);
        }
        self.store_work_pool(pool);
        Ok(true)
    }

    /// Caches `pool` (from REST or a channel snapshot), warning when its type is not this
    /// worker's.
    pub(super) fn store_work_pool(&self, pool: WorkPool) {
        if pool.pool_type != self.worker.worker_type() {
            tracing::warn!(
                expected = self.worker.worker_type(),
                received = %pool.pool_type,
                "Worker type mismatch! This worker process expects type '{}' but received '{}' from the server. Unexpected behavior may occur.",
                self.worker.worker_type(),
                pool.pool_type
            );
        }
        if let Ok(mut slot) = self.work_pool.write() {
            *slot = Some(Arc::new(pool));
        }
    }

    /// Syncs every heartbeat interval until `stop`; errors back off and retry forever.
    pub(super) async fn sync_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut failures = 0u32;
        loop {
            let wait = if failures == 0 {
                self.options.heartbeat_interval
            } else {
                Self::backoff(self.options.heartbeat_interval, failures)
            };
            if !Self::pause(wait, &stop).await {
                return;
            }
            match self.sync().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, failures, "work pool sync failed; will retry");
                }
            }
        }
    }

    /// Resumes waiting on infrastructure a previous worker process started (same worker
    /// identity) whose flow runs are not final, so a restart loses nothing.
    pub(super) async fn adopt(self: &Arc<Self>) {
        let Some(pool) = self.work_pool() else {
            tracing::debug!("work pool unknown yet; adoption skipped");
            return;
        };
        let found = match self.worker.running_infrastructure(&pool).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "could not list infrastructure left by an earlier worker; none adopted");
                return;
            }
        };
        for (flow_run_id, pid) in found {
            if self.lock_tracked().contains_key(&flow_run_id) {
                continue;
            }
            let flow_run = match self.client.read_flow_run(flow_run_id).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%flow_run_id, error = %e, "cannot adopt infrastructure '{pid}': flow run unreadable");
                    continue;
                }
            };
            if flow_run.state_type().is_some_and(|t| t.is_final()) {
                continue;
            }
            let logger = self.logs.logger(flow_run.id);
            let configuration = match self.build_configuration(&flow_run).await {
                Ok((c, _)) => c,
                Err(e) => {
                    logger.warning(format!(
                        "Cannot resume tracking of infrastructure '{pid}': {e}"
                    ));
                    continue;
                }
            };
            self.resume_tracking(flow_run, pid, configuration, logger);
        }
    }
}
