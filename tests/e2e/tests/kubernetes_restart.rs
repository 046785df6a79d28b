//! A worker killed with SIGKILL mid-run and restarted adopts its Job: the run still ends
//! Completed, and nothing is submitted or reported twice.

use std::time::Duration;

use anyhow::Result;
use e2e::k8s::{flow_deployment, pool_name, spawn_worker_binary, start_cluster};
use e2e::until;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use prefect_test_harness::{Backend, FlowRunSpec, PrefectServer, id_of};
use serde_json::json;

/// Bounds a wait that should succeed (generous: it only bounds a failure).
const T: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_and_restarted_still_completes_the_run_once() -> Result<()> {
    let server = PrefectServer::start(Backend::Sqlite)?;
    let api = server.api();
    let sim = start_cluster().await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, "kubesim")?;
    let pool = pool_name("restart");
    let mut first = spawn_worker_binary(
        server.api_url(),
        &kubeconfig,
        &pool,
        "restart-worker",
        &dir.path().join("first.log"),
    )?;
    until("the pool", T, || async {
        Ok(api.read_work_pool(&pool).await.is_ok())
    })
    .await?;
    // The flow runs until the test creates `release`: after the restarted worker has
    // adopted its Job, however long that takes on a busy machine.
    let release = dir.path().join("release");
    let dep = flow_deployment(&api, &pool, "hello.py:waits_for", json!({})).await?;
    let id = id_of(
        &api.create_flow_run_from_deployment(
            dep,
            &FlowRunSpec {
                scheduled_time: Some(chrono::Utc::now()),
                parameters: Some(json!({"release_file": release})),
                ..FlowRunSpec::default()
            },
        )
        .await?,
    )?;
    api.wait_for_flow_run_state(id, &["RUNNING"], T).await?;
    first.kill()?; // SIGKILL: no teardown, no goodbye
    first.wait()?;
    let mut second = spawn_worker_binary(
        server.api_url(),
        &kubeconfig,
        &pool,
        "restart-worker",
        &dir.path().join("second.log"),
    )?;
    let second_log = dir.path().join("second.log");
    until("the restarted worker to adopt the Job", T, || async {
        Ok(std::fs::read_to_string(&second_log)
            .unwrap_or_default()
            .contains("resuming tracking of flow run"))
    })
    .await?;
    std::fs::write(&release, "")?;
    let run = api.wait_for_flow_run_final(id, T).await?;
    let log2 = std::fs::read_to_string(&second_log).unwrap_or_default();
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}\n{log2}");
    let jobs: Vec<Job> = sim.list(Some("default"));
    assert_eq!(jobs.len(), 1, "one Job, never re-submitted");
    let pods: Vec<Pod> = sim.list(Some("default"));
    assert_eq!(pods.len(), 1);
    let states = api.read_flow_run_states(id).await?;
    let names: Vec<String> = states
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        names.iter().filter(|n| *n == "Pending").count(),
        1,
        "claimed once: {names:?}"
    );
    assert!(!names.iter().any(|n| n == "Crashed"), "{names:?}");
    let _ = second.kill();
    let _ = second.wait();
    sim.shutdown().await;
    Ok(())
}

/// Adoption across clusters (issue 7, item 8): a run whose Job went to a second cluster
/// through its `cluster_config` is adopted after a SIGKILL too. The flow only exits 3 and
/// reports nothing, so the run ends Crashed only if the restarted worker watches that Job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_a_per_run_cluster_is_adopted_after_a_restart() -> Result<()> {
    use e2e::chaos::{Outcome, WorkerProcess, WorkerSpec};
    let server = PrefectServer::start(Backend::Sqlite)?;
    let api = server.api();
    let default_cluster = start_cluster().await?;
    let other_cluster = start_cluster().await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    default_cluster.write_kubeconfig(&kubeconfig, "kubesim")?;
    let pool = pool_name("other-cluster");
    let mut worker = WorkerProcess::spawn(WorkerSpec::new(
        server.api_url(),
        &kubeconfig,
        &pool,
        "cross-cluster",
        dir.path(),
    ))?;
    until("the pool", T, || async {
        Ok(api.read_work_pool(&pool).await.is_ok())
    })
    .await?;
    let other: serde_json::Value = serde_yaml::from_str(&other_cluster.kubeconfig_yaml("second")?)?;
    let mut vars = Outcome::SlowExit3.job_variables();
    vars["cluster_config"] = json!({"config": other, "context_name": "second"});
    let flow = api.create_flow("cross-cluster").await?;
    let dep = api
        .create_deployment(&prefect_test_harness::DeploymentSpec {
            work_pool_name: Some(pool.clone()),
            job_variables: Some(vars),
            ..prefect_test_harness::DeploymentSpec::new(flow, "on-the-other-cluster")
        })
        .await?;
    let id = id_of(
        &api.create_flow_run_from_deployment(
            dep,
            &FlowRunSpec {
                scheduled_time: Some(chrono::Utc::now()),
                ..FlowRunSpec::default()
            },
        )
        .await?,
    )?;
    api.wait_for_flow_run_state(id, &["RUNNING"], T).await?;
    worker.kill()?;
    worker.start_again()?;
    let run = api.wait_for_flow_run_final(id, T).await?;
    let log = worker.log();
    assert_eq!(run["state"]["type"], "CRASHED", "{run}\n{log}");
    assert!(
        run["state"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("non-zero status code 3"),
        "{run}"
    );
    assert!(log.contains("resuming tracking of flow run"), "{log}");
    let on = |sim: &kubesim::SimHandle| {
        sim.created_jobs()
            .iter()
            .filter(|j| j.labels.get("prefect.io/flow-run-id") == Some(&id.to_string()))
            .count()
    };
    assert_eq!(
        (on(&default_cluster), on(&other_cluster)),
        (0, 1),
        "one Job, on the other cluster"
    );
    drop(worker);
    default_cluster.shutdown().await;
    other_cluster.shutdown().await;
    Ok(())
}
