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

use anyhow::{Context, Result};
use axum::http::Method;
use e2e::chaos::{Outcome, Verdict, WorkerProcess, WorkerSpec, Workload, env_usize, log_dir};
use e2e::k8s::{pool_name, start_cluster};
use e2e::proxy::{Action, FaultProxy, Rule};
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
    let dir = log_dir("replicas")?;
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

/// Where scenario 4 kills the worker.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Right after its Pending proposal was accepted (before labels: the claim is anonymous).
    AfterPending,
    /// After the Job was created, before `infrastructure_pid` was recorded.
    AfterCreate,
    /// While it waits on the running Job.
    Waiting,
    /// While it cancels: the Job is deleted, Cancelled not yet set.
    Cancelling,
}

/// Scenario 4: the worker SIGKILLed at each step of a submission, restarted with the same
/// name and, separately, with a new one; eight cases at once, each on its own pool with a
/// fault proxy that holds the request right after the step, so the kill lands exactly
/// there. No run is lost, left Pending, or given a second Job.
///
/// A worker restarted under a new name does not watch the old name's Jobs (its watches
/// select its own name), so those cases use runs whose engine reports the final state;
/// the same-name cases use runs that only a watching worker can crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_at_each_step_loses_nothing() -> Result<()> {
    let sim = std::sync::Arc::new(start_cluster().await?);
    let dir = log_dir("kill-steps")?;
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, "kubesim")?;
    let mut cases = Vec::new();
    for step in [
        Step::AfterPending,
        Step::AfterCreate,
        Step::Waiting,
        Step::Cancelling,
    ] {
        for same_name in [true, false] {
            cases.push(kill_case(
                step,
                same_name,
                sim.clone(),
                &kubeconfig,
                dir.path(),
            ));
        }
    }
    let results = futures_join_all(cases).await;
    let mut failures = Vec::new();
    let mut total = Verdict::default();
    let mut restarts = 0;
    for r in results {
        match r {
            Ok((v, n)) => {
                restarts += n;
                merge(&mut total, v);
            }
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    total.report(
        "kill-steps",
        "SIGKILL after Pending / after Job create / while waiting / while cancelling; restart with same and new name",
        restarts,
    );
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n\n"));
    total.assert_clean("kill-steps")?;
    if let Ok(sim) = std::sync::Arc::try_unwrap(sim) {
        sim.shutdown().await;
    }
    Ok(())
}

fn merge(total: &mut Verdict, v: Verdict) {
    total.runs += v.runs;
    total.right += v.right;
    total.duplicates += v.duplicates;
    total.missing_jobs += v.missing_jobs;
    total.stuck += v.stuck;
    total.crashed_then_completed += v.crashed_then_completed;
    total.settle_seconds = total.settle_seconds.max(v.settle_seconds);
    for (k, n) in v.final_states {
        *total.final_states.entry(k).or_default() += n;
    }
    total.problems.extend(v.problems);
}

async fn futures_join_all<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output>
where
    F: Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("case task"));
    }
    out
}

/// One case of scenario 4: its verdict and how many restarts it took.
fn kill_case(
    step: Step,
    same_name: bool,
    sim: std::sync::Arc<kubesim::SimHandle>,
    kubeconfig: &std::path::Path,
    dir: &std::path::Path,
) -> impl std::future::Future<Output = Result<(Verdict, usize)>> + Send + 'static {
    let kubeconfig = kubeconfig.to_owned();
    let dir = dir.to_owned();
    async move {
        let label = format!("{step:?}/{}", if same_name { "same" } else { "new" });
        kill_case_inner(step, same_name, &sim, &kubeconfig, &dir)
            .await
            .with_context(|| label)
    }
}

async fn kill_case_inner(
    step: Step,
    same_name: bool,
    sim: &kubesim::SimHandle,
    kubeconfig: &std::path::Path,
    dir: &std::path::Path,
) -> Result<(Verdict, usize)> {
    const T: Duration = Duration::from_secs(300);
    let api = server().api();
    let outcome = match (step, same_name) {
        (Step::AfterPending, _) => Outcome::Complete,
        (Step::Cancelling, _) => Outcome::Cancel,
        // Only a worker that watches the Job can report this crash.
        (Step::AfterCreate | Step::Waiting, true) => Outcome::SlowExit3,
        (Step::AfterCreate | Step::Waiting, false) => Outcome::SlowComplete,
    };
    let tag = format!("kill-{step:?}-{}", if same_name { "same" } else { "new" }).to_lowercase();
    let pool = pool_name(&tag);
    let mut load = Workload::create(&api, &pool, &[outcome]).await?;
    let proxy = FaultProxy::start(server().api_url()).await?;
    let hold = match step {
        Step::AfterPending => Some(proxy.add(Rule::new(
            Method::GET,
            format!("/flows/{}", load.flow_id),
            Action::Hold,
        ))),
        Step::AfterCreate => Some(
            proxy.add(
                Rule::new(Method::PATCH, "/flow_runs/*", Action::Hold)
                    .body_contains("infrastructure_pid"),
            ),
        ),
        Step::Cancelling => Some(
            proxy.add(
                Rule::new(Method::POST, "/flow_runs/*/set_state", Action::Hold)
                    .body_contains(r#""type":"CANCELLED""#),
            ),
        ),
        Step::Waiting => None,
    };
    let spec = WorkerSpec::new(&proxy.api_url, kubeconfig, &pool, &format!("{tag}-a"), dir);
    let mut worker = WorkerProcess::spawn(spec)?;
    let id = load.submit(&api, 1).await?[0];
    // Bring the worker to the step.
    match step {
        Step::AfterPending | Step::AfterCreate => {
            hold.as_ref().unwrap().wait_for_hits(1, T).await?;
        }
        Step::Waiting => {
            api.wait_for_flow_run_state(id, &["RUNNING"], T).await?;
        }
        Step::Cancelling => {
            api.wait_for_flow_run_state(id, &["RUNNING"], T).await?;
            api.set_flow_run_state(id, "CANCELLING", None, false)
                .await?;
            hold.as_ref().unwrap().wait_for_hits(1, T).await?;
        }
    }
    worker.kill()?;
    if let Some(h) = &hold {
        // The held request dies with its worker: it never reaches the server.
        h.refuse();
        h.remove();
    }
    if same_name {
        worker.start_again()?;
    } else {
        worker.restart_as(&format!("{tag}-b"))?;
    }
    let verdict = load.settle(&api, &[sim], T).await;
    let verdict = match verdict {
        Ok(v) => v,
        Err(e) => return Err(e.context(worker.log_tail(40))),
    };
    if !verdict.clean() {
        anyhow::bail!("{:?}\n{}", verdict.problems, worker.log_tail(60));
    }
    worker.wait_healthy(Duration::from_secs(60)).await?;
    anyhow::ensure!(
        worker.panics().is_empty(),
        "panicked: {:?}",
        worker.panics()
    );
    Ok((verdict, worker.restarts))
}
