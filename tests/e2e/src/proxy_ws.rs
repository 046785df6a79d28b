//! Websocket pass-through for [`crate::proxy::FaultProxy`]: an upgrade request is opened
//! upstream first (so an upstream refusal reaches the client with its status), then the two
//! sockets are bridged message by message. Every text frame is recorded with its direction,
//! and a test can close every bridged socket with a chosen close code and reason (a
//! server-side close, as the worker sees it).

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt as _, StreamExt as _};
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

/// One text frame that crossed the proxy.
#[derive(Debug, Clone)]
pub struct WsFrame {
    /// The API path of the socket, e.g. `/work_pools/p/workers/connect`.
    pub path: String,
    /// `true`: sent by the client (the worker); `false`: by the server.
    pub from_client: bool,
    pub text: String,
}

impl WsFrame {
    /// The frame's JSON `type`, if it has one.
    #[must_use]
    pub fn kind(&self) -> Option<String> {
        serde_json::from_str::<serde_json::Value>(&self.text)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
    }

    /// The frame as JSON (`Null` if it is not JSON).
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or(serde_json::Value::Null)
    }
}

/// What the websocket side of the proxy records and controls.
#[derive(Debug, Clone)]
pub struct WsTaps {
    pub frames: Arc<Mutex<Vec<WsFrame>>>,
    /// Sockets bridged so far.
    pub connects: Arc<Mutex<Vec<String>>>,
    /// Frame types from the client that are recorded but not passed on.
    swallowed: Arc<Mutex<Vec<String>>>,
    close: broadcast::Sender<(u16, String)>,
}

impl Default for WsTaps {
    fn default() -> Self {
        Self {
            frames: Arc::default(),
            connects: Arc::default(),
            swallowed: Arc::default(),
            close: broadcast::channel(4).0,
        }
    }
}

impl WsTaps {
    /// From now on, client frames of JSON `type` `kind` are recorded but not passed on.
    pub fn swallow(&self, kind: &str) {
        self.swallowed.lock().unwrap().push(kind.to_owned());
    }

    /// Frames of JSON type `kind` on sockets whose path contains `path_part`.
    #[must_use]
    pub fn frames_of(&self, path_part: &str, from_client: bool, kind: &str) -> Vec<WsFrame> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .filter(|f| {
                f.path.contains(path_part)
                    && f.from_client == from_client
                    && f.kind().as_deref() == Some(kind)
            })
            .cloned()
            .collect()
    }

    /// Sockets bridged whose path contains `path_part`.
    #[must_use]
    pub fn connects_to(&self, path_part: &str) -> usize {
        self.connects
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.contains(path_part))
            .count()
    }

    /// Closes every bridged socket towards the client with `code` and `reason`.
    pub fn close_all(&self, code: u16, reason: &str) {
        let _ = self.close.send((code, reason.to_owned()));
    }
}

/// Whether `req` asks for a websocket upgrade.
#[must_use]
pub fn is_upgrade(req: &Request) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Bridges the upgrade `req` (for `path` below the API) to `upstream_api` (`http://h/api`).
pub async fn bridge(
    upstream_api: &str,
    path: String,
    query: String,
    mut req: Request,
    taps: WsTaps,
) -> Response {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let url = format!("{}{path}{query}", upstream_api.replacen("http", "ws", 1));
    let Ok(mut upstream_req) = url.as_str().into_client_request() else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    for (k, v) in req.headers() {
        let skip = [
            header::HOST,
            header::CONNECTION,
            header::UPGRADE,
            header::SEC_WEBSOCKET_KEY,
            header::SEC_WEBSOCKET_VERSION,
            header::SEC_WEBSOCKET_EXTENSIONS,
            header::CONTENT_LENGTH,
        ];
        if !skip.contains(k) {
            upstream_req.headers_mut().insert(k.clone(), v.clone());
        }
    }
    let (upstream, upstream_resp) = match tokio_tungstenite::connect_async(upstream_req).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let status = resp.status();
            let body = resp.body().clone().unwrap_or_default();
            return (status, body).into_response();
        }
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    taps.connects.lock().unwrap().push(path.clone());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let close_rx = taps.close.subscribe();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let client =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        pump(client, upstream, path, taps, close_rx).await;
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = upstream_resp.headers().get(header::SEC_WEBSOCKET_PROTOCOL) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p.clone());
    }
    resp
}

async fn pump<C, U>(
    mut client: WebSocketStream<C>,
    mut upstream: WebSocketStream<U>,
    path: String,
    taps: WsTaps,
    mut close_rx: broadcast::Receiver<(u16, String)>,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let record = |from_client: bool, m: &Message| {
        if let Message::Text(t) = m {
            taps.frames.lock().unwrap().push(WsFrame {
                path: path.clone(),
                from_client,
                text: t.to_string(),
            });
        }
    };
    loop {
        tokio::select! {
            cmd = close_rx.recv() => {
                if let Ok((code, reason)) = cmd {
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = client.send(Message::Close(Some(frame))).await;
                }
                let _ = upstream.close(None).await;
                // Let the client's close reply arrive before dropping the socket.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), client.next()).await;
                return;
            }
            m = client.next() => match m {
                // Each side answers its own pings.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(m)) => {
                    record(true, &m);
                    if let Message::Text(t) = &m {
                        let kind = WsFrame { path: String::new(), from_client: true, text: t.to_string() }.kind();
                        if kind.is_some_and(|k| taps.swallowed.lock().unwrap().contains(&k)) {
                            continue;
                        }
                    }
                    let is_close = matches!(m, Message::Close(_));
                    if upstream.send(m).await.is_err() || is_close { return; }
                }
                _ => { let _ = upstream.close(None).await; return; }
            },
            m = upstream.next() => match m {
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(m)) => {
                    record(false, &m);
                    let is_close = matches!(m, Message::Close(_));
                    if client.send(m).await.is_err() || is_close {
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), client.next()).await;
                        return;
                    }
                }
                _ => { let _ = client.close(None).await; return; }
            },
        }
    }
}
