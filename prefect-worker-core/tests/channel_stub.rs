//! The worker channel and Prefect Cloud's worker ids against a scripted stub (HTTP and
//! websocket on one port): close and setup failures as the socket reports them, snapshot
//! ordering across reconnects, keepalive, and a runner that learns its Cloud worker id from a
//! REST heartbeat (or the channel's ready frame) and then sends it everywhere.

// A failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_pass_by_value
)]

mod client_stub_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use client_stub_support::{Reply, SocketHandler, Stub, StubSocket};
use futures::{FutureExt as _, SinkExt as _, StreamExt as _};
use prefect_worker_core::channel::{
    ChannelHost, ChannelOptions, ChannelStatus, CleanupHandler, CleanupOutcome, CleanupTarget,
    WorkerChannel,
};
use prefect_worker_core::client::PrefectClient;
use prefect_worker_core::client::models::{FlowRun, WorkPool};
use prefect_worker_core::job_config::BaseJobConfiguration;
use prefect_worker_core::runner::{RunContext, Runner, RunnerOptions};
use prefect_worker_core::worker::{Integration, KillError, RunError, Worker, WorkerResult};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const T: Duration = Duration::from_secs(20);

fn data(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn template() -> Value {
    json!({
        "job_configuration": {"command": "{{ command }}", "env": "{{ env }}", "labels": "{{ labels }}", "name": "{{ name }}"},
        "variables": {"type": "object", "properties": {
            "command": {"type": ["string", "null"], "default": null},
            "env": {"type": "object"}, "labels": {"type": "object"},
            "name": {"type": ["string", "null"], "default": null}}}
    })
}

fn pool_json(description: &str) -> Value {
    json!({"id": Uuid::from_u128(0xa001), "name": "p", "type": "test", "base_job_template": template(),
        "is_paused": false, "description": description,
        "default_queue_id": Uuid::from_u128(0xb001)})
}

/// Waits until `check` holds, polling every 20 ms.
async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------ a scripted channel server

/// Reads the next text frame as JSON (None when the socket ended).
async fn read(ws: &mut StubSocket) -> Option<Value> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => return serde_json::from_str(&t).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

async fn send(ws: &mut StubSocket, v: Value) {
    let _ = ws.send(Message::text(v.to_string())).await;
}

async fn close(ws: &mut StubSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = ws.send(Message::Close(Some(frame))).await;
    // Wait for the client's close reply.
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
}

fn frame(kind: &str, payload: Value) -> Value {
    json!({"type": kind, "id": Uuid::now_v7(), "sent_at": "2026-01-01T00:00:00Z", "payload": payload})
}

fn ready(hello: &Value, worker_id: Option<Uuid>, description: &str) -> Value {
    let p = &hello["payload"];
    let cleanup = p["max_cleanup_concurrency"].as_u64().unwrap_or(0) > 0;
    let mut accepted = vec!["worker_heartbeat.v1", "work_pool_snapshot.v1"];
    if cleanup {
        accepted.push("cleanup_delivery.v1");
    }
    frame(
        "worker.ready.v1",
        json!({
            "consumer_id": p["consumer_id"], "worker_id": worker_id,
            "selected_channel_version": "work_pool_worker_channel.v1",
            "effective_heartbeat_interval_seconds": p["heartbeat_interval_seconds"],
            "accepted_capabilities": accepted, "rejected_capabilities": [],
            "effective_max_cleanup_concurrency": u64::from(cleanup),
            "resolved_work_queues": [],
            "initial_snapshot": {"snapshot_sequence": 1, "reason": "initial", "work_pool": pool_json(description)}
        }),
    )
}

fn snapshot(sequence: u64, description: &str) -> Value {
    frame(
        "work_pool.snapshot.v1",
        json!({"snapshot_sequence": sequence, "reason": "work_pool_updated", "work_pool": pool_json(description)}),
    )
}

/// What the stub saw on its sockets.
#[derive(Debug, Default, Clone)]
struct Seen(Arc<Mutex<Vec<Value>>>);

impl Seen {
    fn push(&self, v: &Value) {
        self.0.lock().unwrap().push(v.clone());
    }

    fn of(&self, kind: &str) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|f| f["type"] == kind)
            .cloned()
            .collect()
    }
}

