//! A forwarding proxy in front of the real Prefect server that can answer chosen requests
//! itself, or hold them: how tests reach races the real server only shows by chance (a
//! deployment deleted between the poll and the submission), stop a worker at an exact step
//! (hold the request after that step, then SIGKILL the worker), and feed the worker replies
//! no healthy server sends (truncated JSON, HTML, wrong types, empty bodies). It passes
//! websockets through (recording their frames) and counts the requests it sees, so a test
//! can wait for "three more polls" instead of sleeping for three poll intervals.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{Notify, watch};

/// A canned answer for requests whose method and path match exactly.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: Method,
    /// Matched against the path after the API prefix, e.g. `/deployments/<id>`.
    pub path: String,
    pub status: StatusCode,
    pub body: String,
}

/// What a matching request gets.
#[derive(Debug, Clone)]
pub enum Action {
    /// This answer instead of the server's.
    Respond {
        status: StatusCode,
        content_type: String,
        body: Vec<u8>,
    },
    /// No answer until [`RuleHandle::release`] (then forwarded) or [`RuleHandle::refuse`]
    /// (then 502, never forwarded: the request died with its client).
    Hold,
    /// Forwarded after this delay.
    Delay(Duration),
}

impl Action {
    /// A JSON (or JSON-claiming) answer.
    #[must_use]
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Self::Respond {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            content_type: "application/json".into(),
            body: body.into().into_bytes(),
        }
    }

    /// An answer with any content type.
    #[must_use]
    pub fn raw(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::Respond {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            content_type: content_type.into(),
            body: body.into(),
        }
    }
}

/// Which requests a rule applies to, and what they get.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `None`: any method.
    pub method: Option<Method>,
    /// The path after the API prefix; `*` matches any run of characters
    /// (`/flow_runs/*/set_state`).
    pub path: String,
    /// Only requests whose body contains this text (e.g. `"type":"CRASHED"`).
    pub body_contains: Option<String>,
    /// Applies to this many matching requests, then stops matching. `None`: always.
    pub times: Option<usize>,
    pub action: Action,
}

impl Rule {
    /// A rule for `method` on `path` (wildcards allowed), applying `action` every time.
    #[must_use]
    pub fn new(method: Method, path: impl Into<String>, action: Action) -> Self {
        Self {
            method: Some(method),
            path: path.into(),
            body_contains: None,
            times: None,
            action,
        }
    }

    /// Only requests whose body contains `text`.
    #[must_use]
    pub fn body_contains(mut self, text: impl Into<String>) -> Self {
        self.body_contains = Some(text.into());
        self
    }

    /// Only the first `n` matching requests.
    #[must_use]
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }
}

/// Observes and controls one installed rule.
#[derive(Debug, Clone)]
pub struct RuleHandle {
    hits: Arc<AtomicUsize>,
    hit: Arc<Notify>,
    released: watch::Sender<Release>,
    removed: Arc<std::sync::atomic::AtomicBool>,
}

/// What held requests are waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    Held,
    Forward,
    Refuse,
}

impl RuleHandle {
    /// How many requests the rule has applied to.
    #[must_use]
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Waits until the rule has applied to at least `n` requests.
    pub async fn wait_for_hits(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.hit.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.hits() >= n {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                anyhow::bail!("timed out after {timeout:?} waiting for {n} matching requests");
            }
        }
    }

    /// Lets held requests through (forwarded), and later ones too.
    pub fn release(&self) {
        self.released.send_replace(Release::Forward);
    }

    /// Answers held requests (and later ones) 502 without forwarding them: for a request
    /// whose client was killed while it was held, which must never reach the server.
    pub fn refuse(&self) {
        self.released.send_replace(Release::Refuse);
    }

    /// Stops matching (held requests stay held until released).
    pub fn remove(&self) {
        self.removed.store(true, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct Installed {
    rule: Rule,
    handle: RuleHandle,
}

#[derive(Debug, Clone)]
struct Shared {
    upstream: String,
    rules: Arc<Mutex<Vec<Installed>>>,
    http: reqwest::Client,
    seen: Arc<Mutex<Vec<(Method, String)>>>,
    ws: crate::proxy_ws::WsTaps,
}

/// The running proxy.
#[derive(Debug, Clone)]
pub struct FaultProxy {
    pub api_url: String,
    rules: Arc<Mutex<Vec<Installed>>>,
    /// Every request received so far (method, path after the API prefix), in order.
    seen: Arc<Mutex<Vec<(Method, String)>>>,
    /// Websockets passed through (frames, connects, closing them).
    pub ws: crate::proxy_ws::WsTaps,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1:0 forwarding to `upstream_api_url` (`http://host:port/api`).
    pub async fn start(upstream_api_url: &str) -> anyhow::Result<Self> {
        let rules = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let ws = crate::proxy_ws::WsTaps::default();
        let shared = Shared {
            upstream: upstream_api_url.trim_end_matches('/').to_owned(),
            rules: rules.clone(),
            http: reqwest::Client::new(),
            seen: seen.clone(),
            ws: ws.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().fallback(forward).with_state(shared);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            api_url: format!("http://{addr}/api"),
            rules,
            seen,
            ws,
        })
    }

    /// How many `method` requests whose path ends with `path_suffix` were received so far.
    #[must_use]
    pub fn count(&self, method: &Method, path_suffix: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p)| m == method && p.ends_with(path_suffix))
            .count()
    }

    /// How many polls (`POST …/get_scheduled_flow_runs`) were received so far.
    #[must_use]
    pub fn polls(&self) -> usize {
        self.count(&Method::POST, "/get_scheduled_flow_runs")
    }

    /// Every request received so far (method, path after the API prefix), websocket
    /// upgrades included.
    pub fn requests(&self) -> Vec<(Method, String)> {
        self.seen.lock().unwrap().clone()
    }

    /// Answers requests matching `fault`'s method and exact path with it from now on.
    pub fn inject(&self, fault: Fault) {
        let status = fault.status.as_u16();
        self.add(Rule::new(
            fault.method,
            fault.path,
            Action::json(status, fault.body),
        ));
    }

    /// Installs `rule` (rules are tried in the order they were added).
    pub fn add(&self, rule: Rule) -> RuleHandle {
        let handle = RuleHandle {
            hits: Arc::default(),
            hit: Arc::default(),
            released: watch::Sender::new(Release::Held),
            removed: Arc::default(),
        };
        self.rules.lock().unwrap().push(Installed {
            rule,
            handle: handle.clone(),
        });
        handle
    }

    /// Removes every rule (held requests stay held until released).
    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }
}

