//! Fault-injection knobs, shared by the handle, the admin endpoint and the CLI.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The current fault configuration. Every field defaults to "no fault".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FaultConfig {
    /// Fraction (0..=1) of API requests answered 500 InternalError.
    pub error_rate_500: f64,
    /// Fraction (0..=1) of API requests answered 503 ServiceUnavailable.
    pub error_rate_503: f64,
    /// Fraction (0..=1) of API requests answered 429 TooManyRequests.
    pub throttle_rate: f64,
    /// `Retry-After` seconds sent with 429 answers.
    pub retry_after_seconds: u64,
    /// Latency added before every API request is handled, in milliseconds.
    pub latency_ms: u64,
    /// Close every watch stream this many seconds after it opened.
    pub watch_cut_after_seconds: Option<u64>,
    /// Close every watch stream after it sent this many events.
    pub watch_cut_after_events: Option<u64>,
    /// The next N watch requests get a 410 Gone `ERROR` event at once.
    pub force_gone_watches: u32,
    /// While true, API requests hang (they are held, not refused) until resumed.
    pub paused: bool,
    /// Namespaces the client may not touch (403 Forbidden).
    pub forbidden_namespaces: BTreeSet<String>,
    /// When set, RBAC: resource requests no rule grants are refused with 403.
    pub rbac: Option<crate::rbac::Rbac>,
}

impl FaultConfig {
    /// The added latency as a Duration.
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }
}