/// A server that authenticates, answers the hello with `ready`, then runs `after` (given
/// the connection's number, from 1).
fn scripted<F, Fut>(seen: Seen, worker_id: Option<Uuid>, after: F) -> SocketHandler
where
    F: Fn(StubSocket, usize, Seen) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let after = Arc::new(after);
    let count = Arc::new(Mutex::new(0usize));
    Arc::new(move |mut ws: StubSocket| {
        let (after, seen, count) = (after.clone(), seen.clone(), count.clone());
        async move {
            let n = {
                let mut c = count.lock().unwrap();
                *c += 1;
                *c
            };
            let Some(auth) = read(&mut ws).await else {
                return;
            };
            seen.push(&auth);
            send(&mut ws, json!({"type": "auth_success"})).await;
            let Some(hello) = read(&mut ws).await else {
                return;
            };
            seen.push(&hello);
            send(&mut ws, ready(&hello, worker_id, &format!("conn-{n}"))).await;
            after(ws, n, seen).await;
        }
        .boxed()
    })
}

/// Keeps reading (answering pings, recording frames) until the client goes away.
async fn drain(mut ws: StubSocket, seen: Seen) {
    while let Some(v) = read(&mut ws).await {
        seen.push(&v);
    }
}

/// A host that records the pools it was given.
#[derive(Default)]
struct RecordingHost {
    pools: Mutex<Vec<String>>,
    worker_ids: Mutex<Vec<Uuid>>,
}

impl ChannelHost for RecordingHost {
    fn work_pool_snapshot(&self, pool: WorkPool) {
        let d = pool
            .extra
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        self.pools.lock().unwrap().push(d);
    }

    fn worker_id(&self, id: Uuid) {
        self.worker_ids.lock().unwrap().push(id);
    }
}

struct NoCleanup;

#[async_trait]
impl CleanupHandler for NoCleanup {
    async fn cancelling_timeout_teardown(&self, _target: &CleanupTarget) -> CleanupOutcome {
        CleanupOutcome::Ack
    }
}

fn channel_options() -> ChannelOptions {
    let mut o = ChannelOptions::new("p", "w", "test", template());
    o.reconnect_base = Duration::from_millis(50);
    o.setup_timeout = Duration::from_secs(5);
    o
}

fn start(stub: &Stub, options: ChannelOptions, host: Arc<RecordingHost>) -> WorkerChannel {
    WorkerChannel::start(
        PrefectClient::new(stub.options().with_auth_string("user:stub-pass")).unwrap(),
        options,
        host,
        Some(Arc::new(NoCleanup)),
    )
}

async fn wait_status(ch: &WorkerChannel, want: impl Fn(&ChannelStatus) -> bool) -> ChannelStatus {
    let mut rx = ch.subscribe();
    tokio::time::timeout(T, rx.wait_for(|s| want(s)))
        .await
        .expect("status in time")
        .unwrap()
        .clone()
}

const CONNECT: &str = "/api/work_pools/p/workers/connect";

