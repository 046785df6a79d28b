//! The generic runner: keeps the work pool in sync, heartbeats, polls for due flow runs,
//! submits them to a [`Worker`](crate::Worker), reports their outcome, and cancels the ones users cancel.
//!
//! ```text
//!   sync loop ──► work pool cache ◄── poll loop ──► claim ──► submit task (one per run)
//!                                                           │  Pending → config → labels →
//!                                                           │  Submitting → Worker::run
//!                                                           │  → infrastructure_pid → outcome
//!   cancellation loop ──► CANCELLING runs we launched ──► kill_infrastructure → Cancelled
//!   reconcile loop ──► the pool's unfinished runs we do not track ──► adopt (restart),
//!                      abandoned claims → Scheduled, orphaned cancellations → Cancelled
//!   worker channel ──► snapshots → work pool cache; cleanup.message → kill_infrastructure
//! ```
//!
//! While the worker channel ([`crate::channel`]) is healthy it carries the heartbeat and the
//! work pool, and the sync loop makes no REST calls; otherwise the sync loop reads the pool
//! and heartbeats over REST.
//!
//! Nothing the API does makes the runner exit: transient errors and outages back off and
//! retry forever. Only a credential rejected at startup, or a pool the server refuses to
//! create, stops it (there is nothing useful a worker can do then).

mod cancel;
mod channel;
mod claim;
mod cleanup;
mod engine;
mod events;
mod exit_codes;
pub mod final_state;
mod flow_run_logs;
pub mod health;
mod heartbeat;
mod options;
mod poll;
mod propose;
mod reconcile;
mod shared_reads;
mod submit;
mod sync;

/// The contract types, re-exported where they used to live (`runner::RunContext` etc.).
pub use crate::worker::{CLAIM_EXPIRED, FlowRunLogger, Level, RunContext};
pub use claim::RESCHEDULED;
pub use engine::{HandedPool, Runner, RunnerError};
use flow_run_logs::LogShipper;
pub use health::HealthState;
pub use options::RunnerOptions;
