//! The shared SQLite server and every API helper, end to end.

use std::time::Duration;

use chrono::Utc;
use prefect_test_harness::{
    Backend, CollisionStrategy, DeploymentSpec, FlowRunSpec, PrefectServer, id_of,
    kubernetes_default_base_job_template, state_type,
};
use serde_json::json;
use uuid::Uuid;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

#[tokio::test]
async fn pool_flow_deployment_run_round_trip() -> anyhow::Result<()> {
    let server = PrefectServer::shared(Backend::Sqlite);
    let api = server.api();
    assert!(api.healthy().await);
    assert!(server.api_url().starts_with("http://127.0.0.1:"));

    let pool = unique("pool");
    let template = kubernetes_default_base_job_template()?;
    assert!(
        template
            .pointer("/job_configuration/job_manifest")
            .is_some()
    );
    api.create_work_pool(&pool, "kubernetes", Some(&template))
        .await?;
    let read = api.read_work_pool(&pool).await?;
    assert_eq!(read["type"], "kubernetes");
    assert_eq!(read["base_job_template"], template);

    let flow = api.create_flow("hello").await?;
    assert_eq!(
        api.create_flow("hello").await?,
        flow,
        "create_flow is an upsert"
    );
    let dep = api
        .create_deployment(&DeploymentSpec {
            work_pool_name: Some(pool.clone()),
            job_variables: Some(json!({"image": "example/flow:1"})),
            concurrency_limit: Some(2),
            collision_strategy: Some(CollisionStrategy::CancelNew),
            entrypoint: Some("flows/hello.py:hello".into()),
            path: Some("/opt/prefect".into()),
            pull_steps: Some(json!([{"prefect.deployments.steps.set_working_directory": {"directory": "/opt/prefect"}}])),
            parameters: Some(json!({"n": 1})),
            ..DeploymentSpec::new(flow, unique("dep"))
        })
        .await?;
    let d = api.read_deployment(dep).await?;
    assert_eq!(d["work_pool_name"], pool.as_str());
    assert_eq!(d["work_queue_name"], "default");
    assert_eq!(d["job_variables"]["image"], "example/flow:1");
    // Prefect 3.9.1 answers `concurrency_limit: null` and keeps the limit in a
    // global concurrency limit named `deployment:<id>`.
    assert_eq!(d["global_concurrency_limit"]["limit"], 2);
    assert_eq!(d["concurrency_options"]["collision_strategy"], "CANCEL_NEW");
    assert_eq!(d["entrypoint"], "flows/hello.py:hello");

    let at = Utc::now() + chrono::Duration::seconds(3600);
    let run = api
        .create_flow_run_from_deployment(
            dep,
            &FlowRunSpec {
                scheduled_time: Some(at),
                job_variables: Some(json!({"env": {"A": "1"}})),
                ..FlowRunSpec::default()
            },
        )
        .await?;
    let id = id_of(&run)?;
    let read = api.read_flow_run(id).await?;
    assert_eq!(state_type(&read), Some("SCHEDULED"));
    assert_eq!(read["deployment_id"], dep.to_string());
    assert_eq!(read["job_variables"]["env"]["A"], "1");
    assert_eq!(read["work_queue_name"], "default");
    let scheduled: chrono::DateTime<Utc> = read["next_scheduled_start_time"]
        .as_str()
        .unwrap_or_default()
        .parse()?;
    assert!((scheduled - at).num_seconds().abs() < 1);

    // Force state changes and see them in the history.
    let result = api.set_flow_run_state(id, "RUNNING", None, true).await?;
    assert_eq!(result["status"], "ACCEPT");
    let result = api.set_flow_run_state(id, "CANCELLING", None, true).await?;
    assert_eq!(result["status"], "ACCEPT");
    let run = api
        .wait_for_flow_run_state(id, &["CANCELLING"], Duration::from_secs(10))
        .await?;
    assert_eq!(run["state"]["name"], "Cancelling");
    let types = api.read_flow_run_state_types(id).await?;
    assert_eq!(types, ["SCHEDULED", "RUNNING", "CANCELLING"]);

    // Prefect 3.9.1: CANCELLING a still-Scheduled deployment run is rejected
    // and the run goes straight to CANCELLED ("no infrastructure to terminate").
    let other = id_of(
        &api.create_flow_run_from_deployment(dep, &FlowRunSpec::default())
            .await?,
    )?;
    let result = api
        .set_flow_run_state(other, "CANCELLING", None, true)
        .await?;
    assert_eq!(result["status"], "REJECT");
    assert_eq!(result["state"]["type"], "CANCELLED");
    assert_eq!(
        state_type(&api.read_flow_run(other).await?),
        Some("CANCELLED")
    );
    assert!(api.read_flow_run_logs(id).await?.is_empty());

    // A wait that cannot succeed fails at its deadline, naming what it saw.
    let err = api
        .wait_for_flow_run_state(id, &["COMPLETED"], Duration::from_millis(500))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("CANCELLING"), "{err}");

    api.delete_deployment(dep).await?;
    let (status, _) = api
        .request(reqwest::Method::GET, &format!("/deployments/{dep}"), None)
        .await?;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn ad_hoc_run_logs_variables_and_blocks() -> anyhow::Result<()> {
    let server = PrefectServer::shared(Backend::Sqlite);
    let api = server.api();

    let flow = api.create_flow("ad-hoc").await?;
    let run = api
        .create_flow_run(
            flow,
            &FlowRunSpec {
                scheduled_time: Some(Utc::now()),
                ..FlowRunSpec::default()
            },
        )
        .await?;
    let id = id_of(&run)?;
    assert_eq!(run["deployment_id"], serde_json::Value::Null);

    let now = Utc::now().to_rfc3339();
    let logs: Vec<_> = (0..250)
        .map(|i| json!({"name": "test", "level": 20, "message": format!("line {i}"), "timestamp": now, "flow_run_id": id}))
        .collect();
    api.post("/logs/", &json!(logs)).await?;
    let messages = api.read_flow_run_log_messages(id).await?;
    assert_eq!(messages.len(), 250, "all pages are read");

    let var = unique("var").replace('-', "_");
    let created = api.create_variable(&var, &json!({"k": [1, 2]})).await?;
    assert_eq!(created["value"]["k"][1], 2);

    let block = api
        .create_block_document(
            "kubernetes-cluster-config",
            &unique("cluster"),
            &json!({"config": {"apiVersion": "v1", "kind": "Config", "clusters": [], "contexts": [], "users": []}, "context_name": "sim"}),
        )
        .await?;
    let read = api.read_block_document(id_of(&block)?).await?;
    assert_eq!(read["data"]["context_name"], "sim");
    assert_eq!(read["block_type"]["slug"], "kubernetes-cluster-config");
    Ok(())
}

/// SQLite answers 503 to concurrent writers (SQLITE_BUSY); the helper's
/// retries, like Prefect's client's, absorb that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_succeed_with_retries() -> anyhow::Result<()> {
    let api = PrefectServer::shared(Backend::Sqlite).api();
    let flow = api.create_flow("busy").await?;
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move { api.create_flow_run(flow, &FlowRunSpec::default()).await })
        })
        .collect();
    for t in tasks {
        id_of(&t.await??)?;
    }
    Ok(())
}
