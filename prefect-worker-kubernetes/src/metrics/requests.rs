//! Counting every Kubernetes API request: a tower layer in each kube client's stack
//! ([`RequestMetricsLayer`], added by [`crate::clients::ClientCache`]), and the pure
//! mapping of a request to its `resource` and `verb` labels ([`classify`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};

use super::KubernetesMetrics;

/// Resources the worker touches; anything else is `other`, so the label stays bounded.
const RESOURCES: &[&str] = &[
    "jobs",
    "jobs/status",
    "pods",
    "pods/log",
    "pods/status",
    "events",
    "secrets",
    "namespaces",
];

/// `(resource, verb)` of a request, as RBAC names them: `pods/log` + `get`, `jobs` +
/// `watch`, ... Discovery paths (`/version`, `/api`, `/apis`) are `discovery`; other
/// shapes are `other`.
#[must_use]
pub fn classify(
    method: &http::Method,
    path: &str,
    query: Option<&str>,
) -> (&'static str, &'static str) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest: &[&str] = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return ("discovery", verb(method, false, query)),
    };
    let (resource, name, sub) = match rest {
        [] => return ("discovery", verb(method, false, query)),
        ["namespaces", _ns, resource, tail @ ..] => (*resource, tail.first(), tail.get(1)),
        [resource, tail @ ..] => (*resource, tail.first(), tail.get(1)),
    };
    let full = match sub {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_owned(),
    };
    let resource = RESOURCES
        .iter()
        .find(|r| **r == full)
        .copied()
        .unwrap_or("other");
    (resource, verb(method, name.is_some(), query))
}

fn verb(method: &http::Method, named: bool, query: Option<&str>) -> &'static str {
    let watching = query.is_some_and(|q| {
        q.split('&')
            .any(|kv| matches!(kv, "watch=true" | "watch=1" | "watch=True"))
    });
    match *method {
        http::Method::GET if watching => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE if named => "delete",
        http::Method::DELETE => "deletecollection",
        _ => "other",
    }
}

/// Adds request counting to a kube client's service stack.
#[derive(Debug, Clone)]
pub struct RequestMetricsLayer {
    metrics: KubernetesMetrics,
}

impl RequestMetricsLayer {
    /// A layer recording into `metrics`.
    #[must_use]
    pub fn new(metrics: KubernetesMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RequestMetricsLayer {
    type Service = RequestMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`RequestMetricsLayer`] builds: records each request once its response
/// headers arrive (or it fails).
#[derive(Debug, Clone)]
pub struct RequestMetricsService<S> {
    inner: S,
    metrics: KubernetesMetrics,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RequestMetricsService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (resource, verb) = classify(
            request.method(),
            request.uri().path(),
            request.uri().query(),
        );
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            let status = match &result {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "error".to_owned(),
            };
            metrics.request(resource, verb, status, started.elapsed());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn requests_map_to_rbac_resources_and_verbs() {
        let c = |m: Method, p: &str, q: Option<&str>| classify(&m, p, q);
        assert_eq!(
            c(Method::POST, "/apis/batch/v1/namespaces/ns/jobs", None),
            ("jobs", "create")
        );
        assert_eq!(
            c(
                Method::GET,
                "/apis/batch/v1/namespaces/ns/jobs",
                Some("labelSelector=a&watch=true&timeoutSeconds=290")
            ),
            ("jobs", "watch")
        );
        assert_eq!(
            c(
                Method::GET,
                "/api/v1/namespaces/ns/pods",
                Some("labelSelector=x")
            ),
            ("pods", "list")
        );
        assert_eq!(
            c(
                Method::GET,
                "/api/v1/namespaces/ns/pods/p-1/log",
                Some("follow=true")
            ),
            ("pods/log", "get")
        );
        assert_eq!(
            c(Method::GET, "/apis/batch/v1/namespaces/ns/jobs/j", None),
            ("jobs", "get")
        );
        assert_eq!(
            c(Method::DELETE, "/apis/batch/v1/namespaces/ns/jobs/j", None),
            ("jobs", "delete")
        );
        assert_eq!(
            c(Method::PATCH, "/api/v1/namespaces/ns/secrets/s", None),
            ("secrets", "patch")
        );
        assert_eq!(
            c(
                Method::GET,
                "/api/v1/namespaces/ns/events",
                Some("fieldSelector=x")
            ),
            ("events", "list")
        );
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/ns", None),
            ("namespaces", "get")
        );
        assert_eq!(c(Method::GET, "/version", None), ("discovery", "list"));
        assert_eq!(
            c(
                Method::GET,
                "/apis/example.com/v1/namespaces/ns/widgets",
                None
            ),
            ("other", "list")
        );
    }
}
