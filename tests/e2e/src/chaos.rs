//! The chaos suite's shared parts: a workload of flow runs with mixed, known outcomes
//! (a standard-library stand-in for Prefect's engine reports their states), the worker as
//! a real process that can be SIGKILLed and restarted, and the verdict every scenario
//! asserts — from the server's states and the cluster's objects only:
//!
//! - every run reached its expected final state (none stuck);
//! - every run got exactly one Job, ever (created Jobs are counted, deleted ones included);
//! - no run that completed has a Crashed state in its history;
//! - (checked by each scenario) the worker processes still run and `/health` answers 200.
//!
//! Scenarios print their verdict as one `CHAOS-RESULT {json}` line, which
//! `scripts/chaos.sh` turns into the table of `docs/reliability.md`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use prefect_test_harness::{DeploymentSpec, FlowRunSpec, PrefectApi, id_of, repo_root};
use serde_json::{Value, json};
use uuid::Uuid;

/// What a run of the workload is meant to do, and how it must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// The engine reports Running, then Completed.
    Complete,
    /// The engine reports Failed and exits 1 (the flow raised).
    Fail,
    /// The engine reports Running, then the container exits 3: the worker crashes the run.
    Exit3,
    /// The container is OOM-killed (exit 137) before any engine ran.
    Oom,
    /// The image cannot be pulled: crashed after `pod_watch_timeout_seconds`.
    PullError,
    /// Running for long; the test cancels it: the worker deletes the Job, Cancelled.
    Cancel,
    /// Running for 8 s, then Completed (time to kill a worker while it waits).
    SlowComplete,
    /// Running for 8 s, then exit 3 with no final state: only a worker that waits on the
    /// Job (or adopted it) reports the crash.
    SlowExit3,
}

impl Outcome {
    /// Every outcome, the mix scenarios cycle through.
    pub const MIX: [Outcome; 6] = [
        Outcome::Complete,
        Outcome::Fail,
        Outcome::Exit3,
        Outcome::Oom,
        Outcome::PullError,
        Outcome::Cancel,
    ];

    /// The final state type the run must reach.
    #[must_use]
    pub fn expected_state(self) -> &'static str {
        match self {
            Self::Complete => "COMPLETED",
            Self::Fail => "FAILED",
            Self::Exit3 | Self::Oom | Self::PullError | Self::SlowExit3 => "CRASHED",
            Self::SlowComplete => "COMPLETED",
            Self::Cancel => "CANCELLED",
        }
    }

    /// The deployment's job variables that produce this outcome.
    #[must_use]
    pub fn job_variables(self) -> Value {
        let engine = |mode: &str| {
            json!({
                "image": "busybox",
                "command": format!("python3 {} {mode}", fake_engine().display()),
                "stream_output": true,
            })
        };
        match self {
            Self::Complete => engine("complete"),
            Self::Fail => engine("fail"),
            Self::Exit3 => engine("exit:3"),
            Self::Cancel => engine("sleep:600"),
            Self::SlowComplete => engine("sleep:8"),
            Self::SlowExit3 => engine("sleep-exit:8:3"),
            Self::Oom => json!({"image": "sim/oom"}),
            Self::PullError => json!({"image": "sim/pull-error", "pod_watch_timeout_seconds": 5}),
        }
    }
}

/// `tests/e2e/engine/fake_engine.py`.
#[must_use]
pub fn fake_engine() -> PathBuf {
    repo_root().join("tests/e2e/engine/fake_engine.py")
}

/// A pool's deployments (one per outcome) and the runs created on it.
#[derive(Debug, Clone)]
pub struct Workload {
    pub pool: String,
    /// The flow every deployment runs.
    pub flow_id: Uuid,
    deployments: BTreeMap<Outcome, Uuid>,
    /// Every run, with what it must do.
    pub runs: Vec<(Uuid, Outcome)>,
    /// Cancel runs the test has already asked to cancel.
    cancelled: Vec<Uuid>,
}

impl Workload {
    /// Creates `pool` (Kubernetes, Prefect's default template) unless it exists, a flow and
    /// one deployment per outcome in `mix`.
    pub async fn create(api: &PrefectApi, pool: &str, mix: &[Outcome]) -> Result<Self> {
        if api.read_work_pool(pool).await.is_err() {
            let template = prefect_test_harness::kubernetes_default_base_job_template()?;
            api.create_work_pool(pool, "kubernetes", Some(&template))
                .await?;
        }
        let flow = api.create_flow(&format!("chaos-{pool}")).await?;
        let mut deployments = BTreeMap::new();
        for o in mix {
            let id = api
                .create_deployment(&DeploymentSpec {
                    work_pool_name: Some(pool.to_owned()),
                    job_variables: Some(o.job_variables()),
                    ..DeploymentSpec::new(flow, format!("{o:?}").to_lowercase())
                })
                .await?;
            deployments.insert(*o, id);
        }
        Ok(Self {
            pool: pool.to_owned(),
            flow_id: flow,
            deployments,
            runs: Vec::new(),
            cancelled: Vec::new(),
        })
    }

