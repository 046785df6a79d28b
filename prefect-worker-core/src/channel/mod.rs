//! The worker channel (spec §2.2A, §5.3): one websocket to
//! `/work_pools/{pool}/workers/connect` over which a Prefect 3.9 server learns the worker is
//! alive (heartbeat frames), pushes the work pool whenever it changes (snapshots), and
//! delivers cleanup work (tearing down the infrastructure of runs it cancelled after the
//! cancelling timeout).
//!
//! ```text
//!   connect ─► auth ─► hello ─► ready(initial snapshot) ─► healthy ─┬─ heartbeat every interval
//!      ▲                                                            ├─ snapshots → ChannelHost
//!      │  retryable failure: REST fallback, back-off 1 s … 30 s     ├─ cleanup.message → CleanupHandler
//!      └────────────────────────────────────────────────────────────┘  → ack / release / renew
//!   terminal failure (404, authorization_failed, protocol error): disabled, REST for good
//! ```
//!
//! Layering: `frames` is the wire format and `error` the failure policy, both pure;
//! `cleanup` runs reservations; `connection` is the socket task around them. The owner (the
//! runner) reads [`WorkerChannel::status`] to decide whether REST heartbeats and pool reads
//! are needed: only while the channel is not healthy.

mod cleanup;
mod connection;
mod error;
mod frames;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use cleanup::{CleanupHandler, CleanupOutcome, CleanupTiming};
pub use error::{ChannelError, Disposition};
pub use frames::CleanupTarget;

use crate::client::PrefectClient;
use crate::client::models::WorkPool;

/// Where the channel stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelStatus {
    /// Setting up (the first time, or reconnecting after a retryable failure).
    Connecting,
    /// Set up, heartbeating, receiving snapshots: no REST heartbeat or pool read needed.
    Healthy,
    /// A retryable failure: REST fallback while it reconnects.
    Fallback {
        /// The protocol's reason (`transient_server_error`, `connection_lost`, ...).
        reason: String,
    },
    /// A terminal failure: REST for the life of the process.
    Disabled {
        /// The protocol's reason (`endpoint_unavailable`, `authorization_failed`, ...).
        reason: String,
    },
}

impl ChannelStatus {
    /// Whether the channel carries heartbeats and the pool right now.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        matches!(self, Self::Healthy)
    }
}

/// What the channel reports to its owner.
pub trait ChannelHost: Send + Sync + 'static {
    /// A snapshot replaces the cached work pool (each connection's initial one included).
    fn work_pool_snapshot(&self, pool: WorkPool);

    /// Prefect Cloud named this worker (`worker.ready.v1` `worker_id`).
    fn worker_id(&self, id: Uuid) {
        let _ = id;
    }

    /// `{"integrations": [...]}` for the hello, while it has not been sent (by a hello or a
    /// Cloud REST heartbeat). Default: none.
    fn worker_metadata(&self) -> Option<Value> {
        None
    }

    /// A hello carrying the metadata was answered with `ready`.
    fn worker_metadata_sent(&self) {}
}

/// How to run the channel. [`ChannelOptions::new`] gives Python's timings.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// The pool (`--pool`).
    pub work_pool_name: String,
    /// The worker's name.
    pub worker_name: String,
    /// The pool type the worker serves (`kubernetes`).
    pub worker_type: String,
    /// Asked heartbeat interval (the server answers with the effective one); whole seconds,
    /// at least 1.
    pub heartbeat_interval_seconds: u64,
    /// Queues (`--work-queue`); sent sorted. Empty: all.
    pub work_queue_names: Vec<String>,
    /// Let the server create a missing pool.
    pub create_pool_if_not_found: bool,
    /// `--base-job-template`, else the worker's default template.
    pub default_base_job_template: Value,
    /// Bound on connect + auth + hello + ready (10 s).
    pub setup_timeout: Duration,
    /// First reconnect delay (1 s), doubled per failed attempt up to `reconnect_max` (30 s).
    pub reconnect_base: Duration,
    /// Longest reconnect delay (30 s).
    pub reconnect_max: Duration,
    /// A connection that stays healthy this long resets the reconnect back-off to
    /// `reconnect_base` (60 s). Python resets it after every successful setup.
    pub backoff_reset_after: Duration,
    /// A ping goes out this often once set up, and an unanswered one for this long ends the
    /// connection as lost (20 s, the websockets library's default in Python).
    pub keepalive: Duration,
    /// Cleanup delivery timings.
    pub cleanup_timing: CleanupTiming,
}

