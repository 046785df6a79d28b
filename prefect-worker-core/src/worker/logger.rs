//! [`FlowRunLogger`]: what a [`crate::Worker`] writes to one flow run's logs in Prefect
//! (and to the worker's own `tracing` output). The runner ships the lines
//! (`runner::LogShipper`, batched like Python's `APILogHandler`).

use chrono::{SecondsFormat, Utc};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::client::models::LogCreate;

/// Python logging levels, as the API stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `DEBUG` (10): written to `tracing` only, never shipped to the API.
    Debug = 10,
    /// `INFO` (20).
    Info = 20,
    /// `WARNING` (30).
    Warning = 30,
    /// `ERROR` (40).
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
        Self::shipping_to(flow_run_id, None, usize::MAX)
    }

    /// A logger whose records go to `sink` (the runner's log shipper), each message cut
    /// to `max_size` bytes.
    pub(crate) fn shipping_to(
        flow_run_id: Uuid,
        sink: Option<mpsc::UnboundedSender<LogCreate>>,
        max_size: usize,
    ) -> Self {
        Self {
            flow_run_id,
            logger_name: "prefect.flow_runs.worker",
            sink,
            max_size,
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

    /// Logs `message` at [`Level::Info`].
    pub fn info(&self, message: impl Into<String>) {
        self.log(Level::Info, message);
    }

    /// Logs `message` at [`Level::Warning`].
    pub fn warning(&self, message: impl Into<String>) {
        self.log(Level::Warning, message);
    }

    /// Logs `message` at [`Level::Error`].
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
