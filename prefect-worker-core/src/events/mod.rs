//! Prefect events (spec §4.6): what the worker tells Prefect besides states and logs, so
//! that a flow run's event feed, and automations keyed on worker and pod events, behave
//! as with the Python worker.
//!
//! - [`model`] (pure): [`Event`] and [`Resource`], serialised exactly as Python sends them;
//! - [`worker_events`] (pure): `prefect.worker.{started,stopped,submitted-flow-run,
//!   executed-flow-run}` as `BaseWorker` builds them;
//! - [`EventEmitter`]: the cheap-to-clone handle that queues events without ever waiting
//!   (bounded queue, oldest dropped and counted when the server cannot take them), its
//!   [`EventStats`], and the start-up de-duplication query ([`EventEmitter::is_stored`]);
//! - `socket` / `delivery`: the `/events/in` websocket (self-hosted: `prefect`
//!   subprotocol, `Basic` auth string and the auth message; Cloud: `bearer` API key), the
//!   one-time server-version check, checkpoints, re-sending after a reconnect, back-off.
//!
//! The runner starts an emitter by default ([`crate::runner::RunnerOptions::events`]) and
//! hands it to the worker ([`crate::Worker::attach_events`]), which may emit its own
//! events (the Kubernetes worker's pod events).

mod delivery;
mod emitter;
pub mod model;
/// The events client's options, which live with the other settings.
pub use crate::settings::events as options;
mod socket;
pub mod worker_events;

pub use emitter::{EventEmitter, EventStats, EventsTask};
pub use model::{Event, Resource};
pub use options::EventsOptions;
pub use socket::EventsError;
pub use worker_events::WorkerEvents;
