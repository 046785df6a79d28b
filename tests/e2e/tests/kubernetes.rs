//! The Kubernetes worker end to end: a real Prefect server, the simulated cluster, and the
//! worker in-process (or as the `prefect-worker` binary where the process itself matters).

// Fixtures: a server that cannot start is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Result;
use e2e::k8s::{InProcessWorker, flow_deployment, pool_name, spawn_worker_binary, start_cluster};
use e2e::until;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use prefect_test_harness::{Backend, FlowRunSpec, PrefectApi, PrefectServer, id_of};
use prefect_worker_kubernetes::KubernetesSettings;
use serde_json::{Value, json};
use uuid::Uuid;

/// Bounds a wait that should succeed; generous, because it only bounds a failure and the
/// machine may be busy.
const T: Duration = Duration::from_secs(180);

fn server() -> &'static PrefectServer {
    static SERVER: OnceLock<PrefectServer> = OnceLock::new();
    SERVER.get_or_init(|| PrefectServer::start(Backend::Sqlite).expect("start the Prefect server"))
}

async fn run_now(api: &PrefectApi, deployment: Uuid, job_variables: Option<Value>) -> Result<Uuid> {
    let spec = FlowRunSpec {
        scheduled_time: Some(chrono::Utc::now()),
        job_variables,
        ..FlowRunSpec::default()
    };
    id_of(
        &api.create_flow_run_from_deployment(deployment, &spec)
            .await?,
    )
}

async fn logs(api: &PrefectApi, id: Uuid) -> Vec<String> {
    api.read_flow_run_log_messages(id).await.unwrap_or_default()
}

