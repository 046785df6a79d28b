//! The events client against a scripted `/events/in` server: the self-hosted and Cloud
//! handshakes, the one-time server-version check, re-sending unconfirmed events after the
//! server drops the socket, and the bounded queue when the server cannot be reached.

// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use prefect_worker_core::client::{ClientOptions, PrefectClient};
use prefect_worker_core::events::{Event, EventEmitter, EventsOptions, Resource};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// What the server saw on one websocket connection.
#[derive(Debug, Default, Clone)]
struct Connection {
    headers: Vec<(String, String)>,
    texts: Vec<String>,
}

#[derive(Debug, Default)]
struct Seen {
    version_checks: usize,
    connections: Vec<Connection>,
    /// Drop the first connection after it has received this many events.
    drop_first_after: Option<usize>,
    /// Refuse the auth message with this reason.
    refuse_auth: Option<String>,
}

type Shared = Arc<Mutex<Seen>>;

async fn start() -> (String, Shared) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api", listener.local_addr().unwrap());
    let seen: Shared = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve(tcp, s.clone()));
        }
    });
    (url, seen)
}

async fn serve(mut tcp: TcpStream, seen: Shared) {
    let mut head = [0u8; 64];
    let n = tcp.peek(&mut head).await.unwrap_or(0);
    if head[..n].starts_with(b"GET /api/admin/version") {
        seen.lock().unwrap().version_checks += 1;
        let body = "\"3.9.1\"";
        let _ = tcp
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
        return;
    }
    let headers = Arc::new(Mutex::new(Vec::new()));
    let h = headers.clone();
    let callback = move |req: &Request, mut resp: Response| {
        *h.lock().unwrap() = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect::<Vec<_>>();
        if req.headers().contains_key("sec-websocket-protocol") {
            resp.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("prefect"),
            );
        }
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
        return;
    };
    let index = {
        let mut s = seen.lock().unwrap();
        s.connections.push(Connection {
            headers: headers.lock().unwrap().clone(),
            texts: Vec::new(),
        });
        s.connections.len() - 1
    };
    while let Some(Ok(m)) = ws.next().await {
        let Message::Text(t) = m else { continue };
        let t = t.to_string();
        let is_auth = serde_json::from_str::<Value>(&t)
            .is_ok_and(|v| v["type"] == "auth" && v.get("event").is_none());
        let (refuse, drop_now) = {
            let mut s = seen.lock().unwrap();
            s.connections[index].texts.push(t.clone());
            let events = s.connections[index]
                .texts
                .iter()
                .filter(|x| x.contains("\"event\""))
                .count();
            (
                s.refuse_auth.clone(),
                index == 0 && s.drop_first_after == Some(events),
            )
        };
        if is_auth {
            if let Some(reason) = refuse {
                let _ = ws
                    .close(Some(CloseFrame {
                        code: CloseCode::Policy,
                        reason: reason.into(),
                    }))
                    .await;
                return;
            }
            let _ = ws.send(Message::text(r#"{"type":"auth_success"}"#)).await;
        }
        if drop_now {
            return; // the TCP connection goes without a close frame
        }
    }
}

fn header<'a>(c: &'a Connection, name: &str) -> Option<&'a str> {
    c.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn fast() -> EventsOptions {
    EventsOptions {
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(100),
        io_timeout: Duration::from_secs(5),
        ..EventsOptions::default()
    }
}

fn event(n: usize) -> Event {
    Event::new("test.event", Resource::new(format!("test.resource.{n}")))
}

