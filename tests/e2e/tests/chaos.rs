//! The chaos suite (issue 11), small versions: the real Prefect server on PostgreSQL,
//! kubesim, the `prefect-worker` binary, faults injected. `scripts/chaos.sh` runs the same
//! scenarios at full size (environment variables below) and writes their results.
//!
//! Each scenario asserts from the server's states and kubesim's objects: every run reached
//! its expected final state, got exactly one Job, and never completed after a Crashed
//! state; every worker process still runs and its `/health` answers 200.

// Fixtures: a server that cannot start is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Result;
use e2e::chaos::{Outcome, Verdict, WorkerProcess, WorkerSpec, Workload, env_usize};
use e2e::k8s::{pool_name, start_cluster};
use e2e::until;
use prefect_test_harness::{Backend, PrefectServer};

fn server() -> &'static PrefectServer {
    static SERVER: OnceLock<PrefectServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        PrefectServer::start(Backend::Postgres).expect("start the Prefect server (PostgreSQL)")
    })
}

/// How long a scenario may take to settle: generous, since the machine may be busy; a
/// clean run takes a fraction of it.
fn settle_timeout(runs: usize) -> Duration {
    Duration::from_secs(240 + 2 * runs as u64)
}

/// Scenario 1, replicas: three workers with one stable name (as the Helm chart's
/// replicas) on one pool, a burst of mixed outcomes, and two of them SIGKILLed mid-burst
/// and restarted with the same name.
/// `CHAOS_REPLICA_RUNS` (36), `CHAOS_REPLICA_KILLS` (2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_kills_run_every_run_once() -> Result<()> {
    let runs = env_usize("CHAOS_REPLICA_RUNS", 36);
    let kills = env_usize("CHAOS_REPLICA_KILLS", 2).min(3);
    let t = std::time::Instant::now();
    let api = server().api();
    eprintln!("[replicas] server up after {:?}", t.elapsed());
    let sim = start_cluster().await?;
    let dir = e2e::chaos::log_dir("replicas")?;
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, "kubesim")?;
    let pool = pool_name("replicas");
    let mut load = Workload::create(&api, &pool, &Outcome::MIX).await?;
    // The burst is due before the replicas start: they all see it at once.
    load.submit(&api, runs).await?;
    eprintln!("[replicas] {runs} runs created after {:?}", t.elapsed());
    let mut workers = Vec::new();
    for i in 0..3 {
        let mut spec = WorkerSpec::new(
            server().api_url(),
            &kubeconfig,
            &pool,
            "replica",
            dir.path(),
        );
        spec.log = dir.path().join(format!("replica-{i}.log"));
        workers.push(WorkerProcess::spawn(spec)?);
    }
    // Mid-burst: once a third of the runs are claimed, kill some replicas for 2 s.
    if kills > 0 {
        until(
            "a third of the runs claimed",
            settle_timeout(runs),
            || async {
                let claimed = load
                    .read(&api)
                    .await
                    .values()
                    .filter(|r| r["state"]["type"] != "SCHEDULED")
                    .count();
                Ok(claimed * 3 >= runs)
            },
        )
        .await?;
        for w in workers.iter_mut().take(kills) {
            w.kill()?;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        for w in workers.iter_mut().take(kills) {
            w.start_again()?;
        }
    }
    eprintln!("[replicas] kills done after {:?}", t.elapsed());
    let verdict = load.settle(&api, &[&sim], settle_timeout(runs)).await?;
    eprintln!("[replicas] settled after {:?}", t.elapsed());
    let restarts = workers.iter().map(|w| w.restarts).sum();
    verdict.report(
        "replicas",
        &format!("3 replicas, one name; {kills} SIGKILLed mid-burst, restarted after 2 s"),
        restarts,
    );
    finish(verdict, &mut workers, "replicas").await?;
    sim.shutdown().await;
    Ok(())
}

/// The checks every scenario ends with: the verdict is clean, every worker process is
/// alive, `/health` answers 200, and nothing panicked.
async fn finish(verdict: Verdict, workers: &mut [WorkerProcess], scenario: &str) -> Result<()> {
    let logs = || {
        workers
            .iter()
            .map(|w| format!("--- {} ---\n{}", w.spec.name, w.log_tail(30)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    if let Err(e) = verdict.assert_clean(scenario) {
        anyhow::bail!(
            "{e:#}\n{}\n--- Prefect server ---\n{}",
            logs(),
            server().log_tail(40)
        );
    }
    for w in workers.iter_mut() {
        w.wait_healthy(Duration::from_secs(60)).await?;
        let panics = w.panics();
        anyhow::ensure!(panics.is_empty(), "{scenario}: worker panicked: {panics:?}");
    }
    Ok(())
}