fn jobs_of(sim: &kubesim::SimHandle, run: Uuid) -> Vec<Job> {
    sim.list::<Job>(None)
        .into_iter()
        .filter(|j| {
            j.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("prefect.io/flow-run-id"))
                .map(String::as_str)
                == Some(&run.to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_flow_completes_through_the_binary() -> Result<()> {
    let api = server().api();
    let sim = start_cluster().await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig, "kubesim")?;
    let pool = pool_name("bin");
    let mut child = spawn_worker_binary(
        server().api_url(),
        &kubeconfig,
        &pool,
        "binary-worker",
        &dir.path().join("worker.log"),
    )?;
    until("the pool to exist", T, || async {
        Ok(api.read_work_pool(&pool).await.is_ok())
    })
    .await?;
    let dep = flow_deployment(&api, &pool, "hello.py:hello", json!({})).await?;
    let id = run_now(&api, dep, None).await?;
    let run = api.wait_for_flow_run_final(id, T).await;
    let worker_log = std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default();
    let run = run.map_err(|e| anyhow::anyhow!("{e:#}\nworker log:\n{worker_log}"))?;
    assert_eq!(run["state"]["type"], "COMPLETED", "{run}\n{worker_log}");
    // The engine in the pod ships its logs in batches; they may trail the final state.
    until("the flow's own log lines", T, || async {
        let messages = logs(&api, id).await;
        Ok(messages.iter().any(|m| m.contains("Hello, world!"))
            && messages.iter().any(|m| m.contains("Kubernetes job '")))
    })
    .await?;
    // stream_output: the flow's lines on the worker's stdout, prefixed with the run name.
    let name = run["name"].as_str().unwrap_or_default();
    until("streamed output", T, || async {
        let out = std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default();
        Ok(out
            .lines()
            .any(|l| l.starts_with(&format!("{name} | ")) && l.contains("The answer is 42")))
    })
    .await?;
    let _ = child.kill();
    let _ = child.wait();
    sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_that_raises_ends_failed_not_crashed() -> Result<()> {
    let (run, id, sim, w) = run_flow(
        "fails",
        "hello.py:fails",
        json!({}),
        KubernetesSettings::default(),
        &["COMPLETED", "FAILED", "CRASHED", "CANCELLED"],
    )
    .await?;
    assert_eq!(run["state"]["type"], "FAILED", "{run}");
    // The container exits non-zero, but the engine reported FAILED: the worker adds nothing.
    let types = server().api().read_flow_run_state_types(id).await?;
    assert!(!types.iter().any(|t| t == "CRASHED"), "{types:?}");
    w.stop().await?;
    sim.shutdown().await;
    Ok(())
}

/// Runs one deployment with `job_variables` on a fresh pool and in-process worker, and
/// returns the final (or wanted) flow run.
async fn run_image(
    tag: &str,
    job_variables: Value,
    settings: KubernetesSettings,
    wanted: &[&str],
) -> Result<(Value, Uuid, kubesim::SimHandle, InProcessWorker)> {
    run_flow(tag, "hello.py:hello", job_variables, settings, wanted).await
}

/// [`run_image`] for any flow of `examples/flows`.
async fn run_flow(
    tag: &str,
    entrypoint: &str,
    job_variables: Value,
    settings: KubernetesSettings,
    wanted: &[&str],
) -> Result<(Value, Uuid, kubesim::SimHandle, InProcessWorker)> {
    let api = server().api();
    let sim = start_cluster().await?;
    let pool = pool_name(tag);
    let w = InProcessWorker::start(server().api_url(), &sim, &pool, settings).await?;
    let dep = flow_deployment(&api, &pool, entrypoint, job_variables).await?;
    let id = run_now(&api, dep, None).await?;
    let run = api.wait_for_flow_run_state(id, wanted, T).await?;
    Ok((run, id, sim, w))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_exiting_3_without_reporting_is_crashed_with_its_exit_code() -> Result<()> {
    // A real process: it prints, then exits 3 without any Prefect engine reporting.
    let (run, id, sim, w) = run_image(
        "exit3",
        json!({"image": "busybox", "command": "sh -c 'echo the last words before exit; exit 3'"}),
        KubernetesSettings::default(),
        &["CRASHED"],
    )
    .await?;
    let msg = run["state"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("Flow run infrastructure exited with non-zero status code 3."),
        "{msg}"
    );
    assert!(msg.contains("BackoffLimitExceeded"), "{msg}");
    assert_eq!(jobs_of(&sim, id).len(), 1);
    // The crashed container's output is forwarded to the run's logs.
    until(
        "the container's last words in the run's logs",
        T,
        || async {
            let messages = logs(&server().api(), id).await;
            Ok(messages
                .iter()
                .any(|m| m.starts_with("Container logs from container 'prefect-job'"))
                && messages.iter().any(|m| m == "the last words before exit"))
        },
    )
    .await?;
    w.stop().await?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_online_prints_the_manifest_the_worker_would_create() -> Result<()> {
    let api = server().api();
    let pool = pool_name("preview");
    api.create_work_pool(
        &pool,
        "kubernetes",
        Some(&prefect_test_harness::kubernetes_default_base_job_template()?),
    )
    .await?;
    let dep = flow_deployment(
        &api,
        &pool,
        "hello.py:hello",
        json!({"image": "repo/flow:1", "env": {"A": "1"}}),
    )
    .await?;
    let deployment = api.read_deployment(dep).await?;
    let flow = api
        .get(&format!(
            "/flows/{}",
            deployment["flow_id"].as_str().unwrap_or_default()
        ))
        .await?;
    let target = format!(
        "{}/{}",
        flow["name"].as_str().unwrap_or_default(),
        deployment["name"].as_str().unwrap_or_default()
    );
    let out = std::process::Command::new(e2e::k8s::worker_binary()?)
        .args([
            "preview",
            "--pool",
            &pool,
            "--deployment",
            &target,
            "--job-variables",
            r#"{"namespace": "team-a"}"#,
        ])
        .env("PREFECT_API_URL", server().api_url())
        .env("PREFECT_PROFILES_PATH", "/nonexistent/profiles.toml")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(manifest["kind"], "Job");
    assert_eq!(manifest["metadata"]["namespace"], "team-a");
    let container = &manifest["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "repo/flow:1");
    assert_eq!(container["args"], json!(["prefect", "flow-run", "execute"]));
    assert!(
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "A" && e["value"] == "1")
    );
    assert!(
        api.filter_flow_runs(&json!({"deployments": {"id": {"any_": [dep]}}}))
            .await?
            .is_empty(),
        "nothing was created"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pull_error_is_crashed_at_the_pod_watch_timeout_and_its_job_deleted() -> Result<()>
{
    let (run, id, sim, w) = run_image(
        "pull",
        json!({"image": "sim/pull-error", "pod_watch_timeout_seconds": 5}),
        KubernetesSettings::default(),
        &["CRASHED"],
    )
    .await?;
    let msg = run["state"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("Pod did not start within 5s (pod_watch_timeout_seconds)")
            && msg.contains("Image pull failed"),
        "crashed by the 5 s pod-watch timeout: {msg}"
    );
    until("the Job to be deleted", T, || async {
        Ok(jobs_of(&sim, id).is_empty())
    })
    .await?;
    let messages = logs(&server().api(), id).await;
    assert!(
        messages
            .iter()
            .filter(|m| m.starts_with("Image pull failed"))
            .count()
            == 1,
        "diagnosis logged once: {messages:?}"
    );
    let types = server().api().read_flow_run_states(id).await?;
    assert!(
        types.iter().any(|s| s["name"] == "InfrastructurePending"),
        "{types:?}"
    );
    w.stop().await?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unschedulable_pod_outlives_the_pod_watch_timeout_and_crashes_at_the_pending_timeout()
-> Result<()> {
    // The pod-watch timeout (1 s) passes first and must not crash the run (the Job is left
    // to the autoscaler); only the pending timeout does. Which limit fired is in the
    // message, so no clock is read. (Without a pending timeout the run waits forever: a
    // unit test of `run_watch`.) The pending timeout leaves the pod ample time to be seen
    // and diagnosed on a busy machine.
    let api = server().api();
    let settings = KubernetesSettings {
        pending_timeout: Some(Duration::from_secs(8)),
        ..KubernetesSettings::default()
    };
    let (run, id, sim, w) = run_image(
        "unsched",
        json!({"image": "sim/unschedulable", "pod_watch_timeout_seconds": 1}),
        settings,
        &["CRASHED"],
    )
    .await?;
    let msg = run["state"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("Pod did not start within 8s (PREFECT_INTEGRATIONS_KUBERNETES_WORKER_PENDING_TIMEOUT_SECONDS)")
            && msg.contains("Pod is unschedulable"),
        "{msg}"
    );
    assert!(
        logs(&api, id)
            .await
            .iter()
            .any(|m| m.starts_with("Pod is unschedulable")),
        "diagnosed in the run's logs"
    );
    until("the Job to be deleted", T, || async {
        Ok(jobs_of(&sim, id).is_empty())
    })
    .await?;
    w.stop().await?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_failed_create_is_diagnosed() -> Result<()> {
    let api = server().api();
    let sim = start_cluster().await?;
    sim.set_quota_exceeded("default", true);
    let pool = pool_name("quota");
    let w = InProcessWorker::start(
        server().api_url(),
        &sim,
        &pool,
        KubernetesSettings::default(),
    )
    .await?;
    let dep = flow_deployment(
        &api,
        &pool,
        "hello.py:hello",
        json!({"image": "sim/sleep:1"}),
    )
    .await?;
    let id = run_now(&api, dep, None).await?;
    until("the FailedCreate diagnosis", T, || async {
        Ok(logs(&api, id).await.iter().any(|m| {
            m.starts_with("Kubernetes cannot create the Job's pod") && m.contains("exceeded quota")
        }))
    })
    .await?;
    w.stop().await?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_killed_container_is_crashed_with_137_and_the_diagnosis() -> Result<()> {
    let (run, _, sim, w) = run_image(
        "oom",
        json!({"image": "sim/oom"}),
        KubernetesSettings::default(),
        &["CRASHED"],
    )
    .await?;
    let msg = run["state"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("Flow run infrastructure exited with non-zero status code 137."),
        "{msg}"
    );
    assert!(msg.contains("OOMKilled"), "{msg}");
    w.stop().await?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_with_backoff_limit_0_and_2() -> Result<()> {
    for (limit, pods) in [(0, 1), (2, 3)] {
        let (run, id, sim, w) = run_image(
            "evict",
            json!({"image": "sim/evict:1", "backoff_limit": limit}),
            KubernetesSettings::default(),
            &["CRASHED"],
        )
        .await?;
        let msg = run["state"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("Pod was evicted"), "{msg}");
        let job = jobs_of(&sim, id).pop();
        let failed = job
            .and_then(|j| j.status)
            .and_then(|s| s.failed)
            .unwrap_or_default();
        assert_eq!(
            failed, pods,
            "backoff_limit {limit}: Kubernetes retried the evicted pod {pods} time(s) in all"
        );
        w.stop().await?;
        sim.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_deleted_by_hand_is_crashed() -> Result<()> {
    let (_, id, sim, w) = run_image(
        "deleted",
        json!({"image": "sim/sleep:60"}),
        KubernetesSettings::default(),
        &["PENDING"],
    )
    .await?;
    until("the Job", T, || async { Ok(!jobs_of(&sim, id).is_empty()) }).await?;
    let job = jobs_of(&sim, id).remove(0);
    sim.delete::<Job>("default", job.metadata.name.as_deref().unwrap_or_default())?;
    let run = server()
        .api()
        .wait_for_flow_run_state(id, &["CRASHED"], T)
        .await?;
    assert_eq!(run["state"]["message"], "Kubernetes job was deleted");
    w.stop().await?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_run_deletes_its_job_and_cancels_it() -> Result<()> {
    let api = server().api();
    let sim = start_cluster().await?;
    let pool = pool_name("cancel");
    // `--limit 1`: the next run is claimed only once the cancelled run's task has ended,
    // after anything it could still report; that is how the test knows no late crash
    // report can come, without sleeping.
    let w = InProcessWorker::start_with_options(
        server().api_url(),
        &sim,
        &pool,
        KubernetesSettings::default(),
        &[],
        |o| o.with_limit(Some(1)),
    )
    .await?;
    let dep = flow_deployment(
        &api,
        &pool,
        "hello.py:hello",
        json!({"image": "sim/sleep:120"}),
    )
    .await?;
    let id = run_now(&api, dep, None).await?;
    api.wait_for_flow_run(id, |r| r["infrastructure_pid"].is_string(), T)
        .await?;
    until("the pod running", T, || async {
        Ok(sim
            .list::<Pod>(Some("default"))
            .iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")))
    })
    .await?;
    api.set_flow_run_state(id, "RUNNING", None, true).await?;
    api.set_flow_run_state(id, "CANCELLING", None, true).await?;
    api.wait_for_flow_run_state(id, &["CANCELLED"], T).await?;
    until("the Job to be gone", T, || async {
        Ok(jobs_of(&sim, id).is_empty())
    })
    .await?;
    let next = run_now(&api, dep, None).await?;
    api.wait_for_flow_run(next, |r| r["infrastructure_pid"].is_string(), T)
        .await?;
    let types = api.read_flow_run_state_types(id).await?;
    assert!(!types.iter().any(|t| t == "CRASHED"), "{types:?}");
    assert_eq!(types.last().map(String::as_str), Some("CANCELLED"));
    w.stop().await?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_secret_mode_keeps_the_key_out_of_the_manifest_and_logs() -> Result<()> {
    let api = server().api();
    let sim = start_cluster().await?;
    let pool = pool_name("secret");
    let key = "pnu_e2e-secret-key-0123456789";
    // The key reaches the job through the worker's environment (PREFECT_API_KEY); the
    // test server ignores it.
    let settings = KubernetesSettings {
        create_secret_for_api_key: true,
        ..KubernetesSettings::default()
    };
    let w = InProcessWorker::start_with_env(
        server().api_url(),
        &sim,
        &pool,
        settings,
        &[("PREFECT_API_KEY", key)],
    )
    .await?;
    let dep = flow_deployment(
        &api,
        &pool,
        "hello.py:hello",
        json!({"image": "sim/sleep:1"}),
    )
    .await?;
    let id = run_now(&api, dep, None).await?;
    until("the Job", T, || async { Ok(!jobs_of(&sim, id).is_empty()) }).await?;
    let job = jobs_of(&sim, id).remove(0);
    let manifest = serde_json::to_string(&job)?;
    assert!(!manifest.contains(key), "the key is not in the Job");
    let env = &job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .env
        .clone()
        .unwrap_or_default();
    let entry = env
        .iter()
        .find(|e| e.name == "PREFECT_API_KEY")
        .expect("PREFECT_API_KEY entry");
    let secret_ref = entry
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("secretKeyRef");
    assert_eq!(secret_ref.key, "value");
    let secret: k8s_openapi::api::core::v1::Secret = sim
        .get("default", &secret_ref.name)
        .expect("the Secret exists");
    assert_eq!(secret.data.unwrap()["value"].0, key.as_bytes());
    let messages = logs(&api, id).await;
    assert!(
        !messages.iter().any(|m| m.contains(key)),
        "the key is not in the run's logs"
    );
    w.stop().await?;
    assert!(
        sim.get::<k8s_openapi::api::core::v1::Secret>("default", &secret_ref.name)
            .is_none(),
        "teardown deletes the Secret"
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_run_cluster_config_targets_a_second_cluster() -> Result<()> {
    let api = server().api();
    let first = start_cluster().await?;
    let second = start_cluster().await?;
    let pool = pool_name("cluster");
    let w = InProcessWorker::start(
        server().api_url(),
        &first,
        &pool,
        KubernetesSettings::default(),
    )
    .await?;
    let kubeconfig: Value = serde_yaml::from_str(&second.kubeconfig_yaml("second")?)?;
    let cluster_config = json!({"config": kubeconfig, "context_name": "second"});
    let dep = flow_deployment(
        &api,
        &pool,
        "hello.py:hello",
        json!({"image": "sim/exit:0", "cluster_config": cluster_config}),
    )
    .await?;
    let id = run_now(&api, dep, None).await?;
    api.wait_for_flow_run(id, |r| r["infrastructure_pid"].is_string(), T)
        .await?;
    until("the Job on the second cluster", T, || async {
        Ok(!jobs_of(&second, id).is_empty())
    })
    .await?;
    assert!(
        jobs_of(&first, id).is_empty(),
        "nothing on the default cluster"
    );
    w.stop().await?;
    first.shutdown().await;
    second.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outcome_survives_watch_cuts_410s_and_api_errors() -> Result<()> {
    let api = server().api();
    let sim = start_cluster().await?;
    let pool = pool_name("faults");
    // Five attempts: with 20 % of requests failing, all five fail one time in 3,000.
    let settings = KubernetesSettings {
        create_job_attempts: 5,
        create_job_retry_jitter: (Duration::ZERO, Duration::ZERO),
        ..KubernetesSettings::default()
    };
    let w = InProcessWorker::start(server().api_url(), &sim, &pool, settings).await?;
    // Watches are cut every second, the next two watches get 410 Gone, and a fifth of
    // all requests fail with 503.
    sim.cut_watches_after(Some(Duration::from_secs(1)));
    sim.force_watch_gone(2);
    sim.set_unavailable_rate(0.2);
    let dep = flow_deployment(
        &api,
        &pool,
        "hello.py:hello",
        json!({"image": "busybox", "command": "sh -c 'sleep 4; exit 3'"}),
    )
    .await?;
    let id = run_now(&api, dep, None).await?;
    let run = api.wait_for_flow_run_state(id, &["CRASHED"], T).await?;
    let msg = run["state"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("Flow run infrastructure exited with non-zero status code 3."),
        "{msg}"
    );
    sim.clear_faults();
    let counters = sim.watch_counters();
    assert!(
        counters.opened_total("jobs", Some("default")) > 1,
        "the watch was re-established: {counters:?}"
    );
    w.stop().await?;
    sim.shutdown().await;
    Ok(())
}

/// A Job of this worker that failed before any wait began (one failing at once can beat
/// the wait's subscription; an adopted one failed while its worker was down): the shared
/// index forgets a finished Job nobody waits on, and its pods with it. The wait still
/// reports the pod's exit code, by listing the failed Job's pods, not -1 without a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_failed_before_its_wait_began_reports_its_pods_exit_code() -> Result<()> {
    use prefect_worker_core::client::{ClientOptions, PrefectClient};
    use prefect_worker_core::runner::{FlowRunLogger, RunContext};
    use prefect_worker_core::worker::Worker;
    use prefect_worker_kubernetes::clients::ClientCache;
    use prefect_worker_kubernetes::{KubernetesWorker, KubernetesWorkerOptions};

    let sim = start_cluster().await?;
    // Named as the golden manifests' `prefect.io/worker-name` label, which its watches select.
    let worker = std::sync::Arc::new(KubernetesWorker::new(
        KubernetesWorkerOptions::new("k8s-worker-1")
            .with_clients(ClientCache::with_default_config(
                e2e::k8s::kube_config(&sim).await?,
            ))
            .with_output(std::sync::Arc::new(|_, _| {})),
    ));
    // No Prefect server: the worker's calls to it fail quietly.
    let nowhere = PrefectClient::new(ClientOptions::new("http://127.0.0.1:9/api"))?;
    // A long run first: its wait starts the namespace's shared watches.
    let (long_run, long_config) =
        e2e::k8s::golden_configuration(json!({"image": "sim/sleep:600"}))?;
    let long = {
        let (worker, client) = (worker.clone(), nowhere.clone());
        tokio::spawn(async move {
            let (ctx, _) = RunContext::new(FlowRunLogger::detached(long_run.id), client);
            worker.run(&long_run, long_config, ctx).await
        })
    };
    until("the long run's pod to run", T, || async {
        Ok(sim
            .list::<Pod>(Some("default"))
            .iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")))
    })
    .await?;
    // Then a Job of this worker that fails at once, created with nobody waiting on it.
    let (run, config) = e2e::k8s::golden_configuration(json!({"image": "sim/exit:3"}))?;
    let mut manifest: Job = serde_json::from_value(Value::Object(config.job_manifest.clone()))?;
    manifest.metadata.generate_name = None;
    manifest.metadata.name = Some("failed-early".into());
    manifest.metadata.namespace = Some("default".into());
    sim.create(manifest)?;
    until("the Job to fail", T, || async {
        Ok(sim
            .list::<Job>(Some("default"))
            .iter()
            .filter(|j| j.metadata.name.as_deref() == Some("failed-early"))
            .any(|j| j.status.as_ref().and_then(|s| s.failed).unwrap_or(0) > 0))
    })
    .await?;
    // Let the worker's watches deliver the failure to its index (milliseconds), so that the
    // wait below starts after the index has forgotten the Job: the case under test. (Were it
    // earlier, the wait would see the Job fail live and pass without the fix.)
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ctx, _) = RunContext::new(FlowRunLogger::detached(run.id), nowhere.clone());
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        worker.resume(&run, "default:failed-early", config, ctx),
    )
    .await??;
    assert_eq!(result.status_code, 3, "{result:?}");
    long.abort();
    worker.teardown().await;
    sim.shutdown().await;
    Ok(())
}
