//! Prometheus metrics end to end: the Kubernetes worker with metrics on, against a real
//! Prefect server and kubesim, serving `/metrics` on its web server. One burst of runs
//! with mixed outcomes (completed, exit-code crash, pull-error crash, cancelled), then:
//! the exposition parses with the official client's parsers (OpenMetrics and text), the
//! counters equal what the server's states say happened, the histograms count the right
//! runs, no label carries an id, a name or a credential, and the Grafana dashboard and
//! the operations guide name only metrics that exist.

// Fixtures: a server that cannot start is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use e2e::exposition::{Exposition, Format};
use e2e::k8s::{flow_deployment, kube_config, pool_name, start_cluster};
use e2e::until;
use prefect_test_harness::{Backend, FlowRunSpec, PrefectApi, PrefectServer, id_of, repo_root};
use prefect_worker_core::client::{ClientOptions, PrefectClient};
use prefect_worker_core::job_config::Environment;
use prefect_worker_core::metrics::Metrics;
use prefect_worker_core::runner::{Runner, RunnerOptions, health};
use prefect_worker_kubernetes::clients::ClientCache;
use prefect_worker_kubernetes::{KubernetesSettings, KubernetesWorker, KubernetesWorkerOptions};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const T: Duration = Duration::from_secs(180);
/// Distinctive credentials: the server ignores them (no auth configured); the worker
/// sends them on every request. They must appear nowhere in the exposition.
const API_KEY: &str = "pnu_MetricsTestKey4X8v2Q";
const AUTH_STRING: &str = "metrics-user:S3cret-Metrics-Pass";

/// A flow run's container that does what the engine does for a flow that succeeds:
/// Running, then Completed, through the API; exit 0.
const STAND_IN_ENGINE: &str = r#"python3 -c 'import json, os, urllib.request as u
api, run = os.environ["PREFECT_API_URL"], os.environ["PREFECT__FLOW_RUN_ID"]
for t, n in (("RUNNING", "Running"), ("COMPLETED", "Completed")):
    body = json.dumps({"state": {"type": t, "name": n}, "force": True}).encode()
    r = u.Request(f"{api}/flow_runs/{run}/set_state", data=body, method="POST", headers={"content-type": "application/json"})
    u.urlopen(r).read()
print("stand-in engine: completed")'"#;

const OPENMETRICS_ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The worker in-process with metrics on and its web server on a free port.
struct MeteredWorker {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    url: String,
}

impl MeteredWorker {
    async fn start(api_url: &str, sim: &kubesim::SimHandle, pool: &str) -> Result<Self> {
        let name = format!("metrics-{}", &Uuid::new_v4().simple().to_string()[..8]);
        let metrics = Metrics::new();
        let worker = KubernetesWorker::new(
            KubernetesWorkerOptions::new(&name)
                .with_settings(KubernetesSettings::default())
                .with_clients(ClientCache::with_default_config(kube_config(sim).await?))
                .with_output(Arc::new(|_, _| {}))
                .with_metrics(&metrics),
        );
        let mut env = Environment::new();
        env.insert("PREFECT_API_URL".into(), api_url.to_owned());
        let mut options = RunnerOptions::new(pool, &name)
            .with_intervals(e2e::QUERY, e2e::HEARTBEAT, e2e::CANCEL_POLL)
            .with_environment(env)
            .with_metrics(&metrics);
        options.log_batch_interval = Duration::from_millis(200);
        let client = PrefectClient::new(
            ClientOptions::new(api_url)
                .with_api_key(API_KEY)
                .with_auth_string(AUTH_STRING),
        )?;
        let runner = Runner::new(worker, client, options);
        let stop = CancellationToken::new();
        let s = stop.clone();
        let (addr, _server) = health::serve_router(
            "127.0.0.1:0".parse()?,
            health::router_with(Some(runner.health()), Some(metrics)),
            async move { s.cancelled().await },
        )
        .await?;
        let s = stop.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = runner.run(s).await {
                panic!("the runner stopped: {e}");
            }
        });
        Ok(Self {
            stop,
            task,
            url: format!("http://{addr}/metrics"),
        })
    }

    /// One scrape: the raw text in `format`.
    async fn scrape_text(&self, format: Format) -> Result<String> {
        let mut req = reqwest::Client::new().get(&self.url);
        if format == Format::OpenMetrics {
            req = req.header("accept", OPENMETRICS_ACCEPT);
        }
        let resp = req.send().await?.error_for_status()?;
        let content_type = resp.headers()["content-type"].to_str()?.to_owned();
        let expected = match format {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0",
            Format::PrometheusText => "text/plain; version=0.0.4",
        };
        anyhow::ensure!(content_type.starts_with(expected), "{content_type}");
        Ok(resp.text().await?)
    }

    async fn scrape(&self) -> Result<Exposition> {
        Exposition::parse(
            &self.scrape_text(Format::OpenMetrics).await?,
            Format::OpenMetrics,
        )
    }

    async fn stop(self) -> Result<()> {
        self.stop.cancel();
        self.task.await?;
        Ok(())
    }
}

