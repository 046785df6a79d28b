//! Deploying like the Python worker: the prefect-worker Helm chart's own container
//! invocation and init container (from the rendered chart, `tests/e2e/fixtures`), run
//! against the real Prefect server and kubesim enforcing the chart's Role; the manifests
//! in `deploy/` (validated, and their Role checked against every request the worker
//! made); the Dockerfile (hadolint); what the worker writes (nothing outside HOME).

// Fixtures: a server that cannot start is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use e2e::chart::{ChartFixture, Pod, PodProcess};
use e2e::k8s::{InProcessWorker, flow_deployment, pool_name, start_cluster, worker_binary};
use e2e::until;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Namespace, Pod as K8sPod};
use kubesim::{Rbac, RequestAttributes};
use prefect_test_harness::{Backend, FlowRunSpec, PrefectApi, PrefectServer, id_of, repo_root};
use prefect_worker_kubernetes::KubernetesSettings;
use serde_json::{Value, json};
use uuid::Uuid;

const T: Duration = Duration::from_secs(120);
/// The chart's worker service account, named in kubesim's 403s.
const CHART_USER: &str = "system:serviceaccount:prefect:prefect-worker";
/// The namespace the chart is installed in, where its Role grants and its Jobs run.
const NS: &str = "prefect";

fn server() -> &'static PrefectServer {
    PrefectServer::shared(Backend::Sqlite)
}

async fn run_now(api: &PrefectApi, deployment: Uuid) -> Result<Uuid> {
    let spec = FlowRunSpec {
        scheduled_time: Some(chrono::Utc::now()),
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
    sim.list::<Job>(Some(NS))
        .into_iter()
        .filter(|j| {
            j.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("prefect.io/flow-run-id"))
                .is_some_and(|v| *v == run.to_string())
        })
        .collect()
}

/// A cluster with the chart's namespace, enforcing `rbac`.
async fn cluster_with(rbac: Rbac) -> Result<kubesim::SimHandle> {
    let sim = start_cluster().await?;
    sim.create(Namespace {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(NS.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    })?;
    sim.set_rbac(Some(rbac.with_user(CHART_USER)));
    Ok(sim)
}

/// The chart's worker container with `pool` as `worker.config.workPool` (the fixture
/// was rendered with `chart-pool`; each test has its own pool on the shared server).
fn worker_container(chart: &ChartFixture, pool: &str) -> Result<Container> {
    let mut c = chart.worker_container()?.clone();
    for a in c.args.iter_mut().flatten() {
        if a == "chart-pool" {
            *a = pool.to_owned();
        }
    }
    Ok(c)
}

/// Starts the chart's worker container in `pod` against `sim`: the chart's command,
/// args and env, with HOME and PREFECT_API_URL set to this test's, plus what the
/// chart's `worker.extraEnvVars` would add: the health port (0: any free port, read
/// back from the log), JSON logs, and shorter intervals the chart does not set.
fn start_chart_worker(pod: &Pod, container: &Container, dir: &Path) -> Result<PodProcess> {
    let home = pod.home.display().to_string();
    let cmd = pod.command(
        container,
        &[("HOME", &home), ("PREFECT_API_URL", server().api_url())],
        &[
            ("PREFECT_WORKER_WEBSERVER_PORT", "0"),
            ("PREFECT_WORKER_LOG_FORMAT", "json"),
            ("PREFECT_WORKER_CANCELLATION_POLL_SECONDS", "1"),
            ("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.5"),
            // tini is PID 1 in the pod; here it registers as a child subreaper instead
            // (without this it warns on stderr that it is not PID 1).
            ("TINI_SUBREAPER", "1"),
        ],
    )?;
    PodProcess::spawn(cmd, dir, "worker")
}

/// The worker's stderr as JSON lines; fails on a line that is not one JSON object.
fn json_lines(stderr: &str) -> Result<Vec<Value>> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).with_context(|| format!("not a JSON line: {l:?}"))?;
            if !v.is_object() {
                bail!("not a JSON object: {l:?}");
            }
            Ok(v)
        })
        .collect()
}

