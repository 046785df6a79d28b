//! The generic runner against a real Prefect server, driving the recording test worker.

// Fixtures: a server that cannot start is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use e2e::proxy::{Fault, FaultProxy};
use e2e::recording::{RecordingWorker, pid};
use e2e::{CANCEL_POLL, HEARTBEAT, QUERY, Scenario, recording_template, until};
use prefect_test_harness::{
    Backend, CollisionStrategy, DeploymentSpec, FlowRunSpec, PrefectApi, PrefectServer,
    ServerOptions, state_type,
};
use prefect_worker_core::client::{ClientOptions, PrefectClient};
use prefect_worker_core::runner::{Runner, RunnerError, RunnerOptions, health};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Bounds a wait that should succeed; generous, because it only bounds a failure and the
/// machine may be busy (two tests of this binary, and other binaries' servers, share it).
const T: Duration = Duration::from_secs(180);

/// One server for this binary, with a short deployment-concurrency slot wait.
fn server() -> &'static PrefectServer {
    static SERVER: OnceLock<PrefectServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        PrefectServer::start_with(ServerOptions::new(Backend::Sqlite).env(
            "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS",
            "1",
        ))
        .expect("start the Prefect server")
    })
}

fn client(api_url: &str) -> PrefectClient {
    PrefectClient::new(ClientOptions::new(api_url)).unwrap()
}

fn options(pool: &str, name: &str) -> RunnerOptions {
    let mut o = RunnerOptions::new(pool, name).with_intervals(QUERY, HEARTBEAT, CANCEL_POLL);
    o.log_batch_interval = Duration::from_millis(200);
    o
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), RunnerError>>,
}

impl Running {
    fn start(api_url: &str, worker: RecordingWorker, options: RunnerOptions) -> Self {
        let runner = Runner::new(worker, client(api_url), options);
        let stop = CancellationToken::new();
        let task = tokio::spawn(runner.run(stop.clone()));
        Self { stop, task }
    }

    async fn stop(self) -> Result<()> {
        self.stop.cancel();
        self.task.await?.map_err(anyhow::Error::from)
    }
}

async fn scheduled_run(api: &PrefectApi, s: &Scenario, at: chrono::DateTime<Utc>) -> Result<Uuid> {
    let run = api
        .create_flow_run_from_deployment(
            s.deployment_id,
            &FlowRunSpec {
                scheduled_time: Some(at),
                ..FlowRunSpec::default()
            },
        )
        .await?;
    prefect_test_harness::id_of(&run)
}

async fn state_types(api: &PrefectApi, id: Uuid) -> Vec<String> {
    api.read_flow_run_state_types(id).await.unwrap_or_default()
}

