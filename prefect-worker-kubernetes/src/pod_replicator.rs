//! Replicates the pods the shared tracker sees as `prefect.kubernetes.pod.*` events
//! (spec §6.1), without a watch of its own.
//!
//! - An event is emitted when a pod's event id changes (phase, restart count or
//!   diagnosis), not on every update: the server would store one of each id anyway.
//! - Each event `follows` the pod's previous one when it is within five minutes of it.
//! - A pod first seen past Pending (its namespace's watch started after it) gets the
//!   `pending` event it had at creation first, with the id Python gives it, so every run
//!   shows pending → running → end.
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

use crate::pod_events::{PodEvent, creation_event, pod_event};

/// Most pods remembered; beyond it the least recently changed are forgotten (a forgotten
/// pod that changes again is looked up on the server like a listed one).
const MAX_PODS: usize = 10_000;
/// Most changes of one pod held while its lookup is in flight.
const MAX_DEFERRED: usize = 16;

#[derive(Debug, Default)]
struct PodState {
    /// The last event emitted (or found on the server) for this pod.
    last: Option<(Uuid, DateTime<Utc>)>,
    /// A server lookup for this pod is in flight; later events wait for it.
    checking: bool,
    /// Events that arrived during the lookup, in order (a few at most: one per change of
    /// phase, restart count or diagnosis).
    deferred: Vec<PodEvent>,
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
        self.inner
            .pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A pod as the watch delivered it; `listed` when it came from a (re)list rather than a
    /// change. Never waits; lookups run on their own tasks.
    pub fn observe(&self, pod: &Pod, listed: bool) {
        let Some(event) = pod_event(pod) else { return };
        let mut guard = self.lock();
        let (pods, clock) = &mut *guard;
        *clock += 1;
        let now = *clock;
        let first_sight = !pods.contains_key(&event.uid);
        if pods.len() >= MAX_PODS && first_sight {
            evict_oldest(pods);
        }
        let state = pods.entry(event.uid.clone()).or_default();
        state.touched = now;
        let mut events: Vec<PodEvent> = Vec::with_capacity(2);
        if first_sight {
            events.extend(creation_event(pod));
        }
        if state.last.is_some_and(|(id, _)| id == event.event.id) {
            return;
        }
        if state.checking {
            if state
                .deferred
                .last()
                .is_none_or(|d| d.event.id != event.event.id)
            {
                if state.deferred.len() >= MAX_DEFERRED {
                    state.deferred.remove(0);
                }
                state.deferred.push(event);
            }
            return;
        }
        events.push(event);
        if listed {
            state.checking = true;
            drop(guard);
            let me = self.clone();
            tokio::spawn(async move { me.look_up_then_emit(events).await });
            return;
        }
        for e in events {
            emit(&self.inner.emitter, state, e);
        }
    }

    /// The pod is gone: forget it.
    pub fn forget(&self, uid: &str) {
        self.lock().0.remove(uid);
    }

    /// How many pods are remembered.
    #[must_use]
    pub fn remembered(&self) -> usize {
        self.lock().0.len()
    }

    /// How many server lookups (start-up de-duplication) are in flight.
    #[must_use]
    pub fn lookups_in_flight(&self) -> usize {
        self.lock().0.values().filter(|s| s.checking).count()
    }

    /// For a listed pod: asks the server about each event (in order) and emits those it
    /// does not have, then whatever arrived meanwhile.
    async fn look_up_then_emit(&self, events: Vec<PodEvent>) {
        let Some(uid) = events.first().map(|e| e.uid.clone()) else {
            return;
        };
        let mut found = Vec::with_capacity(events.len());
        {
            let _permit = self.inner.lookups.acquire().await;
            for event in events {
                let since = event
                    .created
                    .unwrap_or_else(|| Utc::now() - chrono::TimeDelta::hours(1));
                let stored = match self
                    .inner
                    .emitter
                    .is_stored(event.event.id, event.event.resource.id(), since)
                    .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, uid = %event.uid, "cannot ask the server for earlier pod events; emitting");
                        false
                    }
                };
                found.push((event, stored));
            }
        }
        let mut guard = self.lock();
        let Some(state) = guard.0.get_mut(&uid) else {
            // Deleted meanwhile: still say what it went through, without remembering it.
            let mut scratch = PodState::default();
            for (event, stored) in found {
                if !stored {
                    emit(&self.inner.emitter, &mut scratch, event);
                }
            }
            return;
        };
        state.checking = false;
        for (event, stored) in found {
            if stored {
                tracing::debug!(uid = %event.uid, event = %event.event.event, "pod event already on the server; not emitted again");
                state.last = Some(event.event.anchor());
            } else {
                emit(&self.inner.emitter, state, event);
            }
        }
        for later in std::mem::take(&mut state.deferred) {
            if state.last.is_none_or(|(id, _)| id != later.event.id) {
                emit(&self.inner.emitter, state, later);
            }
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
        // A pod first seen running gets its creation's pending event first.
        let mut late = pod("Running", 0);
        late.metadata.uid = Some("u-2".into());
        r.observe(&late, false);
        let late: Vec<String> = std::iter::from_fn(|| tap.try_recv().ok())
            .map(|e| e.event.clone())
            .collect();
        assert_eq!(
            late,
            [
                "prefect.kubernetes.pod.pending",
                "prefect.kubernetes.pod.running"
            ]
        );
        r.forget("u-2");
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