async fn run_now(api: &PrefectApi, deployment: Uuid, job_variables: Value) -> Result<Uuid> {
    let spec = FlowRunSpec {
        scheduled_time: Some(chrono::Utc::now()),
        job_variables: Some(job_variables),
        ..FlowRunSpec::default()
    };
    id_of(
        &api.create_flow_run_from_deployment(deployment, &spec)
            .await?,
    )
}

/// Metric names a Grafana dashboard's queries use: identifiers that start with one of
/// our prefixes.
fn names_in_expr(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            if word.starts_with("prefect_worker_") || word.starts_with("process_") {
                out.insert(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    out
}

fn exprs(dashboard: &Value, out: &mut Vec<String>) {
    match dashboard {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "expr"
                    && let Some(e) = v.as_str()
                {
                    out.push(e.to_owned());
                }
                exprs(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_burst_of_mixed_outcomes_without_ids_or_secrets() -> Result<()> {
    let started = chrono::Utc::now();
    let server = PrefectServer::start(Backend::Sqlite)?;
    let api = server.api();
    let sim = start_cluster().await?;
    let pool = pool_name("metrics");
    let w = MeteredWorker::start(server.api_url(), &sim, &pool).await?;
    until("the worker to create its pool", T, || async {
        Ok(api
            .read_work_pool(&pool)
            .await
            .is_ok_and(|p| p["base_job_template"].get("job_configuration").is_some()))
    })
    .await?;
    let dep = flow_deployment(&api, &pool, "hello.py:hello", json!({})).await?;

    // 1. Two runs that sleep until cancelled: wait until the worker has seen their pods
    //    run (start latency observed) and streams their logs.
    let sleepers = [
        run_now(&api, dep, json!({"image": "sim/sleep:600"})).await?,
        run_now(&api, dep, json!({"image": "sim/sleep:600"})).await?,
    ];
    until("both sleepers running and streamed", T, || async {
        let m = w.scrape().await?;
        Ok(m.get(
            "prefect_worker_kubernetes_pod_start_duration_seconds_count",
            &[],
        ) == 2.0
            && m.get("prefect_worker_kubernetes_log_streams_open", &[]) == 2.0)
    })
    .await?;
    for id in sleepers {
        api.set_flow_run_state(id, "CANCELLING", None, true).await?;
    }

    // 2. The burst: flows that complete, containers that exit 3, images that cannot be
    //    pulled. The completing "flow" is a stand-in engine (the standard library only,
    //    so no Prefect import costs seconds of CPU): it reports Running and Completed to
    //    the server, as the engine does, and exits 0.
    let mut burst = Vec::new();
    for _ in 0..2 {
        burst.push(run_now(&api, dep, json!({"command": STAND_IN_ENGINE})).await?);
    }
    for _ in 0..3 {
        burst.push(run_now(&api, dep, json!({"image": "sim/exit:3"})).await?);
    }
    for _ in 0..2 {
        burst.push(
            run_now(
                &api,
                dep,
                json!({"image": "sim/pull-error", "pod_watch_timeout_seconds": 2}),
            )
            .await?,
        );
    }
    let all: Vec<Uuid> = sleepers.iter().copied().chain(burst).collect();
    let mut runs = BTreeMap::new();
    for id in &all {
        runs.insert(*id, api.wait_for_flow_run_final(*id, T).await?);
    }
    until("the worker to be done with every run", T, || async {
        let m = w.scrape().await?;
        Ok(m.get("prefect_worker_flow_runs_in_flight", &[]) == 0.0
            && m.get("prefect_worker_flow_runs_finished_total", &[]) == all.len() as f64
            && m.get("prefect_worker_kubernetes_log_streams_open", &[]) == 0.0)
    })
    .await?;

    // 3. What happened, from the server's states.
    let count = |f: &dyn Fn(&Value) -> bool| runs.values().filter(|r| f(r)).count() as f64;
    let state = |r: &Value| r["state"]["type"].as_str().unwrap_or_default().to_owned();
    let message = |r: &Value| {
        r["state"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let completed = count(&|r| state(r) == "COMPLETED");
    let cancelled = count(&|r| state(r) == "CANCELLED");
    let crashed = count(&|r| state(r) == "CRASHED");
    let exit_code_crashes = count(&|r| {
        state(r) == "CRASHED"
            && message(r).starts_with("Flow run infrastructure exited with non-zero status code")
    });
    let with_pid = count(&|r| r["infrastructure_pid"].is_string());
    assert_eq!(
        (completed, cancelled, crashed, exit_code_crashes),
        (2.0, 2.0, 5.0, 3.0),
        "the scenario itself: {runs:#?}"
    );

    let text = w.scrape_text(Format::OpenMetrics).await?;
    let m = Exposition::parse(&text, Format::OpenMetrics)?;
    let plain_text = w.scrape_text(Format::PrometheusText).await?;
    let plain = Exposition::parse(&plain_text, Format::PrometheusText)?;
    for (name, labels) in [
        ("prefect_worker_flow_runs_claimed_total", vec![]),
        (
            "prefect_worker_flow_runs_finished_total",
            vec![("outcome", "crashed")],
        ),
        ("prefect_worker_submission_duration_seconds_count", vec![]),
    ] {
        assert_eq!(
            m.value(name, &labels),
            plain.value(name, &labels),
            "{name}: both formats say the same"
        );
    }

    // Counters equal what happened.
    let finished = |outcome: &str| {
        m.get(
            "prefect_worker_flow_runs_finished_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(
        m.get("prefect_worker_flow_runs_claimed_total", &[]),
        all.len() as f64
    );
    assert_eq!(
        m.get("prefect_worker_flow_runs_submitted_total", &[]),
        with_pid
    );
    assert_eq!(finished("completed"), completed);
    assert_eq!(finished("cancelled"), cancelled);
    assert_eq!(finished("crashed"), crashed);
    assert_eq!(
        finished("failed") + finished("claim_lost") + finished("deleted") + finished("rescheduled"),
        0.0
    );
    let crash = |reason: &str| {
        m.get(
            "prefect_worker_flow_runs_crashed_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(crash("exit_code"), exit_code_crashes);
    assert_eq!(crash("no_exit_code"), crashed - exit_code_crashes);
    assert_eq!(
        crash("submission_failed") + crash("infrastructure_error"),
        0.0
    );
    assert!(
        m.get(
            "prefect_worker_kubernetes_diagnoses_total",
            &[("diagnosis", "ImagePullError")]
        ) >= crashed - exit_code_crashes,
        "each pull error was diagnosed"
    );

    // Histograms count the right runs: every submission, and every pod that ran (all
    // but the ones whose image could not be pulled).
    assert_eq!(
        m.get("prefect_worker_submission_duration_seconds_count", &[]),
        with_pid
    );
    assert_eq!(
        m.get(
            "prefect_worker_submission_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        with_pid
    );
    assert_eq!(
        m.get(
            "prefect_worker_kubernetes_pod_start_duration_seconds_count",
            &[]
        ),
        completed + cancelled + exit_code_crashes
    );

    // Kubernetes requests: the Job creations are exactly kubesim's; watches and relists
    // by namespace.
    let creates_seen_by_kubesim = sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/jobs") && r.status == 201)
        .count() as f64;
    assert_eq!(
        m.get(
            "prefect_worker_kubernetes_api_requests_total",
            &[("resource", "jobs"), ("verb", "create"), ("status", "201")]
        ),
        creates_seen_by_kubesim
    );
    assert_eq!(creates_seen_by_kubesim, with_pid);
    for resource in ["jobs", "pods"] {
        assert!(
            m.get(
                "prefect_worker_kubernetes_api_requests_total",
                &[("resource", resource), ("verb", "watch")]
            ) >= 1.0
        );
        assert!(
            m.get(
                "prefect_worker_kubernetes_watch_relists_total",
                &[("namespace", "default"), ("resource", resource)]
            ) >= 1.0
        );
        assert!(
            m.value(
                "prefect_worker_kubernetes_watch_restarts_total",
                &[("namespace", "default"), ("resource", resource)]
            )
            .is_some()
        );
    }
    assert!(
        m.get(
            "prefect_worker_kubernetes_api_requests_total",
            &[("resource", "pods/log"), ("verb", "get")]
        ) >= 2.0
    );
    assert_eq!(
        m.get("prefect_worker_kubernetes_watched_namespaces", &[]),
        1.0
    );

    // Prefect API requests by route template, with latency.
    let set_state = m.get(
        "prefect_worker_api_requests_total",
        &[
            ("endpoint", "/flow_runs/{id}/set_state"),
            ("method", "POST"),
        ],
    );
    assert!(
        set_state >= 2.0 * all.len() as f64,
        "Pending and Submitting for each run: {set_state}"
    );
    assert!(
        m.get(
            "prefect_worker_api_requests_total",
            &[
                ("endpoint", "/work_pools/{name}/get_scheduled_flow_runs"),
                ("status", "200")
            ]
        ) >= 1.0
    );
    // One latency observation per request. The worker keeps polling while the scrape is
    // encoded, and the durations are encoded after the counts: never fewer.
    assert!(
        m.get("prefect_worker_api_request_duration_seconds_count", &[])
            >= m.get("prefect_worker_api_requests_total", &[]),
        "one latency observation per request"
    );

    // Events, the last poll, the process.
    assert!(m.get("prefect_worker_events_emitted_total", &[]) >= 2.0 * with_pid);
    assert_eq!(m.get("prefect_worker_events_dropped_total", &[]), 0.0);
    let last_poll = m.get("prefect_worker_last_poll_timestamp_seconds", &[]);
    assert!(
        last_poll >= started.timestamp() as f64
            && last_poll <= chrono::Utc::now().timestamp() as f64 + 1.0,
        "{last_poll}"
    );
    assert!(m.get("process_resident_memory_bytes", &[]) > 1e6);
    assert!(m.get("process_cpu_seconds_total", &[]) > 0.0);
    assert!(m.get("process_open_fds", &[]) > 0.0);

    // Bounded cardinality: no id, name or credential anywhere; label values from fixed
    // sets.
    let b64 = base64::engine::general_purpose::STANDARD.encode(AUTH_STRING);
    let mut forbidden: Vec<String> = vec![
        API_KEY.into(),
        AUTH_STRING.into(),
        b64,
        "S3cret-Metrics-Pass".into(),
        pool.clone(),
        dep.to_string(),
    ];
    for (id, run) in &runs {
        forbidden.push(id.to_string());
        forbidden.push(run["name"].as_str().unwrap_or_default().to_owned());
        let pid = run["infrastructure_pid"].as_str().unwrap_or("none:none");
        forbidden.push(pid.split(':').nth(1).unwrap_or(pid).to_owned());
    }
    for exposition in [&text, &plain_text] {
        for f in &forbidden {
            assert!(
                !f.is_empty() && !exposition.contains(f.as_str()),
                "{f:?} is in the exposition"
            );
        }
    }
    let allowed_labels: BTreeSet<&str> = [
        "outcome",
        "reason",
        "method",
        "endpoint",
        "status",
        "resource",
        "verb",
        "namespace",
        "diagnosis",
        "le",
    ]
    .into();
    let mut series = 0;
    for s in m.samples() {
        series += 1;
        for (k, v) in &s.labels {
            assert!(
                allowed_labels.contains(k.as_str()),
                "unexpected label {k} on {}",
                s.name
            );
            assert!(
                Uuid::parse_str(v).is_err(),
                "{}: {k}={v} looks like an id",
                s.name
            );
            assert!(v.len() < 80, "{}: {k}={v}", s.name);
            if k == "endpoint" {
                assert!(
                    v.starts_with('/')
                        && v.split('/').all(|seg| seg.is_empty()
                            || seg == "{id}"
                            || seg == "{name}"
                            || seg
                                .chars()
                                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '-')),
                    "endpoint {v} is not a route template"
                );
            }
        }
    }
    assert!(series < 1000, "{series} series: cardinality is not bounded");

    // The Grafana dashboard is valid JSON and queries only metrics that exist.
    let path = repo_root().join("deploy/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| path.display().to_string())?,
    )?;
    assert!(dashboard["title"].is_string() && dashboard["panels"].is_array());
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 10, "{} queries", queries.len());
    let mut used = BTreeSet::new();
    for q in &queries {
        let names = names_in_expr(q);
        assert!(!names.is_empty(), "a query without a metric of ours: {q}");
        used.extend(names);
    }
    for name in &used {
        assert!(
            m.has(name),
            "the dashboard queries {name}, which the worker does not expose"
        );
    }

    // The operations guide documents every family.
    let guide = std::fs::read_to_string(repo_root().join("docs/operations.md"))?;
    for f in &m.families {
        assert!(
            guide.contains(&f.name),
            "docs/operations.md does not document {}",
            f.name
        );
    }

    w.stop().await?;
    sim.shutdown().await;
    Ok(())
}