#[tokio::test]
async fn snapshots_apply_in_order_and_the_sequence_restarts_on_reconnect() {
    let stub = Stub::start().await;
    let seen = Seen::default();
    stub.on_websocket(
        CONNECT,
        scripted(seen.clone(), None, |mut ws, n, seen| async move {
            if n == 1 {
                send(&mut ws, snapshot(3, "seq-3")).await;
                send(&mut ws, snapshot(2, "stale-2")).await;
                send(&mut ws, snapshot(4, "seq-4")).await;
                // A retryable close: the client reconnects.
                close(&mut ws, 1011, "transient_server_error").await;
            } else {
                send(&mut ws, snapshot(2, "after-reconnect-2")).await;
                drain(ws, seen).await;
            }
        }),
    );
    let host = Arc::new(RecordingHost::default());
    let ch = start(&stub, channel_options(), host.clone());
    until("the second connection's snapshot", || {
        host.pools.lock().unwrap().len() >= 5
    })
    .await;
    assert_eq!(
        *host.pools.lock().unwrap(),
        ["conn-1", "seq-3", "seq-4", "conn-2", "after-reconnect-2"]
    );
    assert!(ch.is_healthy());
    // The auth message carries the raw auth string; both hellos the same consumer.
    assert_eq!(seen.of("auth")[0]["token"], "user:stub-pass");
    let hellos = seen.of("worker.hello.v1");
    assert_eq!(hellos.len(), 2);
    assert_eq!(
        hellos[0]["payload"]["consumer_id"],
        hellos[1]["payload"]["consumer_id"]
    );
    assert_eq!(
        hellos[0]["payload"]["handled_cleanup_kinds"],
        json!(["cancelling_timeout_teardown.v1"])
    );
    ch.stop().await;
}

#[tokio::test]
async fn heartbeat_frames_follow_the_effective_interval() {
    let stub = Stub::start().await;
    let seen = Seen::default();
    stub.on_websocket(
        CONNECT,
        scripted(seen.clone(), None, |ws, _, seen| drain(ws, seen)),
    );
    let host = Arc::new(RecordingHost::default());
    let ch = start(
        &stub,
        channel_options().with_heartbeat_interval(Duration::from_secs(1)),
        host,
    );
    until("two heartbeats", || {
        seen.of("worker.heartbeat.v1").len() >= 2
    })
    .await;
    let hb = &seen.of("worker.heartbeat.v1")[0];
    let hello = &seen.of("worker.hello.v1")[0];
    assert_eq!(
        hb["payload"]["consumer_id"],
        hello["payload"]["consumer_id"]
    );
    assert_eq!(hb["payload"]["worker_name"], "w");
    assert_eq!(hb["payload"]["heartbeat_interval_seconds"], 1);
    ch.stop().await;
}

#[tokio::test]
async fn terminal_closes_and_protocol_errors_disable_the_channel() {
    for (case, reason) in [
        ("authorization_failed", "authorization_failed"),
        ("1008 without a reason", "authorization_failed"),
        ("a malformed frame", "protocol_error"),
        ("cleanup without the capability", "protocol_error"),
    ] {
        let stub = Stub::start().await;
        let seen = Seen::default();
        stub.on_websocket(
            CONNECT,
            scripted(seen.clone(), None, move |mut ws, _, _| async move {
                match case {
                    "authorization_failed" => close(&mut ws, 1008, "authorization_failed").await,
                    "1008 without a reason" => close(&mut ws, 1008, "").await,
                    "a malformed frame" => {
                        send(
                            &mut ws,
                            json!({"type": "work_pool.snapshot.v1", "payload": {}}),
                        )
                        .await;
                        let _ = read(&mut ws).await;
                    }
                    _ => {
                        send(
                            &mut ws,
                            frame(
                                "cleanup.message.v1",
                                json!({
                            "message_id": Uuid::now_v7(), "kind": "cancelling_timeout_teardown.v1",
                            "reservation_token": "t", "lease_expires_at": "2999-01-01T00:00:00Z",
                            "delivery_count": 1, "target": {"flow_run_id": Uuid::now_v7()}}),
                            ),
                        )
                        .await;
                        let _ = read(&mut ws).await;
                    }
                }
            }),
        );
        let host = Arc::new(RecordingHost::default());
        // Without a cleanup handler, so a cleanup message is a protocol violation.
        let ch = WorkerChannel::start(stub.client(), channel_options(), host, None);
        let status = wait_status(&ch, |s| matches!(s, ChannelStatus::Disabled { .. })).await;
        assert_eq!(
            status,
            ChannelStatus::Disabled {
                reason: reason.into()
            },
            "{case}"
        );
        // Terminal: never another connection.
        assert_eq!(stub.requests_to("GET", CONNECT).len(), 1, "{case}");
        assert_eq!(
            seen.of("worker.hello.v1")[0]["payload"]["max_cleanup_concurrency"],
            0
        );
        ch.stop().await;
    }
}

