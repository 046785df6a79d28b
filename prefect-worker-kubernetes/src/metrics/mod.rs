//! The Kubernetes worker's metric families, registered into the runner's registry
//! ([`prefect_worker_core::metrics::Metrics`], given through
//! [`crate::KubernetesWorkerOptions::with_metrics`]):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `prefect_worker_kubernetes_api_requests_total` | counter | `resource`, `verb`, `status` |
//! | `prefect_worker_kubernetes_api_request_duration_seconds` | histogram | `resource`, `verb` |
//! | `prefect_worker_kubernetes_watch_restarts_total` | counter | `namespace`, `resource` |
//! | `prefect_worker_kubernetes_watch_relists_total` | counter | `namespace`, `resource` |
//! | `prefect_worker_kubernetes_watched_namespaces` | gauge | |
//! | `prefect_worker_kubernetes_log_streams_open` | gauge | |
//! | `prefect_worker_kubernetes_log_streams_skipped_total` | counter | |
//! | `prefect_worker_kubernetes_pod_start_duration_seconds` | histogram | |
//! | `prefect_worker_kubernetes_diagnoses_total` | counter | `diagnosis` |
//!
//! Label values are bounded: resources and verbs from a fixed list (`requests`), HTTP
//! status codes, the namespaces Jobs run in, and the stable diagnosis categories.

mod requests;

use std::sync::Arc;
use std::time::Duration;

use prefect_worker_core::metrics::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::diagnosis::Category;

