//! `prefect-worker start`: wires settings, the REST client, the Kubernetes worker and the
//! runner together, in the order of Python's CLI (health server first, then pre-checks).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use prefect_worker_core::client::models::WorkPool;
use prefect_worker_core::client::{ClientError, ClientOptions, PrefectClient};
use prefect_worker_core::metrics::Metrics;
use prefect_worker_core::runner::{Runner, RunnerOptions, health};
use prefect_worker_core::settings::{SettingsSources, WorkerSettings};
use prefect_worker_kubernetes::{KubernetesSettings, KubernetesWorker, KubernetesWorkerOptions};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::args::StartArgs;

/// Everything `start` needs, resolved with precedence flag > env > profile > default.
#[derive(Debug)]
pub struct Resolved {
    pub sources: SettingsSources,
    pub settings: WorkerSettings,
    pub pool: String,
    pub name: String,
    pub prefetch_seconds: u64,
    pub limit: Option<usize>,
    pub create_pool_if_not_found: bool,
    pub kubernetes: KubernetesSettings,
}

/// Resolves the flags over the environment and profile.
pub fn resolve(args: &StartArgs) -> Result<Resolved> {
    let sources = SettingsSources::from_process().context("reading Prefect settings")?;
    let settings = WorkerSettings::from_sources(&sources)?;
    // Flags (and their env vars, which clap already read) win; the profile comes next.
    let pool = args
        .pool
        .clone()
        .or_else(|| sources.get("PREFECT_WORKER_POOL").map(str::to_owned))
        .context("a work pool is required: pass --pool NAME (or set PREFECT_WORKER_POOL)")?;
    let name = args
        .name
        .clone()
        .or_else(|| sources.get("PREFECT_WORKER_NAME").map(str::to_owned))
        .unwrap_or_else(|| format!("KubernetesWorker {}", uuid::Uuid::new_v4()));
    if name.contains('/') || name.contains('%') {
        bail!("--name {name:?} is invalid: worker names cannot contain '/' or '%'");
    }
    let prefetch_seconds = match args.prefetch_seconds {
        Some(s) if s.is_finite() && s >= 0.0 => s.trunc() as u64,
        Some(_) => bail!("--prefetch-seconds must be a number of seconds ≥ 0"),
        None => settings.prefetch_seconds,
    };
    let limit = match args.limit {
        Some(0) => bail!("--limit must be at least 1 (omit it for no limit)"),
        l => l,
    };
    let kubernetes = KubernetesSettings::from_sources(&sources)?;
    Ok(Resolved {
        pool,
        name,
        prefetch_seconds,
        limit,
        create_pool_if_not_found: args.create_pool_if_not_found
            && !args.no_create_pool_if_not_found,
        kubernetes,
        settings,
        sources,
    })
}

/// `prefect-worker config`: the resolved settings as JSON (secrets redacted).
pub fn show_config(args: &StartArgs) -> Result<ExitCode> {
    let r = resolve(args)?;
    let client = ClientOptions::from_env(&|k: &str| r.sources.get(k).map(str::to_owned))?;
    let out = json!({
        "profile": r.sources.profile_name(),
        "pool": r.pool,
        "name": r.name,
        "api_url": r.settings.api_url,
        "api_key": client.api_key.as_ref().map(|_| "********"),
        "auth_string": client.auth_string.as_ref().map(|_| "********"),
        "prefetch_seconds": r.prefetch_seconds,
        "query_seconds": r.settings.query_interval.as_secs_f64(),
        "heartbeat_seconds": r.settings.heartbeat_interval.as_secs_f64(),
        "cancellation_poll_seconds": r.settings.cancellation_poll_interval.as_secs_f64(),
        "enable_cancellation": r.settings.enable_cancellation,
        "channel_enabled": r.settings.channel_enabled,
        "limit": r.limit,
        "create_pool_if_not_found": r.create_pool_if_not_found,
        "webserver": format!("{}:{}", r.settings.webserver_host, r.settings.webserver_port),
        "with_healthcheck": args.with_healthcheck,
        "with_metrics": args.with_metrics,
        "logging_to_api_enabled": r.settings.logging_to_api_enabled,
        "pending_timeout_seconds": r.kubernetes.pending_timeout.map(|d| d.as_secs_f64()),
        "events_enabled": r.settings.events.enabled,
        "events_max_queue_size": r.settings.events.queue_capacity,
        "server_version_check_enabled": r.settings.events.server_version_check,
        "replicate_pod_events": r.kubernetes.replicate_pod_events,
        "startup_event_concurrency": r.kubernetes.startup_event_concurrency,
    });
    let text = serde_json::to_string_pretty(&out)?;
    write_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn write_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").context("writing to stdout")
}

