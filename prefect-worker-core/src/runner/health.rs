//! The worker's web server (spec §2.8): with `--with-healthcheck`, `GET /health` answers
//! 200 while the worker polls, 503 once it has not polled for 30 poll intervals; with
//! metrics on, `GET /metrics` serves them ([`crate::metrics`]). Every other path is a 404
//! with FastAPI's body, as Python's server answers.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;

/// When the worker last polled, shared by the poll loop and the health server.
pub struct HealthState {
    last_polled: Mutex<Instant>,
    window: Duration,
    maintenance_until: Box<dyn Fn() -> Option<Instant> + Send + Sync>,
}

impl HealthState {
    /// Healthy while the last poll is at most `window` old. `maintenance_until` reports the
    /// end of the latest `Prefect-Maintenance` back-off, which also counts as activity.
    #[must_use]
    pub fn new(
        window: Duration,
        maintenance_until: Box<dyn Fn() -> Option<Instant> + Send + Sync>,
    ) -> Self {
        Self {
            last_polled: Mutex::new(Instant::now()),
            window,
            maintenance_until,
        }
    }

    /// Records a successful (or deliberately skipped) poll.
    pub fn polled(&self) {
        if let Ok(mut t) = self.last_polled.lock() {
            *t = Instant::now();
        }
    }

    /// Seconds since the health window started, and whether that is within the window.
    #[must_use]
    pub fn check(&self) -> (Duration, bool) {
        let last = self
            .last_polled
            .lock()
            .map_or_else(|e| *e.into_inner(), |t| *t);
        let start = match (self.maintenance_until)() {
            Some(m) if m > last => m,
            _ => last,
        };
        let age = Instant::now().saturating_duration_since(start);
        (age, age <= self.window)
    }
}

impl std::fmt::Debug for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthState")
            .field("window", &self.window)
            .field("check", &self.check())
            .finish()
    }
}

async fn health(State(state): State<std::sync::Arc<HealthState>>) -> Response {
    let (age, ok) = state.check();
    if ok {
        (StatusCode::OK, Json(json!({"message": "OK"}))).into_response()
    } else {
        tracing::error!(
            seconds = age.as_secs(),
            "Worker has not polled in the last {} seconds and should be restarted",
            age.as_secs()
        );
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"message": "Worker may be unresponsive at this time"})),
        )
            .into_response()
    }
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"detail": "Not Found"}))).into_response()
}

/// The health router (`GET /health`; other paths 404 with FastAPI's body, other methods 405).
pub fn router(state: std::sync::Arc<HealthState>) -> Router {
    router_with(Some(state), None)
}

/// The web server's routes: `/health` when `health` is given, `/metrics` when `metrics`
/// is; every other path 404s with FastAPI's body.
pub fn router_with(
    health_state: Option<std::sync::Arc<HealthState>>,
    metrics: Option<crate::metrics::Metrics>,
) -> Router {
    let mut app = Router::new();
    if let Some(state) = health_state {
        app = app.merge(
            Router::new()
                .route("/health", get(health))
                .with_state(state),
        );
    }
    if let Some(m) = metrics {
        app = app.merge(crate::metrics::router(m));
    }
    app.fallback(not_found)
}

/// Binds `addr` and serves the health router until `shutdown` resolves. Returns the bound
/// address (useful with port 0) once listening.
pub async fn serve(
    addr: SocketAddr,
    state: std::sync::Arc<HealthState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_router(addr, router(state), shutdown).await
}

/// Binds `addr` and serves `app` (see [`router_with`]) until `shutdown` resolves. Returns
/// the bound address (useful with port 0) once listening.
pub async fn serve_router(
    addr: SocketAddr,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "web server stopped");
        }
    });
    tracing::info!(%bound, "web server listening");
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_and_maintenance() {
        let s = HealthState::new(Duration::from_millis(0), Box::new(|| None));
        std::thread::sleep(Duration::from_millis(2));
        assert!(!s.check().1);
        let later = Instant::now() + Duration::from_secs(60);
        let s = HealthState::new(Duration::from_millis(0), Box::new(move || Some(later)));
        assert!(
            s.check().1,
            "a maintenance back-off in progress counts as activity"
        );
    }

    #[tokio::test]
    async fn routes_follow_the_switches() {
        let metrics = crate::metrics::Metrics::new();
        for (health_on, metrics_on, health_code, metrics_code) in [
            (true, false, 200, 404),
            (false, true, 404, 200),
            (true, true, 200, 200),
        ] {
            let state =
                std::sync::Arc::new(HealthState::new(Duration::from_secs(60), Box::new(|| None)));
            let app = router_with(
                health_on.then_some(state),
                metrics_on.then(|| metrics.clone()),
            );
            let stop = tokio_util::sync::CancellationToken::new();
            let s = stop.clone();
            let (addr, task) = serve_router("127.0.0.1:0".parse().unwrap(), app, async move {
                s.cancelled().await
            })
            .await
            .unwrap();
            let http = reqwest::Client::new();
            let get = |path: &str| http.get(format!("http://{addr}{path}")).send();
            assert_eq!(get("/health").await.unwrap().status(), health_code);
            let m = get("/metrics").await.unwrap();
            assert_eq!(m.status(), metrics_code);
            if metrics_on {
                assert!(
                    m.headers()["content-type"]
                        .to_str()
                        .unwrap()
                        .starts_with("text/plain; version=0.0.4")
                );
                assert!(
                    m.text()
                        .await
                        .unwrap()
                        .contains("process_cpu_seconds_total")
                );
            }
            let other = get("/other").await.unwrap();
            assert_eq!(other.status(), 404);
            assert_eq!(other.text().await.unwrap(), r#"{"detail":"Not Found"}"#);
            stop.cancel();
            task.await.unwrap();
        }
    }
}
