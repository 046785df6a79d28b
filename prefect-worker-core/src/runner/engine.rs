//! The runner's engine: shared state, setup and the main loops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::channel::SyncState;
use super::events::RunnerEvents;
use super::shared_reads::FlowCache;
use super::{HealthState, LogShipper, RunnerOptions};

use crate::client::models::WorkPool;
use crate::client::{ClientError, PrefectClient};
use crate::events::{EventEmitter, EventsTask, WorkerEvents};
use crate::metrics::runner::RunRecorder;
use crate::worker::Worker;

/// Why the runner stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The API rejected the worker's credentials at startup.
    #[error(
        "the Prefect API rejected this worker's credentials: {0}. Check PREFECT_API_KEY (or PREFECT_API_AUTH_STRING) and PREFECT_API_URL"
    )]
    Unauthorized(#[source] ClientError),
    /// The work pool cannot be read or created and never will be (e.g. a reserved name).
    #[error("cannot set up work pool '{pool}': {source}")]
    WorkPool {
        /// The work pool's name.
        pool: String,
        /// The API's answer.
        #[source]
        source: ClientError,
    },
}

/// A flow run this runner has claimed and not yet finished with.
#[derive(Debug)]
pub(super) struct Tracked<C> {
    /// Set once the configuration is built (needed to kill the infrastructure). Shared with
    /// the run's own task: a Kubernetes configuration is tens of kilobytes in memory, and
    /// thousands of runs are tracked at once.
    pub(super) configuration: Option<Arc<C>>,
    /// Set once the worker reported the infrastructure as started.
    pub(super) infrastructure_pid: Option<String>,
    /// Whether `infrastructure_pid` is recorded on the flow run (the reconciler retries).
    pub(super) pid_recorded: bool,
    /// Set while the runner is cancelling the run, so its end is not reported as a crash.
    pub(super) cancelling: bool,
}

/// State shared by the loops and the per-run tasks.
pub(super) struct Inner<W: Worker> {
    pub(super) worker: Arc<W>,
    pub(super) client: PrefectClient,
    pub(super) options: RunnerOptions,
    /// Shared, not copied, by every submission (its base job template is large).
    pub(super) work_pool: RwLock<Option<Arc<WorkPool>>>,
    /// The worker channel, Cloud's worker id and what was already sent (`runner/channel.rs`).
    pub(super) sync_state: SyncState,
    pub(super) health: Arc<HealthState>,
    /// `--limit`: held from claim until the run's infrastructure has finished.
    pub(super) limiter: Option<Arc<Semaphore>>,
    /// Bounds submissions (claim → infrastructure created) in progress.
    pub(super) submissions: Arc<Semaphore>,
    /// How many submissions are in progress; shutdown waits for it to reach 0.
    pub(super) submitting: watch::Sender<usize>,
    pub(super) tracked: Mutex<HashMap<Uuid, Tracked<W::Configuration>>>,
    pub(super) logs: LogShipper,
    /// Flows read so far (a flow's name never changes).
    pub(super) flows: FlowCache,
    pub(super) events: RunnerEvents,
    pub(super) metrics: RunRecorder,
    /// Tells run tasks to stop waiting on their infrastructure (shutdown).
    pub(super) stop_runs: CancellationToken,
    pub(super) runs: TaskTracker,
}

impl<W: Worker> std::fmt::Debug for Inner<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Drives a [`Worker`] through the Prefect worker protocol. See the module docs.
#[derive(Debug)]
pub struct Runner<W: Worker> {
    inner: Arc<Inner<W>>,
    log_task: Option<tokio::task::JoinHandle<()>>,
    log_stop: CancellationToken,
    events_task: EventsTask,
    handed_pool: Option<HandedPool>,
}

/// The work pool as the caller's own start-up read finds it (`None`: not found or not
/// read), handed over while the runner already polls: see [`Runner::with_work_pool_from`].
pub type HandedPool = tokio::sync::oneshot::Receiver<Option<WorkPool>>;

