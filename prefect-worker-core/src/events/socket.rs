//! One connection to `/events/in` (spec §4.6): open it the way the server wants
//! (self-hosted: `prefect` subprotocol, `Basic` auth string, then the auth message; Cloud:
//! `bearer` API key and nothing else), send events as text frames, and checkpoint with a
//! ping whose pong proves everything sent before it arrived.

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};

use crate::client::PrefectClient;
use crate::client::websocket::{
    Message, WebSocket, WebSocketAuth, WebSocketError, WebSocketRequest,
};

/// Why the events socket failed. Messages never carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The websocket could not be opened (refused upgrade, TCP/TLS, timeout).
    #[error("cannot open the events websocket: {0}")]
    Open(#[from] WebSocketError),
    /// The server did not answer the connection ping.
    #[error("the events websocket did not answer a ping: {0}")]
    Ping(String),
    /// The server refused the auth message (wrong `PREFECT_API_AUTH_STRING`).
    #[error(
        "the Prefect API refused the events stream's authentication ({0}); check PREFECT_API_AUTH_STRING"
    )]
    Auth(String),
    /// Sending an event failed.
    #[error("sending an event failed: {0}")]
    Send(String),
    /// A checkpoint (ping → pong) failed: the events since the last one are sent again.
    #[error("the events checkpoint failed: {0}")]
    Checkpoint(String),
    /// The server closed the socket.
    #[error("the server closed the events websocket{0}")]
    Closed(String),
}

/// An open, authenticated events socket.
pub(crate) struct EventsSocket {
    ws: WebSocket,
    io_timeout: Duration,
    pings: u64,
}

impl std::fmt::Debug for EventsSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsSocket").finish_non_exhaustive()
    }
}

impl EventsSocket {
    /// Opens, pings and (self-hosted) authenticates.
    pub(crate) async fn open(
        client: &PrefectClient,
        io_timeout: Duration,
    ) -> Result<Self, EventsError> {
        let cloud = client.is_cloud();
        let request = WebSocketRequest::new(["events", "in"]).with_timeout(io_timeout);
        let request = if cloud {
            request
                .with_subprotocol(None)
                .with_auth(WebSocketAuth::BearerApiKey)
        } else {
            request.with_auth(WebSocketAuth::BasicIfAuthString)
        };
        let ws = client.connect_websocket(&request).await?;
        let mut socket = Self {
            ws,
            io_timeout,
            pings: 0,
        };
        socket.ping().await.map_err(EventsError::Ping)?;
        if !cloud {
            let token = client.websocket_settings().events_auth_token();
            socket.authenticate(token).await.map_err(|e| match e {
                EventsError::Auth(reason) => {
                    EventsError::Auth(client.websocket_settings().redact(&reason))
                }
                other => other,
            })?;
        }
        Ok(socket)
    }

    /// `{"type":"auth","token":...}` → `{"type":"auth_success"}`.
    async fn authenticate(&mut self, token: Option<&str>) -> Result<(), EventsError> {
        let message = json!({"type": "auth", "token": token}).to_string();
        self.send_text(message).await?;
        let reply = tokio::time::timeout(self.io_timeout, self.next_text())
            .await
            .map_err(|_| EventsError::Auth("no answer to the auth message".into()))??;
        let v: Value = serde_json::from_str(&reply)
            .map_err(|_| EventsError::Auth("an unreadable answer to the auth message".into()))?;
        if v.get("type").and_then(Value::as_str) == Some("auth_success") {
            Ok(())
        } else {
            let reason = v
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            Err(EventsError::Auth(reason.to_owned()))
        }
    }

    /// The next text message; a close during the handshake is an auth refusal (the server
    /// closes with the reason, e.g. `Invalid token`).
    async fn next_text(&mut self) -> Result<String, EventsError> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
                Some(Ok(Message::Close(frame))) => {
                    return Err(EventsError::Auth(frame.map_or_else(
                        || "the server closed the connection".to_owned(),
                        |f| f.reason.to_string(),
                    )));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(EventsError::Auth(e.to_string())),
                None => return Err(EventsError::Auth("the connection ended".into())),
            }
        }
    }

    async fn send_text(&mut self, text: String) -> Result<(), EventsError> {
        match tokio::time::timeout(self.io_timeout, self.ws.send(Message::text(text))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(EventsError::Send(e.to_string())),
            Err(_) => Err(EventsError::Send(format!(
                "no progress for {:?}",
                self.io_timeout
            ))),
        }
    }

    /// Sends one serialised event.
    pub(crate) async fn send_event(&mut self, text: String) -> Result<(), EventsError> {
        self.send_text(text).await
    }

    /// Pings and waits for the matching pong: everything sent before has arrived.
    pub(crate) async fn checkpoint(&mut self) -> Result<(), EventsError> {
        self.ping().await.map_err(EventsError::Checkpoint)
    }

    async fn ping(&mut self) -> Result<(), String> {
        self.pings += 1;
        let payload = self.pings.to_be_bytes().to_vec();
        let wait = async {
            self.ws
                .send(Message::Ping(payload.clone().into()))
                .await
                .map_err(|e| e.to_string())?;
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Pong(p))) if p.as_ref() == payload.as_slice() => {
                        return Ok(());
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return Err(closed_reason(frame.as_ref()));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("the connection ended".to_owned()),
                }
            }
        };
        tokio::time::timeout(self.io_timeout, wait)
            .await
            .map_err(|_| format!("no pong within {:?}", self.io_timeout))?
    }

    /// Waits for something from the server while idle: answers its pings (tungstenite
    /// queues the pong and flushes it on the next read or write) and returns an error when
    /// it closes the socket.
    pub(crate) async fn idle(&mut self) -> EventsError {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Close(frame))) => {
                    return EventsError::Closed(closed_reason(frame.as_ref()));
                }
                Some(Ok(_)) => {
                    // A pong only flushes with the next write; do it now.
                    if let Err(e) = self.ws.flush().await {
                        return EventsError::Closed(format!(": {e}"));
                    }
                }
                Some(Err(e)) => return EventsError::Closed(format!(": {e}")),
                None => return EventsError::Closed(String::new()),
            }
        }
    }

    /// Closes the socket politely (shutdown).
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(self.io_timeout, self.ws.close(None)).await;
    }
}

fn closed_reason(frame: Option<&crate::client::websocket::CloseFrame>) -> String {
    match frame {
        Some(f) if !f.reason.is_empty() => format!(" ({}: {})", u16::from(f.code), f.reason),
        Some(f) => format!(" ({})", u16::from(f.code)),
        None => String::new(),
    }
}