#[tokio::test]
async fn setup_failures_classify_as_the_spec_says() {
    // Old server: the upgrade gets FastAPI's 404. Terminal, at once.
    let stub = Stub::start().await;
    let ch = WorkerChannel::start(
        stub.client(),
        channel_options(),
        Arc::new(RecordingHost::default()),
        None,
    );
    assert_eq!(
        ch.settled().await,
        ChannelStatus::Disabled {
            reason: "endpoint_unavailable".into()
        }
    );
    ch.stop().await;
    // A 503 at the upgrade: retryable, reconnecting with back-off.
    let stub = Stub::start().await;
    stub.on("GET", CONNECT, vec![Reply::empty(503)]);
    let ch = WorkerChannel::start(
        stub.client(),
        channel_options(),
        Arc::new(RecordingHost::default()),
        None,
    );
    assert_eq!(
        ch.settled().await,
        ChannelStatus::Fallback {
            reason: "transient_server_error".into()
        }
    );
    until("a second attempt", || {
        stub.requests_to("GET", CONNECT).len() >= 2
    })
    .await;
    ch.stop().await;
    // Authentication refused with a close: terminal authentication_failed.
    let stub = Stub::start().await;
    stub.on_websocket(
        CONNECT,
        Arc::new(|mut ws: StubSocket| {
            async move {
                let _ = read(&mut ws).await;
                close(&mut ws, 1008, "authentication_failed").await;
            }
            .boxed()
        }),
    );
    let ch = WorkerChannel::start(
        stub.client(),
        channel_options(),
        Arc::new(RecordingHost::default()),
        None,
    );
    assert_eq!(
        ch.settled().await,
        ChannelStatus::Disabled {
            reason: "authentication_failed".into()
        }
    );
    ch.stop().await;
    // A server that never answers the hello: the setup timeout is retryable.
    let stub = Stub::start().await;
    stub.on_websocket(
        CONNECT,
        Arc::new(|mut ws: StubSocket| {
            async move {
                let _ = read(&mut ws).await;
                send(&mut ws, json!({"type": "auth_success"})).await;
                while read(&mut ws).await.is_some() {}
            }
            .boxed()
        }),
    );
    let mut o = channel_options();
    o.setup_timeout = Duration::from_millis(300);
    let ch = WorkerChannel::start(stub.client(), o, Arc::new(RecordingHost::default()), None);
    assert_eq!(
        ch.settled().await,
        ChannelStatus::Fallback {
            reason: "setup_timeout".into()
        }
    );
    ch.stop().await;
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_a_lost_connection() {
    let stub = Stub::start().await;
    let seen = Seen::default();
    let hold: Arc<Mutex<Vec<StubSocket>>> = Arc::default();
    let held = hold.clone();
    stub.on_websocket(
        CONNECT,
        scripted(seen.clone(), None, move |ws, n, seen| {
            let held = held.clone();
            async move {
                if n == 1 {
                    // Keep the socket open but never read it again: pings go unanswered.
                    held.lock().unwrap().push(ws);
                } else {
                    drain(ws, seen).await;
                }
            }
        }),
    );
    let mut o = channel_options();
    o.keepalive = Duration::from_millis(200);
    let ch = start(&stub, o, Arc::new(RecordingHost::default()));
    let status = wait_status(&ch, |s| matches!(s, ChannelStatus::Fallback { .. })).await;
    assert_eq!(
        status,
        ChannelStatus::Fallback {
            reason: "connection_lost".into()
        }
    );
    until("the reconnect", || seen.of("worker.hello.v1").len() >= 2).await;
    wait_status(&ch, ChannelStatus::is_healthy).await;
    ch.stop().await;
}

#[tokio::test]
async fn a_server_that_drops_every_connection_soon_gets_a_growing_back_off() {
    let stub = Stub::start().await;
    let accepted: Arc<Mutex<Vec<tokio::time::Instant>>> = Arc::default();
    let times = accepted.clone();
    stub.on_websocket(
        CONNECT,
        scripted(Seen::default(), None, move |mut ws, _, _| {
            let times = times.clone();
            async move {
                times.lock().unwrap().push(tokio::time::Instant::now());
                close(&mut ws, 1011, "heartbeat_persistence_failed").await;
            }
        }),
    );
    let mut o = channel_options();
    o.reconnect_base = Duration::from_millis(100);
    let ch = start(&stub, o, Arc::new(RecordingHost::default()));
    until("four connections", || accepted.lock().unwrap().len() >= 4).await;
    ch.stop().await;
    let t = accepted.lock().unwrap().clone();
    // Each connection was healthy, yet too briefly to reset the back-off: 100, 200, 400 ms.
    for (i, pair) in t.windows(2).take(3).enumerate() {
        let gap = pair[1] - pair[0];
        let least = Duration::from_millis(100 << i);
        assert!(gap >= least, "gap {i}: {gap:?} < {least:?}");
    }
}

#[tokio::test]
async fn the_ready_frame_names_the_worker_on_cloud() {
    let stub = Stub::start().await;
    let id = Uuid::now_v7();
    stub.on_websocket(
        CONNECT,
        scripted(Seen::default(), Some(id), |ws, _, seen| drain(ws, seen)),
    );
    let host = Arc::new(RecordingHost::default());
    let ch = start(&stub, channel_options(), host.clone());
    wait_status(&ch, ChannelStatus::is_healthy).await;
    assert_eq!(*host.worker_ids.lock().unwrap(), [id]);
    ch.stop().await;
}

// ------------------------------------------------------------------ the runner on "Cloud"

/// A worker that records the configurations it is given and "creates" infrastructure.
#[derive(Clone, Default)]
struct TestWorker {
    configurations: Arc<Mutex<Vec<BaseJobConfiguration>>>,
}

#[async_trait]
impl Worker for TestWorker {
    type Configuration = BaseJobConfiguration;

    fn worker_type(&self) -> &'static str {
        "test"
    }

    fn default_base_job_template(&self) -> Value {
        template()
    }

    fn integrations(&self) -> Vec<Integration> {
        vec![Integration {
            name: "prefect-test".into(),
            version: "1.2.3".into(),
        }]
    }

    async fn run(
        &self,
        flow_run: &FlowRun,
        configuration: BaseJobConfiguration,
        mut ctx: RunContext,
    ) -> Result<WorkerResult, RunError> {
        self.configurations.lock().unwrap().push(configuration);
        let identifier = format!("test:{}", flow_run.id);
        ctx.started(identifier.clone());
        Ok(WorkerResult {
            identifier,
            status_code: 0,
            detail: None,
        })
    }

    async fn kill_infrastructure(
        &self,
        _pid: &str,
        _configuration: &BaseJobConfiguration,
        _grace: Duration,
    ) -> Result<(), KillError> {
        Ok(())
    }
}