impl ChannelOptions {
    /// Options with Python's timings.
    #[must_use]
    pub fn new(
        work_pool_name: impl Into<String>,
        worker_name: impl Into<String>,
        worker_type: impl Into<String>,
        default_base_job_template: Value,
    ) -> Self {
        Self {
            work_pool_name: work_pool_name.into(),
            worker_name: worker_name.into(),
            worker_type: worker_type.into(),
            heartbeat_interval_seconds: 30,
            work_queue_names: Vec::new(),
            create_pool_if_not_found: true,
            default_base_job_template,
            setup_timeout: Duration::from_secs(10),
            reconnect_base: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            backoff_reset_after: Duration::from_secs(60),
            keepalive: Duration::from_secs(20),
            cleanup_timing: CleanupTiming::default(),
        }
    }

    /// Sets the heartbeat interval (rounded down to whole seconds, at least 1).
    #[must_use]
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval_seconds = interval.as_secs().max(1);
        self
    }

    /// Sets the queues.
    #[must_use]
    pub fn with_work_queues(mut self, queues: Vec<String>) -> Self {
        self.work_queue_names = queues;
        self
    }
}

/// A running worker channel. Dropping it does not stop it; call [`WorkerChannel::stop`].
#[derive(Debug)]
pub struct WorkerChannel {
    status: watch::Receiver<ChannelStatus>,
    stop: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    cleanup: Option<Arc<cleanup::CleanupExecutor>>,
}

impl WorkerChannel {
    /// Starts connecting in the background (never blocks). `cleanup`: the handler for
    /// cleanup delivery, `None` when this worker cannot tear infrastructure down (then the
    /// capability is not requested).
    #[must_use]
    pub fn start(
        client: PrefectClient,
        options: ChannelOptions,
        host: Arc<dyn ChannelHost>,
        cleanup: Option<Arc<dyn CleanupHandler>>,
    ) -> Self {
        let (status_tx, status) = watch::channel(ChannelStatus::Connecting);
        let stop = CancellationToken::new();
        let executor = cleanup.map(|h| cleanup::CleanupExecutor::new(h, 1, options.cleanup_timing));
        let task = tokio::spawn(
            connection::Connection {
                client,
                consumer_id: Uuid::now_v7(),
                options,
                host,
                cleanup: executor.clone(),
                status: status_tx,
                stop: stop.clone(),
            }
            .run(),
        );
        Self {
            status,
            stop,
            task: Mutex::new(Some(task)),
            cleanup: executor,
        }
    }

    /// Where the channel stands now.
    #[must_use]
    pub fn status(&self) -> ChannelStatus {
        self.status.borrow().clone()
    }

    /// Whether it is healthy now (then no REST heartbeat or pool read is needed).
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.status.borrow().is_healthy()
    }

    /// Follows status changes.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<ChannelStatus> {
        self.status.clone()
    }

    /// Waits until the first setup attempt is over (healthy, or fallen back to REST).
    pub async fn settled(&self) -> ChannelStatus {
        let mut rx = self.status.clone();
        let settled = rx
            .wait_for(|s| !matches!(s, ChannelStatus::Connecting))
            .await
            .map(|s| s.clone());
        settled.unwrap_or_else(|_| ChannelStatus::Disabled {
            reason: "stopped".into(),
        })
    }

    /// Closes the connection, stops reconnecting and abandons cleanup work in progress.
    pub async fn stop(&self) {
        self.stop.cancel();
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = task {
            let _ = t.await;
        }
        if let Some(c) = &self.cleanup {
            c.shutdown().await;
        }
    }
}
