//! Sending one API request: URL building, headers, CSRF, the retry loop of spec §1
//! "Retries", and turning the final answer into a body or a typed [`ClientError`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::Instant;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Certificate, Method};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use super::csrf::{Csrf, CsrfHeaders, is_csrf_refusal};
use super::error::{ClientError, HttpError, TransportError, TransportKind};
use super::headers::{
    CSRF_CLIENT_HEADER, CSRF_TOKEN_HEADER, MAINTENANCE_HEADER, WORKER_ID_HEADER,
    WORKER_NAME_HEADER, attribution_value, base_headers,
};
use super::maintenance::MaintenanceTracker;
use super::options::ClientOptions;
use super::retry::{RetryPolicy, parse_retry_after};
use super::secret::Redactor;

/// At most this many characters of a server's error detail go into an error message.
const MAX_DETAIL_CHARS: usize = 500;
/// Python's pool limits: 16 connections, 8 kept alive for 25 s.
const MAX_IDLE_PER_HOST: usize = 8;
const KEEP_ALIVE_EXPIRY: std::time::Duration = std::time::Duration::from_secs(25);

/// One API call, described independently of its attempts.
#[derive(Debug, Clone)]
pub(crate) struct ApiRequest {
    pub method: Method,
    /// Unencoded path segments below the API URL; an empty last segment gives a trailing `/`.
    segments: Vec<String>,
    query: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    /// Whether a 404 means "ObjectNotFound" for this endpoint (spec §1 "Error mapping").
    map_not_found: bool,
    /// Whether a 409 means "ObjectAlreadyExists" for this endpoint.
    map_conflict: bool,
}

impl ApiRequest {
    pub(crate) fn new<S: Into<String>>(
        method: Method,
        segments: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            method,
            segments: segments.into_iter().map(Into::into).collect(),
            query: Vec::new(),
            body: None,
            map_not_found: false,
            map_conflict: false,
        }
    }

    pub(crate) fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_owned(), value.into()));
        self
    }

    /// Sets a JSON body.
    pub(crate) fn json(mut self, body: &impl Serialize) -> Result<Self, ClientError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ClientError::Config(format!("cannot serialise the request body: {e}")))?;
        self.body = Some(bytes);
        Ok(self)
    }

    pub(crate) fn not_found_maps(mut self) -> Self {
        self.map_not_found = true;
        self
    }

    pub(crate) fn conflict_maps(mut self) -> Self {
        self.map_conflict = true;
        self
    }

    /// POST/PUT/PATCH/DELETE need CSRF headers.
    fn is_change(&self) -> bool {
        matches!(
            self.method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        )
    }
}

/// The final answer to a request, body fully read.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub method: String,
    /// Encoded path relative to the API URL, for messages.
    pub path: String,
    pub status: u16,
    pub body: Vec<u8>,
    /// The server's clock when it answered (the `Date` header), if it sent one.
    pub date: Option<chrono::DateTime<chrono::Utc>>,
    /// The body's first characters, secrets redacted (for "invalid response" messages).
    pub excerpt: String,
}

impl RawResponse {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Decode {
            method: self.method.clone(),
            path: self.path.clone(),
            message: self.explain(&e),
        })
    }

    /// What was wrong with a body that did not decode, and what to check.
    fn explain(&self, e: &serde_json::Error) -> String {
        use serde_json::error::Category;
        let first = self.body.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_none() {
            return format!(
                "the body is empty (HTTP {}); something between the worker and the Prefect API answered for it — check PREFECT_API_URL and any proxy in between",
                self.status
            );
        }
        if e.to_string().contains("recursion limit") {
            return format!(
                "the JSON is nested more than 128 levels deep ({e}); the object it describes cannot be read — make it shallower"
            );
        }
        match e.classify() {
            Category::Data => format!(
                "the JSON does not have the shape a Prefect 3 server sends ({e}); check that PREFECT_API_URL points at a Prefect 3 server"
            ),
            Category::Eof if matches!(first, Some(b'{' | b'[')) => format!(
                "the JSON is cut short ({e}; it starts with `{}`); the answer was truncated on its way — a proxy or a dropped connection?",
                self.excerpt
            ),
            _ => format!(
                "the body is not JSON ({e}; it starts with `{}`); something other than the Prefect API answered — check PREFECT_API_URL and any proxy or load balancer in between",
                self.excerpt
            ),
        }
    }
}

