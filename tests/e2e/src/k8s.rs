//! Helpers for the Kubernetes end-to-end tests: a simulated cluster whose kubelet can run
//! `prefect flow-run execute` from the repo's venv, the Kubernetes worker in-process or as
//! the `prefect-worker` binary, and deployments of the demo flows.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use prefect_test_harness::{DeploymentSpec, PrefectApi, repo_root};
use prefect_worker_core::client::models::FlowRun;
use prefect_worker_core::client::{ClientOptions, PrefectClient};
use prefect_worker_core::events::EventEmitter;
use prefect_worker_core::job_config::Environment;
use prefect_worker_core::job_config::JobConfiguration;
use prefect_worker_core::runner::{Runner, RunnerError, RunnerOptions};
use prefect_worker_kubernetes::clients::ClientCache;
use prefect_worker_kubernetes::{
    KubernetesSettings, KubernetesWorker, KubernetesWorkerJobConfiguration,
    KubernetesWorkerOptions, preview_from_golden_input,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Starts a simulated cluster whose containers find `prefect` in the repo's venv.
pub async fn start_cluster() -> Result<kubesim::SimHandle> {
    let venv_bin = repo_root().join(".venv/bin");
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", venv_bin.display());
    Ok(kubesim::SimCluster::builder()
        .kubelet_path(path)
        .build()
        .start()
        .await?)
}

/// A kube client configuration for `sim`.
pub async fn kube_config(sim: &kubesim::SimHandle) -> Result<kube::Config> {
    let yaml = sim.kubeconfig_yaml("kubesim")?;
    let kc = Kubeconfig::from_yaml(&yaml)?;
    Ok(kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?)
}

/// The Kubernetes worker, in-process, against `sim`.
#[derive(Debug)]
pub struct InProcessWorker {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), RunnerError>>,
    pub name: String,
    /// The runner's event emitter (stats, tap).
    pub events: EventEmitter,
    pub worker: std::sync::Arc<KubernetesWorker>,
}

impl InProcessWorker {
    pub async fn start(
        api_url: &str,
        sim: &kubesim::SimHandle,
        pool: &str,
        settings: KubernetesSettings,
    ) -> Result<Self> {
        Self::start_with_env(api_url, sim, pool, settings, &[]).await
    }

    /// Like [`InProcessWorker::start`], with extra worker environment (what jobs inherit).
    pub async fn start_with_env(
        api_url: &str,
        sim: &kubesim::SimHandle,
        pool: &str,
        settings: KubernetesSettings,
        extra_env: &[(&str, &str)],
    ) -> Result<Self> {
        Self::start_with_options(api_url, sim, pool, settings, extra_env, |o| o).await
    }

    /// Like [`InProcessWorker::start_with_env`], with the runner's options adjusted by
    /// `adjust` (e.g. slower intervals when many workers share one server).
    pub async fn start_with_options(
        api_url: &str,
        sim: &kubesim::SimHandle,
        pool: &str,
        settings: KubernetesSettings,
        extra_env: &[(&str, &str)],
        adjust: impl FnOnce(RunnerOptions) -> RunnerOptions,
    ) -> Result<Self> {
        let name = format!("k8s-{}", &Uuid::new_v4().simple().to_string()[..8]);
        let client = ClientOptions::new(api_url);
        Self::launch(
            api_url, sim, pool, &name, settings, extra_env, client, adjust,
        )
        .await
    }