    /// Creates `n` runs due now, cycling through the mix.
    pub async fn submit(&mut self, api: &PrefectApi, n: usize) -> Result<Vec<Uuid>> {
        let mix: Vec<(Outcome, Uuid)> = self.deployments.iter().map(|(o, d)| (*o, *d)).collect();
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let (outcome, dep) = mix[(self.runs.len() + i) % mix.len()];
            let spec = FlowRunSpec {
                scheduled_time: Some(Utc::now()),
                ..FlowRunSpec::default()
            };
            let id = id_of(&api.create_flow_run_from_deployment(dep, &spec).await?)?;
            ids.push((id, outcome));
        }
        self.runs.extend(ids.iter().copied());
        Ok(ids.into_iter().map(|(id, _)| id).collect())
    }

    /// Adds a run made elsewhere, with what it must do.
    pub fn track(&mut self, id: Uuid, outcome: Outcome) {
        self.runs.push((id, outcome));
    }

    /// The runs' current flow-run objects, by id (requests errors: an empty answer, so a
    /// server being restarted only delays the verdict).
    pub async fn read(&self, api: &PrefectApi) -> HashMap<Uuid, Value> {
        let mut out = HashMap::new();
        let ids: Vec<String> = self.runs.iter().map(|(id, _)| id.to_string()).collect();
        for chunk in ids.chunks(200) {
            let body = json!({"flow_runs": {"id": {"any_": chunk}}, "limit": 200});
            if let Ok(runs) = api.filter_flow_runs(&body).await {
                for r in runs {
                    if let Ok(id) = id_of(&r) {
                        out.insert(id, r);
                    }
                }
            }
        }
        out
    }

    /// Waits until every run is final (cancelling the Cancel runs once they run), or
    /// `timeout`; then judges them.
    pub async fn settle(
        &mut self,
        api: &PrefectApi,
        clusters: &[&kubesim::SimHandle],
        timeout: Duration,
    ) -> Result<Verdict> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut runs;
        loop {
            runs = self.read(api).await;
            self.cancel_running(api, &runs).await;
            let finals = self
                .runs
                .iter()
                .filter(|(id, _)| runs.get(id).is_some_and(is_final))
                .count();
            if finals == self.runs.len() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut verdict = Verdict {
            runs: self.runs.len(),
            settle_seconds: started.elapsed().as_secs_f64(),
            ..Verdict::default()
        };
        let mut jobs: HashMap<String, usize> = HashMap::new();
        for c in clusters {
            for j in c.created_jobs() {
                if let Some(id) = j.labels.get("prefect.io/flow-run-id") {
                    *jobs.entry(id.clone()).or_default() += 1;
                }
            }
        }
        for (id, outcome) in &self.runs {
            let run = runs.get(id);
            let state = run
                .and_then(|r| r["state"]["type"].as_str())
                .unwrap_or("UNREADABLE");
            let name = run.and_then(|r| r["state"]["name"].as_str()).unwrap_or("");
            let n_jobs = jobs.get(&id.to_string()).copied().unwrap_or(0);
            *verdict.final_states.entry(state.to_owned()).or_default() += 1;
            if !run.is_some_and(is_final) {
                verdict.stuck += 1;
                verdict.problems.push(format!(
                    "{id} ({outcome:?}) stuck in {state} ({name}), {n_jobs} Jobs"
                ));
                continue;
            }
            if state == outcome.expected_state() {
                verdict.right += 1;
            } else {
                let msg = run
                    .and_then(|r| r["state"]["message"].as_str())
                    .unwrap_or("");
                verdict.problems.push(format!(
                    "{id} ({outcome:?}) ended {state} ({name}), expected {}: {msg}",
                    outcome.expected_state()
                ));
            }
            match n_jobs {
                1 => {}
                0 => {
                    verdict.missing_jobs += 1;
                    verdict
                        .problems
                        .push(format!("{id} ({outcome:?}) never got a Job"));
                }
                n => {
                    verdict.duplicates += 1;
                    verdict
                        .problems
                        .push(format!("{id} ({outcome:?}) got {n} Jobs"));
                }
            }
            if state == "COMPLETED" {
                let types = api.read_flow_run_state_types(*id).await.unwrap_or_default();
                if types.iter().any(|t| t == "CRASHED") {
                    verdict.crashed_then_completed += 1;
                    verdict
                        .problems
                        .push(format!("{id} completed after a Crashed state: {types:?}"));
                }
            }
        }
        Ok(verdict)
    }
}

