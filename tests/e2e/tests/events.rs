//! Events against the real Prefect server: the worker's and the pods' events reach the
//! server with the spec's shapes and link to the right flow runs; a restarted worker does
//! not replay pod events; an unreachable events endpoint costs runs nothing; credentials
//! appear in no event or log line.

// Fixtures: a server that cannot start is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Result;
use base64::Engine as _;
use e2e::k8s::{InProcessWorker, flow_deployment, pool_name, start_cluster};
use e2e::proxy::{Fault, FaultProxy};
use e2e::recording::RecordingWorker;
use e2e::{CANCEL_POLL, HEARTBEAT, QUERY, Scenario, recording_template, until};
use k8s_openapi::api::core::v1::Pod;
use prefect_test_harness::{
    Backend, FlowRunSpec, PrefectApi, PrefectServer, ServerOptions, id_of, poll,
};
use prefect_worker_core::client::{ClientOptions, PrefectClient};
use prefect_worker_core::events::EventsOptions;
use prefect_worker_core::runner::{Runner, RunnerOptions};
use prefect_worker_kubernetes::KubernetesSettings;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const T: Duration = Duration::from_secs(180);
/// Distinctive credentials: the server ignores them (no auth configured), the worker
/// uses them on every request and websocket; they must show up nowhere.
const API_KEY: &str = "pnu_EventsTestKey7Q2w9Z";
const AUTH_STRING: &str = "events-user:S3cret-Events-Pass";

/// One PostgreSQL-backed server for this binary; events are persisted every 0.5 s.
fn server() -> &'static PrefectServer {
    static SERVER: OnceLock<PrefectServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        PrefectServer::start_with(ServerOptions::new(Backend::Postgres).env(
            "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL",
            "0.5",
        ))
        .expect("start the Prefect server")
    })
}

/// Everything the worker logs (our crates at debug), for the secrets check.
fn captured_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf: Arc<Mutex<Vec<u8>>> = Arc::default();
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "warn,prefect_worker_core=debug,prefect_worker_kubernetes=debug",
            ))
            .with_ansi(false)
            .with_writer(move || Capture(writer.clone()))
            .try_init();
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write_all(b)?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn secret_client(api_url: &str) -> ClientOptions {
    ClientOptions::new(api_url)
        .with_api_key(API_KEY)
        .with_auth_string(AUTH_STRING)
}

fn assert_no_secrets(what: &str, text: &str) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(AUTH_STRING);
    for needle in [API_KEY, AUTH_STRING, b64.as_str(), "S3cret-Events-Pass"] {
        assert!(!text.contains(needle), "{what} contains a credential");
    }
}

/// `POST /events/filter`, every page.
async fn events(api: &PrefectApi, filter: Value) -> Result<Vec<Value>> {
    let mut page = api
        .post("/events/filter", &json!({"filter": filter, "limit": 50}))
        .await?;
    let mut all = Vec::new();
    loop {
        all.extend(page["events"].as_array().cloned().unwrap_or_default());
        let Some(next) = page["next_page"].as_str().map(str::to_owned) else {
            return Ok(all);
        };
        let path = next.split("/api").nth(1).unwrap_or_default().to_owned();
        page = api.get(&path).await?;
    }
}

fn since(start: chrono::DateTime<chrono::Utc>) -> Value {
    let fmt =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    json!({"since": fmt(start - chrono::TimeDelta::minutes(5)),
           "until": fmt(chrono::Utc::now() + chrono::TimeDelta::hours(1))})
}

/// The worker and pod events about flow run `id`, as the UI finds them: through the
/// related flow-run resource.
async fn run_events(
    api: &PrefectApi,
    start: chrono::DateTime<chrono::Utc>,
    id: Uuid,
) -> Result<Vec<Value>> {
    events(
        api,
        json!({
            "occurred": since(start),
            "related": {"id": [format!("prefect.flow-run.{id}")]},
            "event": {"prefix": ["prefect.worker.", "prefect.kubernetes.pod."]},
        }),
    )
    .await
}

fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

fn one<'a>(events: &'a [Value], name: &str) -> &'a Value {
    let found = named(events, name);
    assert_eq!(found.len(), 1, "one {name}: {events:#?}");
    found[0]
}

fn roles(e: &Value) -> Vec<String> {
    e["related"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["prefect.resource.role"].as_str().unwrap().to_owned())
        .collect()
}

fn related<'a>(e: &'a Value, role: &str) -> &'a Value {
    e["related"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["prefect.resource.role"] == role)
        .unwrap_or_else(|| panic!("no {role} in {e:#}"))
}

fn pod_of(sim: &kubesim::SimHandle, run: Uuid) -> Pod {
    sim.list::<Pod>(Some("default"))
        .into_iter()
        .find(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("prefect.io/flow-run-id"))
                == Some(&run.to_string())
        })
        .expect("the run's pod")
}