/// The shared state behind a `PrefectClient`.
#[derive(Debug)]
pub(crate) struct Transport {
    http: reqwest::Client,
    base: Url,
    base_headers: HeaderMap,
    policy: RetryPolicy,
    csrf: Csrf,
    worker_name: RwLock<Option<HeaderValue>>,
    worker_id: RwLock<Option<HeaderValue>>,
    /// Set after the first request that got any response: from then on connect errors
    /// are retried (a server restart), before it they fail fast (a wrong URL).
    has_connected: AtomicBool,
    pub(crate) maintenance: MaintenanceTracker,
    redactor: Redactor,
    /// Headers and TLS for websockets to the same API.
    pub(crate) websocket: super::websocket::WebSocketSettings,
    /// `PREFECT_CLOUD_API_URL` matched the API URL.
    cloud: bool,
    /// Where each attempt is counted, once a runner (or the embedder) attached metrics.
    metrics: OnceLock<crate::metrics::Metrics>,
}

impl Transport {
    pub(crate) fn new(o: ClientOptions) -> Result<Self, ClientError> {
        let base = Url::parse(o.api_url.trim()).map_err(|e| {
            ClientError::Config(format!(
                "the API URL {:?} is not a valid URL: {e}",
                o.api_url
            ))
        })?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Config(format!(
                "the API URL {:?} is not an http(s) URL",
                o.api_url
            )));
        }
        let mut b = reqwest::Client::builder()
            .connect_timeout(o.request_timeout)
            .read_timeout(o.request_timeout)
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .pool_idle_timeout(KEEP_ALIVE_EXPIRY)
            .use_rustls_tls();
        if !o.enable_http2 {
            b = b.http1_only();
        }
        if o.tls_insecure_skip_verify {
            b = b.danger_accept_invalid_certs(true);
        } else if let Some(path) = &o.ssl_cert_file {
            let pem = std::fs::read(path).map_err(|e| {
                ClientError::Config(format!("cannot read the CA file {}: {e}", path.display()))
            })?;
            let certs = Certificate::from_pem_bundle(&pem).map_err(|e| {
                ClientError::Config(format!(
                    "the CA file {} is not a PEM bundle: {e}",
                    path.display()
                ))
            })?;
            // The file replaces the built-in roots, as it replaces certifi in Python.
            b = b.tls_built_in_root_certs(false);
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b
            .build()
            .map_err(|e| ClientError::Config(format!("cannot build the HTTP client: {e}")))?;
        let base_headers = base_headers(&o)?;
        let websocket = super::websocket::WebSocketSettings::new(&o, &base_headers);
        let cloud = !o.cloud_api_url.trim().is_empty()
            && base
                .as_str()
                .starts_with(o.cloud_api_url.trim().trim_end_matches('/'));
        Ok(Self {
            http,
            base,
            base_headers,
            websocket,
            cloud,
            policy: RetryPolicy::from_options(&o),
            csrf: Csrf::new(o.csrf_support_enabled),
            worker_name: RwLock::new(None),
            worker_id: RwLock::new(None),
            has_connected: AtomicBool::new(false),
            maintenance: o.maintenance,
            redactor: Redactor::new(o.api_key.as_ref(), o.auth_string.as_ref()),
            metrics: OnceLock::new(),
        })
    }

    /// Counts every later attempt in `metrics` (the first call wins).
    pub(crate) fn attach_metrics(&self, metrics: &crate::metrics::Metrics) {
        let _ = self.metrics.set(metrics.clone());
    }

    /// One attempt at `req` ended with an HTTP status or a transport failure.
    fn record_attempt(
        &self,
        req: &ApiRequest,
        status: Result<u16, &reqwest::Error>,
        started: Instant,
    ) {
        let Some(m) = self.metrics.get() else { return };
        let status = match status {
            Ok(code) => code.to_string(),
            Err(e) if e.is_timeout() => "timeout".to_owned(),
            Err(e) if e.is_connect() => "connect_error".to_owned(),
            Err(_) => "io_error".to_owned(),
        };
        let endpoint = crate::metrics::api::route_template(&req.segments);
        let method = crate::metrics::api::method_label(req.method.as_str());
        m.api()
            .record(method, &endpoint, &status, started.elapsed());
    }

    pub(crate) fn set_worker_name(&self, name: Option<String>) {
        *self
            .worker_name
            .write()
            .unwrap_or_else(PoisonError::into_inner) = name.and_then(attribution_value);
    }

    pub(crate) fn set_worker_id(&self, id: Option<String>) {
        *self
            .worker_id
            .write()
            .unwrap_or_else(PoisonError::into_inner) = id.and_then(attribution_value);
    }

    pub(crate) fn is_cloud(&self) -> bool {
        self.cloud
    }

    pub(crate) fn base_url(&self) -> &Url {
        &self.base
    }

    /// Sends `req` and returns its 2xx answer, or the endpoint-mapped error.
    pub(crate) async fn execute(&self, req: &ApiRequest) -> Result<RawResponse, ClientError> {
        let use_csrf = req.is_change();
        let resp = self.send_with_retries(req, use_csrf).await?;
        self.check(req, resp)
    }

    /// A 2xx/3xx answer passes; anything else becomes the endpoint's error.
    pub(crate) fn check(
        &self,
        req: &ApiRequest,
        resp: RawResponse,
    ) -> Result<RawResponse, ClientError> {
        if resp.status < 400 {
            return Ok(resp);
        }
        let detail = self.detail_of(&resp.body);
        let err = HttpError {
            method: resp.method,
            path: resp.path,
            status: resp.status,
            detail,
        };
        Err(ClientError::from_status(
            err,
            req.map_not_found,
            req.map_conflict,
        ))
    }

    /// The retry loop. Returns the first answer that is not retried, or the last one when
    /// retries ran out; `Err` only for transport failures and CSRF token fetch failures.
    pub(crate) async fn send_with_retries(
        &self,
        req: &ApiRequest,
        use_csrf: bool,
    ) -> Result<RawResponse, ClientError> {
        let (url, path) = self.url_for(req)?;
        let method = req.method.as_str();
        let connected_before = self.has_connected.load(Ordering::Relaxed);
        let mut csrf = if use_csrf {
            self.csrf.headers(self).await?
        } else {
            None
        };
        let max_attempts = self.policy.max_retries.saturating_add(1);
        let mut try_count: u32 = 0;
        loop {
            let headers = self.request_headers(req.body.is_some(), csrf.as_ref());
            let mut rb = self
                .http
                .request(req.method.clone(), url.clone())
                .headers(headers);
            if let Some(body) = &req.body {
                rb = rb.body(body.clone());
            }
            let attempt_started = Instant::now();
            let outcome = match rb.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    resp.bytes()
                        .await
                        .map(|body| (status, headers, body.to_vec()))
                }
                Err(e) => Err(e),
            };
            self.record_attempt(req, outcome.as_ref().map(|(s, _, _)| *s), attempt_started);
            let (status, headers, body) = match outcome {
                Ok(answer) => answer,
                Err(e) => {
                    let (kind, retryable) = classify(&e, connected_before);
                    try_count += 1;
                    let err = TransportError {
                        method: method.to_owned(),
                        path: path.clone(),
                        kind,
                        message: self.redactor.redact(&error_chain(&e)),
                    };
                    if !retryable || try_count >= max_attempts {
                        tracing::debug!(method, path = %path, attempt = try_count, error = %err, "request failed");
                        return Err(ClientError::Transport(err));
                    }
                    let delay = self.policy.delay(try_count, None, &mut rand::rng());
                    tracing::warn!(
                        method, path = %path, attempt = try_count, max_attempts, delay_s = delay.as_secs_f64(),
                        error = %err, "retryable transport error; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            tracing::debug!(method, path = %path, status, attempt = try_count + 1, "response");
            let maintenance = headers
                .get(MAINTENANCE_HEADER)
                .is_some_and(|v| v.as_bytes() == b"true");
            // A maintenance answer does not count, so such requests wait indefinitely.
            if !maintenance {
                try_count += 1;
            }
            // The server wants a token (none sent yet, or ours is stale or foreign): fetch
            // one and send the request again (it was refused before being processed).
            let csrf_rejected =
                use_csrf && status == 403 && is_csrf_refusal(&body) && self.csrf.refused().await;
            if csrf_rejected && try_count < max_attempts {
                csrf = self.csrf.headers(self).await?;
                // No back-off: nothing failed, the request only lacked its token.
                continue;
            }
            let retried = self.policy.is_retry_status(status);
            if !retried || try_count >= max_attempts {
                self.has_connected.store(true, Ordering::Relaxed);
                let date = headers
                    .get(reqwest::header::DATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
                    .map(|d| d.with_timezone(&chrono::Utc));
                let excerpt = self.excerpt_of(&body);
                return Ok(RawResponse {
                    method: method.to_owned(),
                    path,
                    status,
                    body,
                    date,
                    excerpt,
                });
            }
            let retry_after = headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
            let delay = self.policy.delay(try_count, retry_after, &mut rand::rng());
            if maintenance {
                self.maintenance.record(delay);
            }
            tracing::warn!(
                method, path = %path, status, attempt = try_count, max_attempts, maintenance,
                delay_s = delay.as_secs_f64(), "retryable response; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// Base headers + attribution + CSRF + content type, for one attempt.
    fn request_headers(&self, has_body: bool, csrf: Option<&CsrfHeaders>) -> HeaderMap {
        let mut h = self.base_headers.clone();
        let name = self
            .worker_name
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(v) = name {
            h.insert(HeaderName::from_static(WORKER_NAME_HEADER), v);
        }
        let id = self
            .worker_id
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(v) = id {
            h.insert(HeaderName::from_static(WORKER_ID_HEADER), v);
        }
        if let Some(c) = csrf {
            h.insert(HeaderName::from_static(CSRF_TOKEN_HEADER), c.token.clone());
            h.insert(
                HeaderName::from_static(CSRF_CLIENT_HEADER),
                c.client.clone(),
            );
        }
        if has_body {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        h
    }

    /// The full URL (segments percent-encoded) and the path shown in messages.
    fn url_for(&self, req: &ApiRequest) -> Result<(Url, String), ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::Config("the API URL cannot have a path".into()))?
            .pop_if_empty()
            .extend(&req.segments);
        if !req.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&req.query);
        }
        let base_path = self.base.path().trim_end_matches('/');
        let path = url
            .path()
            .strip_prefix(base_path)
            .unwrap_or(url.path())
            .to_owned();
        Ok((url, path))
    }

    /// The first 60 characters of `body` on one line, secrets redacted.
    fn excerpt_of(&self, body: &[u8]) -> String {
        let head = &body[..body.len().min(240)];
        let text: String = String::from_utf8_lossy(head)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let text = self.redactor.redact(&text);
        match text.char_indices().nth(60) {
            Some((i, _)) => format!("{}…", &text[..i]),
            None => text,
        }
    }

    /// The server's `detail` (FastAPI's error field), else a short excerpt of the body;
    /// with any secret redacted.
    fn detail_of(&self, body: &[u8]) -> Option<String> {
        let text = match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(mut o)) if o.contains_key("detail") => {
                match o.remove("detail") {
                    Some(serde_json::Value::String(s)) => s,
                    Some(other) => other.to_string(),
                    None => String::new(),
                }
            }
            Ok(v) => v.to_string(),
            Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
        };
        if text.is_empty() || text == "null" {
            return None;
        }
        let redacted = self.redactor.redact(&text);
        Some(if redacted.chars().count() > MAX_DETAIL_CHARS {
            let cut: String = redacted.chars().take(MAX_DETAIL_CHARS).collect();
            format!("{cut}...")
        } else {
            redacted
        })
    }
}

/// Which transport errors are retried (Python's list): timeouts, broken reads/writes and
/// protocol errors always; connect errors only once the client has reached the server.
fn classify(e: &reqwest::Error, connected_before: bool) -> (TransportKind, bool) {
    if e.is_timeout() {
        (TransportKind::Timeout, true)
    } else if e.is_connect() {
        (TransportKind::Connect, connected_before)
    } else if e.is_redirect() || e.is_builder() {
        (TransportKind::Io, false)
    } else {
        (TransportKind::Io, true)
    }
}

/// The error and its sources, without the URL (which may carry credentials).
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    if let Some(u) = e.url() {
        out = out
            .replace(&format!(" for url ({u})"), "")
            .replace(u.as_str(), "<url>");
    }
    let mut cur = std::error::Error::source(e);
    while let Some(err) = cur {
        out.push_str(": ");
        out.push_str(&err.to_string());
        cur = err.source();
    }
    out
}
