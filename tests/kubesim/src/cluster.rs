//! The shared cluster state: the [`Store`] behind a lock, the fan-out of its
//! changes to watchers and controllers, and the knobs every part reads.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::faults::FaultConfig;
use crate::kinds::Kind;
use crate::logs::LogStore;
use crate::observe::Observer;
use crate::store::{Change, Store};

/// Static configuration of a running cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// PATH for container processes (`None`: the simulator's own PATH).
    pub kubelet_path: Option<OsString>,
    /// Extra environment for every container process.
    pub kubelet_env: Vec<(String, String)>,
    /// Root of the per-pod working directories.
    pub work_dir: PathBuf,
    /// The single node's name.
    pub node_name: String,
    /// How often watches with `allowWatchBookmarks` get a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Delay before the Job controller replaces a failed pod (real: 10s doubling).
    pub pod_failure_backoff: Duration,
    /// Delay before the kubelet restarts a crashed container (real: 10s doubling).
    pub crash_loop_backoff: Duration,
    /// Delay between image pull retries for `sim/pull-error`.
    pub image_pull_backoff: Duration,
    /// Changes kept per kind for watch resumption.
    pub history_limit: usize,
    /// Capacity of each kind's watch broadcast channel.
    pub watch_channel_capacity: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            kubelet_path: None,
            kubelet_env: Vec::new(),
            work_dir: std::env::temp_dir().join("kubesim"),
            node_name: "kubesim-node".into(),
            bookmark_interval: Duration::from_secs(1),
            pod_failure_backoff: Duration::ZERO,
            crash_loop_backoff: Duration::from_millis(500),
            image_pull_backoff: Duration::from_secs(1),
            history_limit: 10_000,
            watch_channel_capacity: 16_384,
        }
    }
}

/// Everything the server, the controllers and the handle share.
#[derive(Debug)]
pub struct Cluster {
    store: Mutex<Store>,
    channels: HashMap<Kind, broadcast::Sender<Arc<Change>>>,
    internal: Mutex<Vec<mpsc::UnboundedSender<Arc<Change>>>>,
    faults: RwLock<FaultConfig>,
    faults_changed: watch::Sender<u64>,
    /// Request log and watch counters.
    pub observer: Arc<Observer>,
    /// Container logs.
    pub logs: LogStore,
    /// Static configuration.
    pub config: ClusterConfig,
    /// Cancelled when the simulator shuts down.
    pub shutdown: CancellationToken,
    /// Container processes currently alive.
    pub running_processes: Arc<AtomicUsize>,
    /// API requests currently held by a pause (so tests can wait for one to arrive).
    pub held_requests: AtomicUsize,
}

impl Cluster {
    /// A fresh cluster with the built-in namespaces.
    pub fn new(config: ClusterConfig) -> Arc<Self> {
        let channels = Kind::ALL
            .into_iter()
            .map(|k| {
                (
                    k,
                    broadcast::channel(config.watch_channel_capacity.max(16)).0,
                )
            })
            .collect();
        Arc::new(Cluster {
            store: Mutex::new(Store::new(config.history_limit)),
            channels,
            internal: Mutex::new(Vec::new()),
            faults: RwLock::new(FaultConfig::default()),
            faults_changed: watch::channel(0).0,
            observer: Arc::new(Observer::default()),
            logs: LogStore::default(),
            config,
            shutdown: CancellationToken::new(),
            running_processes: Arc::new(AtomicUsize::new(0)),
            held_requests: AtomicUsize::new(0),
        })
    }

    /// Run `f` on the store under its lock, then publish what it changed
    /// (still under the lock, so subscribers see changes in commit order).
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        let r = f(&mut store);
        let changes = store.take_pending();
        if !changes.is_empty() {
            let mut internal = self.internal.lock().unwrap_or_else(PoisonError::into_inner);
            for c in changes {
                if let Some(tx) = self.channels.get(&c.kind) {
                    // No receivers is fine: nobody watches this kind right now.
                    let _ = tx.send(c.clone());
                }
                internal.retain(|tx| tx.send(c.clone()).is_ok());
            }
        }
        r
    }

    /// Subscribe to a kind's changes; call inside [`Cluster::with_store`] to
    /// line the subscription up with a snapshot.
    pub fn subscribe(&self, kind: Kind) -> Option<broadcast::Receiver<Arc<Change>>> {
        self.channels.get(&kind).map(broadcast::Sender::subscribe)
    }

    /// An unbounded feed of every change, for the in-process controllers
    /// (they must never lag or miss a change).
    pub fn subscribe_internal(&self) -> mpsc::UnboundedReceiver<Arc<Change>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.internal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tx);
        rx
    }

    /// A copy of the fault configuration.
    pub fn faults(&self) -> FaultConfig {
        self.faults
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Change the fault configuration and wake requests held by a pause.
    pub fn update_faults(&self, f: impl FnOnce(&mut FaultConfig)) {
        {
            let mut cfg = self.faults.write().unwrap_or_else(PoisonError::into_inner);
            f(&mut cfg);
        }
        self.faults_changed.send_modify(|v| *v += 1);
    }

    /// Take one forced-410 token, if any are armed.
    pub fn take_forced_gone(&self) -> bool {
        let mut cfg = self.faults.write().unwrap_or_else(PoisonError::into_inner);
        if cfg.force_gone_watches > 0 {
            cfg.force_gone_watches -= 1;
            true
        } else {
            false
        }
    }

    /// Wait while the API is paused (returns at once when not paused).
    pub async fn wait_unpaused(&self) {
        /// Counts a held request for as long as it is held, however the wait ends.
        struct Held<'a>(&'a AtomicUsize);
        impl Drop for Held<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let mut rx = self.faults_changed.subscribe();
        if !self.faults().paused {
            return;
        }
        self.held_requests.fetch_add(1, Ordering::SeqCst);
        let _held = Held(&self.held_requests);
        while self.faults().paused {
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                () = self.shutdown.cancelled() => return,
            }
        }
    }
}
