//! Container logs, kept per container instance so `previous=true` works and
//! `follow=true` can stream while the process runs.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

/// Bytes kept per container instance; older lines are dropped first (the
/// kubelet rotates logs too, at 10 MiB by default).
const MAX_BYTES_PER_INSTANCE: usize = 2 * 1024 * 1024;

/// One line of output with the time it was read.
#[derive(Clone, Debug)]
pub struct LogLine {
    /// When the kubelet read it.
    pub time: Timestamp,
    /// The text, including its trailing newline when it had one.
    pub text: String,
}

#[derive(Debug, Default)]
struct Lines {
    lines: VecDeque<LogLine>,
    bytes: usize,
    /// Lines dropped from the front, so follower positions stay absolute.
    dropped: u64,
}

/// The log of one container instance (one run of the process).
#[derive(Debug)]
pub struct ContainerLog {
    lines: Mutex<Lines>,
    /// (total lines ever appended, closed)
    progress: watch::Sender<(u64, bool)>,
}

impl Default for ContainerLog {
    fn default() -> Self {
        ContainerLog {
            lines: Mutex::new(Lines::default()),
            progress: watch::channel((0, false)).0,
        }
    }
}

impl ContainerLog {
    /// Append one line.
    pub fn push(&self, text: String) {
        let total = {
            let mut l = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
            l.bytes += text.len();
            l.lines.push_back(LogLine {
                time: crate::clock::now(),
                text,
            });
            while l.bytes > MAX_BYTES_PER_INSTANCE {
                match l.lines.pop_front() {
                    Some(old) => {
                        l.bytes -= old.text.len();
                        l.dropped += 1;
                    }
                    None => break,
                }
            }
            l.dropped + l.lines.len() as u64
        };
        self.progress.send_modify(|p| p.0 = total);
    }

    /// Mark the instance finished: followers end after the last line.
    pub fn close(&self) {
        self.progress.send_modify(|p| p.1 = true);
    }

    /// Whether the instance finished.
    pub fn is_closed(&self) -> bool {
        self.progress.borrow().1
    }

    /// Lines from absolute position `from` on; returns them and the next position.
    pub fn read_from(&self, from: u64) -> (Vec<LogLine>, u64) {
        let l = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let start = from.saturating_sub(l.dropped) as usize;
        let out: Vec<LogLine> = l.lines.iter().skip(start).cloned().collect();
        let next = l.dropped + l.lines.len() as u64;
        (out, next)
    }

    /// Absolute position of the first of the last `n` lines.
    pub fn tail_start(&self, n: u64) -> u64 {
        let l = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let total = l.dropped + l.lines.len() as u64;
        total.saturating_sub(n).max(l.dropped)
    }

    /// Subscribe to progress (new lines / closed).
    pub fn subscribe(&self) -> watch::Receiver<(u64, bool)> {
        self.progress.subscribe()
    }

    /// Whole log as text (for tests).
    pub fn text(&self) -> String {
        self.read_from(0).0.into_iter().map(|l| l.text).collect()
    }
}

/// `(pod uid, container name)` → the container's instances, oldest first.
type Instances = HashMap<(String, String), Vec<Arc<ContainerLog>>>;

/// Logs of every container instance, keyed by pod uid and container name.
#[derive(Debug, Default)]
pub struct LogStore {
    inner: Mutex<Instances>,
}

impl LogStore {
    /// Start a new instance (a fresh run) of a container and return its log.
    pub fn new_instance(&self, pod_uid: &str, container: &str) -> Arc<ContainerLog> {
        let log = Arc::new(ContainerLog::default());
        let mut m = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let v = m
            .entry((pod_uid.to_string(), container.to_string()))
            .or_default();
        v.push(log.clone());
        // Only the current and previous instances are ever served.
        if v.len() > 2 {
            v.remove(0);
        }
        log
    }

    /// The current (`previous=false`) or previous instance's log.
    pub fn get(&self, pod_uid: &str, container: &str, previous: bool) -> Option<Arc<ContainerLog>> {
        let m = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let v = m.get(&(pod_uid.to_string(), container.to_string()))?;
        let idx = if previous {
            v.len().checked_sub(2)?
        } else {
            v.len().checked_sub(1)?
        };
        v.get(idx).cloned()
    }

    /// Forget a pod's logs (it is gone from the API).
    pub fn remove_pod(&self, pod_uid: &str) {
        let mut m = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        m.retain(|(uid, _), _| uid != pod_uid);
    }
}
