//! The handle everything that emits events holds: a bounded queue in front of the
//! websocket, its counters, and a tap for embedders. Emitting never waits: the event is
//! serialised, queued, and the delivery task (`delivery.rs`) takes it from there. When the
//! server cannot take events, the queue fills and the **oldest** events are dropped and
//! counted, so memory stays bounded and runs go on at full rate.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::model::Event;
use super::options::EventsOptions;
use crate::client::{ClientError, PrefectClient};

/// Counters of an [`EventEmitter`], for metrics and health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventStats {
    /// Events handed to [`EventEmitter::emit`].
    pub emitted: u64,
    /// Events the server confirmed (a checkpoint pong came back after them).
    pub delivered: u64,
    /// Events dropped: the oldest, when the queue was full (the server unreachable for
    /// long), what was still queued at shutdown, and everything after a server of an
    /// incompatible major version was found.
    pub dropped: u64,
    /// Events waiting, sent but not yet confirmed included.
    pub queued: usize,
    /// The queue bound.
    pub capacity: usize,
    /// Whether the websocket is up right now.
    pub connected: bool,
}

/// One serialised event waiting for the socket.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub(crate) id: Uuid,
    pub(crate) text: String,
}

#[derive(Debug)]
struct Queue {
    items: VecDeque<Queued>,
    /// When the last dropped-events warning was logged, and the count then.
    last_warning: Option<(Instant, u64)>,
}

/// State shared by the handles and the delivery task.
#[derive(Debug)]
pub(crate) struct Shared {
    queue: Mutex<Queue>,
    pub(crate) wake: Notify,
    pub(crate) options: EventsOptions,
    pub(crate) client: PrefectClient,
    emitted: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    unconfirmed: AtomicUsize,
    connected: AtomicBool,
    tap: broadcast::Sender<Arc<Event>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Every mutation is a push or a pop; a panic elsewhere leaves the queue usable.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push_back(&self, item: Queued) {
        let mut q = self.lock();
        let mut dropped_now = 0;
        while q.items.len() >= self.options.queue_capacity.max(1) {
            q.items.pop_front();
            dropped_now += 1;
        }
        q.items.push_back(item);
        if dropped_now > 0 {
            self.count_dropped(&mut q, dropped_now);
        }
    }

    fn count_dropped(&self, q: &mut Queue, n: u64) {
        let total = self.dropped.fetch_add(n, Ordering::Relaxed) + n;
        let due = q
            .last_warning
            .is_none_or(|(at, _)| at.elapsed() >= self.options.warn_interval);
        if due {
            let since = total - q.last_warning.map_or(0, |(_, count)| count);
            tracing::warn!(
                dropped = since,
                dropped_total = total,
                capacity = self.options.queue_capacity,
                "events cannot be delivered to the Prefect API fast enough: dropped the {since} oldest queued events ({total} in all); runs are not affected"
            );
            q.last_warning = Some((Instant::now(), total));
        }
    }

    /// The next event to send.
    pub(crate) fn pop_front(&self) -> Option<Queued> {
        self.lock().items.pop_front()
    }

    pub(crate) fn has_queued(&self) -> bool {
        !self.lock().items.is_empty()
    }

    /// Puts events that were sent but not confirmed back in front of the queue (they go out
    /// again after a reconnect), dropping the oldest beyond the bound.
    pub(crate) fn requeue_front(&self, items: impl DoubleEndedIterator<Item = Queued>) {
        let mut q = self.lock();
        for item in items.rev() {
            q.items.push_front(item);
        }
        let over = q
            .items
            .len()
            .saturating_sub(self.options.queue_capacity.max(1));
        if over > 0 {
            q.items.drain(..over);
            self.count_dropped(&mut q, over as u64);
        }
    }

    /// Drops everything queued (shutdown, incompatible server); returns how many.
    pub(crate) fn drop_all(&self) -> u64 {
        let mut q = self.lock();
        let n = q.items.len() as u64;
        q.items.clear();
        self.dropped.fetch_add(n, Ordering::Relaxed);
        n
    }

    pub(crate) fn add_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set_unconfirmed(&self, n: usize) {
        self.unconfirmed.store(n, Ordering::Relaxed);
    }

    pub(crate) fn confirmed(&self, n: usize) {
        self.delivered.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }
}

/// Emits events to the Prefect API. Cheap to clone; every clone feeds the same queue.
/// [`EventEmitter::disabled`] accepts events and does nothing.
#[derive(Debug, Clone)]
pub struct EventEmitter {
    shared: Option<Arc<Shared>>,
}

/// The running delivery task of an [`EventEmitter`]; [`EventsTask::shutdown`] delivers what
/// is queued (bounded by `flush_timeout`) and stops it.
#[derive(Debug)]
pub struct EventsTask {
    stop: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl EventsTask {
    /// Delivers what is queued (at most `flush_timeout`), closes the socket and returns
    /// once the task has ended.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

impl Drop for EventsTask {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl EventEmitter {
    /// Starts delivering events to `client`'s API (`/events/in`) on the current tokio
    /// runtime. With `options.enabled == false` the emitter is [`EventEmitter::disabled`]
    /// and no task runs.
    #[must_use]
    pub fn start(client: PrefectClient, options: EventsOptions) -> (Self, EventsTask) {
        let stop = CancellationToken::new();
        if !options.enabled {
            return (Self::disabled(), EventsTask { stop, handle: None });
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                last_warning: None,
            }),
            wake: Notify::new(),
            options,
            client,
            emitted: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            unconfirmed: AtomicUsize::new(0),
            connected: AtomicBool::new(false),
            tap: broadcast::channel(1024).0,
        });
        let handle = tokio::spawn(super::delivery::run(shared.clone(), stop.clone()));
        (
            Self {
                shared: Some(shared),
            },
            EventsTask {
                stop,
                handle: Some(handle),
            },
        )
    }