impl<W: Worker> Runner<W> {
    /// A runner for `worker`, talking to the API through `client`. Must be called inside a
    /// tokio runtime (it starts the flow-run log shipper).
    #[must_use]
    pub fn new(worker: W, client: PrefectClient, options: RunnerOptions) -> Self {
        let log_stop = CancellationToken::new();
        let (logs, log_task) = LogShipper::start(
            client.clone(),
            options.logs_to_api,
            options.log_batch_interval,
            options.max_log_size,
            log_stop.clone(),
        );
        let maintenance_client = client.clone();
        let health = Arc::new(HealthState::new(
            options.health_window(),
            Box::new(move || maintenance_client.maintenance_until()),
        ));
        let (events, events_task) = EventEmitter::start(client.clone(), options.events.clone());
        worker.attach_events(&events);
        let events = RunnerEvents::new(
            events,
            WorkerEvents::new(
                worker.worker_type(),
                &options.worker_name,
                &options.versions.prefect_version,
            ),
        );
        if let Some(m) = &options.metrics {
            client.attach_metrics(m);
            crate::metrics::register_events(m, events.emitter.clone());
        }
        let metrics = RunRecorder::new(options.metrics.clone());
        let limiter = options.limit.map(|n| Arc::new(Semaphore::new(n)));
        let submissions = Arc::new(Semaphore::new(options.max_concurrent_submissions.max(1)));
        let inner = Arc::new(Inner {
            worker: Arc::new(worker),
            client,
            sync_state: SyncState::new(options.worker_id.clone()),
            options,
            work_pool: RwLock::new(None),
            health,
            limiter,
            submissions,
            submitting: watch::Sender::new(0),
            tracked: Mutex::new(HashMap::new()),
            logs,
            flows: FlowCache::default(),
            events,
            metrics,
            stop_runs: CancellationToken::new(),
            runs: TaskTracker::new(),
        });
        let tracked = Arc::downgrade(&inner);
        let submitting = inner.submitting.subscribe();
        inner.metrics.register_gauges(
            move || {
                tracked
                    .upgrade()
                    .map_or(0, |i| i.lock_tracked().len() as i64)
            },
            move || *submitting.borrow() as i64,
        );
        Self {
            inner,
            log_task,
            log_stop,
            events_task,
            handed_pool: None,
        }
    }

    /// Starts with `pool` as the work pool, read by the caller just before (the binary's
    /// start-up checks read it), so the runner does not read it again before its first
    /// poll: start → first poll stays one round trip.
    #[must_use]
    pub fn with_work_pool(self, pool: WorkPool) -> Self {
        if let Ok(mut slot) = self.inner.work_pool.write() {
            *slot = Some(Arc::new(pool));
        }
        self
    }

    /// Starts with the work pool the caller is reading beside the runner's first poll (the
    /// binary's start-up checks read it), so the runner does not read it again: the first
    /// poll goes out at once and its runs wait for the pool. A `None` (or a dropped sender)
    /// makes the runner read, or create, the pool itself.
    #[must_use]
    pub fn with_work_pool_from(mut self, pool: HandedPool) -> Self {
        self.handed_pool = Some(pool);
        self
    }

    /// The event emitter (worker and infrastructure events): its [`EventEmitter::stats`]
    /// say how many events were delivered, dropped and are queued.
    #[must_use]
    pub fn events(&self) -> EventEmitter {
        self.inner.events.emitter.clone()
    }

    /// The health state, for [`super::health::serve`].
    #[must_use]
    pub fn health(&self) -> Arc<HealthState> {
        self.inner.health.clone()
    }

    /// The worker being driven.
    #[must_use]
    pub fn worker(&self) -> Arc<W> {
        self.inner.worker.clone()
    }

