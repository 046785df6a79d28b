//! A [`Worker`] that records what the runner asks of it and behaves as each run's
//! `env.BEHAVIOR` says, so runner tests need neither a cluster nor sleeps.
//!
//! Behaviours: `complete` (report started, then play the engine: Running → Completed),
//! `block` (report started, then wait until killed or released), `complete-on-release`
//! (report started, wait until released, then play the engine like `complete`),
//! `fail-run` (fail before the infrastructure exists), `exit:<n>` (report started, end
//! with status n), `sleep:<s>` (report started, run for s seconds, then play the engine).
//! `env.KILL = "not-found"` makes `kill_infrastructure` answer "not found".

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use prefect_worker_core::client::models::{FlowRun, StateCreate, StateType};
use prefect_worker_core::job_config::BaseJobConfiguration;
use prefect_worker_core::runner::RunContext;
use prefect_worker_core::worker::{KillError, RunError, Worker, WorkerResult};
use serde_json::Value;
use tokio::sync::Notify;
use uuid::Uuid;

/// What the worker saw, for assertions.
#[derive(Debug, Default)]
pub struct Record {
    /// Flow runs passed to `run`, in order.
    pub runs: Vec<Uuid>,
    /// Configurations passed to `run`.
    pub configurations: HashMap<Uuid, BaseJobConfiguration>,
    /// Identifiers passed to `kill_infrastructure`.
    pub kills: Vec<String>,
    /// Runs inside `run` right now, and the most at once.
    pub in_flight: HashSet<Uuid>,
    pub max_in_flight: usize,
    pub teardowns: usize,
}

/// Shared handle to the record and the blocked runs.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    pub record: Arc<Mutex<Record>>,
    release: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    /// Signalled on every change to `record`, so tests wait without sleeping.
    pub changed: Arc<Notify>,
}

impl Recorder {
    fn notify_for(&self, pid: &str) -> Arc<Notify> {
        self.release
            .lock()
            .unwrap()
            .entry(pid.to_owned())
            .or_default()
            .clone()
    }

    /// Ends a `block` run as if its infrastructure finished with status 0 (a
    /// `complete-on-release` run reports Running and Completed first).
    pub fn release(&self, flow_run_id: Uuid) {
        self.notify_for(&pid(flow_run_id)).notify_one();
    }

    /// Waits until `check` holds for the record, up to `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Record) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check, so a change between check and await is not missed.
            let mut notified = std::pin::pin!(self.changed.notified());
            notified.as_mut().enable();
            if check(&self.record.lock().unwrap()) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                anyhow::bail!(
                    "timed out after {timeout:?} waiting for {what}; record: {:?}",
                    self.record.lock().unwrap()
                );
            }
        }
    }
}

/// The identifier the recording worker reports for a run.
#[must_use]
pub fn pid(flow_run_id: Uuid) -> String {
    format!("test:{flow_run_id}")
}

/// The test worker. `worker_type` is the pool type it serves.
#[derive(Debug, Clone)]
pub struct RecordingWorker {
    pub recorder: Recorder,
    pub template: Value,
}

impl RecordingWorker {
    #[must_use]
    pub fn new(template: Value) -> Self {
        Self {
            recorder: Recorder::default(),
            template,
        }
    }

    fn enter(&self, id: Uuid, configuration: &BaseJobConfiguration) {
        let mut r = self.recorder.record.lock().unwrap();
        r.runs.push(id);
        r.configurations.insert(id, configuration.clone());
        r.in_flight.insert(id);
        r.max_in_flight = r.max_in_flight.max(r.in_flight.len());
        drop(r);
        self.recorder.changed.notify_waiters();
    }

    fn leave(&self, id: Uuid) {
        self.recorder.record.lock().unwrap().in_flight.remove(&id);
        self.recorder.changed.notify_waiters();
    }
}

#[async_trait]
impl Worker for RecordingWorker {
    type Configuration = BaseJobConfiguration;