impl Workload {
    /// Asks to cancel the Cancel runs that are running now (once each).
    pub async fn cancel_running(&mut self, api: &PrefectApi, runs: &HashMap<Uuid, Value>) {
        for (id, outcome) in &self.runs {
            let state = runs.get(id).and_then(|r| r["state"]["type"].as_str());
            if *outcome == Outcome::Cancel
                && state == Some("RUNNING")
                && !self.cancelled.contains(id)
                && api
                    .set_flow_run_state(*id, "CANCELLING", None, false)
                    .await
                    .is_ok()
            {
                self.cancelled.push(*id);
            }
        }
    }
}

fn is_final(run: &Value) -> bool {
    matches!(
        run["state"]["type"].as_str(),
        Some("COMPLETED" | "FAILED" | "CRASHED" | "CANCELLED")
    )
}

/// How a scenario's runs ended.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Verdict {
    pub runs: usize,
    /// Runs in their expected final state.
    pub right: usize,
    /// Runs that got more than one Job.
    pub duplicates: usize,
    /// Runs that never got a Job.
    pub missing_jobs: usize,
    /// Runs not final when the wait ended.
    pub stuck: usize,
    /// Runs that completed with a Crashed state in their history.
    pub crashed_then_completed: usize,
    /// Final state type → count.
    pub final_states: BTreeMap<String, usize>,
    /// Seconds from the start of the wait until all were final (or the timeout).
    pub settle_seconds: f64,
    /// One line per run that is not right, for the failure message.
    pub problems: Vec<String>,
}

impl Verdict {
    /// Whether every run is right: expected final state, one Job, no crash then completion.
    #[must_use]
    pub fn clean(&self) -> bool {
        self.right == self.runs
            && self.duplicates == 0
            && self.missing_jobs == 0
            && self.stuck == 0
            && self.crashed_then_completed == 0
    }

    /// Prints the `CHAOS-RESULT` line for `scripts/chaos.sh`.
    #[allow(
        clippy::print_stdout,
        reason = "scripts/chaos.sh reads these lines from the test output"
    )]
    pub fn report(&self, scenario: &str, injected: &str, worker_restarts: usize) {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["scenario"] = json!(scenario);
        v["injected"] = json!(injected);
        v["worker_restarts"] = json!(worker_restarts);
        if let Some(p) = v.get_mut("problems").and_then(Value::as_array_mut) {
            p.truncate(20);
        }
        println!("CHAOS-RESULT {v}");
    }

    /// Fails with every problem when the verdict is not clean.
    pub fn assert_clean(&self, context: &str) -> Result<()> {
        anyhow::ensure!(
            self.clean(),
            "{context}: {}/{} right, {} duplicates, {} without Job, {} stuck, {} crashed-then-completed; final states {:?}\n{}",
            self.right,
            self.runs,
            self.duplicates,
            self.missing_jobs,
            self.stuck,
            self.crashed_then_completed,
            self.final_states,
            self.problems.join("\n")
        );
        Ok(())
    }
}

/// How to start a worker process.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub api_url: String,
    pub kubeconfig: PathBuf,
    pub pool: String,
    pub name: String,
    /// Extra or overriding environment (e.g. `PREFECT_WORKER_CLAIM_TIMEOUT_SECONDS`).
    pub env: Vec<(String, String)>,
    /// Where the process's stdout and stderr go (appended across restarts).
    pub log: PathBuf,
}

impl WorkerSpec {
    /// Fast intervals for tests: poll 1 s, heartbeat 2 s, cancellation poll 1 s, claim
    /// timeout 20 s (abandoned claims recovered after 40 s; shorter ones are lost to a busy
    /// machine: a submission step slower than the timeout gives its run back).
    #[must_use]
    pub fn new(api_url: &str, kubeconfig: &Path, pool: &str, name: &str, log_dir: &Path) -> Self {
        Self {
            api_url: api_url.to_owned(),
            kubeconfig: kubeconfig.to_owned(),
            pool: pool.to_owned(),
            name: name.to_owned(),
            env: Vec::new(),
            log: log_dir.join(format!("{}.log", name.replace(['/', ' '], "_"))),
        }
    }