/// The address the web server (`/health`, `/metrics`) bound (from its log line).
async fn health_address(worker: &PodProcess) -> Result<String> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let lines = json_lines(&worker.stderr_text()).unwrap_or_default();
        let port = lines
            .iter()
            .find(|l| l["message"] == "web server listening")
            .and_then(|l| l["bound"].as_str())
            .and_then(|b| b.rsplit(':').next())
            .map(str::to_owned);
        if let Some(port) = port {
            return Ok(format!("127.0.0.1:{port}"));
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("no health server log line:\n{}", worker.stderr_text());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until run `id` is in one of `types`.
async fn end(api: &PrefectApi, id: Uuid, types: &[&str]) -> Result<Value> {
    api.wait_for_flow_run_state(id, types, T).await
}

fn deploy_role() -> Result<Rbac> {
    Ok(Rbac::from_yaml(&std::fs::read_to_string(
        repo_root().join("deploy/rbac.yaml"),
    )?)?)
}

/// Every resource request in `sim`'s log, as RBAC attributes.
fn attributes(sim: &kubesim::SimHandle) -> Vec<(RequestAttributes, u16)> {
    sim.requests()
        .iter()
        .filter_map(|r| r.attributes().map(|a| (a, r.status)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_worker_container_runs_flows_to_their_end_under_the_charts_role() -> Result<()> {
    let chart = ChartFixture::load()?;
    let api = server().api();
    let sim = cluster_with(Rbac::from_yaml(&chart.rendered)?).await?;
    let pool = pool_name("chart");
    let kubeconfig = sim.kubeconfig_yaml("kubesim")?;
    // HOME/.kube/config: where the worker finds the cluster outside one (the chart's pod
    // uses its service account instead; scripts/image-test.sh does that).
    let pod = Pod::new(
        &worker_binary()?,
        &[(".kube/config", &kubeconfig)],
        &[("baseJobTemplate.json", &chart.base_job_template)],
    )?;
    let work_before = pod.work_listing()?;
    let home_before = std::fs::read_dir(&pod.home)?.count();
    let out = tempfile::tempdir()?;
    let mut worker = start_chart_worker(&pod, &worker_container(&chart, &pool)?, out.path())?;

    // /health answers (the chart's liveness probe), before and while runs are handled.
    let health = health_address(&worker).await?;
    let probe = || async {
        let r = reqwest::get(format!("http://{health}/health")).await?;
        Ok::<_, anyhow::Error>((r.status().as_u16(), r.json::<Value>().await?))
    };
    assert_eq!(probe().await?, (200, json!({"message": "OK"})));

    // The worker creates the pool with the chart's baseJobTemplate.json.
    until("the worker to create its pool", T, || async {
        Ok(api.read_work_pool(&pool).await.is_ok())
    })
    .await
    .with_context(|| worker.stderr_text())?;
    let template: Value = serde_json::from_str(&chart.base_job_template)?;
    assert_eq!(
        api.read_work_pool(&pool).await?["base_job_template"],
        template
    );

    // One run of each kind, at once.
    let hello = flow_deployment(&api, &pool, "hello.py:hello", json!({})).await?;
    let exit3 = flow_deployment(
        &api,
        &pool,
        "hello.py:hello",
        json!({"image": "busybox", "command": "sh -c 'echo the last words; exit 3'"}),
    )
    .await?;
    let pull = flow_deployment(
        &api,
        &pool,
        "hello.py:hello",
        json!({"image": "sim/pull-error", "pod_watch_timeout_seconds": 5}),
    )
    .await?;
    let cancel = flow_deployment(
        &api,
        &pool,
        "hello.py:hello",
        json!({"image": "sim/sleep:120"}),
    )
    .await?;
    let ids = [
        run_now(&api, hello).await?,
        run_now(&api, exit3).await?,
        run_now(&api, pull).await?,
        run_now(&api, cancel).await?,
    ];
    let [hello_id, exit3_id, pull_id, cancel_id] = ids;

    // Cancelling: once its pod runs, the run is cancelled and its Job deleted.
    api.wait_for_flow_run(cancel_id, |r| r["infrastructure_pid"].is_string(), T)
        .await?;
    until("the sleeping pod to run", T, || async {
        Ok(sim.list::<K8sPod>(Some(NS)).iter().any(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("prefect.io/flow-run-id"))
                .is_some_and(|v| *v == cancel_id.to_string())
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        }))
    })
    .await?;
    api.set_flow_run_state(cancel_id, "RUNNING", None, true)
        .await?;
    api.set_flow_run_state(cancel_id, "CANCELLING", None, true)
        .await?;

    let r = end(&api, hello_id, &["COMPLETED", "FAILED", "CRASHED"]).await?;
    assert_eq!(
        r["state"]["type"],
        "COMPLETED",
        "{r}\n{}",
        worker.stderr_text()
    );
    let r = end(&api, exit3_id, &["CRASHED", "COMPLETED", "FAILED"]).await?;
    let msg = r["state"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("Flow run infrastructure exited with non-zero status code 3."),
        "{msg}"
    );
    until(
        "the crashed container's last words (pods/log)",
        T,
        || async {
            Ok(logs(&api, exit3_id)
                .await
                .iter()
                .any(|m| m == "the last words"))
        },
    )
    .await?;
    let r = end(&api, pull_id, &["CRASHED", "COMPLETED"]).await?;
    assert!(
        r["state"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Image pull failed"),
        "{r}"
    );
    until("the pull-error Job to be deleted", T, || async {
        Ok(jobs_of(&sim, pull_id).is_empty())
    })
    .await?;
    end(&api, cancel_id, &["CANCELLED"]).await?;
    until("the cancelled run's Job to be deleted", T, || async {
        Ok(jobs_of(&sim, cancel_id).is_empty())
    })
    .await?;

    // A Job whose pods a quota refuses: diagnosed from its Events (the chart grants
    // `events`), then it runs once the quota allows (and exits 3: it ran).
    sim.set_quota_exceeded(NS, true);
    let quota_id = run_now(&api, exit3).await?;
    until("the FailedCreate diagnosis", T, || async {
        Ok(logs(&api, quota_id).await.iter().any(|m| {
            m.starts_with("Kubernetes cannot create the Job's pod") && m.contains("exceeded quota")
        }))
    })
    .await?;
    sim.set_quota_exceeded(NS, false);
    crashed_with_3(&api, quota_id).await?;

    assert_eq!(probe().await?.0, 200, "still healthy after the runs");
    // SIGTERM, as the kubelet stops the pod: a clean exit.
    let status = worker.terminate(Duration::from_secs(60)).await?;
    let stderr = worker.stderr_text();
    assert!(status.success(), "{status}\n{stderr}");

    // Under the chart's Role nothing was refused, and deploy/rbac.yaml grants every
    // request the worker made.
    let requests = attributes(&sim);
    let refused: Vec<String> = requests
        .iter()
        .filter(|(_, s)| *s == 403)
        .map(|(a, _)| a.to_string())
        .collect();
    assert!(
        refused.is_empty(),
        "refused under the chart's Role: {refused:?}"
    );
    let ours = deploy_role()?;
    let outside: BTreeSet<String> = requests
        .iter()
        .filter(|(a, _)| !ours.allows(a))
        .map(|(a, _)| a.to_string())
        .collect();
    assert!(
        outside.is_empty(),
        "requests outside deploy/rbac.yaml: {outside:?}"
    );
    let made: BTreeSet<String> = requests
        .iter()
        .map(|(a, _)| format!("{} {}", a.verb, a.resource_path()))
        .collect();
    eprintln!("requests made (verb resource): {made:?}");

    // Logs: one JSON object per line, no escape codes, the run id on every line about a run.
    assert!(!stderr.contains('\u{1b}'), "ANSI escapes in the log");
    let lines = json_lines(&stderr)?;
    for id in ids.iter().chain([&quota_id]) {
        let id = id.to_string();
        let about: Vec<&Value> = lines
            .iter()
            .filter(|l| l["message"].as_str().is_some_and(|m| m.contains(&id)))
            .collect();
        assert!(!about.is_empty(), "no log line names run {id}");
        for l in about {
            assert_eq!(l["flow_run_id"], id.as_str(), "{l}");
        }
        assert!(
            lines
                .iter()
                .filter(|l| l["flow_run_id"] == id.as_str())
                .count()
                >= 3,
            "run {id}: its submission, Job and outcome lines carry flow_run_id"
        );
    }

    // Writes: nothing in the (read-only) working directory, nothing outside HOME.
    assert_eq!(
        pod.work_listing()?,
        work_before,
        "the working directory changed"
    );
    let outside_home = pod.written_outside_home();
    assert!(
        outside_home.is_empty(),
        "written outside HOME: {outside_home:?}"
    );
    eprintln!(
        "ran as uid {:?}; HOME entries before/after: {home_before}/{}",
        pod.run_as,
        std::fs::read_dir(&pod.home)?.count()
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_init_containers_commands_behave_as_the_chart_expects() -> Result<()> {
    let chart = ChartFixture::load()?;
    let api = server().api();
    let pool = pool_name("init");
    let mut init = chart.init_container()?.clone();
    for a in init.args.iter_mut().flatten() {
        *a = a.replace(
            "work_pool_name=\"chart-pool\"",
            &format!("work_pool_name=\"{pool}\""),
        );
    }
    let pod = Pod::new(
        &worker_binary()?,
        &[],
        &[("baseJobTemplate.json", &chart.base_job_template)],
    )?;
    let home = pod.home.display().to_string();
    let overrides = [
        ("HOME", home.as_str()),
        ("PREFECT_API_URL", server().api_url()),
    ];
    let run = |c: &Container| -> Result<std::process::Output> {
        Ok(pod.command(c, &overrides, &[])?.output()?)
    };
    let text = |o: &std::process::Output| {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    // The pool does not exist yet: the script says so and exits 0; nothing is created.
    let o = run(&init)?;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!(
            "Work pool {pool} does not yet exist, meaning this is the initial run."
        )),
        "{}",
        text(&o)
    );
    assert!(
        api.read_work_pool(&pool).await.is_err(),
        "nothing was created"
    );

    // The pool exists with another template: the script replaces it with the file's.
    let mut other: Value = serde_json::from_str(&chart.base_job_template)?;
    other["variables"]["properties"]["namespace"]["default"] = json!("elsewhere");
    api.create_work_pool(&pool, "kubernetes", Some(&other))
        .await?;
    let o = run(&init)?;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains(&format!(
        "Work pool {pool} exists; syncing the base job template now..."
    )));
    assert!(
        stdout.contains(&format!("Updated work pool '{pool}'")),
        "{}",
        text(&o)
    );
    let template: Value = serde_json::from_str(&chart.base_job_template)?;
    assert_eq!(
        api.read_work_pool(&pool).await?["base_job_template"],
        template
    );

    // The two commands alone, as Prefect's CLI answers them.
    let cli = |args: &[&str]| -> Result<std::process::Output> {
        run(&Container {
            name: "cli".into(),
            command: Some(vec!["prefect".into()]),
            args: Some(args.iter().map(|a| (*a).to_owned()).collect()),
            env: init.env.clone(),
            working_dir: init.working_dir.clone(),
            ..Container::default()
        })
    };
    let o = cli(&["work-pool", "inspect", &pool])?;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let shown: Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(
        (shown["name"].as_str(), shown["type"].as_str()),
        (Some(pool.as_str()), Some("kubernetes"))
    );
    let missing = format!("{pool}-missing");
    let o = cli(&["work-pool", "inspect", &missing])?;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("Work pool '{missing}' not found!")
    );
    let o = cli(&[
        "work-pool",
        "update",
        &missing,
        "--base-job-template",
        "./baseJobTemplate.json",
    ])?;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("Work pool named '{missing}' does not exist.")
    );
    let o = cli(&[
        "work-pool",
        "update",
        &pool,
        "--base-job-template",
        "./nope.json",
    ])?;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--base-job-template: cannot read ./nope.json")
    );

    // Anything else: a clear refusal; an unknown flag of `worker start` is named.
    let o = cli(&["deploy", "--all"])?;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("`prefect deploy --all` is not available: this image is prefect-worker-rs, the Rust Kubernetes worker"));
    let o = cli(&[
        "worker",
        "start",
        "--pool",
        &pool,
        "--type",
        "kubernetes",
        "--with-healtcheck",
    ])?;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unexpected argument '--with-healtcheck'"),
        "{}",
        text(&o)
    );
    let o = cli(&["worker", "start", "--pool", &pool, "--type", "process"])?;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("this binary runs Kubernetes workers only"),
        "{}",
        text(&o)
    );
    Ok(())
}

