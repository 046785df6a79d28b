//! Polling for due flow runs and claiming them (spec §2.4, §2.6).

use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::engine::{Inner, Tracked};
use super::shared_reads::PollDeployments;
use crate::client::ClientError;
use crate::client::models::WorkerFlowRunResponse;
use crate::worker::Worker;

impl<W: Worker> Inner<W> {
    /// One poll: fetch runs due before now + prefetch and start a submission for each one
    /// this worker is not already handling, as far as `--limit` allows.
    pub(super) async fn poll(self: &Arc<Self>) -> Result<(), ClientError> {
        if self.work_pool().is_none() {
            // Not synced yet: nothing to submit to; counts as a poll for the health check.
            self.health.polled();
            return Ok(());
        }
        let runs = match self.fetch_scheduled().await {
            Ok(r) => r,
            // An unknown pool or queue: Python treats it as "no runs"; say so, once per poll.
            Err(ClientError::NotFound(detail)) => {
                tracing::warn!(pool = %self.options.work_pool_name, queues = ?self.options.work_queues, %detail,
                    "work pool or queue not found while polling; check --pool and --work-queue");
                self.health.polled();
                self.metrics.polled();
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        self.submit_scheduled(runs);
        Ok(())
    }

    /// The poll request alone (no work pool needed for it), counted as a poll once answered.
    pub(super) async fn fetch_scheduled(&self) -> Result<Vec<WorkerFlowRunResponse>, ClientError> {
        let before = Utc::now()
            + chrono::Duration::seconds(
                i64::try_from(self.options.prefetch_seconds).unwrap_or(i64::MAX / 2),
            );
        let runs = self
            .client
            .get_scheduled_flow_runs(
                &self.options.work_pool_name,
                &self.options.work_queues,
                before,
            )
            .await?;
        self.health.polled();
        self.metrics.polled();
        Ok(runs)
    }

    /// Starts a submission for each polled run this worker is not already handling, as far
    /// as `--limit` allows. Needs the work pool (its base job template) to be known.
    pub(super) fn submit_scheduled(self: &Arc<Self>, runs: Vec<WorkerFlowRunResponse>) {
        // The runs of this poll share one read per deployment.
        let mut deployments = PollDeployments::default();
        for item in runs {
            let flow_run = item.flow_run;
            if self.lock_tracked().contains_key(&flow_run.id) {
                tracing::debug!(flow_run_id = %flow_run.id, "already handling this flow run");
                continue;
            }
            let limit_permit = match &self.limiter {
                None => None,
                Some(l) => match l.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        tracing::debug!(
                            in_flight = self.lock_tracked().len(),
                            "Flow run limit reached; {} flow runs in progress.",
                            self.lock_tracked().len()
                        );
                        break;
                    }
                },
            };
            self.lock_tracked().insert(
                flow_run.id,
                Tracked {
                    configuration: None,
                    infrastructure_pid: None,
                    pid_recorded: false,
                    cancelling: false,
                },
            );
            self.submitting.send_modify(|n| *n += 1);
            let logger = self.logs.logger(flow_run.id);
            logger.info(format!(
                "Worker '{}' submitting flow run '{}'",
                self.options.worker_name, flow_run.id
            ));
            if let Some(worker_id) = self.worker_id() {
                logger.info(format!(
                    "Running on worker id: {worker_id}. See worker logs here: {}",
                    self.worker_ui_url(&worker_id)
                ));
            }
            let deployment = flow_run
                .deployment_id
                .map(|id| deployments.for_deployment(id));
            let me = self.clone();
            let span = super::flow_run_logs::flow_run_span(flow_run.id);
            self.runs.spawn(
                async move {
                    let _limit = limit_permit;
                    me.submit_and_run(flow_run, deployment, logger).await;
                }
                .instrument(span),
            );
        }
    }

    /// Polls every query interval until `stop`; errors back off and retry forever.
    /// The first poll goes out after `first_wait`: zero, unless start-up already polled.
    pub(super) async fn poll_loop(
        self: Arc<Self>,
        stop: CancellationToken,
        first_wait: std::time::Duration,
    ) {
        let mut failures = 0u32;
        let mut wait = first_wait;
        loop {
            if !wait.is_zero() && !Self::pause(wait, &stop).await {
                return;
            }
            if stop.is_cancelled() {
                return;
            }
            match self.poll().await {
                Ok(()) => {
                    failures = 0;
                    wait = self.options.query_interval;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    wait = Self::backoff(self.options.query_interval, failures);
                    tracing::warn!(error = %e, failures, retry_in = ?wait, "polling for scheduled flow runs failed; will retry");
                }
            }
        }
    }
}
