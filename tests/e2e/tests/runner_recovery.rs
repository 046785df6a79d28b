//! Abandoned claims, against a real Prefect server with the recording worker: a run left
//! Pending without infrastructure goes back to the queue and runs once; a live worker's
//! claim is left alone; a submission past the claim timeout gives its claim back;
//! infrastructure created after its claim was recovered is removed; infrastructure whose
//! pid was never recorded is adopted, not run again; a crash report that cannot be sent
//! does not leave the run Pending; a claim that lands after another worker finished the run
//! neither runs it again nor hides its end; a failed run a late Pending hid is restored,
//! not crashed.

// Fixtures: a server that cannot start is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Result;
use axum::http::Method;
use chrono::Utc;
use e2e::proxy::{Action, FaultProxy, Rule};
use e2e::recording::{RecordingWorker, pid};
use e2e::{CANCEL_POLL, HEARTBEAT, QUERY, Scenario, recording_template, until};
use prefect_test_harness::{Backend, FlowRunSpec, PrefectApi, PrefectServer, id_of};
use prefect_worker_core::client::{ClientOptions, PrefectClient};
use prefect_worker_core::runner::{RESCHEDULED, Runner, RunnerError, RunnerOptions};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const T: Duration = Duration::from_secs(90);
/// A short claim timeout (claims are recovered after 6 s), still long enough for a
/// submission on a busy machine.
const CLAIM: Duration = Duration::from_secs(3);

fn server() -> &'static PrefectServer {
    static SERVER: OnceLock<PrefectServer> = OnceLock::new();
    SERVER.get_or_init(|| PrefectServer::start(Backend::Sqlite).expect("start the Prefect server"))
}

fn options(pool: &str, name: &str) -> RunnerOptions {
    let mut o = RunnerOptions::new(pool, name)
        .with_intervals(QUERY, HEARTBEAT, CANCEL_POLL)
        .with_claim_timeout(CLAIM, QUERY);
    o.log_batch_interval = Duration::from_millis(200);
    o
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), RunnerError>>,
}

impl Running {
    fn start(api_url: &str, worker: RecordingWorker, options: RunnerOptions) -> Self {
        Self::start_with(ClientOptions::new(api_url), worker, options)
    }

    fn start_with(client: ClientOptions, worker: RecordingWorker, options: RunnerOptions) -> Self {
        let runner = Runner::new(worker, PrefectClient::new(client).unwrap(), options);
        let stop = CancellationToken::new();
        let task = tokio::spawn(runner.run(stop.clone()));
        Self { stop, task }
    }

    async fn stop(self) -> Result<()> {
        self.stop.cancel();
        self.task.await?.map_err(anyhow::Error::from)
    }
}

async fn run_now(api: &PrefectApi, s: &Scenario) -> Result<Uuid> {
    let spec = FlowRunSpec {
        scheduled_time: Some(Utc::now()),
        ..FlowRunSpec::default()
    };
    id_of(
        &api.create_flow_run_from_deployment(s.deployment_id, &spec)
            .await?,
    )
}

/// Claims `id` as a worker would and then "dies": Pending accepted, and labels naming
/// `worker` when given (a worker killed after its labels PATCH), else none.
async fn claim_and_die(api: &PrefectApi, id: Uuid, worker: Option<&str>) -> Result<()> {
    let r = api.set_flow_run_state(id, "PENDING", None, false).await?;
    anyhow::ensure!(r["status"] == "ACCEPT", "claim refused: {r}");
    if let Some(w) = worker {
        api.patch(
            &format!("/flow_runs/{id}/labels"),
            &json!({"prefect.worker.name": w}),
        )
        .await?;
    }
    Ok(())
}

async fn states(api: &PrefectApi, id: Uuid) -> Vec<Value> {
    api.read_flow_run_states(id).await.unwrap_or_default()
}