    /// Like [`InProcessWorker::start_with_env`], named `name` and with a REST client built
    /// from `client` (credentials, headers).
    pub async fn start_as(
        api_url: &str,
        sim: &kubesim::SimHandle,
        pool: &str,
        name: &str,
        settings: KubernetesSettings,
        extra_env: &[(&str, &str)],
        client: ClientOptions,
    ) -> Result<Self> {
        Self::launch(api_url, sim, pool, name, settings, extra_env, client, |o| o).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn launch(
        api_url: &str,
        sim: &kubesim::SimHandle,
        pool: &str,
        name: &str,
        settings: KubernetesSettings,
        extra_env: &[(&str, &str)],
        client: ClientOptions,
        adjust: impl FnOnce(RunnerOptions) -> RunnerOptions,
    ) -> Result<Self> {
        let name = name.to_owned();
        let clients = ClientCache::with_default_config(kube_config(sim).await?);
        let worker = KubernetesWorker::new(
            KubernetesWorkerOptions::new(&name)
                .with_settings(settings)
                .with_clients(clients)
                .with_output(std::sync::Arc::new(|_, _| {})),
        );
        let mut env = Environment::new();
        env.insert("PREFECT_API_URL".into(), api_url.to_owned());
        for (k, v) in extra_env {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let mut o = RunnerOptions::new(pool, &name)
            .with_intervals(crate::QUERY, crate::HEARTBEAT, crate::CANCEL_POLL)
            .with_environment(env);
        o.log_batch_interval = std::time::Duration::from_millis(200);
        let o = adjust(o);
        let runner = Runner::new(worker, PrefectClient::new(client)?, o);
        let events = runner.events();
        let worker = runner.worker();
        let stop = CancellationToken::new();
        let task = tokio::spawn(runner.run(stop.clone()));
        // Deployments need the pool, which the worker creates on its first sync.
        let api = prefect_test_harness::PrefectApi::new(api_url);
        crate::until(
            "the worker to create its pool",
            std::time::Duration::from_secs(180),
            || async {
                Ok(api
                    .read_work_pool(pool)
                    .await
                    .is_ok_and(|p| p["base_job_template"].get("job_configuration").is_some()))
            },
        )
        .await?;
        Ok(Self {
            stop,
            task,
            name,
            events,
            worker,
        })
    }

    pub async fn stop(self) -> Result<()> {
        self.stop.cancel();
        self.task.await?.map_err(anyhow::Error::from)
    }
}

/// The `prefect-worker` binary, built on first use.
pub fn worker_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/debug/deps/<test> → target/debug/prefect-worker
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("test binary has no target dir")?;
    let bin = dir.join("prefect-worker");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "prefect-worker-bin"])
            .current_dir(repo_root())
            .status()?;
        anyhow::ensure!(status.success(), "building prefect-worker failed");
    }
    Ok(bin)
}

/// Runs `prefect-worker start` against `api_url` and the cluster of `kubeconfig`.
pub fn spawn_worker_binary(
    api_url: &str,
    kubeconfig: &std::path::Path,
    pool: &str,
    name: &str,
    log: &std::path::Path,
) -> Result<Child> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    Ok(Command::new(worker_binary()?)
        .args([
            "start",
            "--pool",
            pool,
            "--name",
            name,
            "--type",
            "kubernetes",
        ])
        .env("PREFECT_API_URL", api_url)
        .env("KUBECONFIG", kubeconfig)
        .env("PREFECT_WORKER_QUERY_SECONDS", "0.5")
        .env("PREFECT_WORKER_CANCELLATION_POLL_SECONDS", "0.5")
        .env("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.2")
        .env("PREFECT_PROFILES_PATH", "/nonexistent/profiles.toml")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()?)
}

/// A deployment of `examples/flows/<entrypoint>` on `pool`, with `job_variables`.
pub async fn flow_deployment(
    api: &PrefectApi,
    pool: &str,
    entrypoint: &str,
    job_variables: Value,
) -> Result<Uuid> {
    let flows_dir = repo_root().join("examples/flows");
    let flow_name = entrypoint.rsplit(':').next().unwrap_or("flow");
    let flow_id = api.create_flow(flow_name).await?;
    api.create_deployment(&DeploymentSpec {
        work_pool_name: Some(pool.to_owned()),
        entrypoint: Some(entrypoint.to_owned()),
        pull_steps: Some(
            json!([{"prefect.deployments.steps.set_working_directory": {"directory": flows_dir}}]),
        ),
        job_variables: Some(job_variables),
        ..DeploymentSpec::new(
            flow_id,
            format!("{flow_name}-{}", &Uuid::new_v4().simple().to_string()[..6]),
        )
    })
    .await
}

/// A unique pool name.
#[must_use]
pub fn pool_name(tag: &str) -> String {
    format!("{tag}-{}", &Uuid::new_v4().simple().to_string()[..8])
}

/// A flow run and its prepared configuration for `job_variables`, built through the golden
/// pipeline (Prefect's default template, worker `k8s-worker-1`, namespace `default`): for
/// tests that drive the [`prefect_worker_core::worker::Worker`] trait without a server.
pub fn golden_configuration(
    job_variables: Value,
) -> Result<(FlowRun, KubernetesWorkerJobConfiguration)> {
    let path = repo_root()
        .join("prefect-worker-kubernetes/tests/golden/default-template-no-job-variables.json");
    let case: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let mut input = case["input"].clone();
    input["deployment"]["job_variables"] = job_variables;
    input["flow_run"]["id"] = json!(Uuid::new_v4());
    let Value::Object(map) = preview_from_golden_input(&input)? else {
        anyhow::bail!("the golden pipeline did not give an object");
    };
    let config = KubernetesWorkerJobConfiguration::from_populated(map)?;
    let flow_run: FlowRun = serde_json::from_value(json!({
        "id": input["flow_run"]["id"], "name": input["flow_run"]["name"], "flow_id": input["flow_run"]["flow_id"]
    }))?;
    Ok((flow_run, config))
}
