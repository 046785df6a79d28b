//! Shared helpers for kubesim's own tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kubesim::{SimCluster, SimHandle};

pub async fn start() -> SimHandle {
    SimCluster::builder()
        .build()
        .start()
        .await
        .expect("start kubesim")
}

pub async fn client_for(sim: &SimHandle) -> kube::Client {
    let yaml = sim.kubeconfig_yaml("kubesim").expect("kubeconfig");
    let kc = Kubeconfig::from_yaml(&yaml).expect("parse kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

/// Bounds a wait that should succeed. Generous: it only bounds a failure, and container
/// processes start slowly on a busy machine.
pub const T: Duration = Duration::from_secs(120);

/// Poll `f` until it returns Some, or panic after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn job(name: &str, image: &str, command: Option<Vec<&str>>) -> Job {
    let mut v = serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": image}]
            }}
        }
    });
    if let Some(cmd) = command {
        v["spec"]["template"]["spec"]["containers"][0]["command"] = serde_json::json!(cmd);
    }
    serde_json::from_value(v).expect("job json")
}

pub fn has_condition(job: &Job, ty: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == ty && c.status == "True"))
}

pub fn condition_reason(job: &Job, ty: &str) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ty)?
        .reason
        .clone()
}

/// Wait for the job to have condition `ty`.
pub async fn wait_job_condition(
    sim: &SimHandle,
    ns: &str,
    name: &str,
    ty: &str,
    timeout: Duration,
) -> Job {
    eventually(timeout, &format!("job {name} condition {ty}"), || async {
        sim.get::<Job>(ns, name).filter(|j| has_condition(j, ty))
    })
    .await
}
