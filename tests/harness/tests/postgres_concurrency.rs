//! A PostgreSQL-backed server takes concurrent writes (no "database is locked").

use prefect_test_harness::{Backend, DeploymentSpec, FlowRunSpec, PrefectServer, id_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_concurrent_flow_runs() -> anyhow::Result<()> {
    let server = PrefectServer::start(Backend::Postgres)?;
    // No retries: any 503 ("database is locked" on SQLite) fails the test.
    let api = server.api().with_retries(0);
    api.create_work_pool("pg-pool", "kubernetes", None).await?;
    let flow = api.create_flow("concurrent").await?;
    let dep = api
        .create_deployment(&DeploymentSpec {
            work_pool_name: Some("pg-pool".into()),
            ..DeploymentSpec::new(flow, "dep")
        })
        .await?;

    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                let spec = FlowRunSpec {
                    name: Some(format!("run-{i}")),
                    ..FlowRunSpec::default()
                };
                api.create_flow_run_from_deployment(dep, &spec).await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(id_of(&t.await??)?);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30);

    let runs = api
        .filter_flow_runs(&serde_json::json!({"deployments": {"id": {"any_": [dep]}}}))
        .await?;
    assert_eq!(runs.len(), 30);

    // Data survives a restart of the server (same cluster, same port).
    let port = server.port();
    server.restart()?;
    assert_eq!(server.port(), port);
    let api = server.api();
    assert!(api.healthy().await);
    for id in &ids {
        api.read_flow_run(*id).await?;
    }
    server.stop()?;
    Ok(())
}
