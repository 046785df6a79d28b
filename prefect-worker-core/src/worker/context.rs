//! What a [`crate::Worker::run`] call gets besides the flow run and its configuration.

use tokio::sync::oneshot;

use super::FlowRunLogger;
use crate::client::PrefectClient;

/// The runner's side of one `run` call: report the infrastructure as started, log to the
/// flow run, and talk to the API (e.g. to propose `InfrastructurePending`).
#[derive(Debug)]
pub struct RunContext {
    started: Option<oneshot::Sender<String>>,
    logger: FlowRunLogger,
    client: PrefectClient,
}

impl RunContext {
    /// A context whose `started` identifier arrives on the returned receiver.
    #[must_use]
    pub fn new(logger: FlowRunLogger, client: PrefectClient) -> (Self, oneshot::Receiver<String>) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                started: Some(tx),
                logger,
                client,
            },
            rx,
        )
    }

    /// Reports that the infrastructure exists, with its identifier (Python's
    /// `task_status.started(pid)`). Call it once, as soon as the infrastructure is created;
    /// later calls are ignored.
    pub fn started(&mut self, identifier: impl Into<String>) {
        if let Some(tx) = self.started.take() {
            // The runner may have stopped listening (shutdown); the run goes on regardless.
            let _ = tx.send(identifier.into());
        }
    }

    /// Whether [`RunContext::started`] has been called.
    #[must_use]
    pub fn has_started(&self) -> bool {
        self.started.is_none()
    }

    /// Writes to the flow run's logs in Prefect (and the worker's log).
    #[must_use]
    pub fn logger(&self) -> &FlowRunLogger {
        &self.logger
    }

    /// The Prefect API client.
    #[must_use]
    pub fn client(&self) -> &PrefectClient {
        &self.client
    }
}