    fn worker_type(&self) -> &'static str {
        "recording"
    }

    fn default_base_job_template(&self) -> Value {
        self.template.clone()
    }

    async fn run(
        &self,
        flow_run: &FlowRun,
        configuration: BaseJobConfiguration,
        mut ctx: RunContext,
    ) -> Result<WorkerResult, RunError> {
        let behavior = configuration
            .env
            .get("BEHAVIOR")
            .cloned()
            .flatten()
            .unwrap_or_else(|| "complete".into());
        self.enter(flow_run.id, &configuration);
        let id = pid(flow_run.id);
        // `?` inside ends the run, not `run`: `leave` below always happens.
        let result = async {
            match behavior.as_str() {
                "fail-run" => Err(RunError::new(
                    "InfrastructureError",
                    "the test infrastructure refused this run",
                )),
                "complete" => {
                    ctx.started(id.clone());
                    play_engine(&ctx, flow_run).await?;
                    Ok(WorkerResult {
                        identifier: id,
                        status_code: 0,
                        detail: None,
                    })
                }
                "block" => {
                    ctx.started(id.clone());
                    let notify = self.recorder.notify_for(&id);
                    notify.notified().await;
                    Ok(WorkerResult {
                        identifier: id,
                        status_code: 0,
                        detail: None,
                    })
                }
                "complete-on-release" => {
                    ctx.started(id.clone());
                    let notify = self.recorder.notify_for(&id);
                    notify.notified().await;
                    play_engine(&ctx, flow_run).await?;
                    Ok(WorkerResult {
                        identifier: id,
                        status_code: 0,
                        detail: None,
                    })
                }
                other if other.starts_with("sleep:") => {
                    let secs: f64 = other["sleep:".len()..].parse().map_err(|_| {
                        RunError::new("ValueError", format!("bad BEHAVIOR {other:?}"))
                    })?;
                    ctx.started(id.clone());
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                    play_engine(&ctx, flow_run).await?;
                    Ok(WorkerResult {
                        identifier: id,
                        status_code: 0,
                        detail: None,
                    })
                }
                other => match other
                    .strip_prefix("exit:")
                    .and_then(|c| c.parse::<i64>().ok())
                {
                    Some(code) => {
                        ctx.started(id.clone());
                        Ok(WorkerResult {
                            identifier: id,
                            status_code: code,
                            detail: None,
                        })
                    }
                    None => Err(RunError::new(
                        "ValueError",
                        format!("unknown BEHAVIOR {other:?}"),
                    )),
                },
            }
        }
        .await;
        self.leave(flow_run.id);
        result
    }

    async fn kill_infrastructure(
        &self,
        infrastructure_pid: &str,
        configuration: &BaseJobConfiguration,
        _grace: Duration,
    ) -> Result<(), KillError> {
        self.recorder
            .record
            .lock()
            .unwrap()
            .kills
            .push(infrastructure_pid.to_owned());
        self.recorder.changed.notify_waiters();
        // A killed `block` run ends as a killed process would.
        self.notify_for_kill(infrastructure_pid);
        // `env.KILL = "not-found"`: the infrastructure was already gone.
        if configuration.env.get("KILL").cloned().flatten().as_deref() == Some("not-found") {
            return Err(KillError::NotFound(format!(
                "{infrastructure_pid} is already gone"
            )));
        }
        Ok(())
    }

    async fn teardown(&self) {
        self.recorder.record.lock().unwrap().teardowns += 1;
        self.recorder.changed.notify_waiters();
    }
}

/// What the Prefect engine inside real infrastructure reports: Running, then Completed.
/// Like a real engine it rides out an API outage (here: retrying for up to ten minutes,
/// which only bounds a failure: a restarted server may be slow to come back on a busy
/// machine), so runner tests exercise the worker, not this stand-in.
async fn play_engine(ctx: &RunContext, flow_run: &FlowRun) -> Result<(), RunError> {
    for (t, n) in [
        (StateType::Running, "Running"),
        (StateType::Completed, "Completed"),
    ] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        loop {
            match ctx
                .client()
                .set_flow_run_state(flow_run.id, &StateCreate::new(t.clone(), n), false)
                .await
            {
                Ok(_) => break,
                Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(RunError::new("TestError", e.to_string())),
            }
        }
    }
    Ok(())
}

impl RecordingWorker {
    fn notify_for_kill(&self, pid: &str) {
        self.recorder.notify_for(pid).notify_one();
    }
}
