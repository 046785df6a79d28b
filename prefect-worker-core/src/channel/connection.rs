//! The socket task: set up a connection (auth → hello → ready), run it (heartbeats,
//! keepalive pings, snapshots, cleanup frames), and on failure either reconnect with
//! back-off or give up for good, publishing the status as it goes.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::{SinkExt as _, StreamExt as _};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::cleanup::{CleanupExecutor, SessionLink};
use super::error::{ChannelError, reconnect_delay};
use super::frames::{AuthAnswer, Hello, Incoming, Ready, auth_message, heartbeat_frame};
use super::{ChannelHost, ChannelOptions, ChannelStatus};
use crate::client::PrefectClient;
use crate::client::websocket::{CloseCode, CloseFrame, Message, WebSocket, WebSocketRequest};

/// Everything the task owns.
pub(super) struct Connection {
    pub(super) client: PrefectClient,
    pub(super) consumer_id: Uuid,
    pub(super) options: ChannelOptions,
    pub(super) host: Arc<dyn ChannelHost>,
    pub(super) cleanup: Option<Arc<CleanupExecutor>>,
    pub(super) status: watch::Sender<ChannelStatus>,
    pub(super) stop: CancellationToken,
}

/// Why a session ended.
enum SessionEnd {
    Stopped,
    Failed(ChannelError),
}

