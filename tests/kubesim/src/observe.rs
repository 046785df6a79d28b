//! What tests observe: the request log and watch counters.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

/// One answered request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string (empty when none).
    pub query: String,
    /// HTTP status answered (for watches: the status the stream started with).
    pub status: u16,
}

impl RequestRecord {
    /// Whether the request was a watch (`watch=true`/`watch=1` query).
    pub fn is_watch(&self) -> bool {
        self.query
            .split('&')
            .any(|kv| matches!(kv, "watch=true" | "watch=1"))
    }

    /// What RBAC decides this request on (`None` for discovery and health paths).
    pub fn attributes(&self) -> Option<crate::rbac::RequestAttributes> {
        crate::rbac::RequestAttributes::of(&self.method, &self.path, &self.query)
    }
}

/// Identifies a watch: the resource plural and the namespace (`None` = cluster-wide).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct WatchKey {
    /// Resource plural, e.g. `jobs`.
    pub resource: String,
    /// Namespace, or `None` for a cluster-wide watch.
    pub namespace: Option<String>,
}

/// A snapshot of the watch counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WatchCounters {
    /// Watches open right now.
    pub open: BTreeMap<String, u64>,
    /// Watches ever opened.
    pub opened_total: BTreeMap<String, u64>,
}

impl WatchCounters {
    fn key(resource: &str, namespace: Option<&str>) -> String {
        format!("{resource}@{}", namespace.unwrap_or("*"))
    }

    /// Open watches on `resource` in `namespace` (`None` = cluster-wide ones).
    pub fn open(&self, resource: &str, namespace: Option<&str>) -> u64 {
        self.open
            .get(&Self::key(resource, namespace))
            .copied()
            .unwrap_or(0)
    }

    /// Watches ever opened on `resource` in `namespace`.
    pub fn opened_total(&self, resource: &str, namespace: Option<&str>) -> u64 {
        self.opened_total
            .get(&Self::key(resource, namespace))
            .copied()
            .unwrap_or(0)
    }

    /// All open watches.
    pub fn open_sum(&self) -> u64 {
        self.open.values().sum()
    }
}

/// Shared observation state.
#[derive(Debug, Default)]
pub struct Observer {
    log: Mutex<VecDeque<RequestRecord>>,
    counters: Mutex<WatchCounters>,
}

/// Requests kept in the log; older ones are dropped first.
const LOG_CAPACITY: usize = 100_000;

impl Observer {
    /// Append a request record.
    pub fn record(&self, rec: RequestRecord) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() >= LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(rec);
    }

    /// A copy of the request log.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Empty the request log.
    pub fn clear_requests(&self) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// A snapshot of the watch counters.
    pub fn counters(&self) -> WatchCounters {
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Count a watch as open until the returned guard drops.
    pub fn watch_opened(self: &Arc<Self>, resource: &str, namespace: Option<&str>) -> WatchGuard {
        let key = WatchCounters::key(resource, namespace);
        {
            let mut c = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
            *c.open.entry(key.clone()).or_default() += 1;
            *c.opened_total.entry(key.clone()).or_default() += 1;
        }
        WatchGuard {
            observer: self.clone(),
            key,
        }
    }
}

/// Decrements the open-watch counter when the stream ends.
#[derive(Debug)]
pub struct WatchGuard {
    observer: Arc<Observer>,
    key: String,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let mut c = self
            .observer
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = c.open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.open.remove(&self.key);
            }
        }
    }
}