/// Waits until `id` is CRASHED with infrastructure exit code 3 (the Job ran).
async fn crashed_with_3(api: &PrefectApi, id: Uuid) -> Result<()> {
    let r = api
        .wait_for_flow_run_state(id, &["CRASHED", "COMPLETED", "FAILED"], T)
        .await?;
    let msg = r["state"]["message"].as_str().unwrap_or_default();
    if !msg.starts_with("Flow run infrastructure exited with non-zero status code 3.") {
        bail!("run {id}: {r}");
    }
    Ok(())
}

fn container_env(job: &Job) -> Vec<k8s_openapi::api::core::v1::EnvVar> {
    job.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_options_work_with_the_charts_auto_secret_role_and_degrade_once_without_it()
-> Result<()> {
    let chart = ChartFixture::load()?;
    let api = server().api();
    let key = "pnu_chart-secret-key-0123456789";
    let settings = KubernetesSettings {
        create_secret_for_api_key: true,
        ..KubernetesSettings::default()
    };
    let template: Value = serde_json::from_str(&chart.base_job_template)?;
    let exit3 = json!({"image": "busybox", "command": "sh -c 'exit 3'"});

    // The chart's Role with `jobApiKeyPropagation: autoSecret`: its secrets rule.
    let auto_secret = format!(
        "{}\n- apiGroups: [\"\"]\n  resources: [\"secrets\"]\n  verbs: [\"get\", \"list\", \"create\", \"update\", \"delete\"]\n",
        role_document(&chart.rendered)?
    );
    let sim = cluster_with(Rbac::from_yaml(&auto_secret)?).await?;
    let pool = pool_name("autosecret");
    api.create_work_pool(&pool, "kubernetes", Some(&template))
        .await?;
    let w = InProcessWorker::start_with_env(
        server().api_url(),
        &sim,
        &pool,
        settings.clone(),
        &[("PREFECT_API_KEY", key)],
    )
    .await?;
    let dep = flow_deployment(&api, &pool, "hello.py:hello", exit3.clone()).await?;
    let id = run_now(&api, dep).await?;
    crashed_with_3(&api, id).await?;
    let env = container_env(&jobs_of(&sim, id)[0]);
    let entry = env.iter().find(|e| e.name == "PREFECT_API_KEY").unwrap();
    assert!(
        entry.value.is_none() && entry.value_from.is_some(),
        "{entry:?}"
    );
    w.stop().await?;
    let refused: Vec<_> = attributes(&sim)
        .into_iter()
        .filter(|(_, s)| *s == 403)
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
    assert!(
        sim.list::<k8s_openapi::api::core::v1::Secret>(Some(NS))
            .is_empty(),
        "deleted at teardown"
    );

    // The chart's default Role (no secrets), with both Secret options: one warning each,
    // then the key and the env as plain values, and the refused requests are not made
    // again.
    sim.set_rbac(Some(
        Rbac::from_yaml(&chart.rendered)?.with_user(CHART_USER),
    ));
    sim.clear_requests();
    let pool = pool_name("nosecret");
    api.create_work_pool(&pool, "kubernetes", Some(&template))
        .await?;
    let settings = KubernetesSettings {
        store_env_as_secret: true,
        ..settings
    };
    let w = InProcessWorker::start_with_env(
        server().api_url(),
        &sim,
        &pool,
        settings,
        &[("PREFECT_API_KEY", key)],
    )
    .await?;
    let dep = flow_deployment(&api, &pool, "hello.py:hello", exit3).await?;
    let first = run_now(&api, dep).await?;
    crashed_with_3(&api, first).await?;
    let second = run_now(&api, dep).await?;
    crashed_with_3(&api, second).await?;
    w.stop().await?;
    for id in [first, second] {
        let env = container_env(&jobs_of(&sim, id)[0]);
        let entry = env.iter().find(|e| e.name == "PREFECT_API_KEY").unwrap();
        assert_eq!(
            entry.value.as_deref(),
            Some(key),
            "plain value, as Prefect's default"
        );
        let job = &jobs_of(&sim, id)[0];
        let c = &job
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0];
        assert!(
            c.env_from.as_ref().is_none_or(Vec::is_empty),
            "no env Secret: {c:?}"
        );
    }
    let first_logs = logs(&api, first).await;
    let second_logs = logs(&api, second).await;
    for (warning, says) in [
        (
            "Cannot keep PREFECT_API_KEY in the Secret",
            "may not get, create and update secrets in namespace 'prefect'",
        ),
        (
            "Cannot store the Job's environment in the Secret",
            "may not create secrets in namespace 'prefect'",
        ),
    ] {
        let warned: Vec<&String> = first_logs
            .iter()
            .filter(|m| m.starts_with(warning))
            .collect();
        assert_eq!(warned.len(), 1, "{warning}: {first_logs:?}");
        assert!(
            warned[0].contains(says) && warned[0].contains("deploy/rbac-secrets.yaml"),
            "{}",
            warned[0]
        );
        assert!(
            !second_logs.iter().any(|m| m.starts_with(warning)),
            "warned once: {warning}"
        );
    }
    for id in [first, second] {
        assert!(
            !logs(&api, id).await.iter().any(|m| m.contains(key)),
            "the key is never logged"
        );
    }
    let refused: Vec<String> = attributes(&sim)
        .into_iter()
        .filter(|(_, s)| *s == 403)
        .map(|(a, _)| a.to_string())
        .collect();
    assert_eq!(
        refused,
        [
            "get secrets in namespace prefect",
            "create secrets in namespace prefect"
        ],
        "one refused request per option, not one per run"
    );
    sim.shutdown().await;
    Ok(())
}

