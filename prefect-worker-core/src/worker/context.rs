//! What a [`crate::Worker::run`] call gets besides the flow run and its configuration.

use std::time::Instant;

use tokio::sync::oneshot;

use super::{FlowRunLogger, RunError};
use crate::client::PrefectClient;

/// The `type_name` of the [`RunError`] from [`RunContext::check_claim`]: the runner returns
/// such a run to the queue instead of crashing it.
pub const CLAIM_EXPIRED: &str = "ClaimExpired";

/// The runner's side of one `run` call: report the infrastructure as started, log to the
/// flow run, and talk to the API (e.g. to propose `InfrastructurePending`).
#[derive(Debug)]
pub struct RunContext {
    started: Option<oneshot::Sender<String>>,
    logger: FlowRunLogger,
    client: PrefectClient,
    claim_deadline: Option<Instant>,
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
                claim_deadline: None,
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

    /// Sets the instant after which no infrastructure may be created for this run (the
    /// runner's claim timeout).
    #[must_use]
    pub fn with_claim_deadline(mut self, deadline: Instant) -> Self {
        self.claim_deadline = Some(deadline);
        self
    }

    /// The claim deadline, if the runner set one.
    #[must_use]
    pub fn claim_deadline(&self) -> Option<Instant> {
        self.claim_deadline
    }

    /// `Ok` while infrastructure may still be created for this run. Call it right before
    /// each attempt to create infrastructure: once the claim timeout has passed, other
    /// workers may return the run to the queue, so creating it now could run it twice.
    /// The error's `type_name` is [`CLAIM_EXPIRED`].
    pub fn check_claim(&self) -> Result<(), RunError> {
        match self.claim_deadline {
            Some(d) if Instant::now() >= d => Err(RunError::new(
                CLAIM_EXPIRED,
                "the claim timeout passed before the infrastructure could be created",
            )),
            _ => Ok(()),
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