    /// Runs until `shutdown` is cancelled (or, with `run_once`, until the one poll's runs
    /// have finished). On shutdown: stop polling, let submissions in progress reach their
    /// infrastructure, stop waiting on running infrastructure (it keeps running; a restarted
    /// worker adopts it), `teardown` the worker, flush flow-run logs.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), RunnerError> {
        let inner = self.inner.clone();
        let handed_pool = self.handed_pool.take();
        inner
            .client
            .set_worker_name(Some(inner.options.worker_name.clone()));
        inner.client.set_worker_id(inner.worker_id());
        let result = self.serve(&shutdown, handed_pool).await;
        // Graceful end, whatever stopped us.
        inner.wait_for_submissions().await;
        inner.stop_runs.cancel();
        inner.runs.close();
        inner.runs.wait().await;
        inner.stop_channel().await;
        inner.emit_stopped();
        inner.worker.teardown().await;
        self.events_task.shutdown().await;
        inner.client.set_worker_name(None);
        inner.client.set_worker_id(None);
        self.log_stop.cancel();
        if let Some(t) = self.log_task {
            let _ = t.await;
        }
        tracing::info!(worker = %inner.options.worker_name, "Worker '{}' stopped!", inner.options.worker_name);
        result
    }

    async fn serve(
        &self,
        shutdown: &CancellationToken,
        handed_pool: Option<HandedPool>,
    ) -> Result<(), RunnerError> {
        let inner = &self.inner;
        // Setup sync: credentials and a reserved pool name are fatal; anything transient is not.
        // The first poll does not need the pool, so it goes out beside the pool read (start →
        // first poll is one round trip); its runs are submitted only once the pool is known.
        // The heartbeat and the adoption of Jobs left by an earlier process run beside it too.
        let first_sync = async {
            let handed = match handed_pool {
                Some(rx) => rx.await.ok().flatten(),
                None => None,
            };
            match handed.or_else(|| inner.work_pool().map(Arc::unwrap_or_clone)) {
                Some(pool) => inner.install_pool(pool).await,
                None => inner.sync_pool().await,
            }
        };
        let (first_sync, first_poll) = if inner.options.run_once {
            (first_sync.await, None)
        } else {
            let (sync, poll) = tokio::join!(first_sync, inner.fetch_scheduled());
            (sync, Some(poll))
        };
        // The worker channel sets itself up in the background (REST serves until it is
        // healthy), once the first poll is answered: its handshake is not needed for the
        // poll and would compete with it at the server.
        inner.start_channel();
        match first_sync {
            Ok(true) => {
                let hb = inner.clone();
                tokio::spawn(async move {
                    // A channel that comes up heartbeats itself (its hello records one).
                    hb.channel_settled().await;
                    if hb.channel_healthy() {
                        return;
                    }
                    if let Err(e) = hb.heartbeat().await {
                        tracing::warn!(error = %e, "worker heartbeat failed; will retry");
                    }
                });
            }
            Ok(false) => {}
            Err(e) if inner.is_fatal_setup_error(&e) => return Err(inner.fatal_setup_error(e)),
            Err(e) => tracing::warn!(
                error = %e,
                "Unable to reach the Prefect API while starting up; the worker will keep attempting to connect"
            ),
        }
        if inner.options.run_once {
            inner.adopt().await;
        }
        inner.emit_started();
        tracing::info!(worker = %inner.options.worker_name, pool = %inner.options.work_pool_name,
            "Worker '{}' started!", inner.options.worker_name);

        if inner.options.run_once {
            if let Err(e) = inner.sync().await {
                tracing::warn!(error = %e, "work pool sync failed");
            }
            if let Err(e) = inner.poll().await {
                tracing::warn!(error = %e, "polling for scheduled flow runs failed");
            }
            // Wait for the runs this poll started, unless told to stop first.
            inner.runs.close();
            tokio::select! {
                () = inner.runs.wait() => {}
                () = shutdown.cancelled() => {}
            }
            return Ok(());
        }

        // The first poll's runs, now that the pool is known; when it could not be used (no
        // pool yet, an error), the poll loop polls again at once.
        let mut first_wait = Duration::ZERO;
        if let Some(Ok(runs)) = first_poll
            && inner.work_pool().is_some()
        {
            inner.submit_scheduled(runs);
            first_wait = inner.options.query_interval;
        }
        let loops = CancellationToken::new();
        let sync_loop = tokio::spawn(inner.clone().sync_loop(loops.clone()));
        let poll_loop = tokio::spawn(inner.clone().poll_loop(loops.clone(), first_wait));
        let cancel_loop = if inner.options.cancellation_enabled {
            tokio::spawn(inner.clone().cancellation_loop(loops.clone()))
        } else {
            tracing::info!(
                "worker-side cancellation is off (PREFECT_WORKER_ENABLE_CANCELLATION=false)"
            );
            tokio::spawn(async {})
        };
        // Adoption after a restart (its first pass, beside the first poll) and abandoned claims.
        let reconcile_loop = tokio::spawn(inner.clone().reconcile_loop(loops.clone()));
        shutdown.cancelled().await;
        tracing::info!("shutting down: no new flow runs will be submitted");
        loops.cancel();
        let _ = tokio::join!(sync_loop, poll_loop, cancel_loop, reconcile_loop);
        Ok(())
    }
}

impl<W: Worker> Inner<W> {
    pub(super) fn is_fatal_setup_error(&self, e: &ClientError) -> bool {
        matches!(e, ClientError::Unauthorized(_) | ClientError::Forbidden(_))
    }

    pub(super) fn fatal_setup_error(&self, e: ClientError) -> RunnerError {
        match e {
            ClientError::Unauthorized(_) => RunnerError::Unauthorized(e),
            other => RunnerError::WorkPool {
                pool: self.options.work_pool_name.clone(),
                source: other,
            },
        }
    }

    pub(super) fn work_pool(&self) -> Option<Arc<WorkPool>> {
        self.work_pool.read().ok().and_then(|p| p.clone())
    }

    pub(super) fn lock_tracked(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Uuid, Tracked<W::Configuration>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.tracked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) async fn wait_for_submissions(&self) {
        let mut rx = self.submitting.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Sleeps `interval` with ±30 % jitter (Python's clamped-Poisson spread), or returns
    /// `false` early when `stop` is cancelled.
    pub(super) async fn pause(interval: Duration, stop: &CancellationToken) -> bool {
        let factor = 0.7 + rand::random::<f64>() * 0.6;
        tokio::select! {
            () = tokio::time::sleep(interval.mul_f64(factor)) => true,
            () = stop.cancelled() => false,
        }
    }

    /// The next sleep after `failures` failures in a row: doubling, capped, so an outage is
    /// ridden out without hammering the API and recovery is noticed within a minute.
    pub(super) fn backoff(interval: Duration, failures: u32) -> Duration {
        let cap = Duration::from_secs(60).max(interval);
        interval.saturating_mul(1u32 << failures.min(6)).min(cap)
    }
}
