//! Flow-run logs: worker messages about a flow run also go to that run's logs in Prefect
//! (`POST /logs/`, spec §4.7), batched like Python's `APILogHandler`.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::client::PrefectClient;
use crate::client::models::LogCreate;

/// The span a flow run's work runs in: every `tracing` line inside it (the runner's and
/// the worker's, e.g. Kubernetes watch and API errors) carries `flow_run_id`, so log
/// pipelines can index them. At ERROR level so that no level filter disables it.
#[must_use]
pub fn flow_run_span(flow_run_id: Uuid) -> tracing::Span {
    tracing::error_span!("flow_run", flow_run_id = %flow_run_id)
}

/// Python logging levels, as the API stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug = 10,
    Info = 20,
    Warning = 30,
    Error = 40,
}

/// Writes log lines to one flow run's logs (and to the worker's own `tracing` output).
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct FlowRunLogger {
    flow_run_id: Uuid,
    logger_name: &'static str,
    sink: Option<mpsc::UnboundedSender<LogCreate>>,
    max_size: usize,
}

impl FlowRunLogger {
    /// A logger that only writes to `tracing` (logs to the API disabled, or tests).
    #[must_use]
    pub fn detached(flow_run_id: Uuid) -> Self {
        Self {
            flow_run_id,
            logger_name: "prefect.flow_runs.worker",
            sink: None,
            max_size: usize::MAX,
        }
    }

    /// The same flow run under another logger name (e.g. `prefect.flow_runs.observer`).
    #[must_use]
    pub fn named(&self, logger_name: &'static str) -> Self {
        Self {
            logger_name,
            ..self.clone()
        }
    }

    /// The flow run this logger writes to.
    #[must_use]
    pub fn flow_run_id(&self) -> Uuid {
        self.flow_run_id
    }

    /// Logs `message` at `level`.
    pub fn log(&self, level: Level, message: impl Into<String>) {
        let mut message = message.into();
        let id = self.flow_run_id;
        match level {
            Level::Debug => tracing::debug!(flow_run_id = %id, "{message}"),
            Level::Info => tracing::info!(flow_run_id = %id, "{message}"),
            Level::Warning => tracing::warn!(flow_run_id = %id, "{message}"),
            Level::Error => tracing::error!(flow_run_id = %id, "{message}"),
        }
        if level == Level::Debug {
            return;
        }
        if let Some(sink) = &self.sink {
            truncate(&mut message, self.max_size);
            let record = LogCreate {
                name: self.logger_name.to_owned(),
                level: level as u32,
                message,
                timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
                flow_run_id: Some(id),
                task_run_id: None,
            };
            // The shipper only goes away at shutdown; a line logged after that has
            // already been written to tracing above.
            let _ = sink.send(record);
        }
    }

    pub fn info(&self, message: impl Into<String>) {
        self.log(Level::Info, message);
    }
    pub fn warning(&self, message: impl Into<String>) {
        self.log(Level::Warning, message);
    }
    pub fn error(&self, message: impl Into<String>) {
        self.log(Level::Error, message);
    }
}

/// Cuts `message` to `max` bytes (on a char boundary) ending in `... [truncated]`, as Python does.
fn truncate(message: &mut String, max: usize) {
    const MARK: &str = "... [truncated]";
    if message.len() <= max {
        return;
    }
    let mut cut = max.saturating_sub(MARK.len());
    while cut > 0 && !message.is_char_boundary(cut) {
        cut -= 1;
    }
    message.truncate(cut);
    message.push_str(MARK);
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
        FlowRunLogger {
            flow_run_id,
            logger_name: "prefect.flow_runs.worker",
            sink: self.sink.clone(),
            max_size: self.max_size,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_marks_and_respects_char_boundaries() {
        let mut s = "é".repeat(20);
        truncate(&mut s, 25);
        assert!(s.ends_with("... [truncated]"));
        assert!(s.len() <= 25);
        let mut short = "ok".to_owned();
        truncate(&mut short, 25);
        assert_eq!(short, "ok");
    }
}
