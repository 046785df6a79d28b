//! Prometheus metrics, served at `/metrics` on the worker's web server.
//!
//! [`Metrics`] is the registry every part of the worker records into. Nothing is recorded
//! unless one is created and handed over:
//!
//! ```no_run
//! use prefect_worker_core::metrics::Metrics;
//! use prefect_worker_core::runner::RunnerOptions;
//!
//! let metrics = Metrics::new();
//! let options = RunnerOptions::new("my-pool", "my-worker").with_metrics(&metrics);
//! // ... Runner::new(worker, client, options); the worker's own options may take it too
//! // (the Kubernetes worker registers its families into the same registry).
//! let text = metrics.encode(prefect_worker_core::metrics::Format::PrometheusText);
//! ```
//!
//! - `runner`: flow runs claimed / submitted / finished (by outcome and crash reason),
//!   the submission latency, runs in flight and the last successful poll;
//! - `api`: Prefect API requests by route template (never a concrete id), method and
//!   status, with their latency;
//! - `events`: the event emitter's counters ([`crate::events::EventStats`]);
//! - `process`: the standard `process_*` metrics, read from `/proc/self` (Linux);
//! - `exposition`: the text formats and the `/metrics` route.
//!
//! Every label value comes from a fixed set (an enum, a route template, an HTTP status):
//! no flow-run id, name or credential ever becomes a label.

pub(crate) mod api;
mod events;
mod exposition;
mod process;
pub(crate) mod runner;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Metric, Registry};

pub(crate) use events::register as register_events;
pub use exposition::{Format, router};

/// The common prefix of this worker's own metric names.
pub const PREFIX: &str = "prefect_worker_";

/// The metrics registry: what the runner, the API client, the events emitter and the
/// worker record into, and what `/metrics` encodes. Cheap to clone; clones share the
/// registry. [`Metrics::new`] registers the process metrics and the core families.
#[derive(Clone)]
pub struct Metrics {
    shared: Arc<Shared>,
}

struct Shared {
    registry: Mutex<Registry>,
    runner: runner::RunnerFamilies,
    api: api::ApiFamilies,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the process metrics and the runner and API families.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(process::ProcessCollector));
        let runner = runner::RunnerFamilies::register(&mut registry);
        let api = api::ApiFamilies::register(&mut registry);
        Self {
            shared: Arc::new(Shared {
                registry: Mutex::new(registry),
                runner,
                api,
            }),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Registration and encoding never leave the registry half-changed.
        self.shared
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `metric` as `name` (a counter without its `_total` suffix, which the
    /// encoding adds). For a worker's own families; keep names under [`PREFIX`].
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry().register(name, help, metric);
    }

    /// Registers a collector, asked for its values on every scrape.
    pub fn register_collector(&self, collector: impl Collector) {
        self.registry().register_collector(Box::new(collector));
    }

    /// Registers a gauge whose value `value` computes on every scrape (e.g. a map's size).
    pub fn register_gauge_fn(
        &self,
        name: &'static str,
        help: &'static str,
        value: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        self.register_collector(GaugeFn {
            name,
            help,
            value: Box::new(value),
        });
    }

    /// The whole exposition in `format`.
    #[must_use]
    pub fn encode(&self, format: Format) -> String {
        exposition::encode(&self.registry(), format)
    }

    pub(crate) fn runner(&self) -> &runner::RunnerFamilies {
        &self.shared.runner
    }

    pub(crate) fn api(&self) -> &api::ApiFamilies {
        &self.shared.api
    }
}

/// A gauge computed at scrape time.
struct GaugeFn {
    name: &'static str,
    help: &'static str,
    value: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl std::fmt::Debug for GaugeFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaugeFn").field("name", &self.name).finish()
    }
}

impl Collector for GaugeFn {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new((self.value)());
        let metric = encoder.encode_descriptor(self.name, self.help, None, gauge.metric_type())?;
        gauge.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_fns_are_computed_at_scrape_time() {
        let m = Metrics::new();
        let n = Arc::new(std::sync::atomic::AtomicI64::new(3));
        let seen = n.clone();
        m.register_gauge_fn("prefect_worker_test_items", "Items.", move || {
            seen.load(std::sync::atomic::Ordering::Relaxed)
        });
        assert!(
            m.encode(Format::PrometheusText)
                .contains("prefect_worker_test_items 3\n")
        );
        n.store(5, std::sync::atomic::Ordering::Relaxed);
        assert!(
            m.encode(Format::PrometheusText)
                .contains("prefect_worker_test_items 5\n")
        );
    }
}
