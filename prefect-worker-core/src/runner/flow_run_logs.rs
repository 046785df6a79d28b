//! Flow-run logs: worker messages about a flow run also go to that run's logs in Prefect
//! (`POST /logs/`, spec §4.7), batched like Python's `APILogHandler`. The logger itself is
//! part of the worker contract ([`crate::worker::FlowRunLogger`]); this is the shipping.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::client::PrefectClient;
use crate::client::models::LogCreate;

use crate::worker::FlowRunLogger;

/// The span a flow run's work runs in: every `tracing` line inside it (the runner's and
/// the worker's, e.g. Kubernetes watch and API errors) carries `flow_run_id`, so log
/// pipelines can index them. At ERROR level so that no level filter disables it.
#[must_use]
pub fn flow_run_span(flow_run_id: Uuid) -> tracing::Span {
    tracing::error_span!("flow_run", flow_run_id = %flow_run_id)
}

/// Hands out [`FlowRunLogger`]s and ships what they log.
#[derive(Debug, Clone)]
pub struct LogShipper {
    sink: Option<mpsc::UnboundedSender<LogCreate>>,
    max_size: usize,
}

/// Most records kept while the API is unreachable; older ones are dropped first (and counted
/// in a warning) so an outage cannot grow the worker's memory without bound.
const MAX_BUFFERED: usize = 50_000;

impl LogShipper {
    /// Starts the shipping task when `enabled`. It sends a batch every `interval`, keeps
    /// records across API errors, and flushes what it has when every logger is gone.
    #[must_use]
    pub fn start(
        client: PrefectClient,
        enabled: bool,
        interval: Duration,
        max_size: usize,
        stop: CancellationToken,
    ) -> (Self, Option<tokio::task::JoinHandle<()>>) {
        if !enabled {
            return (
                Self {
                    sink: None,
                    max_size,
                },
                None,
            );
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(ship(client, rx, interval, stop));
        (
            Self {
                sink: Some(tx),
                max_size,
            },
            Some(task),
        )
    }

    /// A logger for one flow run.
    #[must_use]
    pub fn logger(&self, flow_run_id: Uuid) -> FlowRunLogger {
        FlowRunLogger::shipping_to(flow_run_id, self.sink.clone(), self.max_size)
    }
}

/// Sends batches every `interval`; on `stop`, sends what is queued once more and ends.
async fn ship(
    client: PrefectClient,
    mut rx: mpsc::UnboundedReceiver<LogCreate>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut buffer: Vec<LogCreate> = Vec::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    while open {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(r) => { buffer.push(r); continue; }
                None => open = false,
            },
            () = stop.cancelled() => {
                while let Ok(r) = rx.try_recv() {
                    buffer.push(r);
                }
                open = false;
            }
            _ = ticker.tick() => {}
        }
        if buffer.is_empty() {
            continue;
        }
        match client.create_logs(&buffer).await {
            Ok(()) => buffer.clear(),
            Err(e) => {
                tracing::warn!(error = %e, records = buffer.len(), "could not send flow-run logs; will retry");
                if buffer.len() > MAX_BUFFERED {
                    let drop = buffer.len() - MAX_BUFFERED;
                    buffer.drain(..drop);
                    tracing::warn!(dropped = drop, "dropped the oldest flow-run log records");
                }
                if !open {
                    return;
                }
            }
        }
    }
}
