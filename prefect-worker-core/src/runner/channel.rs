//! The runner's side of the worker channel (spec §2.2A) and of Prefect Cloud's worker id
//! (§2.2C): starting the channel, applying its snapshots to the cached work pool, and
//! recording the worker id wherever it comes from (the channel's `ready`, a Cloud REST
//! heartbeat) so that requests carry `X-Prefect-Worker-Id` and jobs get `PREFECT__WORKER_ID`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock, Weak};

use async_trait::async_trait;
use serde_json::{Value, json};
use uuid::Uuid;

use super::engine::Inner;
use crate::channel::{
    ChannelHost, ChannelOptions, CleanupHandler, CleanupOutcome, CleanupTarget, WorkerChannel,
};
use crate::client::models::WorkPool;
use crate::worker::Worker;

/// What the runner knows about its standing with the server beyond the work pool itself.
#[derive(Debug, Default)]
pub(super) struct SyncState {
    /// The channel, once started (never in run-once mode or when turned off).
    pub(super) channel: OnceLock<WorkerChannel>,
    /// Bumped by every work-pool snapshot, so a REST read that raced one does not replace it.
    pub(super) pool_generation: AtomicU64,
    /// Prefect Cloud's id for this worker.
    pub(super) worker_id: RwLock<Option<String>>,
    /// The `{"integrations": ...}` metadata reached the server (a hello or a Cloud heartbeat).
    pub(super) metadata_sent: AtomicBool,
}

impl SyncState {
    pub(super) fn new(worker_id: Option<String>) -> Self {
        Self {
            worker_id: RwLock::new(worker_id),
            ..Self::default()
        }
    }
}

impl<W: Worker> Inner<W> {
    /// Whether the channel carries heartbeats and the pool right now (REST is not needed).
    pub(super) fn channel_healthy(&self) -> bool {
        self.sync_state
            .channel
            .get()
            .is_some_and(WorkerChannel::is_healthy)
    }

    /// Starts the channel in the background, unless turned off or in run-once mode.
    pub(super) fn start_channel(self: &Arc<Self>) {
        if !self.options.channel_enabled || self.options.run_once {
            return;
        }
        let template = self
            .options
            .base_job_template
            .clone()
            .unwrap_or_else(|| self.worker.default_base_job_template());
        let mut options = ChannelOptions::new(
            &self.options.work_pool_name,
            &self.options.worker_name,
            self.worker.worker_type(),
            template,
        )
        .with_heartbeat_interval(self.options.heartbeat_interval)
        .with_work_queues(self.options.work_queues.clone());
        options.create_pool_if_not_found = self.options.create_pool_if_not_found;
        // The channel holds the runner weakly: the runner owns the channel, not the reverse.
        let host = Arc::new(Host(Arc::downgrade(self)));
        let cleanup: Option<Arc<dyn CleanupHandler>> = self
            .worker
            .can_kill_infrastructure()
            .then(|| host.clone() as Arc<dyn CleanupHandler>);
        let channel = WorkerChannel::start(self.client.clone(), options, host, cleanup);
        if self.sync_state.channel.set(channel).is_err() {
            tracing::debug!("worker channel already started");
        }
    }

    /// Waits until the channel's first setup attempt is over (at once without a channel).
    pub(super) async fn channel_settled(&self) {
        if let Some(c) = self.sync_state.channel.get() {
            c.settled().await;
        }
    }

    /// Stops the channel (shutdown).
    pub(super) async fn stop_channel(&self) {
        if let Some(c) = self.sync_state.channel.get() {
            c.stop().await;
        }
    }

    /// Replaces the cached work pool with one from the channel.
    fn apply_snapshot(&self, pool: WorkPool) {
        self.sync_state
            .pool_generation
            .fetch_add(1, Ordering::SeqCst);
        self.store_work_pool(pool);
    }

