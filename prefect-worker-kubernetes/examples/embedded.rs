//! Runs the Kubernetes worker inside an existing tokio application, with the
//! application's own shutdown signal.
//!
//! ```sh
//! PREFECT_API_URL=http://127.0.0.1:4200/api KUBECONFIG=~/.kube/config \
//!     cargo run -p prefect-worker-kubernetes --example embedded -- my-pool
//! ```
//!
//! The application decides when the worker stops (here: Ctrl-C, or after
//! `EMBEDDED_SECONDS` seconds); the worker then finishes the submissions in progress,
//! leaves running Jobs alone (a restarted worker adopts them) and returns.

use std::time::Duration;

use prefect_worker_core::client::{ClientOptions, PrefectClient};
use prefect_worker_core::runner::{Runner, RunnerOptions};
use prefect_worker_core::settings::{SettingsSources, WorkerSettings};
use prefect_worker_kubernetes::{KubernetesSettings, KubernetesWorker, KubernetesWorkerOptions};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "my-pool".to_owned());
    // Settings the way the binary reads them: environment over the active profile.
    let sources = SettingsSources::from_process()?;
    let settings = WorkerSettings::from_sources(&sources)?;
    let client = PrefectClient::new(ClientOptions::from_env(&|k: &str| {
        sources.get(k).map(str::to_owned)
    })?)?;

    let name = "embedded-worker";
    let worker = KubernetesWorker::new(
        KubernetesWorkerOptions::new(name)
            .with_settings(KubernetesSettings::from_sources(&sources)?),
    );
    let options = RunnerOptions::from_settings(&pool, name, &settings)
        .with_environment(sources.environment());
    // Worker and pod events are on by default (PREFECT_WORKER_EVENTS_ENABLED);
    // `runner.events().stats()` counts what was delivered and dropped.
    let runner = Runner::new(worker, client, options);

    // The application's own shutdown signal.
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    let seconds: u64 = std::env::var("EMBEDDED_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX / 4);
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = tokio::time::sleep(Duration::from_secs(seconds)) => {}
        }
        trigger.cancel();
    });

    runner.run(shutdown).await?;
    Ok(())
}
