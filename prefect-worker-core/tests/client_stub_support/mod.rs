//! A scripted HTTP stub of the Prefect API for client tests: it records every request and
//! answers each `METHOD path` from a queue of replies (the last reply repeats). Unscripted
//! routes get FastAPI's 404; `GET /api/csrf-token` defaults to the 422 of a server without
//! CSRF protection, as a default Prefect server answers. [`Stub::compress`] makes it
//! compress its replies, as a server behind a compressing proxy or middleware does.

// Each test binary uses a different subset of the helpers; panicking on a broken stub is
// the right failure in test code; helpers take values by value to keep test call sites short.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use prefect_worker_core::client::{ClientOptions, PrefectClient};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// A websocket accepted by the stub.
pub type StubSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;
/// What the stub does with an accepted websocket (one call per connection).
pub type SocketHandler = Arc<dyn Fn(StubSocket) -> BoxFuture<'static, ()> + Send + Sync>;

/// One request the stub received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![],
            body: body.to_owned(),
        }
    }

    pub fn empty(status: u16) -> Self {
        Self::text(status, "")
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

#[derive(Default)]
struct Inner {
    script: HashMap<String, Vec<Reply>>,
    recorded: Vec<Recorded>,
    /// Compress replies with this encoding (`gzip` or `deflate`) when the request accepts it.
    compress: Option<&'static str>,
    sockets: HashMap<String, SocketHandler>,
}

/// `body` compressed with `encoding` (`deflate` is zlib, as HTTP defines it).
fn compressed(encoding: &str, body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let level = flate2::Compression::default();
    match encoding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        other => panic!("the stub cannot compress with {other}"),
    }
}

/// The running stub.
#[derive(Clone)]
pub struct Stub {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    shutdown: Arc<tokio::sync::Notify>,
}

impl Stub {
    /// Starts a stub on `127.0.0.1:0`.
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let shutdown = Arc::new(tokio::sync::Notify::new());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.notified().await })
                .await
                .unwrap();
        });
        Self {
            addr,
            inner,
            shutdown,
        }
    }

    /// Stops accepting connections (the port is closed once this returns and existing
    /// connections finish).
    pub fn stop(&self) {
        self.shutdown.notify_one();
    }

    /// The API URL of this stub.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Options pointing here, with millisecond retry delays and no jitter so tests are
    /// fast and deterministic.
    pub fn options(&self) -> ClientOptions {
        ClientOptions::new(self.api_url())
            .with_retry_base_delay(Duration::from_millis(1))
            .with_retry_jitter_factor(0.0)
    }

    pub fn client(&self) -> PrefectClient {
        PrefectClient::new(self.options()).unwrap()
    }

    /// From now on, compresses every reply with `encoding` (`"gzip"` or `"deflate"`) when
    /// the request's `Accept-Encoding` lists it, and says so in `Content-Encoding`.
    pub fn compress(&self, encoding: &'static str) {
        self.inner.lock().unwrap().compress = Some(encoding);
    }

    /// Scripts `METHOD /api/path`: replies in order, the last one repeating.
    pub fn on(&self, method: &str, path: &str, replies: Vec<Reply>) {
        self.inner
            .lock()
            .unwrap()
            .script
            .insert(format!("{method} {path}"), replies);
    }

    /// Accepts websocket upgrades on `path` (answering the `prefect` subprotocol when asked)
    /// and hands each connection to `handler`. Without this, an upgrade gets the route's
    /// scripted reply (FastAPI's 404 by default), as an old server answers.
    pub fn on_websocket(&self, path: &str, handler: SocketHandler) {
        self.inner
            .lock()
            .unwrap()
            .sockets
            .insert(path.to_owned(), handler);
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().recorded.clone()
    }

    /// The requests to `METHOD path`.
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }
}

/// Answers an upgrade with 101 and runs `handler` on the socket.
fn accept_websocket(mut req: Request, handler: SocketHandler) -> Response {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let wants_prefect = req
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "prefect"));
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let socket =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            handler(socket).await;
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(key.as_bytes())).unwrap(),
    );
    if wants_prefect {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("prefect"),
        );
    }
    resp
}

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let headers: HeaderMap = req.headers().clone();
    let path = uri.path().to_owned();
    let key = format!("{method} {path}");
    let accepted = headers
        .get("accept-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(',')
        .map(|e| e.trim().to_owned())
        .collect::<Vec<_>>();
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let socket = if is_upgrade {
        inner.lock().unwrap().sockets.get(&path).cloned()
    } else {
        None
    };
    if let Some(handler) = socket {
        inner.lock().unwrap().recorded.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            query: uri.query().map(str::to_owned),
            headers,
            body: Bytes::new(),
        });
        return accept_websocket(req, handler);
    }
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let (reply, compress) = {
        let mut st = inner.lock().unwrap();
        let compress = st.compress.filter(|e| accepted.iter().any(|a| a == e));
        st.recorded.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            query: uri.query().map(str::to_owned),
            headers,
            body,
        });
        let reply = match st.script.get_mut(&key) {
            Some(q) if q.len() > 1 => Some(q.remove(0)),
            Some(q) => q.first().cloned(),
            None => None,
        };
        (reply, compress)
    };
    let reply = reply.unwrap_or_else(|| {
        if key == "GET /api/csrf-token" {
            Reply::json(
                422,
                serde_json::json!({"detail": "CSRF protection is disabled."}),
            )
        } else {
            Reply::json(404, serde_json::json!({"detail": "Not Found"}))
        }
    });
    let body = match compress {
        Some(encoding) if !reply.body.is_empty() => compressed(encoding, reply.body.as_bytes()),
        _ => reply.body.into_bytes(),
    };
    let mut resp = (StatusCode::from_u16(reply.status).unwrap(), body).into_response();
    if let Some(encoding) = compress {
        resp.headers_mut().insert(
            "content-encoding",
            axum::http::HeaderValue::from_static(encoding),
        );
    }
    for (k, v) in reply.headers {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            axum::http::HeaderValue::from_str(&v).unwrap(),
        );
    }
    resp
}
