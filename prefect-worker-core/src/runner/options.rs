//! How a [`super::Runner`] behaves: the `prefect worker start` flags and worker settings.

use std::time::Duration;

use serde_json::Value;

use crate::events::EventsOptions;
use crate::job_config::{Environment, Versions};
use crate::metrics::Metrics;
use crate::settings::WorkerSettings;

/// Options of a runner. Build with [`RunnerOptions::new`] and the `with_*` methods, or
/// set the public fields.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// The work pool to serve (`--pool`).
    pub work_pool_name: String,
    /// Queues to poll (`--work-queue`); empty means every queue of the pool.
    pub work_queues: Vec<String>,
    /// The worker's name (`--name`), sent as `X-Prefect-Worker-Name` and in labels.
    pub worker_name: String,
    /// The backend worker id (Prefect Cloud only), if already known at start. The runner
    /// learns it from Cloud otherwise (a `return_id` heartbeat or the channel's `ready`),
    /// and the learned id replaces this one for requests and jobs.
    pub worker_id: Option<String>,
    /// Look-ahead for scheduled runs (`--prefetch-seconds`).
    pub prefetch_seconds: u64,
    /// Poll interval (`PREFECT_WORKER_QUERY_SECONDS`).
    pub query_interval: Duration,
    /// Sync/heartbeat interval (`PREFECT_WORKER_HEARTBEAT_SECONDS`).
    pub heartbeat_interval: Duration,
    /// How often this worker's CANCELLING runs are looked up
    /// (`PREFECT_WORKER_CANCELLATION_POLL_SECONDS`).
    pub cancellation_poll_interval: Duration,
    /// Run the cancellation loop at all (`PREFECT_WORKER_ENABLE_CANCELLATION`, on unless set
    /// to false). Off: CANCELLING runs are left to the engine in the infrastructure and to
    /// the server's cancelling-timeout cleanup delivery.
    pub cancellation_enabled: bool,
    /// Use the worker channel websocket when the server offers it
    /// (`PREFECT_WORKER_CHANNEL_ENABLED`, on). Not used in `run_once` mode.
    pub channel_enabled: bool,
    /// Most flow runs in flight at once, from claim until their infrastructure has finished
    /// (`--limit`). `None`: no limit.
    pub limit: Option<usize>,
    /// Most submissions (claim → infrastructure created) in progress at once. Bounds the
    /// load a burst of due runs puts on the API and the cluster.
    pub max_concurrent_submissions: usize,
    /// The claim timeout (default 60 s). A submission that has not created its
    /// infrastructure this long after it proposed Pending gives up and returns the run to
    /// the queue; it never creates infrastructure later. Any worker of the pool returns a
    /// claim that has stayed Pending without infrastructure for twice this long to the
    /// queue (see `docs/architecture.md`, "Abandoned claims").
    pub claim_timeout: Duration,
    /// Return abandoned claims to the queue (default on). Off: they are only logged.
    pub recover_claims: bool,
    /// How often the pool's unfinished runs are reconciled with what this worker tracks
    /// (abandoned claims, orphaned cancellations; default 30 s). Adoption after a restart
    /// happens on the first pass.
    pub reconcile_interval: Duration,
    /// One sync, one poll, then wait for the runs it started and exit (`--run-once`).
    pub run_once: bool,
    /// Create the pool when it is missing (`--create-pool-if-not-found`).
    pub create_pool_if_not_found: bool,
    /// Template for a pool this worker creates (`--base-job-template`).
    pub base_job_template: Option<Value>,
    /// The worker's environment (env over profile) that jobs inherit settings from.
    pub environment: Environment,
    /// Versions that shape default images and labels.
    pub versions: Versions,
    /// Ship flow-run logs to the API (`PREFECT_LOGGING_TO_API_ENABLED`).
    pub logs_to_api: bool,
    /// Flow-run log batch interval (`PREFECT_LOGGING_TO_API_BATCH_INTERVAL`).
    pub log_batch_interval: Duration,
    /// Longest flow-run log message (`PREFECT_LOGGING_TO_API_MAX_LOG_SIZE`).
    pub max_log_size: usize,
    /// Events (`/events/in`): on by default; see [`EventsOptions`].
    pub events: EventsOptions,
    /// Where the runner, its API client and its events record metrics. `None` (the
    /// default): no metrics.
    pub metrics: Option<Metrics>,
}