/// A stub answering as Prefect Cloud does for one pool, one deployment, one flow run.
struct CloudStub {
    stub: Stub,
    flow_run: Value,
}

impl CloudStub {
    async fn start() -> Self {
        let stub = Stub::start().await;
        let (run_id, flow_id, dep_id) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        stub.on(
            "GET",
            "/api/work_pools/p",
            vec![Reply::json(200, pool_json("rest"))],
        );
        stub.on(
            "POST",
            "/api/work_pools/p/get_scheduled_flow_runs",
            vec![Reply::json(200, json!([]))],
        );
        let flow_run = json!({"id": run_id, "name": "cloudy-run", "flow_id": flow_id, "deployment_id": dep_id,
            "state": {"id": Uuid::from_u128(0x5), "type": "SCHEDULED", "name": "Scheduled"}});
        // Read to confirm the claim (the Pending it created), before the labels and again
        // before Submitting.
        let mut claimed = flow_run.clone();
        claimed["state"] = data("set_state_pending.response.json")["state"].clone();
        stub.on(
            "GET",
            &format!("/api/flow_runs/{run_id}"),
            vec![Reply::json(200, claimed.clone()), Reply::json(200, claimed)],
        );
        stub.on(
            "GET",
            &format!("/api/deployments/{dep_id}"),
            vec![Reply::json(
                200,
                json!({"id": dep_id, "name": "dep", "flow_id": flow_id}),
            )],
        );
        stub.on(
            "GET",
            &format!("/api/flows/{flow_id}"),
            vec![Reply::json(200, json!({"id": flow_id, "name": "flow"}))],
        );
        stub.on(
            "POST",
            &format!("/api/flow_runs/{run_id}/set_state"),
            vec![
                Reply::json(201, data("set_state_pending.response.json")),
                Reply::json(201, data("set_state_submitting.response.json")),
            ],
        );
        stub.on(
            "PATCH",
            &format!("/api/flow_runs/{run_id}/labels"),
            vec![Reply::empty(204)],
        );
        stub.on(
            "PATCH",
            &format!("/api/flow_runs/{run_id}"),
            vec![Reply::empty(204)],
        );
        stub.on("POST", "/api/logs/", vec![Reply::empty(201)]);
        Self { stub, flow_run }
    }