/// The Role document of the rendered chart, as YAML text.
fn role_document(rendered: &str) -> Result<String> {
    rendered
        .split("\n---\n")
        .find(|d| d.contains("\nkind: Role\n"))
        .map(str::to_owned)
        .context("no Role in rendered.yaml")
}

// ------------------------------------------------------------------ static checks

fn tool(args: &[&str]) -> Result<std::process::Output> {
    let out = Command::new(repo_root().join("scripts/tools.sh"))
        .arg("run")
        .args(args)
        .current_dir(repo_root())
        .output()?;
    Ok(out)
}

#[test]
fn hadolint_passes_on_the_dockerfile() -> Result<()> {
    let o = tool(&["hadolint", "Dockerfile"])?;
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

#[test]
fn the_manifests_and_the_rendered_chart_validate_against_kubernetes_schemas() -> Result<()> {
    let files = [
        "deploy/rbac.yaml",
        "deploy/rbac-secrets.yaml",
        "deploy/deployment.yaml",
        "tests/e2e/fixtures/prefect-worker-chart/rendered.yaml",
    ];
    let mut args = vec![
        "kubernetes-validate",
        "--strict",
        "--kubernetes-version",
        "1.33.0",
    ];
    args.extend(files);
    let o = tool(&args)?;
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{out}");
    // Every document was checked, none skipped.
    assert_eq!(
        out.matches(" passed for resource ").count(),
        3 + 2 + 1 + 5,
        "{out}"
    );
    Ok(())
}

#[test]
fn the_plain_deployment_runs_the_worker_as_the_chart_does() -> Result<()> {
    let chart = ChartFixture::load()?;
    let ours: k8s_openapi::api::apps::v1::Deployment = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/deployment.yaml"))?,
    )?;
    let pod_spec = |d: &k8s_openapi::api::apps::v1::Deployment| {
        d.spec.as_ref().unwrap().template.spec.clone().unwrap()
    };
    let (theirs_pod, ours_pod) = (pod_spec(&chart.deployment), pod_spec(&ours));
    assert_eq!(ours_pod.security_context, theirs_pod.security_context);
    let (t, o) = (chart.worker_container()?, &ours_pod.containers[0]);
    assert_eq!(o.command, t.command);
    assert_eq!(o.working_dir, t.working_dir);
    assert_eq!(
        &o.args.as_ref().unwrap()[..5],
        &t.args.as_ref().unwrap()[..5],
        "prefect worker start --type kubernetes"
    );
    assert_eq!(
        o.liveness_probe.as_ref().unwrap().http_get,
        t.liveness_probe.as_ref().unwrap().http_get
    );
    // The chart's container security context, field by field; ours also drops every
    // capability (the chart's `capabilities: {}` keeps the runtime's defaults).
    let (ts, os) = (
        t.security_context.clone().unwrap(),
        o.security_context.clone().unwrap(),
    );
    assert_eq!(
        (
            os.run_as_user,
            os.run_as_non_root,
            os.read_only_root_filesystem,
            os.allow_privilege_escalation
        ),
        (
            ts.run_as_user,
            ts.run_as_non_root,
            ts.read_only_root_filesystem,
            ts.allow_privilege_escalation
        )
    );
    assert_eq!(os.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
    let mounts = |c: &Container| -> BTreeSet<String> {
        c.volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.clone())
            .collect()
    };
    assert!(mounts(o).contains("/home/prefect") && mounts(o).contains("/tmp"));
    assert_eq!(chart.run_as_user(), Some(1001));
    Ok(())
}