impl Connection {
    pub(super) async fn run(self) {
        let pool = self.options.work_pool_name.clone();
        let mut attempt = 0u32;
        let mut ever_healthy = false;
        loop {
            self.status.send_replace(ChannelStatus::Connecting);
            let setup = tokio::select! {
                r = tokio::time::timeout(self.options.setup_timeout, self.set_up()) => r,
                () = self.stop.cancelled() => return,
            };
            let error = match setup {
                Err(_) => ChannelError::SetupTimeout(self.options.setup_timeout),
                Ok(Err(e)) => e,
                Ok(Ok((socket, ready))) => {
                    let connected_at = tokio::time::Instant::now();
                    if ever_healthy {
                        tracing::info!(pool = %pool, "worker channel reconnected");
                    } else {
                        tracing::info!(
                            pool = %pool,
                            cleanup_delivery = ready.cleanup_accepted(),
                            "worker channel connected: heartbeats and work-pool updates go over it"
                        );
                    }
                    ever_healthy = true;
                    self.status.send_replace(ChannelStatus::Healthy);
                    let end = self.session(socket, &ready).await;
                    // Only a connection that stayed up a while resets the back-off: a server
                    // that drops every connection soon after setup (e.g. its database
                    // refusing heartbeats under load) is not reconnected to every second.
                    if connected_at.elapsed() >= self.options.backoff_reset_after {
                        attempt = 0;
                    }
                    match end {
                        SessionEnd::Stopped => return,
                        SessionEnd::Failed(e) => e,
                    }
                }
            };
            let d = error.disposition();
            if !d.retryable {
                tracing::info!(pool = %pool, reason = %d.reason, error = %error,
                    "worker channel disabled for this process; using REST heartbeats and work-pool reads");
                self.status
                    .send_replace(ChannelStatus::Disabled { reason: d.reason });
                return;
            }
            attempt = attempt.saturating_add(1);
            let delay = reconnect_delay(
                attempt,
                self.options.reconnect_base,
                self.options.reconnect_max,
            );
            tracing::info!(pool = %pool, reason = %d.reason, error = %error, retry_in = ?delay,
                "worker channel unavailable; REST fallback while it reconnects");
            self.status
                .send_replace(ChannelStatus::Fallback { reason: d.reason });
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.stop.cancelled() => return,
            }
        }
    }

    fn hello(&self) -> Hello {
        let mut queues = self.options.work_queue_names.clone();
        queues.sort();
        queues.dedup();
        let (kinds, max) = match &self.cleanup {
            Some(c) if c.max_concurrency() > 0 => (
                CleanupExecutor::handled_kinds(),
                u32::try_from(c.max_concurrency()).unwrap_or(1),
            ),
            _ => (Vec::new(), 0),
        };
        Hello {
            consumer_id: self.consumer_id,
            worker_name: self.options.worker_name.clone(),
            worker_type: self.options.worker_type.clone(),
            heartbeat_interval_seconds: self.options.heartbeat_interval_seconds.max(1),
            work_queue_names: queues,
            handled_cleanup_kinds: kinds,
            max_cleanup_concurrency: max,
            create_pool_if_not_found: self.options.create_pool_if_not_found,
            default_base_job_template: self.options.default_base_job_template.clone(),
            worker_metadata: self.host.worker_metadata(),
        }
    }

    /// Opens the socket and runs the handshake; on success the ready frame is applied
    /// (snapshot, worker id) before the caller marks the channel healthy.
    async fn set_up(&self) -> Result<(WebSocket, Ready), ChannelError> {
        let request = WebSocketRequest::new([
            "work_pools",
            self.options.work_pool_name.as_str(),
            "workers",
            "connect",
        ])
        .with_timeout(self.options.setup_timeout);
        let mut socket = self
            .client
            .connect_websocket(&request)
            .await
            .map_err(ChannelError::Open)?;
        let token = self.client.auth_message_token().map(|s| s.expose());
        send(&mut socket, auth_message(token)).await?;
        tracing::trace!(frame_type = "auth", "worker channel frame sent");
        let answer = receive_text(&mut socket).await?;
        if let AuthAnswer::Refused(reason) = AuthAnswer::parse(&answer) {
            return Err(ChannelError::Authentication { reason });
        }
        let hello = self.hello();
        let sent_metadata = hello.worker_metadata.is_some();
        send(&mut socket, hello.frame(Uuid::now_v7(), Utc::now())).await?;
        tracing::trace!(frame_type = "worker.hello.v1", "worker channel frame sent");
        let text = receive_text(&mut socket).await?;
        let ready = match Incoming::parse(&text).map_err(ChannelError::Protocol)? {
            Incoming::Ready { payload, .. } => *payload,
            other => {
                return Err(ChannelError::Protocol(format!(
                    "expected worker.ready.v1 during setup, got {}",
                    other.kind()
                )));
            }
        };
        tracing::trace!(
            frame_type = "worker.ready.v1",
            "worker channel frame received"
        );
        ready.validate(&hello).map_err(ChannelError::Protocol)?;
        if sent_metadata {
            self.host.worker_metadata_sent();
        }
        if let Some(id) = ready.worker_id {
            self.host.worker_id(id);
        }
        self.host
            .work_pool_snapshot(ready.initial_snapshot.work_pool.clone());
        Ok((socket, ready))
    }

    /// Runs one healthy connection until it fails or the channel is stopped.
    async fn session(&self, socket: WebSocket, ready: &Ready) -> SessionEnd {
        let cleanup_accepted = ready.cleanup_accepted();
        let (frames_tx, mut frames_rx) = mpsc::channel::<String>(64);
        if let Some(c) = &self.cleanup {
            c.attach(
                SessionLink {
                    frames: frames_tx,
                    cleanup: cleanup_accepted,
                },
                usize::try_from(ready.effective_max_cleanup_concurrency).unwrap_or(0),
            );
        }
        let end = self
            .drive(socket, ready, cleanup_accepted, &mut frames_rx)
            .await;
        if let Some(c) = &self.cleanup {
            c.detach();
        }
        end
    }

    async fn drive(
        &self,
        socket: WebSocket,
        ready: &Ready,
        cleanup_accepted: bool,
        frames: &mut mpsc::Receiver<String>,
    ) -> SessionEnd {
        let interval_secs = ready.effective_heartbeat_interval_seconds;
        let interval = Duration::from_secs(interval_secs);
        let mut heartbeat = tokio::time::interval_at(Instant::now() + interval, interval);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let keepalive = self.options.keepalive;
        let mut ping = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut awaiting_pong = false;
        let mut last_sequence = ready.initial_snapshot.snapshot_sequence;
        let (mut sink, mut stream) = socket.split();
        let lost = |e: &dyn std::fmt::Display| {
            SessionEnd::Failed(ChannelError::ConnectionLost(e.to_string()))
        };
        loop {
            tokio::select! {
                () = self.stop.cancelled() => {
                    let close = CloseFrame { code: CloseCode::Normal, reason: "worker stopping".into() };
                    let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(Message::Close(Some(close)))).await;
                    return SessionEnd::Stopped;
                }
                _ = heartbeat.tick() => {
                    let frame = heartbeat_frame(Uuid::now_v7(), Utc::now(), self.consumer_id,
                        &self.options.worker_name, interval_secs);
                    if let Err(e) = sink.send(Message::text(frame)).await {
                        return lost(&e);
                    }
                    tracing::trace!(frame_type = "worker.heartbeat.v1", "worker channel frame sent");
                }
                _ = ping.tick() => {
                    if awaiting_pong {
                        return SessionEnd::Failed(ChannelError::ConnectionLost(format!(
                            "no answer to a ping within {keepalive:?}"
                        )));
                    }
                    if let Err(e) = sink.send(Message::Ping(Vec::new().into())).await {
                        return lost(&e);
                    }
                    awaiting_pong = true;
                }
                Some(frame) = frames.recv() => {
                    if let Err(e) = sink.send(Message::text(frame)).await {
                        return lost(&e);
                    }
                    tracing::trace!(frame_type = "cleanup operation", "worker channel frame sent");
                }
                message = stream.next() => {
                    let text = match message {
                        None => return SessionEnd::Failed(ChannelError::ConnectionLost(
                            "the connection ended without a close frame".into())),
                        Some(Err(e)) => return lost(&e),
                        Some(Ok(Message::Close(frame))) => return SessionEnd::Failed(closed(frame)),
                        Some(Ok(Message::Pong(_))) => { awaiting_pong = false; continue; }
                        Some(Ok(Message::Text(t))) => t.to_string(),
                        Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
                        Some(Ok(_)) => continue,
                    };
                    if let Err(e) = self.on_frame(&text, cleanup_accepted, &mut last_sequence) {
                        return SessionEnd::Failed(e);
                    }
                }
            }
        }
    }

    fn on_frame(
        &self,
        text: &str,
        cleanup_accepted: bool,
        last_sequence: &mut u64,
    ) -> Result<(), ChannelError> {
        let frame = Incoming::parse(text).map_err(ChannelError::Protocol)?;
        tracing::trace!(frame_type = frame.kind(), "worker channel frame received");
        let cleanup = match &self.cleanup {
            Some(c) if cleanup_accepted => Some(c),
            _ => None,
        };
        match frame {
            Incoming::Snapshot { payload, .. } => {
                if payload.snapshot_sequence <= *last_sequence {
                    tracing::debug!(
                        sequence = payload.snapshot_sequence,
                        last = *last_sequence,
                        "stale work-pool snapshot ignored"
                    );
                    return Ok(());
                }
                *last_sequence = payload.snapshot_sequence;
                tracing::debug!(sequence = payload.snapshot_sequence, reason = %payload.reason,
                    "work-pool snapshot applied");
                self.host.work_pool_snapshot(payload.work_pool);
            }
            Incoming::CleanupMessage { payload, .. } => match cleanup {
                Some(c) => c.submit(payload),
                None => {
                    return Err(ChannelError::Protocol(
                        "cleanup work arrived without accepted cleanup delivery".into(),
                    ));
                }
            },
            Incoming::OperationResult { payload, .. } => match cleanup {
                Some(c) => c.operation_result(payload),
                None => {
                    return Err(ChannelError::Protocol(
                        "a cleanup operation result arrived without accepted cleanup delivery"
                            .into(),
                    ));
                }
            },
            Incoming::Ready { .. } => {
                return Err(ChannelError::Protocol(
                    "worker.ready.v1 arrived on a connection already set up".into(),
                ));
            }
        }
        Ok(())
    }
}

fn closed(frame: Option<CloseFrame>) -> ChannelError {
    match frame {
        Some(f) => ChannelError::Closed {
            code: Some(u16::from(f.code)),
            reason: f.reason.to_string(),
        },
        None => ChannelError::Closed {
            code: None,
            reason: String::new(),
        },
    }
}

async fn send(socket: &mut WebSocket, text: String) -> Result<(), ChannelError> {
    socket
        .send(Message::text(text))
        .await
        .map_err(|e| ChannelError::ConnectionLost(e.to_string()))
}

/// The next text (or binary) frame during setup; a close frame or the end of the stream
/// is the failure it stands for.
async fn receive_text(socket: &mut WebSocket) -> Result<String, ChannelError> {
    loop {
        match socket.next().await {
            None => {
                return Err(ChannelError::ConnectionLost(
                    "the connection ended during setup".into(),
                ));
            }
            Some(Err(e)) => return Err(ChannelError::ConnectionLost(e.to_string())),
            Some(Ok(Message::Close(frame))) => return Err(closed(frame)),
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Binary(b))) => return Ok(String::from_utf8_lossy(&b).into_owned()),
            Some(Ok(_)) => {}
        }
    }
}
