//! The delivery task: takes events from the queue and sends them over the events socket,
//! checkpointing every `checkpoint_every` events or `checkpoint_interval`, and after any
//! failure puts the unconfirmed events back in front of the queue, reconnects with
//! back-off and sends them again (spec §4.6). Python gives up on an event after 10
//! reconnection attempts; this task keeps the events (within the queue bound) and keeps
//! trying, so a short outage loses nothing and a long one loses the oldest.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::emitter::{Queued, Shared};
use super::socket::{EventsError, EventsSocket};

/// Unconfirmed events and the open socket, if any.
struct Link {
    socket: Option<EventsSocket>,
    unconfirmed: VecDeque<Queued>,
    last_checkpoint: Instant,
    /// Failures (connections refused or lost) since the last confirmed checkpoint: a
    /// socket that opens but never confirms anything backs off too.
    failures: u32,
    /// Whether the current outage has been reported at warning level.
    warned: bool,
}

impl Link {
    /// Forgets the socket and puts what it did not confirm back in the queue.
    fn lose(&mut self, shared: &Shared, error: &EventsError) {
        self.socket = None;
        self.failures = self.failures.saturating_add(1);
        shared.set_connected(false);
        let n = self.unconfirmed.len();
        shared.requeue_front(self.unconfirmed.drain(..));
        shared.set_unconfirmed(0);
        tracing::debug!(error = %error, resend = n, "events websocket lost; reconnecting");
    }

    async fn checkpoint(&mut self, shared: &Shared) {
        let Some(socket) = self.socket.as_mut() else {
            return;
        };
        match socket.checkpoint().await {
            Ok(()) => {
                shared.confirmed(self.unconfirmed.len());
                self.unconfirmed.clear();
                shared.set_unconfirmed(0);
                self.last_checkpoint = Instant::now();
                self.failures = 0;
            }
            Err(e) => self.lose(shared, &e),
        }
    }
}

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    if shared.options.server_version_check
        && !shared.client.is_cloud()
        && !server_is_compatible(&shared, &stop).await
    {
        // Python refuses to send to a server of another major version; so do we.
        loop {
            let n = shared.drop_all();
            if n > 0 {
                tracing::debug!(dropped = n, "events dropped: incompatible server");
            }
            tokio::select! {
                () = shared.wake.notified() => {}
                () = stop.cancelled() => return,
            }
        }
    }
    let mut link = Link {
        socket: None,
        unconfirmed: VecDeque::new(),
        last_checkpoint: Instant::now(),
        failures: 0,
        warned: false,
    };
    while !stop.is_cancelled() {
        if !shared.has_queued() {
            idle(&shared, &mut link, &stop).await;
            continue;
        }
        if link.socket.is_none() && !connect(&shared, &mut link, &stop).await {
            continue;
        }
        send_next(&shared, &mut link).await;
    }
    flush(&shared, &mut link).await;
}

/// Nothing queued: wait for an event, the time-based checkpoint, the server closing the
/// socket, or shutdown.
async fn idle(shared: &Shared, link: &mut Link, stop: &CancellationToken) {
    let checkpoint_at = link.last_checkpoint + shared.options.checkpoint_interval;
    let checkpoint_due = !link.unconfirmed.is_empty();
    let closed = async {
        match link.socket.as_mut() {
            Some(s) => Some(s.idle().await),
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        () = shared.wake.notified() => None,
        () = stop.cancelled() => None,
        () = tokio::time::sleep_until(checkpoint_at), if checkpoint_due => Some(None),
        e = closed => Some(e),
    };
    match outcome {
        Some(Some(e)) => link.lose(shared, &e),
        Some(None) => link.checkpoint(shared).await,
        None => {}
    }
}

/// Opens the socket, after the back-off the failures so far call for. `false`: not
/// connected (shutdown, or the attempt failed).
async fn connect(shared: &Shared, link: &mut Link, stop: &CancellationToken) -> bool {
    let wait = backoff(
        link.failures,
        shared.options.reconnect_min,
        shared.options.reconnect_max,
    );
    if !wait.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return false,
        }
    }
    match EventsSocket::open(&shared.client, shared.options.io_timeout).await {
        Ok(socket) => {
            if link.warned {
                tracing::info!("connected to the Prefect events websocket again");
            }
            link.socket = Some(socket);
            link.warned = false;
            link.last_checkpoint = Instant::now();
            shared.set_connected(true);
            true
        }
        Err(e) => {
            link.failures = link.failures.saturating_add(1);
            // Python warns once its reconnection attempts are used up; a load balancer
            // closing an idle socket is not worth a warning.
            if link.failures >= 3 && !link.warned {
                link.warned = true;
                tracing::warn!(
                    error = %e,
                    "Unable to connect to the Prefect events websocket; events are queued (oldest dropped beyond {}) and runs are not affected. Check that websocket connections to the API are allowed",
                    shared.options.queue_capacity
                );
            } else {
                tracing::debug!(error = %e, failures = link.failures, "events websocket connection failed");
            }
            false
        }
    }
}