    /// Sets one environment variable.
    #[must_use]
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// The `prefect-worker` binary as a process, with its health port.
#[derive(Debug)]
pub struct WorkerProcess {
    pub spec: WorkerSpec,
    pub health_port: u16,
    child: Child,
    /// How many times it was killed and started again.
    pub restarts: usize,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl WorkerProcess {
    /// Starts `prefect-worker start` as `spec` says, with `--with-healthcheck`.
    pub fn spawn(spec: WorkerSpec) -> Result<Self> {
        let health_port = free_port()?;
        let child = Self::start_child(&spec, health_port)?;
        Ok(Self {
            spec,
            health_port,
            child,
            restarts: 0,
        })
    }

    fn start_child(spec: &WorkerSpec, health_port: u16) -> Result<Child> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .with_context(|| format!("opening {}", spec.log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(crate::k8s::worker_binary()?);
        cmd.args([
            "start",
            "--pool",
            &spec.pool,
            "--name",
            &spec.name,
            "--type",
            "kubernetes",
            "--with-healthcheck",
        ])
        .env("PREFECT_API_URL", &spec.api_url)
        .env("KUBECONFIG", &spec.kubeconfig)
        .env("PREFECT_WORKER_QUERY_SECONDS", "1")
        .env("PREFECT_WORKER_HEARTBEAT_SECONDS", "2")
        .env("PREFECT_WORKER_CANCELLATION_POLL_SECONDS", "1")
        .env("PREFECT_WORKER_CLAIM_TIMEOUT_SECONDS", "20")
        .env("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.5")
        .env("PREFECT_WORKER_WEBSERVER_HOST", "127.0.0.1")
        .env("PREFECT_WORKER_WEBSERVER_PORT", health_port.to_string())
        .env("PREFECT_PROFILES_PATH", "/nonexistent/profiles.toml")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        Ok(cmd.spawn()?)
    }

    /// SIGKILL: no teardown, no goodbye.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Kills the process and starts it again with the same spec (same name).
    pub fn restart(&mut self) -> Result<()> {
        self.restart_as(&self.spec.name.clone())
    }

    /// Kills the process and starts it again under `name`.
    pub fn restart_as(&mut self, name: &str) -> Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.spec.name = name.to_owned();
        self.child = Self::start_child(&self.spec, self.health_port)?;
        self.restarts += 1;
        Ok(())
    }

    /// Starts the process again after [`WorkerProcess::kill`].
    pub fn start_again(&mut self) -> Result<()> {
        self.child = Self::start_child(&self.spec, self.health_port)?;
        self.restarts += 1;
        Ok(())
    }

    /// The process id (for `/proc` readings).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory (KiB), open file descriptors and threads, from `/proc`.
    #[must_use]
    pub fn resources(&self) -> Option<(u64, usize, u64)> {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
        Some((field("VmRSS:")?, fds, field("Threads:")?))
    }

    /// Whether the process is still running (it never exits on its own).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `GET /health` → status code (0 when it does not answer).
    pub async fn health(&self) -> u16 {
        let url = format!("http://127.0.0.1:{}/health", self.health_port);
        match reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Waits until the process runs and `/health` answers 200.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            anyhow::ensure!(
                self.is_running(),
                "worker '{}' exited:\n{}",
                self.spec.name,
                self.log_tail(40)
            );
            if self.health().await == 200 {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "worker '{}' /health did not recover within {timeout:?}",
                self.spec.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Everything the process wrote so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.spec.log).unwrap_or_default()
    }

    /// The last `n` lines of its log.
    #[must_use]
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Lines with `panicked` (a panic anywhere in the process).
    #[must_use]
    pub fn panics(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("panicked"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory for a scenario's kubeconfig and worker logs: kept under `$CHAOS_LOG_DIR`
/// when that is set (scripts, debugging), else temporary.
#[derive(Debug)]
pub struct LogDir {
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl LogDir {
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// See [`LogDir`].
pub fn log_dir(scenario: &str) -> Result<LogDir> {
    match std::env::var_os("CHAOS_LOG_DIR") {
        Some(base) => {
            std::fs::create_dir_all(&base)?;
            let d = tempfile::Builder::new()
                .prefix(&format!("{scenario}-"))
                .tempdir_in(base)?;
            Ok(LogDir {
                path: d.keep(),
                _temp: None,
            })
        }
        None => {
            let t = tempfile::tempdir()?;
            Ok(LogDir {
                path: t.path().to_owned(),
                _temp: Some(t),
            })
        }
    }
}

/// The number from the environment variable `name`, or `default` (scripts scale the
/// scenarios up through these).
#[must_use]
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
