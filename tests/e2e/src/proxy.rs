//! A forwarding proxy in front of the real Prefect server that can answer chosen requests
//! itself: how tests reach races the real server only shows by chance (a deployment
//! deleted between the poll and the submission).

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

/// A canned answer for requests whose method and path match.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: Method,
    /// Matched against the path after the API prefix, e.g. `/deployments/<id>`.
    pub path: String,
    pub status: StatusCode,
    pub body: String,
}

#[derive(Debug, Clone)]
struct Shared {
    upstream: String,
    faults: Arc<Mutex<Vec<Fault>>>,
    http: reqwest::Client,
    seen: Arc<Mutex<Vec<(Method, String)>>>,
    ws: crate::proxy_ws::WsTaps,
}

/// The running proxy.
#[derive(Debug, Clone)]
pub struct FaultProxy {
    pub api_url: String,
    faults: Arc<Mutex<Vec<Fault>>>,
    /// Every request received so far (method, path after the API prefix), in order.
    seen: Arc<Mutex<Vec<(Method, String)>>>,
    /// Websockets passed through (frames, connects, closing them).
    pub ws: crate::proxy_ws::WsTaps,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1:0 forwarding to `upstream_api_url` (`http://host:port/api`).
    pub async fn start(upstream_api_url: &str) -> anyhow::Result<Self> {
        let faults = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let ws = crate::proxy_ws::WsTaps::default();
        let shared = Shared {
            upstream: upstream_api_url.trim_end_matches('/').to_owned(),
            faults: faults.clone(),
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
            faults,
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

    /// Answers matching requests with `fault` from now on.
    pub fn inject(&self, fault: Fault) {
        self.faults.lock().unwrap().push(fault);
    }

    /// Every request received so far (method, path after the API prefix), websocket
    /// upgrades included.
    pub fn requests(&self) -> Vec<(Method, String)> {
        self.seen.lock().unwrap().clone()
    }
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
    if let Some(f) = s
        .faults
        .lock()
        .unwrap()
        .iter()
        .find(|f| f.method == method && f.path == path)
    {
        return (
            f.status,
            [("content-type", "application/json")],
            f.body.clone(),
        )
            .into_response();
    }
    if crate::proxy_ws::is_upgrade(&req) {
        return crate::proxy_ws::bridge(&s.upstream, path, query, req, s.ws.clone()).await;
    }
    let headers: HeaderMap = req.headers().clone();
    let body: Bytes = match axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
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