async fn send_next(shared: &Shared, link: &mut Link) {
    let (Some(socket), Some(item)) = (link.socket.as_mut(), shared.pop_front()) else {
        return;
    };
    let text = item.text.clone();
    tracing::trace!(id = %item.id, "sending event");
    link.unconfirmed.push_back(item);
    shared.set_unconfirmed(link.unconfirmed.len());
    if let Err(e) = socket.send_event(text).await {
        link.lose(shared, &e);
        return;
    }
    if link.unconfirmed.len() >= shared.options.checkpoint_every.max(1) {
        link.checkpoint(shared).await;
    }
}

/// Shutdown: deliver what is queued within `flush_timeout`, confirm it, close.
async fn flush(shared: &Shared, link: &mut Link) {
    if !shared.has_queued() && link.unconfirmed.is_empty() {
        if let Some(s) = link.socket.take() {
            s.close().await;
        }
        shared.set_connected(false);
        return;
    }
    let deadline = Instant::now() + shared.options.flush_timeout;
    let attempt = async {
        // One connection attempt without back-off: the worker is leaving.
        link.failures = 0;
        loop {
            if link.socket.is_none() {
                let never = CancellationToken::new();
                if !connect(shared, link, &never).await {
                    return;
                }
            }
            if !shared.has_queued() {
                link.checkpoint(shared).await;
                if link.unconfirmed.is_empty() {
                    return;
                }
                continue;
            }
            send_next(shared, link).await;
        }
    };
    let _ = tokio::time::timeout_at(deadline, attempt).await;
    // Sent but unconfirmed counts as lost: nothing proves it arrived.
    let unconfirmed = link.unconfirmed.len() as u64;
    link.unconfirmed.clear();
    shared.set_unconfirmed(0);
    shared.add_dropped(unconfirmed);
    let lost = unconfirmed + shared.drop_all();
    if lost > 0 {
        tracing::warn!(
            undelivered = lost,
            "{lost} events could not be delivered before shutdown"
        );
    }
    if let Some(s) = link.socket.take() {
        s.close().await;
    }
    shared.set_connected(false);
}

/// Python reconnects at once twice, then waits; we double from `min` up to `max`, with
/// ±20 % jitter so many workers do not reconnect in step.
fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    if failures < 2 {
        return Duration::ZERO;
    }
    let base = min.saturating_mul(1u32 << (failures - 2).min(16)).min(max);
    base.mul_f64(0.8 + rand::random::<f64>() * 0.4)
}

/// `GET /admin/version` once: a different major version stops event delivery (Python
/// raises); an older server is a warning; an unreachable one is not checked.
async fn server_is_compatible(shared: &Shared, stop: &CancellationToken) -> bool {
    let version = tokio::select! {
        v = shared.client.read_server_version() => v,
        () = stop.cancelled() => return true,
    };
    let server = match version {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(error = %e, "cannot check the server version");
            return true;
        }
    };
    match compare_versions(&server, crate::PREFECT_VERSION) {
        Some(VersionCheck::Incompatible) => {
            tracing::error!(
                server = %server,
                client = crate::PREFECT_VERSION,
                "Found incompatible versions: client: {}, server: {server}. Major versions must match. No events will be sent",
                crate::PREFECT_VERSION
            );
            false
        }
        Some(VersionCheck::Older) => {
            tracing::warn!(
                server = %server,
                "Your Prefect server is running an older version of Prefect than your client which may result in unexpected behavior. Please upgrade your Prefect server from version {server} to version {} or higher.",
                crate::PREFECT_VERSION
            );
            true
        }
        Some(VersionCheck::Ok) | None => true,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum VersionCheck {
    Ok,
    Older,
    Incompatible,
}

/// Compares `major.minor.patch` prefixes; `None` when the server's version is unreadable.
fn compare_versions(server: &str, client: &str) -> Option<VersionCheck> {
    fn parts(v: &str) -> Option<(u64, u64, u64)> {
        let mut it = v.trim().split(['.', '+', '-']).map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u64>().ok()
        });
        let major = it.next()??;
        let minor = it.next().flatten().unwrap_or(0);
        let patch = it.next().flatten().unwrap_or(0);
        Some((major, minor, patch))
    }
    let s = parts(server)?;
    let c = parts(client)?;
    Some(if s.0 != c.0 {
        VersionCheck::Incompatible
    } else if s < c {
        VersionCheck::Older
    } else {
        VersionCheck::Ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(compare_versions("3.9.1", "3.9.1"), Some(VersionCheck::Ok));
        assert_eq!(compare_versions("3.10.0", "3.9.1"), Some(VersionCheck::Ok));
        assert_eq!(
            compare_versions("3.4.2", "3.9.1"),
            Some(VersionCheck::Older)
        );
        assert_eq!(
            compare_versions("2.20.0", "3.9.1"),
            Some(VersionCheck::Incompatible)
        );
        assert_eq!(
            compare_versions("3.9.1.dev4+g1234", "3.9.1"),
            Some(VersionCheck::Ok)
        );
        assert_eq!(compare_versions("banana", "3.9.1"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(30));
        assert!(backoff(0, min, max).is_zero() && backoff(1, min, max).is_zero());
        assert!(backoff(2, min, max) <= Duration::from_millis(1200));
        assert!(backoff(20, min, max) <= Duration::from_secs(36));
        assert!(backoff(20, min, max) >= Duration::from_secs(24));
    }
}
