//! Two runners on one pool (PostgreSQL-backed server): every run is submitted exactly once.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use e2e::recording::RecordingWorker;
use e2e::{CANCEL_POLL, HEARTBEAT, QUERY, Scenario, recording_template};
use prefect_test_harness::{Backend, FlowRunSpec, PrefectServer, id_of};
use prefect_worker_core::client::{ClientOptions, PrefectClient};
use prefect_worker_core::runner::{Runner, RunnerOptions};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_fifty_runs_each_submitted_exactly_once() -> Result<()> {
    let server = PrefectServer::start(Backend::Postgres)?;
    let api = server.api();
    let s = Scenario::create(&api, "race", "recording", &recording_template(), "complete").await?;
    let mut ids = Vec::new();
    for _ in 0..50 {
        let run = api
            .create_flow_run_from_deployment(
                s.deployment_id,
                &FlowRunSpec {
                    scheduled_time: Some(Utc::now()),
                    ..FlowRunSpec::default()
                },
            )
            .await?;
        ids.push(id_of(&run)?);
    }
    let stop = CancellationToken::new();
    let mut recorders = Vec::new();
    let mut tasks = Vec::new();
    for n in 0..2 {
        let worker = RecordingWorker::new(recording_template());
        recorders.push(worker.recorder.clone());
        let client = PrefectClient::new(ClientOptions::new(server.api_url()))?;
        let mut o = RunnerOptions::new(&s.pool, format!("racer-{n}")).with_intervals(
            QUERY,
            HEARTBEAT,
            CANCEL_POLL,
        );
        o.log_batch_interval = Duration::from_millis(500);
        tasks.push(tokio::spawn(
            Runner::new(worker, client, o).run(stop.clone()),
        ));
    }
    for id in &ids {
        if let Err(e) = api
            .wait_for_flow_run_state(*id, &["COMPLETED"], Duration::from_secs(180))
            .await
        {
            let history = history(&api, *id).await;
            panic!("run {id} did not complete: {e:#}; states: {history:#?}");
        }
    }
    stop.cancel();
    for t in tasks {
        t.await??;
    }
    let mut counts: HashMap<uuid::Uuid, usize> = HashMap::new();
    for r in &recorders {
        for id in &r.record.lock().unwrap().runs {
            *counts.entry(*id).or_default() += 1;
        }
    }
    for id in &ids {
        if counts.get(id) != Some(&1) {
            let history = history(&api, *id).await;
            panic!(
                "run {id} submitted {:?} times; states: {history:#?}",
                counts.get(id)
            );
        }
    }
    let per_worker: Vec<usize> = recorders
        .iter()
        .map(|r| r.record.lock().unwrap().runs.len())
        .collect();
    assert_eq!(per_worker.iter().sum::<usize>(), 50, "{per_worker:?}");
    Ok(())
}

/// A run's state history, for failure messages.
async fn history(api: &prefect_test_harness::PrefectApi, id: uuid::Uuid) -> Vec<String> {
    let states = api.read_flow_run_states(id).await.unwrap_or_default();
    states
        .iter()
        .map(|s| {
            format!(
                "{} {} {} {}",
                s["timestamp"], s["type"], s["name"], s["message"]
            )
        })
        .collect()
}
