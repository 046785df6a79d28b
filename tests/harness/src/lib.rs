//! A real Prefect 3.9.1 server for tests, and a thin client for its REST API.
//!
//! ```no_run
//! use std::time::Duration;
//! use prefect_test_harness::{Backend, DeploymentSpec, FlowRunSpec, PrefectServer};
//!
//! # async fn example() -> anyhow::Result<()> {
//! // One server per test binary, shared by its tests:
//! let server = PrefectServer::shared(Backend::Sqlite);
//! let api = server.api(); // one client per test
//! api.create_work_pool("pool", "kubernetes", None).await?;
//! let flow = api.create_flow("hello").await?;
//! let dep = api
//!     .create_deployment(&DeploymentSpec {
//!         work_pool_name: Some("pool".into()),
//!         ..DeploymentSpec::new(flow, "dep")
//!     })
//!     .await?;
//! let run = api
//!     .create_flow_run_from_deployment(dep, &FlowRunSpec::default())
//!     .await?;
//! let id = prefect_test_harness::id_of(&run)?;
//! api.wait_for_flow_run_state(id, &["COMPLETED"], Duration::from_secs(60))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Fault tests start their own server and take it down mid-run:
//! `let outage = tokio::spawn(server.stop_for_async(Duration::from_secs(20)));`

mod api;
mod server;

use std::path::PathBuf;

use anyhow::{Context as _, Result, anyhow};
use serde_json::Value;

pub use api::{
    ApiError, CollisionStrategy, DeploymentSpec, FlowRunSpec, PrefectApi, default_state_name,
    id_of, poll, scheduled_state, state_name, state_type,
};
pub use server::{Backend, PrefectServer, ServerOptions, provision, repo_root, script_path};

/// The Prefect version the scripts pin.
pub const PREFECT_VERSION: &str = "3.9.1";

/// `<repo>/.venv` (override: `PREFECT_TEST_VENV`), made by `prefect-server.sh provision`.
pub fn venv_dir() -> PathBuf {
    std::env::var_os("PREFECT_TEST_VENV").map_or_else(|| repo_root().join(".venv"), PathBuf::from)
}

/// The venv's `python`, which has `prefect` installed: what a simulated pod
/// runs to execute a flow run.
pub fn venv_python() -> PathBuf {
    venv_dir().join("bin/python")
}

/// The venv's `prefect` CLI.
pub fn venv_prefect() -> PathBuf {
    venv_dir().join("bin/prefect")
}

/// The Kubernetes work pool's default base job template as Prefect 3.9.1
/// ships it (the server's offline copy of the collection registry:
/// `prefect/server/api/collections_data/views/aggregate-worker-metadata.json`,
/// `prefect-kubernetes.kubernetes.default_base_job_configuration`). This is
/// what `prefect work-pool create --type kubernetes` uses when it cannot
/// reach the registry. Needs `provision` to have run.
pub fn kubernetes_default_base_job_template() -> Result<Value> {
    let lib = venv_dir().join("lib");
    let entries = std::fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))?;
    for entry in entries.flatten() {
        let file = entry.path().join(
            "site-packages/prefect/server/api/collections_data/views/aggregate-worker-metadata.json",
        );
        if file.is_file() {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let all: Value = serde_json::from_str(&text)?;
            return all
                .pointer("/prefect-kubernetes/kubernetes/default_base_job_configuration")
                .cloned()
                .ok_or_else(|| anyhow!("no kubernetes template in {}", file.display()));
        }
    }
    Err(anyhow!(
        "prefect not installed in {}: run scripts/prefect-server.sh provision",
        venv_dir().display()
    ))
}
