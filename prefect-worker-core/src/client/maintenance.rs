//! The record of "Prefect-Maintenance" back-offs that the health check reads (spec §2.8):
//! a worker deliberately waiting out API maintenance must not be reported as stuck.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// When the latest maintenance back-off ends. Clones share one record, so one tracker
/// can be handed to several clients and to the health check.
#[derive(Debug, Clone, Default)]
pub struct MaintenanceTracker(Arc<Mutex<Option<Instant>>>);

impl MaintenanceTracker {
    /// A tracker with nothing recorded.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that a request sleeps `delay` before retrying a maintenance response.
    /// Concurrent requests each back off; the latest end wins.
    pub fn record(&self, delay: Duration) {
        let ends = Instant::now() + delay;
        // A poisoned lock only means another thread panicked mid-update of an `Option<Instant>`,
        // which cannot be left half-written, so the value is still usable.
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none_or(|cur| ends > cur) {
            *slot = Some(ends);
        }
    }

    /// The end of the latest maintenance back-off, or `None` if there was none.
    #[must_use]
    pub fn until(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_end_wins_and_clones_share() {
        let t = MaintenanceTracker::new();
        assert!(t.until().is_none());
        let shared = t.clone();
        shared.record(Duration::from_secs(60));
        let long = t.until();
        assert!(long.is_some());
        t.record(Duration::from_secs(1));
        assert_eq!(
            t.until(),
            long,
            "a shorter back-off must not move the end earlier"
        );
    }
}