    /// From now on the poll hands out the flow run once.
    fn release_the_run(&self) {
        let item = json!([{"work_pool_id": Uuid::from_u128(0xa001), "work_queue_id": Uuid::from_u128(0xb001),
            "flow_run": self.flow_run}]);
        self.stub.on(
            "POST",
            "/api/work_pools/p/get_scheduled_flow_runs",
            vec![Reply::json(200, item), Reply::json(200, json!([]))],
        );
    }

    fn runner(&self, worker: TestWorker) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let options = self
            .stub
            .options()
            .with_api_key("pnu_cloud-key")
            .with_cloud_api_url(self.stub.api_url());
        let client = PrefectClient::new(options).unwrap();
        assert!(client.is_cloud());
        let mut o = RunnerOptions::new("p", "cloud-worker").with_intervals(
            Duration::from_millis(100),
            Duration::from_millis(200),
            Duration::from_secs(60),
        );
        o.log_batch_interval = Duration::from_millis(50);
        let runner = Runner::new(worker, client, o);
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            runner.run(s).await.unwrap();
        });
        (stop, task)
    }

    fn heartbeats(&self) -> Vec<Value> {
        self.stub
            .requests_to("POST", "/api/work_pools/p/workers/heartbeat")
            .iter()
            .map(client_stub_support::Recorded::json)
            .collect()
    }
}

#[tokio::test]
async fn a_cloud_heartbeat_gives_the_worker_id_which_every_later_request_and_job_carries() {
    let cloud = CloudStub::start().await;
    let worker_id = Uuid::now_v7();
    // Cloud answers the id request with the bare UUID text.
    cloud.stub.on(
        "POST",
        "/api/work_pools/p/workers/heartbeat",
        vec![Reply::text(200, &worker_id.to_string()), Reply::empty(204)],
    );
    let worker = TestWorker::default();
    let (stop, task) = cloud.runner(worker.clone());
    until("the id heartbeat", || !cloud.heartbeats().is_empty()).await;
    cloud.release_the_run();
    until("the run submitted", || {
        !worker.configurations.lock().unwrap().is_empty()
    })
    .await;
    until("a later heartbeat", || cloud.heartbeats().len() >= 2).await;
    until("the worker-id log line", || {
        cloud
            .stub
            .requests_to("POST", "/api/logs/")
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("Running on worker id"))
    })
    .await;
    stop.cancel();
    task.await.unwrap();

    // The channel was tried first; the stub has none (404), so REST did the work.
    assert_eq!(cloud.stub.requests_to("GET", CONNECT).len(), 1);
    let hb = cloud.heartbeats();
    assert_eq!(
        hb[0],
        json!({"name": "cloud-worker", "heartbeat_interval_seconds": 1,
            "metadata": {"integrations": [{"name": "prefect-test", "version": "1.2.3"}]},
            "return_id": true})
    );
    assert_eq!(
        hb[1],
        json!({"name": "cloud-worker", "heartbeat_interval_seconds": 1}),
        "id known, metadata sent: neither again"
    );
    // Every request after the id carries it.
    let id = worker_id.to_string();
    let deployment_reads: Vec<_> = cloud
        .stub
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/api/deployments/"))
        .collect();
    assert!(!deployment_reads.is_empty());
    for r in &deployment_reads {
        assert_eq!(r.header("x-prefect-worker-id"), Some(id.as_str()));
        assert_eq!(r.header("x-prefect-worker-name"), Some("cloud-worker"));
    }
    assert!(
        cloud.stub.requests()[0]
            .header("x-prefect-worker-id")
            .is_none(),
        "none before it is known"
    );
    // The job gets it.
    let env = worker.configurations.lock().unwrap()[0].env.clone();
    assert_eq!(
        env.get("PREFECT__WORKER_ID").cloned().flatten(),
        Some(id.clone())
    );
    // The flow run's logs say where the worker is.
    let logs: Vec<Value> = cloud
        .stub
        .requests_to("POST", "/api/logs/")
        .iter()
        .flat_map(|r| r.json().as_array().cloned().unwrap_or_default())
        .collect();
    let expected = format!(
        "Running on worker id: {id}. See worker logs here: http://{}/work-pools/work-pool/p/worker/{id}",
        cloud.stub.addr
    );
    assert!(
        logs.iter().any(|l| l["message"] == expected.as_str()),
        "{logs:?}"
    );
}

