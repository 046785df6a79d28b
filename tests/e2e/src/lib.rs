//! Shared helpers for the end-to-end tests: a recording test [`Worker`](prefect_worker_core::Worker) that the generic
//! runner drives against a real Prefect server, and a per-test pool/flow/deployment setup.

// Test infrastructure: a poisoned lock or a failed setup is a failed test, said loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod chaos;
pub mod chart;
pub mod exposition;
pub mod k8s;
pub mod log_capture;
pub mod malformed;
pub mod process;
pub mod proxy;
pub mod proxy_ws;
pub mod recording;

use std::time::Duration;

use anyhow::Result;
use prefect_test_harness::{DeploymentSpec, PrefectApi};
use serde_json::{Value, json};
use uuid::Uuid;

/// A base job template for [`recording::RecordingWorker`]: the base configuration fields,
/// with the behaviour chosen through `env.BEHAVIOR`.
#[must_use]
pub fn recording_template() -> Value {
    json!({
        "job_configuration": {
            "command": "{{ command }}",
            "env": "{{ env }}",
            "labels": "{{ labels }}",
            "name": "{{ name }}"
        },
        "variables": {
            "type": "object",
            "properties": {
                "command": {"type": ["string", "null"], "default": null},
                "env": {"type": "object"},
                "labels": {"type": "object"},
                "name": {"type": ["string", "null"], "default": null}
            }
        }
    })
}

/// A pool, flow and deployment of one test, with unique names.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub pool: String,
    pub flow_id: Uuid,
    pub deployment_id: Uuid,
}

impl Scenario {
    /// Creates a pool of `pool_type` with `template`, a flow, and a deployment whose runs
    /// behave as `behavior` (the behaviours of [`recording`]).
    pub async fn create(
        api: &PrefectApi,
        tag: &str,
        pool_type: &str,
        template: &Value,
        behavior: &str,
    ) -> Result<Self> {
        let suffix = &Uuid::new_v4().simple().to_string()[..8];
        let pool = format!("{tag}-{suffix}");
        api.create_work_pool(&pool, pool_type, Some(template))
            .await?;
        let flow_id = api.create_flow(&format!("flow-{tag}-{suffix}")).await?;
        let deployment_id = api
            .create_deployment(&DeploymentSpec {
                work_pool_name: Some(pool.clone()),
                job_variables: Some(json!({"env": {"BEHAVIOR": behavior}})),
                ..DeploymentSpec::new(flow_id, format!("dep-{tag}"))
            })
            .await?;
        Ok(Self {
            pool,
            flow_id,
            deployment_id,
        })
    }
}

/// Fast intervals so tests finish quickly.
pub const QUERY: Duration = Duration::from_millis(300);
pub const HEARTBEAT: Duration = Duration::from_secs(2);
pub const CANCEL_POLL: Duration = Duration::from_millis(500);

/// Polls `probe` every 100 ms until it answers `true`, failing after `timeout` with `what`.
/// (Waiting on an external system with a deadline; never a fixed sleep.)
pub async fn until<F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match probe().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what} {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