#[test]
fn the_deploy_role_asks_for_no_more_than_the_charts_role_grants() -> Result<()> {
    let chart = Rbac::from_yaml(&ChartFixture::load()?.rendered)?;
    let ours = deploy_role()?;
    for rule in &ours.rules {
        assert_eq!(rule.namespace.as_deref(), Some(NS), "namespaced only");
        for group in &rule.api_groups {
            for resource in &rule.resources {
                for verb in &rule.verbs {
                    let (res, sub) = match resource.split_once('/') {
                        Some((r, s)) => (r.to_owned(), Some(s.to_owned())),
                        None => (resource.clone(), None),
                    };
                    let a = RequestAttributes {
                        verb: verb.clone(),
                        api_group: group.clone(),
                        resource: res,
                        subresource: sub,
                        namespace: Some(NS.to_owned()),
                        name: None,
                    };
                    assert!(
                        chart.allows(&a),
                        "deploy/rbac.yaml asks for {a}, which the chart's Role does not grant"
                    );
                }
            }
        }
    }
    let secrets = Rbac::from_yaml(&std::fs::read_to_string(
        repo_root().join("deploy/rbac-secrets.yaml"),
    )?)?;
    assert!(
        secrets.rules.iter().all(|r| r.resources == ["secrets"]),
        "the opt-in file grants secrets only"
    );
    Ok(())
}

