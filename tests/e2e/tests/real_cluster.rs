//! The Kubernetes worker against a real cluster (kind, k3d, ...): the current kubeconfig.
//! Run with `cargo test -p e2e --test real_cluster -- --ignored`. The Jobs need only public
//! images (busybox); no Prefect server is involved (the run context points nowhere, so the
//! worker's Prefect calls fail quietly).

// Fixtures: a cluster that cannot be reached is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use prefect_worker_core::client::{ClientOptions, PrefectClient};
use prefect_worker_core::runner::{FlowRunLogger, RunContext};
use prefect_worker_core::worker::Worker;
use prefect_worker_kubernetes::{KubernetesWorker, KubernetesWorkerOptions};
use serde_json::{Value, json};

async fn run(job_variables: Value) -> prefect_worker_core::WorkerResult {
    let (flow_run, config) = e2e::k8s::golden_configuration(job_variables).unwrap();
    // The golden manifest carries `prefect.io/worker-name: k8s-worker-1`, which the
    // worker's shared watches select on.
    let worker = KubernetesWorker::new(KubernetesWorkerOptions::new("k8s-worker-1"));
    let client = PrefectClient::new(ClientOptions::new("http://127.0.0.1:9/api")).unwrap();
    let (ctx, _started) = RunContext::new(FlowRunLogger::detached(flow_run.id), client);
    let result = worker.run(&flow_run, config, ctx).await.unwrap();
    worker.teardown().await;
    result
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn a_container_exiting_3_reports_3() {
    let r = run(json!({"image": "busybox:1.36", "command": "sh -c 'echo bye; exit 3'"})).await;
    assert_eq!(r.status_code, 3, "{r:?}");
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn a_container_exiting_0_reports_0() {
    let r = run(json!({"image": "busybox:1.36", "command": "true"})).await;
    assert_eq!(r.status_code, 0, "{r:?}");
}

#[tokio::test]
#[ignore = "needs a cluster"]
async fn an_unpullable_image_is_reported_at_the_pod_watch_timeout() {
    let r =
        run(json!({"image": "prefect-worker-rs.invalid/none:0", "pod_watch_timeout_seconds": 30}))
            .await;
    assert_eq!(r.status_code, -1, "{r:?}");
    assert!(
        r.detail
            .as_deref()
            .unwrap_or_default()
            .contains("Image pull failed"),
        "{r:?}"
    );
}
