//! A [`Worker`] that records what the runner asks of it and behaves as each run's
//! `env.BEHAVIOR` says, so runner tests need neither a cluster nor sleeps.
//!
//! Behaviours: `complete` (report started, then play the engine: Running → Completed),
//! `block` (report started, then wait until killed or released), `complete-on-release`
//! (report started, wait until released, then play the engine like `complete`),
//! `fail-run` (fail before the infrastructure exists), `exit:<n>` (report started, end
//! with status n), `sleep:<s>` (report started, run for s seconds, then play the engine).
//! `env.KILL = "not-found"` makes `kill_infrastructure` answer "not found".
//! For claim recovery: `hold-first-start` (the first `run` of a run waits for
//! [`Recorder::release_start`] and then reports started without checking the claim, as a
//! create request an API held would; later ones `complete`), `slow-first-create:<s>` (the
//! first `run` takes s seconds, then checks the claim like a real worker before creating;
//! later ones `complete`). `find_infrastructure` answers from what was started; `resume`
//! waits like `block`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use prefect_worker_core::client::models::{FlowRun, StateCreate, StateType};
use prefect_worker_core::job_config::BaseJobConfiguration;
use prefect_worker_core::runner::RunContext;
use prefect_worker_core::worker::{FoundInfrastructure, KillError, RunError, Worker, WorkerResult};
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
    /// Runs whose infrastructure was reported started (what `find_infrastructure` sees).
    pub started: HashSet<Uuid>,
    /// Runs passed to `resume` (adopted).
    pub resumed: Vec<Uuid>,
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

    /// Ends a `block` run as if its infrastructure finished with status 0 (`block-exit:N`:
    /// status N; a `complete-on-release` run reports Running and Completed first).
    pub fn release(&self, flow_run_id: Uuid) {
        self.notify_for(&pid(flow_run_id)).notify_one();
    }

    /// Lets a `hold-first-start` run report its infrastructure as started.
    pub fn release_start(&self, flow_run_id: Uuid) {
        self.notify_for(&format!("start:{flow_run_id}"))
            .notify_one();
    }

    fn mark_started(&self, ctx: &mut RunContext, flow_run_id: Uuid) {
        self.record.lock().unwrap().started.insert(flow_run_id);
        ctx.started(pid(flow_run_id));
        self.changed.notify_waiters();
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
        let first = !self
            .recorder
            .record
            .lock()
            .unwrap()
            .runs
            .contains(&flow_run.id);
        self.enter(flow_run.id, &configuration);
        let id = pid(flow_run.id);
        let behavior = match behavior.as_str() {
            "hold-first-start" if first => {
                self.recorder
                    .notify_for(&format!("start:{}", flow_run.id))
                    .notified()
                    .await;
                self.recorder.mark_started(&mut ctx, flow_run.id);
                "block".to_owned()
            }
            b if b.starts_with("slow-first-create:") && first => {
                let secs: f64 = b["slow-first-create:".len()..].parse().unwrap_or(1.0);
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                if let Err(e) = ctx.check_claim() {
                    self.leave(flow_run.id);
                    return Err(e);
                }
                "complete".to_owned()
            }
            "hold-first-start" => "complete".to_owned(),
            b if b.starts_with("slow-first-create:") => "complete".to_owned(),
            _ => behavior,
        };
        // `?` inside ends the run, not `run`: `leave` below always happens.
        let result = async {
            match behavior.as_str() {
                "fail-run" => Err(RunError::new(
                    "InfrastructureError",
                    "the test infrastructure refused this run",
                )),
                "complete" => {
                    self.recorder.mark_started(&mut ctx, flow_run.id);
                    play_engine(&ctx, flow_run).await?;
                    Ok(WorkerResult {
                        identifier: id,
                        status_code: 0,
                        detail: None,
                    })
                }
                "block" => {
                    self.recorder.mark_started(&mut ctx, flow_run.id);
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
                    self.recorder.mark_started(&mut ctx, flow_run.id);
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                    play_engine(&ctx, flow_run).await?;
                    Ok(WorkerResult {
                        identifier: id,
                        status_code: 0,
                        detail: None,
                    })
                }
                // `block-exit:N`: like `block`, then ends with exit code N.
                other if other.starts_with("block-exit:") => {
                    let code: i64 = other["block-exit:".len()..].parse().map_err(|_| {
                        RunError::new("ValueError", format!("bad BEHAVIOR {other:?}"))
                    })?;
                    self.recorder.mark_started(&mut ctx, flow_run.id);
                    let notify = self.recorder.notify_for(&id);
                    notify.notified().await;
                    Ok(WorkerResult {
                        identifier: id,
                        status_code: code,
                        detail: None,
                    })
                }
                other => match other
                    .strip_prefix("exit:")
                    .and_then(|c| c.parse::<i64>().ok())
                {
                    Some(code) => {
                        self.recorder.mark_started(&mut ctx, flow_run.id);
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

    async fn find_infrastructure(
        &self,
        flow_run: &FlowRun,
        _configuration: &BaseJobConfiguration,
    ) -> Result<FoundInfrastructure, RunError> {
        let started = self
            .recorder
            .record
            .lock()
            .unwrap()
            .started
            .contains(&flow_run.id);
        Ok(if started {
            FoundInfrastructure::Exists(pid(flow_run.id))
        } else {
            FoundInfrastructure::Absent
        })
    }

    async fn resume(
        &self,
        flow_run: &FlowRun,
        identifier: &str,
        _configuration: BaseJobConfiguration,
        _ctx: RunContext,
    ) -> Result<WorkerResult, RunError> {
        self.recorder
            .record
            .lock()
            .unwrap()
            .resumed
            .push(flow_run.id);
        self.recorder.changed.notify_waiters();
        self.recorder.notify_for(identifier).notified().await;
        Ok(WorkerResult {
            identifier: identifier.to_owned(),
            status_code: 0,
            detail: None,
        })
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
