//! The worker channel against a real Prefect 3.9.1 server (PostgreSQL), observed through the
//! fault proxy: it replaces REST heartbeats and pool reads while healthy, brings pool edits
//! as snapshots, reconnects after a retryable close, falls back to REST for good after a
//! terminal close or on a server without the endpoint, and delivers the server's
//! cancelling-timeout cleanup to the Kubernetes worker. No secret reaches the logs.

// Fixtures: a server that cannot start is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Result;
use axum::http::{Method, StatusCode};
use base64::Engine as _;
use chrono::Utc;
use e2e::k8s::{InProcessWorker, flow_deployment, pool_name, start_cluster};
use e2e::log_capture::{LogCapture, capture};
use e2e::proxy::{Fault, FaultProxy};
use e2e::recording::RecordingWorker;
use e2e::{QUERY, Scenario, recording_template, until};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use prefect_test_harness::{Backend, FlowRunSpec, PrefectServer, ServerOptions, id_of};
use prefect_worker_core::client::{ClientOptions, PrefectClient};
use prefect_worker_core::runner::{Runner, RunnerError, RunnerOptions};
use prefect_worker_kubernetes::KubernetesSettings;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const T: Duration = Duration::from_secs(90);
/// Short, so heartbeat frames and REST fallbacks show up within seconds.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Distinctive secrets: the worker sends them; they must never be logged.
const API_KEY: &str = "pnu_channel-secret-key-5f1e9c0d";
const AUTH_STRING: &str = "chan-user:chan-secret-pass-8d2b7a";

/// One PostgreSQL server for this binary; a run left CANCELLING is timed out after 1 s.
fn server() -> &'static PrefectServer {
    static SERVER: OnceLock<PrefectServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        PrefectServer::start_with(
            ServerOptions::new(Backend::Postgres)
                .env(
                    "PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_CANCELLING_TIMEOUT_SECONDS",
                    "1",
                )
                .env(
                    "PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_LOOP_SECONDS",
                    "1",
                ),
        )
        .expect("start the Prefect server")
    })
}

/// A client through `api_url` carrying both secrets (a server without auth ignores them;
/// the channel's auth message carries the auth string).
fn client(api_url: &str) -> PrefectClient {
    PrefectClient::new(
        ClientOptions::new(api_url)
            .with_api_key(API_KEY)
            .with_auth_string(AUTH_STRING),
    )
    .unwrap()
}