async fn run_now(api: &PrefectApi, deployment: Uuid, tags: &[&str]) -> Result<Uuid> {
    let spec = FlowRunSpec {
        scheduled_time: Some(chrono::Utc::now()),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        ..FlowRunSpec::default()
    };
    id_of(
        &api.create_flow_run_from_deployment(deployment, &spec)
            .await?,
    )
}

/// Checks the worker and pod events of one finished run against the spec's shapes.
async fn check_run(
    api: &PrefectApi,
    sim: &kubesim::SimHandle,
    start: chrono::DateTime<chrono::Utc>,
    worker_resource: &Value,
    id: Uuid,
    terminal: &str,
) -> Result<Vec<Value>> {
    let pod = pod_of(sim, id);
    let uid = pod.metadata.uid.clone().unwrap();
    let want = [
        "prefect.worker.submitted-flow-run",
        "prefect.worker.executed-flow-run",
        "prefect.kubernetes.pod.pending",
        "prefect.kubernetes.pod.running",
        terminal,
    ];
    let found = poll(&format!("the events of run {id}"), T, || async {
        let found = run_events(api, start, id).await?;
        let names: Vec<String> = found.iter().map(|e| e["event"].to_string()).collect();
        let done = want.iter().all(|w| !named(&found, w).is_empty());
        Ok((done.then_some(found), names.join(", ")))
    })
    .await?;
    let run = api.read_flow_run(id).await?;
    let run_resource = format!("prefect.flow-run.{id}");

    let submitted = one(&found, "prefect.worker.submitted-flow-run");
    let executed = one(&found, "prefect.worker.executed-flow-run");
    for e in [submitted, executed] {
        assert_eq!(&e["resource"], worker_resource, "{e:#}");
        assert_eq!(e["payload"], json!({}));
        let r = roles(e);
        assert_eq!(
            r[..3],
            ["deployment", "flow", "flow-run"],
            "Python's order: {r:?}"
        );
        assert_eq!(r.last().unwrap(), "work-pool");
        assert!(r[3..r.len() - 1].iter().all(|t| t == "tag"), "{r:?}");
        let tags: Vec<&str> = e["related"].as_array().unwrap()[3..r.len() - 1]
            .iter()
            .map(|t| t["prefect.resource.id"].as_str().unwrap())
            .collect();
        assert_eq!(
            tags,
            ["prefect.tag.dep-tag", "prefect.tag.run-tag"],
            "sorted union"
        );
        let fr = related(e, "flow-run");
        assert_eq!(fr["prefect.resource.id"], run_resource.as_str());
        assert_eq!(fr["prefect.resource.name"], run["name"]);
        assert_eq!(
            related(e, "deployment")["prefect.resource.id"],
            format!(
                "prefect.deployment.{}",
                run["deployment_id"].as_str().unwrap()
            )
        );
    }
    assert_eq!(submitted["follows"], Value::Null);
    assert_eq!(executed["follows"], submitted["id"]);
    let fr = related(executed, "flow-run");
    assert_eq!(
        fr["prefect.infrastructure.identifier"],
        run["infrastructure_pid"]
    );
    assert_eq!(fr["prefect.infrastructure.status-code"], "0");
    assert!(
        related(submitted, "flow-run")
            .get("prefect.infrastructure.identifier")
            .is_none()
    );

    let pod_resource = format!("prefect.kubernetes.pod.{uid}");
    let mut previous: Option<&Value> = None;
    for name in [
        "prefect.kubernetes.pod.pending",
        "prefect.kubernetes.pod.running",
        terminal,
    ] {
        let e = one(&found, name);
        assert_eq!(e["resource"]["prefect.resource.id"], pod_resource.as_str());
        assert_eq!(
            e["resource"]["prefect.resource.name"],
            pod.metadata.name.as_deref().unwrap()
        );
        assert_eq!(e["resource"]["kubernetes.namespace"], "default");
        assert_eq!(
            roles(e),
            ["flow-run", "deployment", "flow", "work-pool", "worker"],
            "{e:#}"
        );
        assert_eq!(
            related(e, "flow-run")["prefect.resource.id"],
            run_resource.as_str()
        );
        let w = related(e, "worker");
        assert_eq!(
            w["prefect.resource.id"],
            worker_resource["prefect.resource.id"]
        );
        assert_eq!(w["prefect.worker-type"], "kubernetes");
        if let Some(p) = previous {
            assert_eq!(
                e["follows"], p["id"],
                "{name} follows the previous pod event"
            );
        }
        previous = Some(e);
    }
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_pod_events_reach_the_server_and_a_restart_does_not_repeat_them() -> Result<()> {
    let logs = captured_logs();
    let api = server().api();
    let start = chrono::Utc::now();
    let sim = start_cluster().await?;
    let pool = pool_name("events");
    let name = format!(
        "Events Worker {}",
        &Uuid::new_v4().simple().to_string()[..6]
    );
    let first = InProcessWorker::start_as(
        server().api_url(),
        &sim,
        &pool,
        &name,
        KubernetesSettings::default(),
        &[],
        secret_client(server().api_url()),
    )
    .await?;
    let deployment = |entrypoint: &'static str, vars: Value| {
        let (api, pool) = (api.clone(), pool.clone());
        async move {
            let id = flow_deployment(&api, &pool, entrypoint, vars).await?;
            api.patch(&format!("/deployments/{id}"), &json!({"tags": ["dep-tag"]}))
                .await?;
            anyhow::Ok(id)
        }
    };
    let completes = deployment("hello.py:hello", json!({})).await?;
    let fails = deployment("hello.py:fails", json!({})).await?;
    let crashes = deployment("hello.py:hello", json!({"image": "sim/exit:3"})).await?;
    let completed = run_now(&api, completes, &["run-tag"]).await?;
    let failed = run_now(&api, fails, &["run-tag"]).await?;
    let crashed = run_now(&api, crashes, &["run-tag"]).await?;
    for (id, state) in [
        (completed, "COMPLETED"),
        (failed, "FAILED"),
        (crashed, "CRASHED"),
    ] {
        let run = api.wait_for_flow_run_final(id, T).await?;
        assert_eq!(run["state"]["type"], state, "{run}");
    }

    let slug = name.to_lowercase().replace(' ', "-");
    let worker_resource = json!({
        "prefect.resource.id": format!("prefect.worker.kubernetes.{slug}"),
        "prefect.resource.name": name,
        "prefect.version": "3.9.1",
        "prefect.worker-type": "kubernetes",
    });
    let mut stored = Vec::new();
    stored.extend(
        check_run(
            &api,
            &sim,
            start,
            &worker_resource,
            completed,
            "prefect.kubernetes.pod.succeeded",
        )
        .await?,
    );
    // A flow that raises still ends its process cleanly: the engine reported FAILED.
    stored.extend(
        check_run(
            &api,
            &sim,
            start,
            &worker_resource,
            failed,
            "prefect.kubernetes.pod.succeeded",
        )
        .await?,
    );
    let found = check_run(
        &api,
        &sim,
        start,
        &worker_resource,
        crashed,
        "prefect.kubernetes.pod.failed",
    )
    .await?;
    let failed_pod = one(&found, "prefect.kubernetes.pod.failed");
    assert_eq!(
        failed_pod["resource"]["kubernetes.reason"], "Error",
        "an exit code is not an eviction: {failed_pod:#}"
    );
    assert!(named(&found, "prefect.kubernetes.pod.evicted").is_empty());
    stored.extend(found);

    // The restart: same name, the three pods still there.
    first.stop().await?;
    let worker_events = |names: &'static [&'static str]| {
        let api = api.clone();
        let id = worker_resource["prefect.resource.id"].clone();
        async move {
            events(
                &api,
                json!({"occurred": since(start), "resource": {"id": [id]}, "event": {"name": names}}),
            )
            .await
        }
    };
    let lifecycle = poll("started and stopped", T, || async {
        let found = worker_events(&["prefect.worker.started", "prefect.worker.stopped"]).await?;
        let seen = format!("{} events", found.len());
        Ok(((found.len() == 2).then_some(found), seen))
    })
    .await?;
    let started = one(&lifecycle, "prefect.worker.started");
    let stopped = one(&lifecycle, "prefect.worker.stopped");
    let pool_id = api.read_work_pool(&pool).await?["id"].clone();
    for e in [started, stopped] {
        assert_eq!(e["resource"], worker_resource);
        assert_eq!(
            e["related"],
            json!([{"prefect.resource.id": format!("prefect.work-pool.{}", pool_id.as_str().unwrap()),
                    "prefect.resource.role": "work-pool", "prefect.resource.name": pool}])
        );
    }
    assert_eq!(started["follows"], Value::Null);
    assert_eq!(stopped["follows"], started["id"]);
    stored.extend(lifecycle.iter().cloned());

    let second = InProcessWorker::start_as(
        server().api_url(),
        &sim,
        &pool,
        &name,
        KubernetesSettings::default(),
        &[],
        secret_client(server().api_url()),
    )
    .await?;
    let mut tap = second.events.subscribe().unwrap();
    let fourth = run_now(&api, crashes, &["run-tag"]).await?;
    api.wait_for_flow_run_final(fourth, T).await?;
    let worker = second.worker.clone();
    until("the relisted pods looked up on the server", T, || async {
        Ok(worker.pod_events_remembered() >= 4 && worker.pod_event_lookups_in_flight() == 0)
    })
    .await?;
    let fourth_pod = format!(
        "prefect.kubernetes.pod.{}",
        pod_of(&sim, fourth).metadata.uid.unwrap()
    );
    let mut emitted = Vec::new();
    while let Ok(e) = tap.try_recv() {
        emitted.push(e);
    }
    let pod_events: Vec<_> = emitted
        .iter()
        .filter(|e| e.event.starts_with("prefect.kubernetes.pod."))
        .collect();
    assert!(
        !pod_events.is_empty() && pod_events.iter().all(|e| e.resource.id() == fourth_pod),
        "the restarted worker emitted pod events only for its new pod: {:?}",
        pod_events
            .iter()
            .map(|e| (&e.event, e.resource.id()))
            .collect::<Vec<_>>()
    );
    let names: Vec<&str> = pod_events.iter().map(|e| e.event.as_str()).collect();
    assert!(
        names.first() == Some(&"prefect.kubernetes.pod.pending")
            && names.last() == Some(&"prefect.kubernetes.pod.failed"),
        "the new pod's events, in order: {names:?}"
    );
    second.stop().await?;

    // Secrets: not in any stored event, worker log line or flow-run log.
    stored.extend(run_events(&api, start, fourth).await?);
    assert_no_secrets("the stored events", &serde_json::to_string(&stored)?);
    for id in [completed, failed, crashed, fourth] {
        let lines = api.read_flow_run_log_messages(id).await?.join("\n");
        assert_no_secrets("the flow-run logs", &lines);
    }
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(text.contains("emitting event"), "debug logs were captured");
    assert_no_secrets("the worker's log", &text);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_events_endpoint_unreachable_runs_go_on_and_the_drops_are_counted() -> Result<()> {
    let logs = captured_logs();
    let api = server().api();
    let proxy = FaultProxy::start(server().api_url()).await?;
    proxy.inject(Fault {
        method: axum::http::Method::GET,
        path: "/events/in".into(),
        status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
        body: "{}".into(),
    });
    let s = Scenario::create(
        &api,
        "unreachable",
        "recording",
        &recording_template(),
        "complete",
    )
    .await?;
    const CAPACITY: usize = 16;
    const RUNS: usize = 50;
    let mut options = RunnerOptions::new(&s.pool, "no-events-worker")
        .with_intervals(QUERY, HEARTBEAT, CANCEL_POLL)
        .with_events(EventsOptions::default().with_queue_capacity(CAPACITY));
    options.log_batch_interval = Duration::from_millis(200);
    let runner = Runner::new(
        RecordingWorker::new(recording_template()),
        PrefectClient::new(secret_client(&proxy.api_url))?,
        options,
    );
    let events = runner.events();
    let stop = CancellationToken::new();
    let task = tokio::spawn(runner.run(stop.clone()));

    let began = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..RUNS {
        ids.push(id_of(
            &api.create_flow_run_from_deployment(
                s.deployment_id,
                &FlowRunSpec {
                    scheduled_time: Some(chrono::Utc::now()),
                    ..FlowRunSpec::default()
                },
            )
            .await?,
        )?);
    }
    let max_queued = std::sync::atomic::AtomicUsize::new(0);
    until("50 runs Completed", T, || async {
        let st = events.stats();
        max_queued.fetch_max(st.queued, std::sync::atomic::Ordering::Relaxed);
        let runs = api
            .filter_flow_runs(&json!({"flow_runs": {"id": {"any_": ids}, "state": {"type": {"any_": ["COMPLETED"]}}}}))
            .await?;
        Ok(runs.len() == RUNS)
    })
    .await?;
    let took = began.elapsed();
    let st = events.stats();
    // started + submitted + executed per run, none delivered: all but the newest CAPACITY
    // were dropped, and the queue never held more.
    assert_eq!(st.emitted, 1 + 2 * RUNS as u64, "{st:?}");
    assert_eq!(st.delivered, 0, "{st:?}");
    assert_eq!(st.queued, CAPACITY, "{st:?}");
    assert_eq!(st.dropped, st.emitted - CAPACITY as u64, "{st:?}");
    let max_queued = max_queued.into_inner();
    assert!(max_queued <= CAPACITY, "{max_queued}");
    assert!(!st.connected);
    stop.cancel();
    task.await??;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(
        text.contains("oldest queued events"),
        "the drops are reported in the log"
    );
    assert!(
        text.contains("Unable to connect to the Prefect events websocket"),
        "the outage is reported"
    );
    assert_no_secrets("the worker's log", &text);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{RUNS} runs with the events endpoint unreachable: {took:?}; {st:?}"
    );
    Ok(())
}