#[test]
fn the_dockerfile_and_helm_values_keep_the_charts_contract() -> Result<()> {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile"))?;
    for needle in [
        "ENTRYPOINT [\"/usr/bin/tini\", \"-g\", \"--\", \"/opt/prefect/entrypoint.sh\"]",
        "COPY deploy/image/entrypoint.sh /opt/prefect/entrypoint.sh",
        "ln -s prefect-worker /usr/bin/prefect",
        "USER 1001:1001",
        "EXPOSE 8080",
        "org.opencontainers.image.source",
    ] {
        assert!(dockerfile.contains(needle), "Dockerfile lacks {needle}");
    }
    let entrypoint = repo_root().join("deploy/image/entrypoint.sh");
    use std::os::unix::fs::PermissionsExt;
    assert!(
        std::fs::metadata(&entrypoint)?.permissions().mode() & 0o111 != 0,
        "executable"
    );
    let o = Command::new(&entrypoint)
        .args(["sh", "-c", "echo ran \"$@\"", "sh", "a", "b c"])
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "ran a b c",
        "runs its arguments"
    );

    let values: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(
        repo_root().join("deploy/helm-values.yaml"),
    )?)?;
    let image = &values["worker"]["image"];
    assert!(
        image["repository"]
            .as_str()
            .is_some_and(|r| r.ends_with("prefect-worker-rs"))
    );
    assert!(image["prefectTag"].as_str().is_some());
    assert_eq!(
        values["worker"]["livenessProbe"]["enabled"].as_bool(),
        Some(true)
    );
    Ok(())
}