impl RunnerOptions {
    /// Options for serving `work_pool_name` as `worker_name`, with Prefect's defaults.
    #[must_use]
    pub fn new(work_pool_name: impl Into<String>, worker_name: impl Into<String>) -> Self {
        Self::from_settings(work_pool_name, worker_name, &WorkerSettings::default())
    }

    /// Options taking intervals and log shipping from `settings`.
    #[must_use]
    pub fn from_settings(
        work_pool_name: impl Into<String>,
        worker_name: impl Into<String>,
        settings: &WorkerSettings,
    ) -> Self {
        Self {
            work_pool_name: work_pool_name.into(),
            work_queues: Vec::new(),
            worker_name: worker_name.into(),
            worker_id: None,
            prefetch_seconds: settings.prefetch_seconds,
            query_interval: settings.query_interval,
            heartbeat_interval: settings.heartbeat_interval,
            cancellation_poll_interval: settings.cancellation_poll_interval,
            cancellation_enabled: settings.enable_cancellation,
            channel_enabled: settings.channel_enabled,
            limit: None,
            max_concurrent_submissions: 64,
            claim_timeout: Duration::from_secs(60),
            recover_claims: true,
            reconcile_interval: Duration::from_secs(30),
            run_once: false,
            create_pool_if_not_found: true,
            base_job_template: None,
            environment: Environment::new(),
            versions: Versions::default(),
            logs_to_api: settings.logging_to_api_enabled,
            log_batch_interval: settings.logging_to_api_batch_interval,
            max_log_size: settings.logging_to_api_max_log_size,
            events: settings.events.clone(),
            metrics: None,
        }
    }

    /// Sets the queues to poll.
    #[must_use]
    pub fn with_work_queues(mut self, queues: Vec<String>) -> Self {
        self.work_queues = queues;
        self
    }

    /// Sets `--limit`.
    #[must_use]
    pub fn with_limit(mut self, limit: Option<usize>) -> Self {
        self.limit = limit;
        self
    }

    /// Sets `--run-once`.
    #[must_use]
    pub fn with_run_once(mut self, run_once: bool) -> Self {
        self.run_once = run_once;
        self
    }

    /// Sets the poll, heartbeat and cancellation intervals at once (tests).
    #[must_use]
    pub fn with_intervals(
        mut self,
        query: Duration,
        heartbeat: Duration,
        cancellation: Duration,
    ) -> Self {
        self.query_interval = query;
        self.heartbeat_interval = heartbeat;
        self.cancellation_poll_interval = cancellation;
        self
    }

    /// Sets the claim timeout and how often abandoned claims are looked for (tests use
    /// seconds).
    #[must_use]
    pub fn with_claim_timeout(
        mut self,
        claim_timeout: Duration,
        reconcile_interval: Duration,
    ) -> Self {
        self.claim_timeout = claim_timeout;
        self.reconcile_interval = reconcile_interval;
        self
    }

    /// Turns the cancellation loop on or off.
    #[must_use]
    pub fn with_cancellation(mut self, enabled: bool) -> Self {
        self.cancellation_enabled = enabled;
        self
    }

    /// Turns the worker channel on or off.
    #[must_use]
    pub fn with_channel(mut self, enabled: bool) -> Self {
        self.channel_enabled = enabled;
        self
    }

    /// Sets the events options (e.g. `EventsOptions::default().with_enabled(false)`).
    #[must_use]
    pub fn with_events(mut self, events: EventsOptions) -> Self {
        self.events = events;
        self
    }

    /// Records metrics into `metrics`: the runner's flow runs, its API client's requests
    /// and its events (see [`crate::metrics`]). Hand the same registry to the worker's
    /// options for its own families.
    #[must_use]
    pub fn with_metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Sets the environment jobs inherit settings from.
    #[must_use]
    pub fn with_environment(mut self, environment: Environment) -> Self {
        self.environment = environment;
        self
    }

    /// The health window: 30 poll intervals, as Python.
    #[must_use]
    pub fn health_window(&self) -> Duration {
        self.query_interval * 30
    }
}
