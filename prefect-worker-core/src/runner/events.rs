//! The worker's own events at the points Python emits them (spec §4.6): started after
//! setup, submitted once a run's configuration is built, executed once its infrastructure
//! exists, stopped at teardown. Emitting never waits (see [`crate::events`]).

use std::sync::{Mutex, PoisonError};

use super::engine::Inner;
use crate::client::models::{Deployment, Flow, FlowRun};
use crate::events::{Event, EventEmitter, WorkerEvents};
use crate::worker::Worker;

/// The runner's emitter and what it remembers between events.
#[derive(Debug)]
pub(super) struct RunnerEvents {
    pub(super) emitter: EventEmitter,
    builder: WorkerEvents,
    started: Mutex<Option<Event>>,
}

impl RunnerEvents {
    pub(super) fn new(emitter: EventEmitter, builder: WorkerEvents) -> Self {
        Self {
            emitter,
            builder,
            started: Mutex::new(None),
        }
    }
}

impl<W: Worker> Inner<W> {
    /// `prefect.worker.started`, once the pool has been read.
    pub(super) fn emit_started(&self) {
        let e = &self.events;
        if !e.emitter.is_enabled() {
            return;
        }
        let event = e.builder.started(self.work_pool().as_deref());
        *e.started.lock().unwrap_or_else(PoisonError::into_inner) = Some(event.clone());
        e.emitter.emit(event);
    }

    /// `prefect.worker.stopped`, following the started event, if there was one.
    pub(super) fn emit_stopped(&self) {
        let e = &self.events;
        let started = e
            .started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(started) = started {
            let pool = self.work_pool();
            e.emitter
                .emit(e.builder.stopped(pool.as_deref(), Some(&started)));
        }
    }

    /// `prefect.worker.submitted-flow-run`; the event is kept for the executed one.
    pub(super) fn emit_submitted(
        &self,
        flow_run: &FlowRun,
        deployment: Option<&Deployment>,
        flow: &Flow,
    ) -> Option<Event> {
        let e = &self.events;
        if !e.emitter.is_enabled() {
            return None;
        }
        let pool = self.work_pool();
        let event = e
            .builder
            .submitted(flow_run, deployment, Some(flow), pool.as_deref());
        e.emitter.emit(event.clone());
        Some(event)
    }

    /// `prefect.worker.executed-flow-run`, following `submitted`. Emitted when the
    /// infrastructure is reported started (status code 0) — when Python's `run` returns —
    /// or, for a `run` that returns without reporting it, with that result's code.
    pub(super) fn emit_executed(
        &self,
        submitted: Option<&Event>,
        identifier: &str,
        status_code: i64,
    ) {
        if let Some(s) = submitted {
            let e = &self.events;
            e.emitter
                .emit(e.builder.executed(s, identifier, status_code));
        }
    }
}