fn assert_no_secret_logged(logs: &LogCapture) {
    let text = logs.text();
    let basic = base64::engine::general_purpose::STANDARD.encode(AUTH_STRING);
    for secret in [API_KEY, AUTH_STRING, "chan-secret-pass", basic.as_str()] {
        assert!(
            !text.contains(secret),
            "a secret reached the logs: {secret}"
        );
    }
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

fn options(pool: &str, name: &str) -> RunnerOptions {
    let mut o =
        RunnerOptions::new(pool, name).with_intervals(QUERY, HEARTBEAT, Duration::from_secs(1));
    o.log_batch_interval = Duration::from_millis(200);
    o
}

/// REST calls to `pool`'s heartbeat and pool read among `requests`.
fn rest_sync_calls(requests: &[(Method, String)], pool: &str) -> Vec<String> {
    requests
        .iter()
        .filter(|(m, p)| {
            (*m == Method::POST && *p == format!("/work_pools/{pool}/workers/heartbeat"))
                || (*m == Method::GET && *p == format!("/work_pools/{pool}"))
        })
        .map(|(m, p)| format!("{m} {p}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_replaces_rest_sync_brings_pool_edits_and_reconnects_after_a_retryable_close()
-> Result<()> {
    let logs = capture();
    let api = server().api();
    let s = Scenario::create(&api, "chan", "recording", &recording_template(), "complete").await?;
    let proxy = FaultProxy::start(server().api_url()).await?;
    let worker = RecordingWorker::new(recording_template());
    let rec = worker.recorder.clone();
    let r = Running::start(&proxy.api_url, worker, options(&s.pool, "chan-worker"));
    let connect = format!("/work_pools/{}/workers/connect", s.pool);

    until("the channel's ready frame", T, || async {
        Ok(!proxy
            .ws
            .frames_of(&connect, false, "worker.ready.v1")
            .is_empty())
    })
    .await?;
    let healthy_at = Utc::now();
    let hello = proxy
        .ws
        .frames_of(&connect, true, "worker.hello.v1")
        .remove(0)
        .json();
    assert_eq!(
        hello["payload"]["requested_capabilities"],
        json!([
            "worker_heartbeat.v1",
            "work_pool_snapshot.v1",
            "cleanup_delivery.v1"
        ]),
        "the recording worker can kill infrastructure"
    );
    assert_eq!(hello["payload"]["worker_name"], "chan-worker");
    assert_eq!(hello["payload"]["heartbeat_interval_seconds"], 1);
    let auth = proxy.ws.frames_of(&connect, true, "auth").remove(0).json();
    assert_eq!(
        auth["token"], AUTH_STRING,
        "the auth string wins over the key"
    );

    // A base-job-template edit reaches the worker as a snapshot, without a REST read.
    let mut template = recording_template();
    template["variables"]["properties"]["labels"]["default"] = json!({"edited": "by-snapshot"});
    api.update_work_pool(&s.pool, &json!({"base_job_template": template}))
        .await?;
    until("a work-pool snapshot", T, || async {
        Ok(!proxy
            .ws
            .frames_of(&connect, false, "work_pool.snapshot.v1")
            .is_empty())
    })
    .await?;
    let run = api
        .create_flow_run_from_deployment(
            s.deployment_id,
            &FlowRunSpec {
                scheduled_time: Some(Utc::now()),
                ..FlowRunSpec::default()
            },
        )
        .await?;
    let id = id_of(&run)?;
    api.wait_for_flow_run_state(id, &["COMPLETED"], T).await?;
    let labels = rec.record.lock().unwrap().configurations[&id]
        .labels
        .clone();
    assert_eq!(
        labels.get("edited").map(String::as_str),
        Some("by-snapshot")
    );

    // Heartbeats go over the channel; the server's view of the worker comes from them.
    until("a heartbeat frame", T, || async {
        Ok(!proxy
            .ws
            .frames_of(&connect, true, "worker.heartbeat.v1")
            .is_empty())
    })
    .await?;
    // From here on the start-up REST pool read is long over.
    let mark = proxy.requests().len();
    let connects = proxy.ws.connects_to(&connect);
    let readies = proxy.ws.frames_of(&connect, false, "worker.ready.v1").len();
    let poll = format!("/work_pools/{}/get_scheduled_flow_runs", s.pool);
    until("two more heartbeat frames and a poll", T, || async {
        Ok(proxy
            .ws
            .frames_of(&connect, true, "worker.heartbeat.v1")
            .len()
            >= 3
            && proxy.requests()[mark..]
                .iter()
                .any(|(m, p)| *m == Method::POST && *p == poll))
    })
    .await?;
    let requests = proxy.requests();
    assert_eq!(
        proxy.ws.connects_to(&connect),
        connects,
        "the channel stayed up"
    );
    let workers = api.read_workers(&s.pool).await?;
    let me = workers
        .iter()
        .find(|w| w["name"] == "chan-worker")
        .expect("the server knows the worker");
    assert_eq!(me["status"], "ONLINE");
    let last: chrono::DateTime<Utc> = me["last_heartbeat_time"].as_str().unwrap().parse()?;
    assert!(
        last >= healthy_at - chrono::Duration::seconds(1),
        "{last} vs {healthy_at}"
    );
    // No REST heartbeat or pool read while healthy; polling goes on over REST.
    assert_eq!(
        rest_sync_calls(&requests[mark..], &s.pool),
        Vec::<String>::new(),
        "REST sync while the channel is healthy"
    );
    // When the first attempt succeeded (a slow server may time it out), the start-up REST
    // heartbeat was skipped too: the hello recorded the first heartbeat.
    let first_attempt_failed = logs
        .text()
        .lines()
        .any(|l| l.contains("worker channel unavailable") && l.contains(&s.pool));
    if !first_attempt_failed {
        assert!(
            !rest_sync_calls(&requests, &s.pool)
                .iter()
                .any(|c| c.starts_with("POST")),
            "a REST heartbeat was sent although the channel came up at once"
        );
    }

    // A retryable close (the server's transient error): the worker reconnects by itself.
    proxy.ws.close_all(1011, "transient_server_error");
    until("another ready frame", T, || async {
        Ok(proxy.ws.frames_of(&connect, false, "worker.ready.v1").len() > readies)
    })
    .await?;
    logs.wait_for_line("the reconnect", T, |l| {
        l.contains("worker channel reconnected") && l.contains(&s.pool)
    })
    .await?;
    assert!(proxy.ws.connects_to(&connect) > connects);

    r.stop().await?;
    assert_no_secret_logged(logs);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_pool_closes_the_channel_for_good_and_rest_takes_over() -> Result<()> {
    let logs = capture();
    let api = server().api();
    let s = Scenario::create(
        &api,
        "chandel",
        "recording",
        &recording_template(),
        "complete",
    )
    .await?;
    let proxy = FaultProxy::start(server().api_url()).await?;
    let worker = RecordingWorker::new(recording_template());
    let r = Running::start(&proxy.api_url, worker, options(&s.pool, "chandel-worker"));
    let connect = format!("/work_pools/{}/workers/connect", s.pool);
    until("the channel's ready frame", T, || async {
        Ok(!proxy
            .ws
            .frames_of(&connect, false, "worker.ready.v1")
            .is_empty())
    })
    .await?;
    let connects = proxy.ws.connects_to(&connect);
    // Keep heartbeat frames from racing the deletion on the server (a heartbeat for a
    // deleted pool closes with the retryable heartbeat_persistence_failed instead).
    proxy.ws.swallow("worker.heartbeat.v1");
    api.delete(&format!("/work_pools/{}", s.pool)).await?;
    let line = logs
        .wait_for_line("the channel disabled", T, |l| {
            l.contains("worker channel disabled") && l.contains(&s.pool)
        })
        .await?;
    assert!(line.contains("authorization_failed"), "{line}");
    // REST takes over: it finds the pool gone, creates it again, heartbeats.
    until("two REST heartbeats", T, || async {
        Ok(proxy
            .requests()
            .iter()
            .filter(|(m, p)| {
                *m == Method::POST && *p == format!("/work_pools/{}/workers/heartbeat", s.pool)
            })
            .count()
            >= 2)
    })
    .await?;
    assert!(
        proxy
            .requests()
            .iter()
            .any(|(m, p)| *m == Method::POST && p == "/work_pools/")
    );
    assert_eq!(
        proxy.ws.connects_to(&connect),
        connects,
        "terminal: never reconnected"
    );
    r.stop().await?;
    assert_no_secret_logged(logs);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_the_channel_endpoint_gets_rest_heartbeats() -> Result<()> {
    let logs = capture();
    let api = server().api();
    let s = Scenario::create(
        &api,
        "chan404",
        "recording",
        &recording_template(),
        "complete",
    )
    .await?;
    let proxy = FaultProxy::start(server().api_url()).await?;
    let connect = format!("/work_pools/{}/workers/connect", s.pool);
    proxy.inject(Fault {
        method: Method::GET,
        path: connect.clone(),
        status: StatusCode::NOT_FOUND,
        body: r#"{"detail":"Not Found"}"#.into(),
    });
    let worker = RecordingWorker::new(recording_template());
    let r = Running::start(&proxy.api_url, worker, options(&s.pool, "chan404-worker"));
    let line = logs
        .wait_for_line("the channel disabled", T, |l| {
            l.contains("worker channel disabled") && l.contains(&s.pool)
        })
        .await?;
    assert!(line.contains("endpoint_unavailable"), "{line}");
    until("REST heartbeats and pool reads", T, || async {
        let calls = rest_sync_calls(&proxy.requests(), &s.pool);
        Ok(calls.iter().filter(|c| c.starts_with("POST")).count() >= 2
            && calls.iter().filter(|c| c.starts_with("GET")).count() >= 2)
    })
    .await?;
    let attempts = proxy
        .requests()
        .iter()
        .filter(|(m, p)| *m == Method::GET && *p == connect)
        .count();
    assert_eq!(attempts, 1, "a 404 is terminal: one attempt");
    r.stop().await?;
    assert_no_secret_logged(logs);
    Ok(())
}

fn jobs_of(sim: &kubesim::SimHandle, run: Uuid) -> Vec<Job> {
    sim.list::<Job>(None)
        .into_iter()
        .filter(|j| {
            j.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("prefect.io/flow-run-id"))
                .map(String::as_str)
                == Some(&run.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_cancelling_timeout_cleanup_deletes_the_job_over_the_channel() -> Result<()> {
    let logs = capture();
    let api = server().api();
    let sim = start_cluster().await?;
    let proxy = FaultProxy::start(server().api_url()).await?;
    let pool = pool_name("cleanup");
    // The worker's own cancellation loop is off: only the server's cleanup can delete the Job.
    let w = InProcessWorker::start_with_options(
        &proxy.api_url,
        &sim,
        &pool,
        KubernetesSettings::default(),
        &[],
        |o| o.with_cancellation(false),
    )
    .await?;
    let connect = format!("/work_pools/{pool}/workers/connect");
    until("the channel's ready frame", T, || async {
        Ok(!proxy
            .ws
            .frames_of(&connect, false, "worker.ready.v1")
            .is_empty())
    })
    .await?;
    let ready = proxy
        .ws
        .frames_of(&connect, false, "worker.ready.v1")
        .remove(0)
        .json();
    assert!(
        ready["payload"]["accepted_capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("cleanup_delivery.v1")),
        "{ready}"
    );
    let dep = flow_deployment(
        &api,
        &pool,
        "hello.py:hello",
        json!({"image": "sim/sleep:120"}),
    )
    .await?;
    let id = id_of(
        &api.create_flow_run_from_deployment(
            dep,
            &FlowRunSpec {
                scheduled_time: Some(Utc::now()),
                ..FlowRunSpec::default()
            },
        )
        .await?,
    )?;
    api.wait_for_flow_run(id, |r| r["infrastructure_pid"].is_string(), T)
        .await?;
    until("the pod running", T, || async {
        Ok(sim
            .list::<Pod>(Some("default"))
            .iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")))
    })
    .await?;
    let before = proxy.requests().len();
    api.set_flow_run_state(id, "RUNNING", None, true).await?;
    api.set_flow_run_state(id, "CANCELLING", None, true).await?;
    // After 1 s the server cancels the run itself and enqueues the teardown.
    let run = api.wait_for_flow_run_state(id, &["CANCELLED"], T).await?;
    assert_eq!(
        run["state"]["message"],
        "Flow run cancellation timed out; marked this flow run as Cancelled."
    );
    until("the cleanup message", T, || async {
        Ok(!proxy
            .ws
            .frames_of(&connect, false, "cleanup.message.v1")
            .is_empty())
    })
    .await?;
    let message = proxy
        .ws
        .frames_of(&connect, false, "cleanup.message.v1")
        .remove(0)
        .json();
    assert_eq!(message["payload"]["kind"], "cancelling_timeout_teardown.v1");
    assert_eq!(message["payload"]["target"]["flow_run_id"], id.to_string());
    until("the Job to be gone", T, || async {
        Ok(jobs_of(&sim, id).is_empty())
    })
    .await?;
    until("the ack and the server accepting it", T, || async {
        let acks = proxy.ws.frames_of(&connect, true, "cleanup.ack.v1");
        let results = proxy
            .ws
            .frames_of(&connect, false, "cleanup.operation_result.v1");
        Ok(acks.iter().any(|a| {
            results.iter().any(|r| {
                let r = r.json();
                r["payload"]["request_frame_id"] == a.json()["id"]
                    && r["payload"]["operation"] == "ack"
                    && r["payload"]["status"] == "accepted"
            })
        }))
    })
    .await?;
    // The worker wrote no state: the server's Cancelled is the last one, and no set_state
    // for this run went through the proxy after CANCELLING.
    let set_state = format!("/flow_runs/{id}/set_state");
    assert!(
        !proxy.requests()[before..]
            .iter()
            .any(|(m, p)| *m == Method::POST && *p == set_state),
        "the worker proposed a state"
    );
    let types = api.read_flow_run_state_types(id).await?;
    assert_eq!(
        types.last().map(String::as_str),
        Some("CANCELLED"),
        "{types:?}"
    );
    assert!(!types.iter().any(|t| t == "CRASHED"), "{types:?}");
    w.stop().await?;
    sim.shutdown().await;
    assert_no_secret_logged(logs);
    Ok(())
}