/// Waits until the runner behind `proxy` has polled `n` more times: "several polls later",
/// counted instead of slept.
async fn polls_later(proxy: &FaultProxy, n: usize) -> Result<()> {
    let target = proxy.polls() + n;
    until(&format!("{n} more polls"), T, || async {
        Ok(proxy.polls() >= target)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_run_is_submitted_once_and_its_pid_recorded() -> Result<()> {
    let api = server().api();
    let s = Scenario::create(&api, "once", "recording", &recording_template(), "complete").await?;
    let id = scheduled_run(&api, &s, Utc::now()).await?;
    let worker = RecordingWorker::new(recording_template());
    let rec = worker.recorder.clone();
    let proxy = FaultProxy::start(server().api_url()).await?;
    let r = Running::start(&proxy.api_url, worker, options(&s.pool, "once-worker"));
    let run = api.wait_for_flow_run_state(id, &["COMPLETED"], T).await?;
    assert_eq!(run["infrastructure_pid"], pid(id));
    assert_eq!(run["labels"]["prefect.worker.name"], "once-worker");
    assert_eq!(run["labels"]["prefect.work-pool.name"], s.pool.as_str());
    // Another few polls must not submit it again.
    let polls_before = rec.record.lock().unwrap().runs.len();
    polls_later(&proxy, 3).await?;
    assert_eq!(
        rec.record
            .lock()
            .unwrap()
            .runs
            .iter()
            .filter(|r| **r == id)
            .count(),
        1
    );
    assert_eq!(polls_before, 1);
    let cfg = rec.record.lock().unwrap().configurations[&id].clone();
    assert_eq!(
        cfg.env.get("PREFECT__FLOW_RUN_ID").cloned().flatten(),
        Some(id.to_string())
    );
    assert_eq!(
        cfg.labels.get("prefect.io/flow-run-id"),
        Some(&id.to_string())
    );
    // Worker log lines about the run reach the run's logs in Prefect.
    until("flow-run logs", T, || async {
        let logs = api.read_flow_run_log_messages(id).await?;
        Ok(logs.iter().any(|m| m.contains("submitting flow run")))
    })
    .await?;
    let types = state_types(&api, id).await;
    assert!(
        types.windows(2).any(|w| w == ["PENDING", "PENDING"]),
        "Pending then Submitting: {types:?}"
    );
    r.stop().await?;
    assert_eq!(rec.record.lock().unwrap().teardowns, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_inside_the_prefetch_window_is_submitted_early() -> Result<()> {
    let api = server().api();
    let s = Scenario::create(
        &api,
        "prefetch",
        "recording",
        &recording_template(),
        "block",
    )
    .await?;
    // The margins are minutes, not seconds: start-up, poll and submission may take a
    // while on a busy machine, and "before its scheduled time" must still hold.
    let at = Utc::now() + chrono::Duration::minutes(10);
    let id = scheduled_run(&api, &s, at).await?;
    let beyond = scheduled_run(&api, &s, Utc::now() + chrono::Duration::hours(2)).await?;
    let worker = RecordingWorker::new(recording_template());
    let rec = worker.recorder.clone();
    let proxy = FaultProxy::start(server().api_url()).await?;
    let mut o = options(&s.pool, "prefetch-worker");
    o.prefetch_seconds = 20 * 60;
    let r = Running::start(&proxy.api_url, worker, o);
    rec.wait_until(T, "the early submission", |r| r.runs.contains(&id))
        .await?;
    assert!(Utc::now() < at, "submitted before its scheduled time");
    // A run beyond the window stays where it is, poll after poll.
    polls_later(&proxy, 3).await?;
    assert!(
        !rec.record.lock().unwrap().runs.contains(&beyond),
        "a run scheduled beyond the prefetch window was submitted"
    );
    assert_eq!(
        state_type(&api.read_flow_run(beyond).await?),
        Some("SCHEDULED")
    );
    rec.release(id);
    r.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_concurrency_limit_rejects_then_submits_later() -> Result<()> {
    let api = server().api();
    let s = Scenario::create(&api, "conc", "recording", &recording_template(), "block").await?;
    let limited = api
        .create_deployment(&DeploymentSpec {
            work_pool_name: Some(s.pool.clone()),
            job_variables: Some(json!({"env": {"BEHAVIOR": "block"}})),
            concurrency_limit: Some(1),
            collision_strategy: Some(CollisionStrategy::Enqueue),
            ..DeploymentSpec::new(s.flow_id, "limited")
        })
        .await?;
    let s = Scenario {
        deployment_id: limited,
        ..s
    };
    let first = scheduled_run(&api, &s, Utc::now()).await?;
    let second = scheduled_run(&api, &s, Utc::now()).await?;
    let worker = RecordingWorker::new(recording_template());
    let rec = worker.recorder.clone();
    let r = Running::start(server().api_url(), worker, options(&s.pool, "conc-worker"));
    rec.wait_until(T, "one submission", |r| !r.runs.is_empty())
        .await?;
    let (holder, waiter) = {
        let runs = rec.record.lock().unwrap().runs.clone();
        if runs[0] == first {
            (first, second)
        } else {
            (second, first)
        }
    };
    // The other one was rejected into AwaitingConcurrencySlot and not submitted.
    until("the rejected run to be awaiting a slot", T, || async {
        let run = api.read_flow_run(waiter).await?;
        Ok(run["state"]["name"] == "AwaitingConcurrencySlot")
    })
    .await?;
    assert!(!rec.record.lock().unwrap().runs.contains(&waiter));
    // The holder finishes; the waiter gets the slot and is submitted.
    api.set_flow_run_state(holder, "COMPLETED", None, true)
        .await?;
    rec.release(holder);
    rec.wait_until(T, "the waiter's submission", |r| r.runs.contains(&waiter))
        .await?;
    rec.release(waiter);
    r.stop().await
}

/// Runs one flow run whose worker behaves as `behavior` until it is Crashed; returns the
/// crash message.
async fn crash_message(tag: &str, behavior: &str) -> Result<String> {
    let api = server().api();
    let s = Scenario::create(&api, tag, "recording", &recording_template(), behavior).await?;
    let id = scheduled_run(&api, &s, Utc::now()).await?;
    let r = Running::start(
        server().api_url(),
        RecordingWorker::new(recording_template()),
        options(&s.pool, &format!("{tag}-worker")),
    );
    let run = api.wait_for_flow_run_state(id, &["CRASHED"], T).await?;
    r.stop().await?;
    Ok(run["state"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_error_before_start_is_crashed_with_its_message() -> Result<()> {
    assert_eq!(
        crash_message("runerr", "fail-run").await?,
        "Failed to submit flow run to infrastructure: InfrastructureError: the test infrastructure refused this run"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_zero_status_is_crashed_with_the_exit_code_explained() -> Result<()> {
    assert_eq!(
        crash_message("exit", "exit:3").await?,
        "Flow run infrastructure exited with non-zero status code 3. Process exited with an unexpected status code."
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelling_run_has_its_infrastructure_killed_and_is_cancelled() -> Result<()> {
    let api = server().api();
    let s = Scenario::create(&api, "cancel", "recording", &recording_template(), "block").await?;
    let id = scheduled_run(&api, &s, Utc::now()).await?;
    let worker = RecordingWorker::new(recording_template());
    let rec = worker.recorder.clone();
    let r = Running::start(
        server().api_url(),
        worker,
        options(&s.pool, "cancel-worker"),
    );
    rec.wait_until(T, "the submission", |r| r.in_flight.contains(&id))
        .await?;
    api.wait_for_flow_run(id, |run| run["infrastructure_pid"] == pid(id), T)
        .await?;
    api.set_flow_run_state(id, "CANCELLING", None, true).await?;
    rec.wait_until(T, "the kill", |r| r.kills.contains(&pid(id)))
        .await?;
    let run = api.wait_for_flow_run_state(id, &["CANCELLED"], T).await?;
    assert!(
        run["state"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("cancelled by the worker"),
        "{run}"
    );
    let types = state_types(&api, id).await;
    assert!(
        !types.iter().any(|t| t == "CRASHED"),
        "a cancelled run is never reported crashed: {types:?}"
    );
    r.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelling_run_whose_infrastructure_is_gone_is_still_cancelled() -> Result<()> {
    let api = server().api();
    let s = Scenario::create(&api, "gone", "recording", &recording_template(), "block").await?;
    let gone = api
        .create_deployment(&DeploymentSpec {
            work_pool_name: Some(s.pool.clone()),
            job_variables: Some(json!({"env": {"BEHAVIOR": "block", "KILL": "not-found"}})),
            ..DeploymentSpec::new(s.flow_id, "gone")
        })
        .await?;
    let s = Scenario {
        deployment_id: gone,
        ..s
    };
    let id = scheduled_run(&api, &s, Utc::now()).await?;
    let worker = RecordingWorker::new(recording_template());
    let rec = worker.recorder.clone();
    let r = Running::start(server().api_url(), worker, options(&s.pool, "gone-worker"));
    api.wait_for_flow_run(id, |run| run["infrastructure_pid"] == pid(id), T)
        .await?;
    api.set_flow_run_state(id, "CANCELLING", None, true).await?;
    rec.wait_until(T, "the kill", |r| r.kills.contains(&pid(id)))
        .await?;
    let run = api.wait_for_flow_run_state(id, &["CANCELLED"], T).await?;
    let msg = run["state"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("infrastructure was not found") && msg.contains("already gone"),
        "{msg}"
    );
    r.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_bounds_flow_runs_in_flight() -> Result<()> {
    let api = server().api();
    let s = Scenario::create(&api, "limit", "recording", &recording_template(), "block").await?;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(scheduled_run(&api, &s, Utc::now()).await?);
    }
    let worker = RecordingWorker::new(recording_template());
    let rec = worker.recorder.clone();
    let proxy = FaultProxy::start(server().api_url()).await?;
    let r = Running::start(
        &proxy.api_url,
        worker,
        options(&s.pool, "limit-worker").with_limit(Some(2)),
    );
    rec.wait_until(T, "two runs in flight", |r| r.in_flight.len() == 2)
        .await?;
    // Several polls later, still two.
    polls_later(&proxy, 5).await?;
    assert_eq!(rec.record.lock().unwrap().max_in_flight, 2);
    // Each finished run frees a slot for the next.
    for _ in 0..5 {
        let first = *rec
            .record
            .lock()
            .unwrap()
            .in_flight
            .iter()
            .next()
            .context("a run in flight")?;
        let done = rec.record.lock().unwrap().runs.len();
        rec.release(first);
        if done < 5 {
            rec.wait_until(T, "the next submission", |r| r.runs.len() == done + 1)
                .await?;
        }
    }
    rec.wait_until(T, "all runs submitted", |r| r.runs.len() == 5)
        .await?;
    assert_eq!(rec.record.lock().unwrap().max_in_flight, 2);
    r.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_polls_once_waits_for_its_runs_and_exits() -> Result<()> {
    let api = server().api();
    let s = Scenario::create(
        &api,
        "once-mode",
        "recording",
        &recording_template(),
        "complete",
    )
    .await?;
    let a = scheduled_run(&api, &s, Utc::now()).await?;
    let b = scheduled_run(&api, &s, Utc::now()).await?;
    let worker = RecordingWorker::new(recording_template());
    let rec = worker.recorder.clone();
    let proxy = FaultProxy::start(server().api_url()).await?;
    let runner = Runner::new(
        worker,
        client(&proxy.api_url),
        options(&s.pool, "run-once-worker").with_run_once(true),
    );
    tokio::time::timeout(T, runner.run(CancellationToken::new())).await??;
    for id in [a, b] {
        assert_eq!(state_type(&api.read_flow_run(id).await?), Some("COMPLETED"));
    }
    // It polled once, and nothing of it is left to poll again: a new run stays scheduled.
    assert_eq!(proxy.polls(), 1, "run-once polls exactly once");
    let c = scheduled_run(&api, &s, Utc::now()).await?;
    assert_eq!(state_type(&api.read_flow_run(c).await?), Some("SCHEDULED"));
    assert_eq!(proxy.polls(), 1, "no poll after run() returned");
    assert_eq!(rec.record.lock().unwrap().runs.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_deployment_cancels_its_run() -> Result<()> {
    // The server deletes a deleted deployment's scheduled runs, so the worker meets this
    // only in a race: the run was polled, then its deployment vanished. A proxy in front of
    // the real server answers the deployment read with the server's own 404.
    let api = server().api();
    let s = Scenario::create(
        &api,
        "deleted",
        "recording",
        &recording_template(),
        "complete",
    )
    .await?;
    let proxy = FaultProxy::start(server().api_url()).await?;
    proxy.inject(Fault {
        method: reqwest::Method::GET,
        path: format!("/deployments/{}", s.deployment_id),
        status: reqwest::StatusCode::NOT_FOUND,
        body: r#"{"detail":"Deployment not found"}"#.into(),
    });
    let id = scheduled_run(&api, &s, Utc::now()).await?;
    let worker = RecordingWorker::new(recording_template());
    let rec = worker.recorder.clone();
    let r = Running::start(&proxy.api_url, worker, options(&s.pool, "deleted-worker"));
    let run = api.wait_for_flow_run_state(id, &["CANCELLED"], T).await?;
    assert_eq!(
        run["state"]["message"],
        format!(
            "Deployment {} no longer exists, cancelled run.",
            s.deployment_id
        )
    );
    assert!(
        rec.record.lock().unwrap().runs.is_empty(),
        "never submitted"
    );
    r.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_api_key_fails_fast_at_startup() -> Result<()> {
    // The test server has no auth; a server behind an auth proxy answers 401. Use a stub
    // that answers 401 to everything.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let body = r#"{"detail":"Unauthorized"}"#;
                let resp = format!(
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    let opts =
        ClientOptions::new(format!("http://{addr}/api")).with_api_key("pnu_not-a-real-key-123");
    let runner = Runner::new(
        RecordingWorker::new(recording_template()),
        PrefectClient::new(opts)?,
        options("p", "w"),
    );
    let err = tokio::time::timeout(T, runner.run(CancellationToken::new()))
        .await?
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RunnerError::Unauthorized(_)), "{text}");
    assert!(text.contains("PREFECT_API_KEY"), "{text}");
    assert!(
        !text.contains("pnu_not-a-real-key-123"),
        "the key never appears: {text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_503_when_polling_stalls_and_200_again() -> Result<()> {
    let own = PrefectServer::start(Backend::Sqlite)?;
    let api = own.api();
    let s = Scenario::create(
        &api,
        "health",
        "recording",
        &recording_template(),
        "complete",
    )
    .await?;
    let mut o = options(&s.pool, "health-worker");
    o.query_interval = Duration::from_millis(100); // health window: 3 s
    let runner = Runner::new(
        RecordingWorker::new(recording_template()),
        client(own.api_url()),
        o,
    );
    let stop = CancellationToken::new();
    let s2 = stop.clone();
    let (addr, _srv) = health::serve("127.0.0.1:0".parse()?, runner.health(), async move {
        s2.cancelled().await
    })
    .await?;
    let task = tokio::spawn(runner.run(stop.clone()));
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/health");
    let status = |http: reqwest::Client, url: String| async move {
        http.get(url).send().await.map(|r| r.status().as_u16())
    };
    until("health 200", T, || async {
        Ok(status(http.clone(), url.clone()).await? == 200)
    })
    .await?;
    let other = http.get(format!("http://{addr}/other")).send().await?;
    assert_eq!(other.status().as_u16(), 404);
    own.pause_async().await?;
    until("health 503 while the API is down", T, || async {
        Ok(status(http.clone(), url.clone()).await? == 503)
    })
    .await?;
    own.resume_async().await?;
    until("health 200 after recovery", T, || async {
        Ok(status(http.clone(), url.clone()).await? == 200)
    })
    .await?;
    stop.cancel();
    task.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_outage_of_20s_is_ridden_out_and_runs_complete() -> Result<()> {
    let own = PrefectServer::start(Backend::Sqlite)?;
    let api = own.api();
    let s = Scenario::create(
        &api,
        "outage",
        "recording",
        &recording_template(),
        "complete-on-release",
    )
    .await?;
    // A run whose infrastructure is running when the API goes away, and reports its end
    // while the API is still away.
    let during = scheduled_run(&api, &s, Utc::now()).await?;
    let worker = RecordingWorker::new(recording_template());
    let rec = worker.recorder.clone();
    let r = Running::start(own.api_url(), worker, options(&s.pool, "outage-worker"));
    rec.wait_until(T, "the run in flight", |r| r.in_flight.contains(&during))
        .await?;
    api.wait_for_flow_run(during, |run| run["infrastructure_pid"].is_string(), T)
        .await?;
    let outage = tokio::spawn(own.stop_for_async(Duration::from_secs(20)));
    until("the API to be down", T, || async {
        Ok(!api.healthy().await)
    })
    .await?;
    // The infrastructure ends during the outage (its engine retries until the API is back).
    rec.release(during);
    outage.await??;
    assert!(!r.task.is_finished(), "the worker survived the outage");
    api.wait_for_flow_run_state(during, &["COMPLETED"], T)
        .await?;
    // And it keeps serving new runs.
    let after = scheduled_run(&api, &s, Utc::now()).await?;
    rec.wait_until(T, "the run after the outage", |r| r.runs.contains(&after))
        .await?;
    rec.release(after);
    api.wait_for_flow_run_state(after, &["COMPLETED"], T)
        .await?;
    r.stop().await
}

/// The pid part of a process worker's `infrastructure_pid` (`<host>:<pid>`).
fn process_pid(run: &serde_json::Value) -> Result<u32> {
    let pid = run["infrastructure_pid"].as_str().unwrap_or_default();
    pid.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .with_context(|| format!("infrastructure_pid {pid:?} is not <host>:<pid>"))
}

/// The second `Worker`, `prefect-worker-core/examples/process_worker.rs`, run as a program
/// the way a newcomer runs it: a real flow to Completed, a cancelled run's process killed,
/// and the process still running at shutdown stopped by `teardown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_worker_example_runs_cancels_and_tears_down_real_flows() -> Result<()> {
    use e2e::k8s::{flow_deployment, pool_name};
    use e2e::process::{process_alive, spawn_process_worker};

    let api = server().api();
    let dir = tempfile::tempdir()?;
    let pool = pool_name("process");
    let log = dir.path().join("worker.log");
    let mut worker = spawn_process_worker(
        server().api_url(),
        &pool,
        "process-example-worker",
        &log,
        dir.path(),
    )?;
    let worker_log = || std::fs::read_to_string(&log).unwrap_or_default();
    until("the example to create its pool", T, || async {
        Ok(api
            .read_work_pool(&pool)
            .await
            .is_ok_and(|p| p["type"] == "process-example"))
    })
    .await?;
    // One real flow (Python's start-up is the expensive part on a busy machine); the runs
    // that are stopped run a plain long `sleep`, which is all a kill needs.
    let hello = flow_deployment(&api, &pool, "hello.py:hello", json!({})).await?;
    let sleeper = flow_deployment(
        &api,
        &pool,
        "hello.py:hello",
        json!({"command": "sleep 600"}),
    )
    .await?;
    let completed = scheduled_run_of(&api, hello).await?;
    let cancelled = scheduled_run_of(&api, sleeper).await?;
    let at_shutdown = scheduled_run_of(&api, sleeper).await?;

    let run = api
        .wait_for_flow_run_state(completed, &["COMPLETED", "FAILED", "CRASHED"], T)
        .await?;
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}\n{}", worker_log());
    until("the flow's own log line", T, || async {
        Ok(api
            .read_flow_run_log_messages(completed)
            .await?
            .iter()
            .any(|m| m.contains("Hello, world!")))
    })
    .await?;

    // Cancelling: kill_infrastructure stops the process, the runner sets Cancelled.
    let run = api
        .wait_for_flow_run(cancelled, |r| r["infrastructure_pid"].is_string(), T)
        .await?;
    let pid = process_pid(&run)?;
    assert!(process_alive(pid));
    api.set_flow_run_state(cancelled, "RUNNING", None, true)
        .await?;
    api.set_flow_run_state(cancelled, "CANCELLING", None, true)
        .await?;
    let run = api
        .wait_for_flow_run_state(cancelled, &["CANCELLED"], T)
        .await?;
    assert!(
        run["state"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cancelled by the worker"),
        "{run}"
    );
    until("the cancelled run's process to end", T, || async {
        Ok(!process_alive(pid))
    })
    .await?;

    // Shutdown: teardown stops the process the runner stopped waiting on.
    let run = api
        .wait_for_flow_run(at_shutdown, |r| r["infrastructure_pid"].is_string(), T)
        .await?;
    let pid = process_pid(&run)?;
    assert!(process_alive(pid));
    worker.terminate()?;
    let mut status = None;
    until("the example to exit", T, || {
        let exited = worker.try_wait().map(|s| {
            status = s;
            s.is_some()
        });
        async move { exited }
    })
    .await?;
    let status = status.context("exit status")?;
    assert!(status.success(), "{status}\n{}", worker_log());
    assert!(
        !process_alive(pid),
        "teardown stopped the process left at shutdown\n{}",
        worker_log()
    );
    Ok(())
}

/// A run of `deployment` scheduled now.
async fn scheduled_run_of(api: &PrefectApi, deployment: Uuid) -> Result<Uuid> {
    let spec = FlowRunSpec {
        scheduled_time: Some(Utc::now()),
        ..FlowRunSpec::default()
    };
    prefect_test_harness::id_of(
        &api.create_flow_run_from_deployment(deployment, &spec)
            .await?,
    )
}