#[tokio::test]
async fn a_422_to_the_id_request_is_retried_once_without_it() {
    let cloud = CloudStub::start().await;
    cloud.stub.on(
        "POST",
        "/api/work_pools/p/workers/heartbeat",
        vec![
            Reply::json(422, json!({"detail": "return_id not allowed"})),
            Reply::empty(204),
        ],
    );
    let (stop, task) = cloud.runner(TestWorker::default());
    until("three heartbeats", || cloud.heartbeats().len() >= 3).await;
    stop.cancel();
    task.await.unwrap();
    let hb = cloud.heartbeats();
    let metadata = json!({"integrations": [{"name": "prefect-test", "version": "1.2.3"}]});
    assert_eq!(hb[0]["return_id"], true);
    assert_eq!(hb[1].get("return_id"), None, "the retry drops return_id");
    assert_eq!(hb[1]["metadata"], metadata, "and keeps the metadata");
    // Still no id: the next sync asks again; the metadata went through already.
    assert_eq!(hb[2]["return_id"], true);
    assert_eq!(hb[2].get("metadata"), None);
    assert!(
        cloud
            .stub
            .requests()
            .iter()
            .all(|r| r.header("x-prefect-worker-id").is_none())
    );
}

#[tokio::test]
async fn on_cloud_the_channels_ready_gives_the_id_and_no_rest_heartbeat_is_needed() {
    let cloud = CloudStub::start().await;
    let worker_id = Uuid::now_v7();
    let seen = Seen::default();
    cloud.stub.on_websocket(
        CONNECT,
        scripted(seen.clone(), Some(worker_id), |ws, _, seen| drain(ws, seen)),
    );
    let worker = TestWorker::default();
    let (stop, task) = cloud.runner(worker.clone());
    until("the ready frame applied", || {
        cloud
            .stub
            .requests()
            .iter()
            .any(|r| r.header("x-prefect-worker-id").is_some())
    })
    .await;
    cloud.release_the_run();
    until("the run submitted", || {
        !worker.configurations.lock().unwrap().is_empty()
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    let id = worker_id.to_string();
    assert!(cloud.heartbeats().is_empty(), "the channel heartbeats");
    let hello = &seen.of("worker.hello.v1")[0];
    assert_eq!(
        hello["payload"]["worker_metadata"],
        json!({"integrations": [{"name": "prefect-test", "version": "1.2.3"}]})
    );
    assert_eq!(seen.of("auth")[0]["token"], "pnu_cloud-key");
    let env = worker.configurations.lock().unwrap()[0].env.clone();
    assert_eq!(env.get("PREFECT__WORKER_ID").cloned().flatten(), Some(id));
}
