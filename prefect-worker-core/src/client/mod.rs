//! The Prefect REST client (spec §1, API_CALLS.md §A).
//!
//! - `options`: what to connect to and how ([`ClientOptions`], from `PREFECT_*` settings);
//! - `error`: the typed errors ([`ClientError`]);
//! - `headers`, `csrf`, `retry`, `transport`: the wire conventions every request follows;
//! - `bodies`, `endpoints`: the calls the worker makes;
//! - [`websocket`]: opening the events and worker-channel websockets with the same rules.
//!
//! The client is the lowest layer: it names no other module of this crate. (It serves
//! templating's lookups through an impl in `job_config::lookups`.)

mod bodies;
mod csrf;
mod endpoints;
mod error;
mod headers;
mod maintenance;
pub mod models;
pub(crate) mod options;
mod raw_fields;
mod retry;
mod secret;
mod transport;
pub mod websocket;

use std::sync::Arc;
use std::time::Instant;

pub use error::{ClientError, HttpError, TransportError, TransportKind};
pub use headers::user_agent;
pub use maintenance::MaintenanceTracker;
pub use options::ClientOptions;
pub use secret::Secret;

/// The Prefect REST client. Cheap to clone: clones share the connection pool, the CSRF
/// token, the worker-name header and the maintenance record.
#[derive(Debug, Clone)]
pub struct PrefectClient {
    inner: Arc<transport::Transport>,
}

impl PrefectClient {
    /// Builds the HTTP client once (pool, TLS, timeouts, headers).
    ///
    /// # Errors
    /// [`ClientError::Config`] for an invalid API URL, CA file or header.
    pub fn new(options: ClientOptions) -> Result<Self, ClientError> {
        Ok(Self {
            inner: Arc::new(transport::Transport::new(options)?),
        })
    }

    /// Sets or clears `X-Prefect-Worker-Name` on every later request (the worker sets it at
    /// setup and clears it at teardown). Spaces and tabs around it are stripped; an empty
    /// name sends no header.
    pub fn set_worker_name(&self, name: Option<String>) {
        self.inner.set_worker_name(name);
    }

    /// Sets or clears `X-Prefect-Worker-Id` (known on Cloud only), like the name.
    pub fn set_worker_id(&self, id: Option<String>) {
        self.inner.set_worker_id(id);
    }

    /// The API URL requests are made against (for deriving the websocket URLs).
    #[must_use]
    pub fn api_url(&self) -> &url::Url {
        self.inner.base_url()
    }

    /// Whether the API is Prefect Cloud: the API URL starts with `PREFECT_CLOUD_API_URL`
    /// (spec §2.2C). Cloud authenticates websockets differently and hands out worker ids.
    #[must_use]
    pub fn is_cloud(&self) -> bool {
        self.inner.is_cloud()
    }

    /// Opens a websocket below the API URL (spec §2.2A, §4.6); see [`websocket`].
    ///
    /// # Errors
    /// [`websocket::WebSocketError`]: a refused upgrade keeps its HTTP status so callers can
    /// tell an old server (404) from bad credentials (401/403) or an outage (5xx).
    pub async fn connect_websocket(
        &self,
        request: &websocket::WebSocketRequest,
    ) -> Result<websocket::WebSocket, websocket::WebSocketError> {
        self.inner
            .websocket
            .connect(self.inner.base_url(), request)
            .await
    }

    /// The websocket settings (auth token, redaction) for protocols spoken over
    /// [`PrefectClient::connect_websocket`].
    pub(crate) fn websocket_settings(&self) -> &websocket::WebSocketSettings {
        &self.inner.websocket
    }

    /// Counts every request of this client (and its clones) in `metrics`:
    /// `prefect_worker_api_requests_total` and `..._duration_seconds` by route template,
    /// never a concrete id (see [`crate::metrics`]). [`crate::runner::Runner::new`] does
    /// this when its options carry metrics; the first registry attached wins.
    pub fn attach_metrics(&self, metrics: &crate::metrics::Metrics) {
        self.inner.attach_metrics(metrics);
    }

    /// When the latest `Prefect-Maintenance` back-off ends (for the health check, §2.8).
    #[must_use]
    pub fn maintenance_until(&self) -> Option<Instant> {
        self.inner.maintenance.until()
    }

    /// The shared maintenance record, for a health check that outlives this client.
    #[must_use]
    pub fn maintenance_tracker(&self) -> MaintenanceTracker {
        self.inner.maintenance.clone()
    }
}
