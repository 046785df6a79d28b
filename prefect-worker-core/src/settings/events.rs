//! How the events client behaves, and the settings it reads. (Here with the other
//! settings, so `settings` stays below `events`; `events::options` re-exports it.)

use std::time::Duration;

use super::{SettingsError, SettingsSources};

/// The queue bound when `PREFECT_EVENTS_WORKER_MAX_QUEUE_SIZE` is unset or 0.
pub const DEFAULT_QUEUE_CAPACITY: usize = 5_000;

/// Options of the events client. `Default`: enabled, a queue of
/// [`DEFAULT_QUEUE_CAPACITY`] events, the server-version check on, a checkpoint every 700
/// events or 30 s (Python's), reconnection back-off from 1 s doubling to 30 s, a dropped
/// events warning at most once a minute, and up to 5 s at shutdown to deliver what is
/// queued.
#[derive(Debug, Clone, PartialEq)]
pub struct EventsOptions {
    /// Emit events at all (`PREFECT_WORKER_EVENTS_ENABLED`, ours: Python has no switch).
    pub enabled: bool,
    /// Most events held while the server cannot take them
    /// (`PREFECT_EVENTS_WORKER_MAX_QUEUE_SIZE`); when full, the oldest is dropped.
    pub queue_capacity: usize,
    /// `GET /admin/version` once before the first connection
    /// (`PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED`).
    pub server_version_check: bool,
    /// Confirm delivery (a ping answered by a pong) after this many events.
    pub checkpoint_every: usize,
    /// ... or after this long with unconfirmed events.
    pub checkpoint_interval: Duration,
    /// First wait before reconnecting after a failure; doubles up to `reconnect_max`.
    pub reconnect_min: Duration,
    /// Longest wait between reconnection attempts.
    pub reconnect_max: Duration,
    /// How long to wait for the socket (connect, pong, a send) before giving up on it.
    pub io_timeout: Duration,
    /// Warn about dropped events at most this often.
    pub warn_interval: Duration,
    /// At shutdown, how long to keep trying to deliver what is queued.
    pub flush_timeout: Duration,
}

impl Default for EventsOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            server_version_check: true,
            checkpoint_every: 700,
            checkpoint_interval: Duration::from_secs(30),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            io_timeout: Duration::from_secs(10),
            warn_interval: Duration::from_secs(60),
            flush_timeout: Duration::from_secs(5),
        }
    }
}

impl EventsOptions {
    /// Reads `PREFECT_WORKER_EVENTS_ENABLED`, `PREFECT_EVENTS_WORKER_MAX_QUEUE_SIZE` and
    /// `PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED` from `sources`.
    pub fn from_sources(sources: &SettingsSources) -> Result<Self, SettingsError> {
        let d = Self::default();
        let queue_capacity = match sources
            .parse::<usize>("PREFECT_EVENTS_WORKER_MAX_QUEUE_SIZE", "a whole number ≥ 0")?
        {
            // Python's 0 means unbounded; a worker that runs for months keeps a bound.
            Some(0) | None => d.queue_capacity,
            Some(n) => n,
        };
        Ok(Self {
            enabled: sources
                .parse_bool("PREFECT_WORKER_EVENTS_ENABLED")?
                .unwrap_or(d.enabled),
            queue_capacity,
            server_version_check: sources
                .parse_bool("PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED")?
                .unwrap_or(d.server_version_check),
            ..d
        })
    }

    /// Sets whether events are emitted.
    #[must_use]
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Sets the queue bound (at least 1).
    #[must_use]
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indexmap::IndexMap;

    fn sources(pairs: &[(&str, &str)]) -> SettingsSources {
        SettingsSources::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            IndexMap::new(),
        )
    }

    #[test]
    fn settings_and_their_defaults() {
        assert_eq!(
            EventsOptions::from_sources(&sources(&[])).unwrap(),
            EventsOptions::default()
        );
        let o = EventsOptions::from_sources(&sources(&[
            ("PREFECT_WORKER_EVENTS_ENABLED", "false"),
            ("PREFECT_EVENTS_WORKER_MAX_QUEUE_SIZE", "50"),
            ("PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED", "0"),
        ]))
        .unwrap();
        assert!(!o.enabled && !o.server_version_check);
        assert_eq!(o.queue_capacity, 50);
        let o =
            EventsOptions::from_sources(&sources(&[("PREFECT_EVENTS_WORKER_MAX_QUEUE_SIZE", "0")]))
                .unwrap();
        assert_eq!(o.queue_capacity, DEFAULT_QUEUE_CAPACITY);
        let e = EventsOptions::from_sources(&sources(&[(
            "PREFECT_EVENTS_WORKER_MAX_QUEUE_SIZE",
            "-1",
        )]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("PREFECT_EVENTS_WORKER_MAX_QUEUE_SIZE"), "{e}");
    }
}
