//! Replicates the pods the shared tracker sees as `prefect.kubernetes.pod.*` events
//! (spec §6.1), without a watch of its own.
//!
//! - An event is emitted when a pod's event id changes (phase, restart count or
//!   diagnosis), not on every update: the server would store one of each id anyway.
//! - Each event `follows` the pod's previous one when it is within five minutes of it.
//! - A pod first seen in a list (the watch's initial list, or a relist after it was cut)
//!   may already have had its event emitted, by this worker before a restart or by another
//!   process: the server is asked first (`POST /events/filter`, at most
//!   `OBSERVER_STARTUP_EVENT_CONCURRENCY` at once) and the event is emitted only if it is
//!   not there. Should that question fail, the event is emitted: the server keeps one
//!   event per id, so a duplicate costs nothing, while a lost event cannot be recovered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use prefect_worker_core::events::EventEmitter;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::pod_events::{PodEvent, pod_event};

/// Most pods remembered; beyond it the least recently changed are forgotten (a forgotten
/// pod that changes again is looked up on the server like a listed one).
const MAX_PODS: usize = 10_000;

#[derive(Debug, Default)]
struct PodState {
    /// The last event emitted (or found on the server) for this pod.
    last: Option<(Uuid, DateTime<Utc>)>,
    /// A server lookup for this pod is in flight; later events wait for it.
    checking: bool,
    /// The newest event that arrived during the lookup.
    deferred: Option<PodEvent>,
    /// When the state last changed, for eviction beyond [`MAX_PODS`].
    touched: u64,
}

#[derive(Debug)]
struct Inner {
    emitter: EventEmitter,
    lookups: Semaphore,
    pods: Mutex<(HashMap<String, PodState>, u64)>,
}

/// Turns pod snapshots into pod events. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PodEventReplicator {
    inner: Arc<Inner>,
}

impl PodEventReplicator {
    /// Emits through `emitter`, with at most `startup_concurrency` server lookups at once.
    #[must_use]
    pub fn new(emitter: EventEmitter, startup_concurrency: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                emitter,
                lookups: Semaphore::new(startup_concurrency.max(1)),
                pods: Mutex::new((HashMap::new(), 0)),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (HashMap<String, PodState>, u64)> {
        // Single-entry updates only: a panic elsewhere cannot leave the map half-changed.
        self.inner.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A pod as the watch delivered it; `listed` when it came from a (re)list rather than a
    /// change. Never waits; lookups run on their own tasks.
    pub fn observe(&self, pod: &Pod, listed: bool) {
        let Some(event) = pod_event(pod) else { return };
        let mut guard = self.lock();
        let (pods, clock) = &mut *guard;
        *clock += 1;
        let now = *clock;
        if pods.len() >= MAX_PODS && !pods.contains_key(&event.uid) {
            evict_oldest(pods);
        }
        let state = pods.entry(event.uid.clone()).or_default();
        state.touched = now;
        if state.last.is_some_and(|(id, _)| id == event.event.id) {
            return;
        }
        if state.checking {
            state.deferred = Some(event);
            return;
        }
        if listed {
            state.checking = true;
            drop(guard);
            let me = self.clone();
            tokio::spawn(async move { me.look_up_then_emit(event).await });
            return;
        }
        emit(&self.inner.emitter, state, event);
    }

    /// The pod is gone: forget it.
    pub fn forget(&self, uid: &str) {
        self.lock().0.remove(uid);
    }

    /// How many pods are remembered (tests, metrics).
    #[must_use]
    pub fn remembered(&self) -> usize {
        self.lock().0.len()
    }

    async fn look_up_then_emit(&self, event: PodEvent) {
        let stored = {
            let _permit = self.inner.lookups.acquire().await;
            let since = event
                .created
                .unwrap_or_else(|| Utc::now() - chrono::TimeDelta::hours(1));
            self.inner
                .emitter
                .is_stored(event.event.id, event.event.resource.id(), since)
                .await
        };
        let stored = match stored {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, uid = %event.uid, "cannot ask the server for earlier pod events; emitting");
                false
            }
        };
        let mut guard = self.lock();
        let Some(state) = guard.0.get_mut(&event.uid) else {
            // Deleted meanwhile: still say what it went through, without remembering it.
            if !stored {
                self.inner.emitter.emit(event.event);
            }
            return;
        };
        state.checking = false;
        if stored {
            tracing::debug!(uid = %event.uid, event = %event.event.event, "pod event already on the server; not emitted again");
            state.last = Some(event.event.anchor());
        } else {
            emit(&self.inner.emitter, state, event);
        }
        if let Some(later) = state.deferred.take()
            && state.last.is_none_or(|(id, _)| id != later.event.id)
        {
            emit(&self.inner.emitter, state, later);
        }
    }
}

fn emit(emitter: &EventEmitter, state: &mut PodState, event: PodEvent) {
    let event = event.event.following(state.last);
    state.last = Some(event.anchor());
    emitter.emit(event);
}

/// Forgets the tenth of the pods changed longest ago (lookups in flight are kept).
fn evict_oldest(pods: &mut HashMap<String, PodState>) {
    let mut ages: Vec<(u64, String)> = pods
        .iter()
        .filter(|(_, s)| !s.checking)
        .map(|(k, s)| (s.touched, k.clone()))
        .collect();
    ages.sort_unstable();
    for (_, k) in ages.into_iter().take(MAX_PODS / 10) {
        pods.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(phase: &str, restarts: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u-1",
                         "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": {"prefect.io/flow-run-id": "x"}},
            "status": {"phase": phase, "startTime": "2026-01-01T00:00:01Z",
                "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true,
                    "restartCount": restarts, "state": {"running": {"startedAt": "2026-01-01T00:00:02Z"}}}]}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn one_event_per_change_each_following_the_last() {
        let (emitter, _task) = EventEmitter::start(
            prefect_worker_core::client::PrefectClient::new(
                prefect_worker_core::client::ClientOptions::new("http://127.0.0.1:9/api"),
            )
            .unwrap(),
            prefect_worker_core::events::EventsOptions {
                server_version_check: false,
                ..Default::default()
            },
        );
        let mut tap = emitter.subscribe().unwrap();
        let r = PodEventReplicator::new(emitter, 5);
        r.observe(&pod("Pending", 0), false);
        r.observe(&pod("Pending", 0), false); // an update that changes nothing we report
        r.observe(&pod("Running", 0), false);
        r.observe(&pod("Running", 1), false); // a restart is a new event
        let names: Vec<(String, Option<Uuid>, Uuid)> = std::iter::from_fn(|| tap.try_recv().ok())
            .map(|e| (e.event.clone(), e.follows, e.id))
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0].0, "prefect.kubernetes.pod.pending");
        assert_eq!(names[0].1, None);
        assert_eq!(names[1].0, "prefect.kubernetes.pod.running");
        assert_eq!(names[1].1, Some(names[0].2));
        assert_eq!(names[2].1, Some(names[1].2));
        assert_eq!(r.remembered(), 1);
        r.forget("u-1");
        assert_eq!(r.remembered(), 0);
    }
}