/// `*` matches any run of characters; everything else literally.
fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text.ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// The first live rule matching the request, counted as applied.
fn matching(s: &Shared, method: &Method, path: &str, body: &[u8]) -> Option<(Action, RuleHandle)> {
    let rules = s.rules.lock().unwrap();
    for r in rules.iter() {
        let rule = &r.rule;
        if r.handle.removed.load(Ordering::SeqCst)
            || rule.method.as_ref().is_some_and(|m| m != method)
            || !wildcard(&rule.path, path)
        {
            continue;
        }
        if let Some(text) = &rule.body_contains {
            let body = String::from_utf8_lossy(body);
            // Serialisers differ on spaces after `:`; compare without them.
            let squeeze = |t: &str| t.replace(": ", ":");
            if !squeeze(&body).contains(&squeeze(text)) {
                continue;
            }
        }
        if rule.times.is_some_and(|n| r.handle.hits() >= n) {
            continue;
        }
        r.handle.hits.fetch_add(1, Ordering::SeqCst);
        r.handle.hit.notify_waiters();
        return Some((rule.action.clone(), r.handle.clone()));
    }
    None
}

async fn forward(State(s): State<Shared>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().trim_start_matches("/api").to_owned();
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    s.seen.lock().unwrap().push((method.clone(), path.clone()));
    if crate::proxy_ws::is_upgrade(&req) {
        // A rule may still answer the upgrade itself (a channel endpoint that is a 404).
        if let Some((
            Action::Respond {
                status,
                content_type,
                body,
            },
            _,
        )) = matching(&s, &method, &path, &[])
        {
            return (status, [("content-type", content_type)], body).into_response();
        }
        return crate::proxy_ws::bridge(&s.upstream, path, query, req, s.ws.clone()).await;
    }
    let headers: HeaderMap = req.headers().clone();
    let body: Bytes = match axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    if let Some((action, handle)) = matching(&s, &method, &path, &body) {
        match action {
            Action::Respond {
                status,
                content_type,
                body,
            } => return (status, [("content-type", content_type)], body).into_response(),
            Action::Hold => {
                let mut rx = handle.released.subscribe();
                let refused = rx
                    .wait_for(|r| *r != Release::Held)
                    .await
                    .map_or(true, |r| *r == Release::Refuse);
                if refused {
                    return StatusCode::BAD_GATEWAY.into_response();
                }
            }
            Action::Delay(d) => tokio::time::sleep(d).await,
        }
    }
    let mut upstream = s
        .http
        .request(method, format!("{}{path}{query}", s.upstream))
        .body(body);
    for (k, v) in &headers {
        // The proxy's own client negotiates compression and hands back decoded bytes, so
        // the caller's Accept-Encoding must not reach the server.
        if k != "host" && k != "content-length" && k != "accept-encoding" {
            upstream = upstream.header(k, v);
        }
    }
    match upstream.send().await {
        Ok(r) => {
            let status = r.status();
            let ct = r.headers().get("content-type").cloned();
            let bytes = r.bytes().await.unwrap_or_default();
            let mut resp = (status, bytes).into_response();
            if let Some(ct) = ct {
                resp.headers_mut().insert("content-type", ct);
            }
            resp
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn wildcards() {
        assert!(wildcard("/flows/x", "/flows/x"));
        assert!(!wildcard("/flows/x", "/flows/y"));
        assert!(wildcard(
            "/flow_runs/*/set_state",
            "/flow_runs/abc/set_state"
        ));
        assert!(!wildcard("/flow_runs/*/set_state", "/flow_runs/abc/labels"));
        assert!(wildcard("/flows/*", "/flows/abc"));
        assert!(wildcard("*", "/anything"));
        assert!(!wildcard("/a*a", "/a"));
    }
}