    /// An emitter that drops everything silently (events turned off).
    #[must_use]
    pub fn disabled() -> Self {
        Self { shared: None }
    }

    /// Whether events go anywhere.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// Queues `event` for delivery. Never waits; when the queue is full the oldest queued
    /// event is dropped (counted in [`EventStats::dropped`], with a warning at most once per
    /// `warn_interval`).
    pub fn emit(&self, event: Event) {
        let Some(s) = &self.shared else { return };
        let text = match serde_json::to_string(&event) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e, event = %event.event, "cannot serialise event");
                return;
            }
        };
        tracing::debug!(event = %event.event, id = %event.id, resource = %event.resource.id(), "emitting event");
        let id = event.id;
        if s.tap.receiver_count() > 0 {
            let _ = s.tap.send(Arc::new(event));
        }
        s.emitted.fetch_add(1, Ordering::Relaxed);
        s.push_back(Queued { id, text });
        s.wake.notify_one();
    }

    /// The counters: emitted, delivered, dropped, queued, capacity, connected.
    #[must_use]
    pub fn stats(&self) -> EventStats {
        let Some(s) = &self.shared else {
            return EventStats::default();
        };
        EventStats {
            emitted: s.emitted.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            queued: s.lock().items.len() + s.unconfirmed.load(Ordering::Relaxed),
            capacity: s.options.queue_capacity,
            connected: s.connected.load(Ordering::Relaxed),
        }
    }

    /// A copy of every event emitted from now on (for embedders that mirror events, and
    /// tests). A receiver that falls more than 1,024 events behind misses some. `None` when
    /// disabled.
    #[must_use]
    pub fn subscribe(&self) -> Option<broadcast::Receiver<Arc<Event>>> {
        self.shared.as_ref().map(|s| s.tap.subscribe())
    }

    /// Whether the server already stores the event `id` about `resource_id` that occurred
    /// at or after `since` (`POST /events/filter`): a restarted emitter with deterministic
    /// ids asks before re-emitting (spec §6.1). `Ok(false)` when disabled.
    pub async fn is_stored(
        &self,
        id: Uuid,
        resource_id: &str,
        since: DateTime<Utc>,
    ) -> Result<bool, ClientError> {
        let Some(s) = &self.shared else {
            return Ok(false);
        };
        let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        // `until` defaults to the server's now; a cluster clock ahead of it must not hide
        // an event.
        let until = Utc::now() + chrono::TimeDelta::days(1);
        let filter = json!({
            "occurred": {"since": fmt(since), "until": fmt(until)},
            "resource": {"id": [resource_id]},
            "id": {"id": [id]},
        });
        Ok(!s.client.filter_events(&filter, 1).await?.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientOptions;
    use crate::events::Resource;

    fn emitter(capacity: usize) -> (EventEmitter, Arc<Shared>) {
        // Not started: the queue alone, as the delivery task would see it.
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                last_warning: None,
            }),
            wake: Notify::new(),
            options: EventsOptions::default().with_queue_capacity(capacity),
            client: PrefectClient::new(ClientOptions::new("http://127.0.0.1:9/api")).unwrap(),
            emitted: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            unconfirmed: AtomicUsize::new(0),
            connected: AtomicBool::new(false),
            tap: broadcast::channel(8).0,
        });
        (
            EventEmitter {
                shared: Some(shared.clone()),
            },
            shared,
        )
    }

    fn event(n: usize) -> Event {
        Event::new(format!("e{n}"), Resource::new("r"))
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts() {
        let (e, shared) = emitter(3);
        let ids: Vec<Uuid> = (0..5)
            .map(|n| {
                let ev = event(n);
                let id = ev.id;
                e.emit(ev);
                id
            })
            .collect();
        let s = e.stats();
        assert_eq!((s.emitted, s.dropped, s.queued, s.capacity), (5, 2, 3, 3));
        let left: Vec<Uuid> = std::iter::from_fn(|| shared.pop_front())
            .map(|q| q.id)
            .collect();
        assert_eq!(left, ids[2..], "the newest survive, in order");
    }

    #[test]
    fn requeued_unconfirmed_events_go_first_within_the_bound() {
        let (e, shared) = emitter(3);
        for n in 0..3 {
            e.emit(event(n));
        }
        let sent: Vec<Queued> = (0..2).filter_map(|_| shared.pop_front()).collect();
        e.emit(event(3));
        e.emit(event(4)); // queue: 2, 3, 4 (full)
        shared.requeue_front(sent.clone().into_iter());
        let left: Vec<String> = std::iter::from_fn(|| shared.pop_front())
            .map(|q| q.text)
            .collect();
        assert_eq!(left.len(), 3);
        assert!(left[0].contains("\"e2\""), "{left:?}");
        assert_eq!(e.stats().dropped, 2, "the two oldest (0 and 1) went");
    }

    #[test]
    fn the_tap_sees_emitted_events_and_disabled_emitters_do_nothing() {
        let (e, _) = emitter(3);
        let mut rx = e.subscribe().unwrap();
        e.emit(event(7));
        assert_eq!(rx.try_recv().unwrap().event, "e7");
        let d = EventEmitter::disabled();
        d.emit(event(1));
        assert_eq!(d.stats(), EventStats::default());
        assert!(d.subscribe().is_none() && !d.is_enabled());
    }
}
