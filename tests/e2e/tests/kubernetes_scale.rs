//! 200 concurrent runs: the shared tracker still holds exactly two watches (Jobs, Pods)
//! for the namespace.

use std::time::Duration;

use anyhow::Result;
use e2e::k8s::{InProcessWorker, flow_deployment, pool_name, start_cluster};
use e2e::until;
use prefect_test_harness::{Backend, FlowRunSpec, PrefectServer, id_of};
use prefect_worker_kubernetes::KubernetesSettings;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_runs_share_two_watches() -> Result<()> {
    let server = PrefectServer::start(Backend::Postgres)?;
    let api = server.api();
    let sim = start_cluster().await?;
    let pool = pool_name("scale");
    let w = InProcessWorker::start(server.api_url(), &sim, &pool, KubernetesSettings::default())
        .await?;
    let dep = flow_deployment(
        &api,
        &pool,
        "hello.py:hello",
        json!({"image": "sim/sleep:600"}),
    )
    .await?;
    let mut ids = Vec::new();
    for _ in 0..200 {
        let spec = FlowRunSpec {
            scheduled_time: Some(chrono::Utc::now()),
            ..FlowRunSpec::default()
        };
        ids.push(id_of(
            &api.create_flow_run_from_deployment(dep, &spec).await?,
        )?);
    }
    until(
        "200 Jobs with running pods",
        Duration::from_secs(300),
        || async {
            let pods: Vec<k8s_openapi::api::core::v1::Pod> = sim.list(Some("default"));
            let running = pods
                .iter()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .count();
            Ok(running == 200)
        },
    )
    .await?;
    for id in &ids {
        let run = api.read_flow_run(*id).await?;
        assert!(run["infrastructure_pid"].is_string(), "{run}");
    }
    let counters = sim.watch_counters();
    assert_eq!(counters.open("jobs", Some("default")), 1, "{counters:?}");
    assert_eq!(counters.open("pods", Some("default")), 1, "{counters:?}");
    assert_eq!(
        counters.open("jobs", None) + counters.open("pods", None),
        0,
        "no cluster-wide watches: {counters:?}"
    );
    w.stop().await?;
    sim.shutdown().await;
    Ok(())
}
