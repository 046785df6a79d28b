//! Prefect API requests: `prefect_worker_api_requests_total{method, endpoint, status}` and
//! `prefect_worker_api_request_duration_seconds{method, endpoint}`, one observation per
//! HTTP attempt (a retried call counts each attempt, as the server sees them).
//!
//! `endpoint` is the route template (`/flow_runs/{id}/set_state`), never the concrete
//! path: every path segment that is not one of the API's own words becomes `{id}` (a
//! UUID) or `{name}` (a pool, deployment, variable or block name), so the label's values
//! are bounded and carry no identifier.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The literal path segments of Prefect's REST API that the worker (or an embedding
/// application) may call. Anything else in a path is an identifier or a name.
const ROUTE_WORDS: &[&str] = &[
    "admin",
    "block_documents",
    "block_schemas",
    "block_types",
    "cleanup",
    "concurrency_limits",
    "connect",
    "count",
    "csrf-token",
    "decrement",
    "deployments",
    "events",
    "filter",
    "flow_run_states",
    "flow_runs",
    "flows",
    "get_scheduled_flow_runs",
    "health",
    "heartbeat",
    "in",
    "increment",
    "labels",
    "logs",
    "name",
    "out",
    "queues",
    "resume",
    "set_state",
    "slug",
    "task_runs",
    "v2",
    "variables",
    "version",
    "work_pools",
    "work_queues",
    "workers",
];

/// The route template of a path given as its (unencoded) segments below the API URL:
/// `["flow_runs", "<uuid>", "set_state"]` → `/flow_runs/{id}/set_state`. An empty last
/// segment keeps its trailing slash (`/logs/`).
#[must_use]
pub fn route_template<S: AsRef<str>>(segments: &[S]) -> String {
    let mut out = String::new();
    for s in segments {
        let s = s.as_ref();
        out.push('/');
        if s.is_empty() || ROUTE_WORDS.contains(&s) {
            out.push_str(s);
        } else if uuid::Uuid::parse_str(s).is_ok() {
            out.push_str("{id}");
        } else {
            out.push_str("{name}");
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The `method` label: the HTTP methods the client uses, anything else `other`.
#[must_use]
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        _ => "other",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    endpoint: String,
    /// The HTTP status code, or `timeout` / `connect_error` / `io_error` without a response.
    status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DurationLabels {
    method: &'static str,
    endpoint: String,
}

/// Request latency buckets: a local server answers in milliseconds; a loaded one in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The registered families.
#[derive(Debug)]
pub(crate) struct ApiFamilies {
    requests: Family<RequestLabels, Counter>,
    duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
}

impl ApiFamilies {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let f = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
        };
        registry.register(
            "prefect_worker_api_requests",
            "Prefect API requests (each HTTP attempt), by method, route template and status.",
            f.requests.clone(),
        );
        registry.register(
            "prefect_worker_api_request_duration_seconds",
            "Seconds from sending a Prefect API request until its answer was read, by method and route template.",
            f.duration.clone(),
        );
        f
    }

    /// One attempt at `endpoint` (a [`route_template`]) ended with `status`.
    pub(crate) fn record(
        &self,
        method: &'static str,
        endpoint: &str,
        status: &str,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                method,
                endpoint: endpoint.to_owned(),
                status: status.to_owned(),
            })
            .inc();
        self.duration
            .get_or_create(&DurationLabels {
                method,
                endpoint: endpoint.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_hide_ids_and_names() {
        let id = "0b6c5f3e-4d2a-4a8e-9c51-2f4e8f9a1b2c";
        assert_eq!(
            route_template(&["flow_runs", id, "set_state"]),
            "/flow_runs/{id}/set_state"
        );
        assert_eq!(
            route_template(&["work_pools", "my pool", "get_scheduled_flow_runs"]),
            "/work_pools/{name}/get_scheduled_flow_runs"
        );
        assert_eq!(
            route_template(&["deployments", "name", "my-flow", "prod"]),
            "/deployments/name/{name}/{name}"
        );
        assert_eq!(route_template(&["logs", ""]), "/logs/");
        assert_eq!(route_template(&["work_pools", ""]), "/work_pools/");
        assert_eq!(
            route_template(&[
                "block_types",
                "slug",
                "secret",
                "block_documents",
                "name",
                "k"
            ]),
            "/block_types/slug/{name}/block_documents/name/{name}"
        );
        assert_eq!(route_template::<&str>(&[]), "/");
        // A secret-looking segment is a name like any other.
        assert_eq!(
            route_template(&["variables", "name", "pnu_secret"]),
            "/variables/name/{name}"
        );
    }

    #[test]
    fn methods_are_bounded() {
        assert_eq!(method_label("PATCH"), "PATCH");
        assert_eq!(method_label("BREW"), "other");
    }
}