/// Waits until `check` holds (polling a local server: no clock in the assertion).
async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn event_ids(texts: &[String]) -> Vec<String> {
    texts
        .iter()
        .filter_map(|t| serde_json::from_str::<Value>(t).ok())
        .filter(|v| v.get("event").is_some())
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn self_hosted_handshake_then_events_as_text_frames() {
    let (url, seen) = start().await;
    let client = PrefectClient::new(
        ClientOptions::new(&url)
            .with_api_key("pnu_events_key")
            .with_auth_string("alice:events-pass"),
    )
    .unwrap();
    let (emitter, task) = EventEmitter::start(client, fast());
    let e = event(1);
    let id = e.id.to_string();
    emitter.emit(e);
    until("the event", || {
        seen.lock()
            .unwrap()
            .connections
            .first()
            .is_some_and(|c| c.texts.len() == 2)
    })
    .await;
    task.shutdown().await;
    let s = seen.lock().unwrap();
    assert_eq!(s.version_checks, 1, "GET /admin/version once, first");
    let c = &s.connections[0];
    assert_eq!(header(c, "sec-websocket-protocol"), Some("prefect"));
    assert_eq!(
        header(c, "authorization"),
        Some("Basic YWxpY2U6ZXZlbnRzLXBhc3M="),
        "the auth string, never the key"
    );
    let auth: Value = serde_json::from_str(&c.texts[0]).unwrap();
    assert_eq!(
        auth,
        serde_json::json!({"type": "auth", "token": "alice:events-pass"})
    );
    let sent: Value = serde_json::from_str(&c.texts[1]).unwrap();
    assert_eq!(sent["id"], id.as_str());
    assert_eq!(sent["event"], "test.event");
    assert_eq!(emitter.stats().delivered, 1, "confirmed at shutdown");
}

#[tokio::test]
async fn cloud_sends_the_key_as_bearer_and_no_auth_message_or_version_check() {
    let (url, seen) = start().await;
    let client = PrefectClient::new(
        ClientOptions::new(format!("{url}/accounts/a/workspaces/w"))
            .with_cloud_api_url(&url)
            .with_api_key("pnu_cloud_key"),
    )
    .unwrap();
    assert!(client.is_cloud());
    let (emitter, task) = EventEmitter::start(client, fast());
    emitter.emit(event(1));
    until("the event", || {
        seen.lock()
            .unwrap()
            .connections
            .first()
            .is_some_and(|c| !c.texts.is_empty())
    })
    .await;
    task.shutdown().await;
    let s = seen.lock().unwrap();
    assert_eq!(s.version_checks, 0);
    let c = &s.connections[0];
    assert_eq!(header(c, "authorization"), Some("bearer pnu_cloud_key"));
    assert_eq!(header(c, "sec-websocket-protocol"), None);
    assert_eq!(event_ids(&c.texts).len(), 1);
    assert_eq!(c.texts.len(), 1, "no auth message: {:?}", c.texts);
}

#[tokio::test]
async fn unconfirmed_events_are_sent_again_after_the_server_drops_the_socket() {
    let (url, seen) = start().await;
    seen.lock().unwrap().drop_first_after = Some(3);
    let client = PrefectClient::new(ClientOptions::new(&url)).unwrap();
    let options = EventsOptions {
        server_version_check: false,
        ..fast()
    };
    let (emitter, task) = EventEmitter::start(client, options);
    let mut ids = Vec::new();
    for n in 0..3 {
        let e = event(n);
        ids.push(e.id.to_string());
        emitter.emit(e);
    }
    // The server reads three events and goes away before any checkpoint: the client
    // notices while idle, reconnects and sends the three again.
    until("a second connection with the three events", || {
        seen.lock()
            .unwrap()
            .connections
            .get(1)
            .is_some_and(|c| event_ids(&c.texts).len() == 3)
    })
    .await;
    let e = event(3);
    ids.push(e.id.to_string());
    emitter.emit(e);
    until("the fourth event", || {
        seen.lock()
            .unwrap()
            .connections
            .get(1)
            .is_some_and(|c| event_ids(&c.texts).len() == 4)
    })
    .await;
    task.shutdown().await;
    let s = seen.lock().unwrap();
    assert_eq!(s.version_checks, 0, "the check can be turned off");
    assert_eq!(event_ids(&s.connections[0].texts), ids[..3]);
    assert_eq!(
        event_ids(&s.connections[1].texts),
        ids,
        "re-sent in order, then the new one"
    );
    let stats = emitter.stats();
    assert_eq!((stats.emitted, stats.delivered, stats.dropped), (4, 4, 0));
}

#[tokio::test]
async fn an_unreachable_server_costs_nothing_but_the_oldest_events() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client =
        PrefectClient::new(ClientOptions::new(format!("http://127.0.0.1:{port}/api"))).unwrap();
    let options = EventsOptions {
        flush_timeout: Duration::from_millis(200),
        ..fast()
    }
    .with_queue_capacity(5);
    let (emitter, task) = EventEmitter::start(client, options);
    let mut tap = emitter.subscribe().unwrap();
    for n in 0..200 {
        emitter.emit(event(n));
        let s = emitter.stats();
        assert!(s.queued <= 5, "the queue never exceeds its bound: {s:?}");
    }
    assert_eq!(tap.try_recv().unwrap().event, "test.event");
    let s = emitter.stats();
    assert_eq!((s.emitted, s.dropped, s.queued), (200, 195, 5), "{s:?}");
    assert!(!s.connected);
    task.shutdown().await;
    let s = emitter.stats();
    assert_eq!(
        (s.dropped, s.queued),
        (200, 0),
        "undeliverable at shutdown: {s:?}"
    );
}

#[tokio::test]
async fn a_refused_auth_message_is_retried_without_losing_events() {
    let (url, seen) = start().await;
    seen.lock().unwrap().refuse_auth = Some("Invalid token".into());
    let client =
        PrefectClient::new(ClientOptions::new(&url).with_auth_string("bob:wrong-secret")).unwrap();
    let (emitter, task) = EventEmitter::start(client, fast());
    emitter.emit(event(1));
    until("three refused attempts", || {
        seen.lock().unwrap().connections.len() >= 3
    })
    .await;
    assert_eq!(emitter.stats().queued, 1, "kept while refused");
    seen.lock().unwrap().refuse_auth = None;
    until("the event after the server accepts", || {
        seen.lock()
            .unwrap()
            .connections
            .iter()
            .any(|c| event_ids(&c.texts).len() == 1)
    })
    .await;
    task.shutdown().await;
    assert_eq!(emitter.stats().delivered, 1);
}