pub(crate) use requests::RequestMetricsLayer;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    resource: &'static str,
    verb: &'static str,
    status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DurationLabels {
    resource: &'static str,
    verb: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WatchLabels {
    namespace: String,
    resource: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DiagnosisLabels {
    diagnosis: &'static str,
}

/// Kubernetes API latency buckets (a watch counts until its response headers arrive).
const REQUEST_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Pod start buckets: a cached image starts in about a second; a cold node and a large
/// image take minutes.
const POD_START_BUCKETS: [f64; 12] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

#[derive(Debug)]
struct Families {
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
    watch_restarts: Family<WatchLabels, Counter>,
    watch_relists: Family<WatchLabels, Counter>,
    watched_namespaces: Gauge,
    log_streams_open: Gauge,
    log_streams_skipped: Counter,
    pod_start: Histogram,
    diagnoses: Family<DiagnosisLabels, Counter>,
}

/// The Kubernetes worker's families in a registry. Cheap to clone.
#[derive(Debug, Clone)]
pub struct KubernetesMetrics {
    f: Arc<Families>,
}

impl KubernetesMetrics {
    /// Registers the families into `metrics` (once per registry).
    #[must_use]
    pub fn register(metrics: &Metrics) -> Self {
        let f = Families {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(request_histogram),
            watch_restarts: Family::default(),
            watch_relists: Family::default(),
            watched_namespaces: Gauge::default(),
            log_streams_open: Gauge::default(),
            log_streams_skipped: Counter::default(),
            pod_start: Histogram::new(POD_START_BUCKETS),
            diagnoses: Family::default(),
        };
        metrics.register(
            "prefect_worker_kubernetes_api_requests",
            "Kubernetes API requests (watches included), by resource, verb and status (`error`: no response).",
            f.requests.clone(),
        );
        metrics.register(
            "prefect_worker_kubernetes_api_request_duration_seconds",
            "Seconds until a Kubernetes API request's response headers arrived, by resource and verb.",
            f.request_duration.clone(),
        );
        metrics.register(
            "prefect_worker_kubernetes_watch_restarts",
            "Job and Pod watch failures, each followed by a back-off and a new watch, by namespace and resource.",
            f.watch_restarts.clone(),
        );
        metrics.register(
            "prefect_worker_kubernetes_watch_relists",
            "Job and Pod watch (re)lists: the first list and every list after a 410 or a failure, by namespace and resource.",
            f.watch_relists.clone(),
        );
        metrics.register(
            "prefect_worker_kubernetes_watched_namespaces",
            "Namespaces watched (each with one Job and one Pod watch).",
            f.watched_namespaces.clone(),
        );
        metrics.register(
            "prefect_worker_kubernetes_log_streams_open",
            "Pod log streams open for stream_output.",
            f.log_streams_open.clone(),
        );
        metrics.register(
            "prefect_worker_kubernetes_log_streams_skipped",
            "Runs whose stream_output was skipped because PREFECT_INTEGRATIONS_KUBERNETES_WORKER_MAX_LOG_STREAMS streams were open.",
            f.log_streams_skipped.clone(),
        );
        metrics.register(
            "prefect_worker_kubernetes_pod_start_duration_seconds",
            "Seconds from a Job's creation until its pod's container was seen running.",
            f.pod_start.clone(),
        );
        metrics.register(
            "prefect_worker_kubernetes_diagnoses",
            "Pod and Job problems diagnosed and logged to a flow run, by diagnosis category (kubernetes.diagnosis).",
            f.diagnoses.clone(),
        );
        Self { f: Arc::new(f) }
    }

    pub(crate) fn request(
        &self,
        resource: &'static str,
        verb: &'static str,
        status: String,
        elapsed: Duration,
    ) {
        self.f
            .requests
            .get_or_create(&RequestLabels {
                resource,
                verb,
                status,
            })
            .inc();
        self.f
            .request_duration
            .get_or_create(&DurationLabels { resource, verb })
            .observe(elapsed.as_secs_f64());
    }

    /// A namespace's watches start; its watch series exist from now on.
    pub(crate) fn watching(&self, namespace: &str) {
        self.f.watched_namespaces.inc();
        for resource in ["jobs", "pods"] {
            let labels = WatchLabels {
                namespace: namespace.to_owned(),
                resource,
            };
            let _ = self.f.watch_restarts.get_or_create(&labels);
            let _ = self.f.watch_relists.get_or_create(&labels);
        }
    }

    pub(crate) fn watch_restarted(&self, namespace: &str, resource: &'static str) {
        self.f
            .watch_restarts
            .get_or_create(&WatchLabels {
                namespace: namespace.to_owned(),
                resource,
            })
            .inc();
    }

    pub(crate) fn watch_relisted(&self, namespace: &str, resource: &'static str) {
        self.f
            .watch_relists
            .get_or_create(&WatchLabels {
                namespace: namespace.to_owned(),
                resource,
            })
            .inc();
    }

    /// A log stream is open until the guard drops.
    pub(crate) fn log_stream_opened(&self) -> LogStreamGuard {
        self.f.log_streams_open.inc();
        LogStreamGuard(self.clone())
    }

    /// A run's `stream_output` was skipped: the log-stream bound was reached.
    pub(crate) fn log_stream_skipped(&self) {
        self.f.log_streams_skipped.inc();
    }

    pub(crate) fn pod_started(&self, since_created: Duration) {
        self.f.pod_start.observe(since_created.as_secs_f64());
    }

    pub(crate) fn diagnosed(&self, category: Category) {
        self.f
            .diagnoses
            .get_or_create(&DiagnosisLabels {
                diagnosis: category.as_str(),
            })
            .inc();
    }
}

/// Counts one open log stream while it lives.
#[derive(Debug)]
pub(crate) struct LogStreamGuard(KubernetesMetrics);

impl Drop for LogStreamGuard {
    fn drop(&mut self) {
        self.0.f.log_streams_open.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefect_worker_core::metrics::Format;

    #[test]
    fn families_record() {
        let m = Metrics::new();
        let k = KubernetesMetrics::register(&m);
        k.watching("team-a");
        k.watch_relisted("team-a", "pods");
        k.diagnosed(Category::ImagePullError);
        k.request("jobs", "create", "201".into(), Duration::from_millis(3));
        let guard = k.log_stream_opened();
        let text = m.encode(Format::PrometheusText);
        for line in [
            "prefect_worker_kubernetes_watch_restarts_total{namespace=\"team-a\",resource=\"jobs\"} 0\n",
            "prefect_worker_kubernetes_watch_relists_total{namespace=\"team-a\",resource=\"pods\"} 1\n",
            "prefect_worker_kubernetes_diagnoses_total{diagnosis=\"ImagePullError\"} 1\n",
            "prefect_worker_kubernetes_api_requests_total{resource=\"jobs\",verb=\"create\",status=\"201\"} 1\n",
            "prefect_worker_kubernetes_log_streams_open 1\n",
            "prefect_worker_kubernetes_watched_namespaces 1\n",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        drop(guard);
        assert!(
            m.encode(Format::PrometheusText)
                .contains("prefect_worker_kubernetes_log_streams_open 0\n")
        );
    }
}