/// `prefect-worker start`.
pub async fn start(args: StartArgs) -> Result<ExitCode> {
    let r = resolve(&args)?;
    if r.settings.api_url.is_none() {
        bail!("`PREFECT_API_URL` must be set to start a Worker.");
    }
    let options = ClientOptions::from_env(&|k: &str| r.sources.get(k).map(str::to_owned))?;
    let client = PrefectClient::new(options)?;

    let base_job_template = match &args.base_job_template {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--base-job-template: cannot read {}", path.display()))?;
            let v: Value = serde_json::from_str(&text).with_context(|| {
                format!("--base-job-template: {} is not valid JSON", path.display())
            })?;
            if !v.get("job_configuration").is_some_and(Value::is_object) {
                bail!(
                    "--base-job-template: {} must be an object with `job_configuration` and `variables`",
                    path.display()
                );
            }
            Some(v)
        }
        None => None,
    };

    let mut runner_options = RunnerOptions::from_settings(&r.pool, &r.name, &r.settings)
        .with_work_queues(args.work_queues.clone())
        .with_limit(r.limit)
        .with_run_once(args.run_once)
        .with_environment(r.sources.environment());
    runner_options.prefetch_seconds = r.prefetch_seconds;
    runner_options.create_pool_if_not_found = r.create_pool_if_not_found;
    runner_options.base_job_template = base_job_template;
    runner_options.max_concurrent_submissions = args.max_concurrent_submissions.max(1);
    if !(args.claim_timeout_seconds.is_finite() && args.claim_timeout_seconds >= 1.0) {
        bail!(
            "--claim-timeout-seconds must be a number of seconds ≥ 1 (got {})",
            args.claim_timeout_seconds
        );
    }
    runner_options.claim_timeout = Duration::from_secs_f64(args.claim_timeout_seconds);
    runner_options.recover_claims = args.recover_claims;
    // Look for abandoned claims at least once per claim timeout.
    runner_options.reconcile_interval = runner_options
        .heartbeat_interval
        .min(runner_options.claim_timeout);

    let mut worker_options =
        KubernetesWorkerOptions::new(&r.name).with_settings(r.kubernetes.clone());
    let metrics = args.with_metrics.then(Metrics::new);
    if let Some(m) = &metrics {
        runner_options = runner_options.with_metrics(m);
        worker_options = worker_options.with_metrics(m);
    }
    let worker = KubernetesWorker::new(worker_options);
    let runner = Runner::new(worker, client.clone(), runner_options);
    let shutdown = CancellationToken::new();

    // The web server first, before any API call, as Python's CLI: /health with
    // --with-healthcheck, /metrics with --with-metrics.
    if args.with_healthcheck || metrics.is_some() {
        let addr: SocketAddr = format!(
            "{}:{}",
            r.settings.webserver_host, r.settings.webserver_port
        )
        .parse()
        .context("PREFECT_WORKER_WEBSERVER_HOST/PORT do not form a valid address")?;
        let stop = shutdown.clone();
        let app = health::router_with(args.with_healthcheck.then(|| runner.health()), metrics);
        health::serve_router(addr, app, async move { stop.cancelled().await })
            .await
            .with_context(|| {
                format!("cannot serve the web server (health check, metrics) on {addr}")
            })?;
    }

    // The pre-checks read the pool beside the runner's first poll (which does not need
    // it) and hand it over; the runner submits nothing before it has the pool, and a check
    // that fails stops the worker before any run is claimed.
    let (pool_tx, pool_rx) = tokio::sync::oneshot::channel();
    let runner = runner.with_work_pool_from(pool_rx);
    let checks = async {
        let found = precheck(
            &client,
            &r.pool,
            &args.work_queues,
            args.worker_type.as_deref(),
        )
        .await?;
        let _ = pool_tx.send(found);
        anyhow::Ok(())
    };
    spawn_signal_handler(shutdown.clone());
    let run = runner.run(shutdown.clone());
    tokio::pin!(run);
    tokio::select! {
        checked = checks => {
            checked?;
            run.await?;
        }
        ran = &mut run => ran?,
    }
    shutdown.cancel();
    Ok(ExitCode::SUCCESS)
}

