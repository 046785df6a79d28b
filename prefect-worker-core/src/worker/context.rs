//! What a [`crate::Worker::run`] call gets besides the flow run and its configuration.

use std::time::Instant;

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
    submitted_at: Option<Instant>,
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
                submitted_at: None,
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

    /// When this runner's `Submitting` proposal for the run was accepted: the run was then
    /// PENDING, claimed by this worker. `None` for runs adopted after a restart, or when
    /// the proposal was not accepted. A worker may use it to skip re-reading the run's
    /// state shortly after the claim.
    #[must_use]
    pub fn submitted_at(&self) -> Option<Instant> {
        self.submitted_at
    }

    /// Records when `Submitting` was accepted (the runner does this).
    pub fn set_submitted_at(&mut self, at: Instant) {
        self.submitted_at = Some(at);
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