    /// The worker id, when Prefect Cloud gave one.
    pub(super) fn worker_id(&self) -> Option<String> {
        self.sync_state
            .worker_id
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records Cloud's id for this worker: sent as `X-Prefect-Worker-Id` from now on and
    /// passed to jobs as `PREFECT__WORKER_ID`.
    pub(super) fn record_worker_id(&self, id: Uuid) {
        let id = id.to_string();
        let changed = {
            let mut slot = self
                .sync_state
                .worker_id
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let changed = slot.as_deref() != Some(id.as_str());
            *slot = Some(id.clone());
            changed
        };
        self.client.set_worker_id(Some(id.clone()));
        if changed {
            tracing::info!(worker = %self.options.worker_name, worker_id = %id, "Prefect Cloud worker id: {id}");
        }
    }

    /// `{"integrations": [...]}` while it has not reached the server; `None` once it has, or
    /// when the worker reports no integrations.
    pub(super) fn pending_worker_metadata(&self) -> Option<Value> {
        if self.sync_state.metadata_sent.load(Ordering::SeqCst) {
            return None;
        }
        let integrations = self.worker.integrations();
        if integrations.is_empty() {
            return None;
        }
        let list: Vec<Value> = integrations
            .iter()
            .map(|i| json!({"name": i.name, "version": i.version}))
            .collect();
        Some(json!({ "integrations": list }))
    }

    pub(super) fn mark_worker_metadata_sent(&self) {
        self.sync_state.metadata_sent.store(true, Ordering::SeqCst);
    }

    /// The UI page of this worker on Prefect Cloud (Python's `url_for("worker", ...)`):
    /// `PREFECT_UI_URL`, else derived from the API URL as Prefect derives it.
    pub(super) fn worker_ui_url(&self, worker_id: &str) -> String {
        let env = &self.options.environment;
        let ui = env
            .get("PREFECT_UI_URL")
            .filter(|u| !u.is_empty())
            .cloned()
            .unwrap_or_else(|| {
                ui_url_from_api_url(
                    self.client.api_url().as_str(),
                    env.get("PREFECT_CLOUD_API_URL").map_or(
                        crate::client::options::DEFAULT_CLOUD_API_URL,
                        String::as_str,
                    ),
                    env.get("PREFECT_CLOUD_UI_URL").map(String::as_str),
                )
            });
        format!(
            "{}/work-pools/work-pool/{}/worker/{worker_id}",
            ui.trim_end_matches('/'),
            self.options.work_pool_name
        )
    }
}

/// Prefect's `default_ui_url`: the Cloud API URL is swapped for the Cloud UI URL (by
/// default the API URL with `https://api` → `https://app` and no `/api`), then `/api` is
/// dropped and `accounts`/`workspaces` become `account`/`workspace`.
fn ui_url_from_api_url(api_url: &str, cloud_api_url: &str, cloud_ui_url: Option<&str>) -> String {
    let api_url = api_url.trim_end_matches('/');
    let cloud_api_url = cloud_api_url.trim_end_matches('/');
    let derived_cloud_ui = || {
        let mut u = cloud_api_url.to_owned();
        // Python: only for hosts like `api.prefect.cloud` (`^https://api[.\w]*.prefect.[^.]+/`).
        if u.starts_with("https://api") && u.contains(".prefect.") {
            u = u.replacen("https://api", "https://app", 1);
        }
        u.strip_suffix("/api").map(str::to_owned).unwrap_or(u)
    };
    let cloud_ui = cloud_ui_url.map_or_else(derived_cloud_ui, str::to_owned);
    let mut ui = api_url.to_owned();
    if !cloud_api_url.is_empty() && ui.starts_with(cloud_api_url) {
        ui = ui.replacen(cloud_api_url, &cloud_ui, 1);
    }
    if let Some(stripped) = ui.strip_suffix("/api") {
        ui = stripped.to_owned();
    }
    ui.replace("/api/", "/")
        .replace("/accounts/", "/account/")
        .replace("/workspaces/", "/workspace/")
}

/// The runner as the channel sees it, held weakly.
struct Host<W: Worker>(Weak<Inner<W>>);

impl<W: Worker> ChannelHost for Host<W> {
    fn work_pool_snapshot(&self, pool: WorkPool) {
        if let Some(inner) = self.0.upgrade() {
            inner.apply_snapshot(pool);
        }
    }

    fn worker_id(&self, id: Uuid) {
        if let Some(inner) = self.0.upgrade() {
            inner.record_worker_id(id);
        }
    }

    fn worker_metadata(&self) -> Option<Value> {
        self.0.upgrade().and_then(|i| i.pending_worker_metadata())
    }

    fn worker_metadata_sent(&self) {
        if let Some(inner) = self.0.upgrade() {
            inner.mark_worker_metadata_sent();
        }
    }
}

#[async_trait]
impl<W: Worker> CleanupHandler for Host<W> {
    async fn cancelling_timeout_teardown(&self, target: &CleanupTarget) -> CleanupOutcome {
        match self.0.upgrade() {
            Some(inner) => inner.cancelling_timeout_teardown(target).await,
            None => CleanupOutcome::Release("worker_stopping".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOUD: &str = "https://api.prefect.cloud/api";

    #[test]
    fn ui_urls_follow_prefects_derivation() {
        assert_eq!(
            ui_url_from_api_url(
                "https://api.prefect.cloud/api/accounts/a1/workspaces/w1",
                CLOUD,
                None
            ),
            "https://app.prefect.cloud/account/a1/workspace/w1"
        );
        assert_eq!(
            ui_url_from_api_url("http://127.0.0.1:4200/api", CLOUD, None),
            "http://127.0.0.1:4200"
        );
        assert_eq!(
            ui_url_from_api_url(
                "http://stub:1/api/accounts/a/workspaces/w",
                "http://stub:1/api",
                Some("http://ui:2")
            ),
            "http://ui:2/account/a/workspace/w"
        );
    }
}