fn names(states: &[Value]) -> Vec<String> {
    states
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn times_run(w: &RecordingWorker, id: Uuid) -> usize {
    w.recorder
        .record
        .lock()
        .unwrap()
        .runs
        .iter()
        .filter(|r| **r == id)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_claims_go_back_to_the_queue_and_run_once() -> Result<()> {
    let api = server().api();
    let s = Scenario::create(
        &api,
        "abandon",
        "recording",
        &recording_template(),
        "complete",
    )
    .await?;
    // Killed right after Pending (no labels), and after the labels PATCH (a dead worker).
    let unlabelled = run_now(&api, &s).await?;
    claim_and_die(&api, unlabelled, None).await?;
    let labelled = run_now(&api, &s).await?;
    claim_and_die(&api, labelled, Some("dead-worker")).await?;
    let worker = RecordingWorker::new(recording_template());
    let r = Running::start(
        server().api_url(),
        worker.clone(),
        options(&s.pool, "rescuer"),
    );
    for id in [unlabelled, labelled] {
        let run = api.wait_for_flow_run_state(id, &["COMPLETED"], T).await?;
        let history = states(&api, id).await;
        let rescheduled = history
            .iter()
            .find(|s| s["name"] == RESCHEDULED)
            .unwrap_or_else(|| panic!("no {RESCHEDULED} state: {:?}", names(&history)));
        let msg = rescheduled["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("Returned to the queue by worker 'rescuer'")
                && msg.contains("no infrastructure exists"),
            "{msg}"
        );
        if id == labelled {
            assert!(msg.contains("claimed by worker 'dead-worker'"), "{msg}");
        }
        assert_eq!(times_run(&worker, id), 1, "{:?}", names(&history));
        assert_eq!(run["labels"]["prefect.worker.name"], "rescuer");
    }
    r.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_workers_claim_is_left_alone() -> Result<()> {
    let api = server().api();
    let s = Scenario::create(&api, "live", "recording", &recording_template(), "complete").await?;
    // "alive" heartbeats (so the server reports it ONLINE) but never submits its claim.
    api.post(
        &format!("/work_pools/{}/workers/heartbeat", s.pool),
        &json!({"name": "alive", "heartbeat_interval_seconds": 3600}),
    )
    .await?;
    let held = run_now(&api, &s).await?;
    claim_and_die(&api, held, Some("alive")).await?;
    // A canary claimed after it: once the canary is recovered, the pass that did it has
    // judged the older claim too.
    let canary = run_now(&api, &s).await?;
    claim_and_die(&api, canary, None).await?;
    let worker = RecordingWorker::new(recording_template());
    let r = Running::start(
        server().api_url(),
        worker.clone(),
        options(&s.pool, "other"),
    );
    api.wait_for_flow_run_state(canary, &["COMPLETED"], T)
        .await?;
    let run = api.read_flow_run(held).await?;
    assert_eq!(run["state"]["type"], "PENDING", "{run}");
    assert_eq!(times_run(&worker, held), 0);
    r.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_past_the_claim_timeout_gives_its_claim_back() -> Result<()> {
    let api = server().api();
    let s = Scenario::create(
        &api,
        "slow",
        "recording",
        &recording_template(),
        "slow-first-create:4",
    )
    .await?;
    let id = run_now(&api, &s).await?;
    let worker = RecordingWorker::new(recording_template());
    let r = Running::start(
        server().api_url(),
        worker.clone(),
        options(&s.pool, "slowpoke"),
    );
    api.wait_for_flow_run_state(id, &["COMPLETED"], T).await?;
    let history = states(&api, id).await;
    let msg = history
        .iter()
        .find(|s| s["name"] == RESCHEDULED)
        .and_then(|s| s["message"].as_str())
        .unwrap_or_else(|| panic!("not rescheduled: {:?}", names(&history)))
        .to_owned();
    assert!(
        msg.contains("could not create its infrastructure within the claim timeout"),
        "{msg}"
    );
    assert_eq!(times_run(&worker, id), 2, "given back once, then run");
    assert!(!names(&history).iter().any(|n| n == "Crashed"));
    r.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infrastructure_created_after_its_claim_was_recovered_is_removed() -> Result<()> {
    let api = server().api();
    let s = Scenario::create(
        &api,
        "late",
        "recording",
        &recording_template(),
        "hold-first-start",
    )
    .await?;
    let id = run_now(&api, &s).await?;
    // A claims the run; its "create request" is held (it ignores the claim timeout, as a
    // request already sent would). A is also cut off from heartbeating (no channel, REST
    // heartbeats refused), so the server does not report it ONLINE: a live worker's
    // claims are its own to settle, an unreachable one's are anyone's after 2·D.
    let proxy = FaultProxy::start(server().api_url()).await?;
    proxy.add(Rule::new(
        Method::POST,
        "/work_pools/*/workers/heartbeat",
        Action::json(503, r#"{"detail":"unavailable"}"#),
    ));
    let mut a_client = ClientOptions::new(&proxy.api_url);
    a_client.retry_base_delay = Duration::from_millis(50);
    let worker = RecordingWorker::new(recording_template());
    let a = Running::start_with(
        a_client,
        worker.clone(),
        options(&s.pool, "held").with_channel(false),
    );
    worker
        .recorder
        .wait_until(T, "A holding the create", |r| r.runs.contains(&id))
        .await?;
    // B recovers the claim and the run completes (second `run`: `complete`).
    let b = Running::start(
        server().api_url(),
        worker.clone(),
        options(&s.pool, "rescuer"),
    );
    api.wait_for_flow_run_state(id, &["COMPLETED"], T).await?;
    // Now A's held create "lands": it must see the recovery and remove its infrastructure.
    worker.recorder.release_start(id);
    worker
        .recorder
        .wait_until(T, "the late infrastructure removed", |r| {
            r.kills.contains(&pid(id))
        })
        .await?;
    let history = states(&api, id).await;
    let n = names(&history);
    assert!(n.iter().any(|s| s == RESCHEDULED), "{n:?}");
    assert!(!n.iter().any(|s| s == "Crashed"), "{n:?}");
    assert_eq!(api.read_flow_run(id).await?["state"]["type"], "COMPLETED");
    a.stop().await?;
    b.stop().await?;
    Ok(())
}

/// The server accepts PENDING from a final state (reruns need it), so a claim held up in
/// transit (a retry after a transport error, a busy server) until another worker has run
/// the run to its end is accepted, and the run shows Pending. The claimant must neither
/// run it again nor leave it Pending (where the reconciler would later return it to the
/// queue, and run it a second time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_lands_after_the_run_finished_elsewhere_restores_its_end() -> Result<()> {
    let api = server().api();
    let s = Scenario::create(
        &api,
        "overtaken",
        "recording",
        &recording_template(),
        "complete",
    )
    .await?;
    let proxy = FaultProxy::start(server().api_url()).await?;
    let claim = proxy.add(
        Rule::new(Method::POST, "/flow_runs/*/set_state", Action::Hold)
            .body_contains(r#""name":"Pending""#)
            .times(1),
    );
    let worker = RecordingWorker::new(recording_template());
    let r = Running::start(&proxy.api_url, worker.clone(), options(&s.pool, "late"));
    let id = run_now(&api, &s).await?;
    claim.wait_for_hits(1, T).await?;
    // Meanwhile another worker claims the run and its engine runs it to the end.
    for (state_type, name) in [
        ("PENDING", "Pending"),
        ("PENDING", "Submitting"),
        ("RUNNING", "Running"),
        ("COMPLETED", "Completed"),
    ] {
        let answer = api
            .set_flow_run_state(id, state_type, Some(name), false)
            .await?;
        assert_eq!(answer["status"], "ACCEPT", "{name}: {answer}");
    }
    claim.release();
    until(
        "the late claim accepted and the end restored",
        T,
        || async {
            let n = names(&states(&api, id).await);
            let claims = n.iter().filter(|s| *s == "Pending").count();
            let ends = n.iter().filter(|s| *s == "Completed").count();
            Ok(claims == 2
                && ends == 2
                && api.read_flow_run(id).await?["state"]["type"] == "COMPLETED")
        },
    )
    .await?;
    until("the worker says why it stopped", T, || async {
        Ok(api
            .read_flow_run_log_messages(id)
            .await?
            .iter()
            .any(|m| m.contains("ran to Completed on another worker")))
    })
    .await?;
    assert_eq!(times_run(&worker, id), 0);
    let history = names(&states(&api, id).await);
    assert_eq!(
        history.iter().filter(|s| *s == "Submitting").count(),
        1,
        "only the other worker's Submitting: {history:?}"
    );
    r.stop().await?;
    Ok(())
}

/// An InfrastructurePending proposal (one per adopter of a Job) read before the engine
/// started can land after the engine's final state: the server accepts PENDING from FAILED.
/// When the infrastructure then exits non-zero the run shows Pending; its end is restored
/// rather than the run reported Crashed (seen in the replicas chaos run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_hidden_by_a_late_pending_is_restored_not_crashed() -> Result<()> {
    let api = server().api();
    let s = Scenario::create(
        &api,
        "hidden",
        "recording",
        &recording_template(),
        "block-exit:1",
    )
    .await?;
    let worker = RecordingWorker::new(recording_template());
    let r = Running::start(
        server().api_url(),
        worker.clone(),
        options(&s.pool, "observer"),
    );
    let id = run_now(&api, &s).await?;
    api.wait_for_flow_run(id, |run| run["infrastructure_pid"].is_string(), T)
        .await?;
    // The engine runs the flow, which fails; then another worker's late proposal lands.
    for (state_type, name) in [
        ("RUNNING", "Running"),
        ("FAILED", "Failed"),
        ("PENDING", "InfrastructurePending"),
    ] {
        let answer = api
            .set_flow_run_state(id, state_type, Some(name), false)
            .await?;
        assert_eq!(answer["status"], "ACCEPT", "{name}: {answer}");
    }
    // The process exits 1, as a failed flow's does.
    worker.recorder.release(id);
    until("the hidden end restored", T, || async {
        let n = names(&states(&api, id).await);
        Ok(n.iter().filter(|s| *s == "Failed").count() == 2)
    })
    .await?;
    let run = api.read_flow_run(id).await?;
    assert_eq!(run["state"]["type"], "FAILED", "{run}");
    let history = names(&states(&api, id).await);
    assert!(!history.iter().any(|s| s == "Crashed"), "{history:?}");
    r.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infrastructure_without_a_recorded_pid_is_adopted_not_run_again() -> Result<()> {
    let api = server().api();
    let s = Scenario::create(&api, "nopid", "recording", &recording_template(), "block").await?;
    let id = run_now(&api, &s).await?;
    let worker = RecordingWorker::new(recording_template());
    let first = Running::start(server().api_url(), worker.clone(), options(&s.pool, "same"));
    api.wait_for_flow_run(id, |r| r["infrastructure_pid"].is_string(), T)
        .await?;
    first.stop().await?;
    // As if the worker had died between creating the infrastructure and recording it.
    api.patch(
        &format!("/flow_runs/{id}"),
        &json!({"infrastructure_pid": null}),
    )
    .await?;
    let second = Running::start(server().api_url(), worker.clone(), options(&s.pool, "same"));
    worker
        .recorder
        .wait_until(T, "the infrastructure adopted", |r| r.resumed.contains(&id))
        .await?;
    let run = api
        .wait_for_flow_run(id, |r| r["infrastructure_pid"].is_string(), T)
        .await?;
    assert_eq!(run["infrastructure_pid"], pid(id));
    assert_eq!(times_run(&worker, id), 1, "never submitted again");
    assert!(
        !names(&states(&api, id).await)
            .iter()
            .any(|n| n == RESCHEDULED)
    );
    worker.recorder.release(id);
    second.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_report_lost_in_an_outage_does_not_leave_the_run_pending() -> Result<()> {
    let api = server().api();
    let s = Scenario::create(&api, "lost", "recording", &recording_template(), "fail-run").await?;
    let proxy = FaultProxy::start(server().api_url()).await?;
    // Every Crashed proposal fails (503) until the rule is removed.
    let outage = proxy.add(
        Rule::new(
            Method::POST,
            "/flow_runs/*/set_state",
            Action::json(503, r#"{"detail":"unavailable"}"#),
        )
        .body_contains(r#""type":"CRASHED""#),
    );
    let id = run_now(&api, &s).await?;
    // Retries stay on (the shared SQLite server answers an occasional 503 under load, and
    // a real worker retries those), but fast, so each lost Crashed report is given up
    // within a second or two.
    let mut client = ClientOptions::new(&proxy.api_url);
    client.retry_base_delay = Duration::from_millis(50);
    let worker = RecordingWorker::new(recording_template());
    let r = Running::start_with(client, worker.clone(), options(&s.pool, "unlucky"));
    outage.wait_for_hits(1, T).await?;
    // Stuck in Submitting with no infrastructure; the reconciler gives it back.
    until("the claim returned to the queue", T, || async {
        Ok(names(&states(&api, id).await)
            .iter()
            .any(|n| n == RESCHEDULED))
    })
    .await?;
    outage.remove();
    let run = api.wait_for_flow_run_state(id, &["CRASHED"], T).await?;
    let msg = run["state"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("Failed to submit flow run to infrastructure: InfrastructureError"),
        "{msg}"
    );
    r.stop().await?;
    Ok(())
}