/// Python's CLI checks: warn on a paused pool or paused queues; refuse push/managed pools
/// and pools of another type (this binary only runs Kubernetes workers). Returns the pool
/// when it exists.
async fn precheck(
    client: &PrefectClient,
    pool: &str,
    queues: &[String],
    worker_type: Option<&str>,
) -> Result<Option<WorkPool>> {
    if let Some(t) = worker_type
        && t != "kubernetes"
    {
        bail!(
            "--type {t:?} is not supported: this binary runs Kubernetes workers only (--type kubernetes)"
        );
    }
    let found = match client.read_work_pool(pool).await {
        Ok(p) => {
            if p.is_paused {
                tracing::warn!(
                    pool,
                    "Work pool '{pool}' is paused. This worker will not execute any flow runs until the work pool is unpaused."
                );
            }
            if p.pool_type.ends_with(":push") || p.pool_type.ends_with(":managed") {
                bail!(
                    "Workers are not required for push work pools. Pool '{pool}' has type '{}'.",
                    p.pool_type
                );
            }
            if worker_type.is_none() && p.pool_type != "kubernetes" {
                bail!(
                    "work pool '{pool}' has type '{}', but this binary runs Kubernetes workers only; use a 'kubernetes' pool",
                    p.pool_type
                );
            }
            Some(p)
        }
        Err(ClientError::NotFound(_)) => None,
        Err(e @ (ClientError::Unauthorized(_) | ClientError::Forbidden(_))) => {
            bail!(
                "the Prefect API rejected this worker's credentials: {e}. Check PREFECT_API_KEY (or PREFECT_API_AUTH_STRING) and PREFECT_API_URL"
            );
        }
        Err(e) => {
            tracing::debug!(error = %e, "work pool pre-check skipped");
            None
        }
    };
    // Only a warning: checked beside start-up rather than before it.
    let (client, pool, queues) = (client.clone(), pool.to_owned(), queues.to_vec());
    tokio::spawn(async move {
        let names = (!queues.is_empty()).then_some(queues.as_slice());
        if let Ok(qs) = client.read_work_queues(&pool, names).await
            && !qs.is_empty()
            && qs.iter().all(|q| q.is_paused)
        {
            tracing::warn!(
                pool,
                "All work queues are paused. This worker will not execute any flow runs until a work queue is unpaused."
            );
        }
    });
    Ok(found)
}

/// First SIGINT/SIGTERM: graceful shutdown. Second: exit at once.
fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        for round in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                tracing::info!(
                    "received a shutdown signal; finishing submissions in progress (send it again to exit now)"
                );
                shutdown.cancel();
            } else {
                tracing::warn!("second shutdown signal: exiting now");
                std::process::exit(130);
            }
        }
    });
}
