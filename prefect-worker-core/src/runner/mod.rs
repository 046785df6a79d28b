//! The generic runner: sync, heartbeat, polling, submission, cancellation. STUB.

/// What a [`crate::Worker::run`] call gets besides the flow run and its configuration.
#[derive(Debug)]
pub struct RunContext {}
