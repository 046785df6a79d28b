//! kubectl against the simulator: get, apply, logs, delete. Skips (with a
//! note) only when kubectl is not on PATH.
// Test helpers panic on failure by design (clippy's test allowance covers only #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use k8s_openapi::api::batch::v1::Job;

fn kubectl_available() -> bool {
    std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", kubeconfig.parent().unwrap())
        .output()
        .await
        .expect("run kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const JOB_YAML: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: kubectl-job
  labels: {app: demo}
spec:
  backoffLimit: 0
  template:
    metadata:
      labels: {app: demo}
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "echo hello from kubectl"]
"#;

#[tokio::test]
async fn kubectl_get_apply_logs_delete() {
    if !kubectl_available() {
        println!("note: kubectl not on PATH; skipping the kubectl test");
        return;
    }
    let sim = kubesim::SimCluster::builder()
        .tls(true)
        .token(Some("kubectl-token".into()))
        .build()
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kc, "kubesim").unwrap();
    let manifest = dir.path().join("job.yaml");
    std::fs::write(&manifest, JOB_YAML).unwrap();

    let (ok, out, err) = kubectl(&kc, &["get", "namespaces"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("default") && out.contains("kube-system"),
        "{out}"
    );

    let (ok, out, err) = kubectl(&kc, &["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(ok, "apply failed: {err}");
    assert!(out.contains("job.batch/kubectl-job created"), "{out}");
    wait_job_condition(&sim, "default", "kubectl-job", "Complete", T).await;

    // Re-apply is a no-op patch; a changed label is patched in.
    let (ok, out, err) = kubectl(&kc, &["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(ok, "{err}");
    assert!(out.contains("unchanged"), "{out}");
    std::fs::write(
        &manifest,
        JOB_YAML.replace(
            "labels: {app: demo}\nspec:",
            "labels: {app: demo, tier: x}\nspec:",
        ),
    )
    .unwrap();
    let (ok, out, err) = kubectl(&kc, &["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(ok, "{err}");
    assert!(out.contains("configured"), "{out}");
    let job = sim.get::<Job>("default", "kubectl-job").unwrap();
    assert_eq!(
        job.metadata.labels.unwrap().get("tier").map(String::as_str),
        Some("x")
    );

    let (ok, out, err) = kubectl(&kc, &["get", "jobs"]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("kubectl-job") && out.contains("Complete") && out.contains("1/1"),
        "{out}"
    );
    let (ok, out, err) = kubectl(&kc, &["get", "pods", "-l", "app=demo"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("Completed"), "{out}");
    let (ok, out, err) = kubectl(&kc, &["get", "job", "kubectl-job", "-o", "json"]).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"]["succeeded"], 1);

    let (ok, out, err) = kubectl(&kc, &["logs", "job/kubectl-job"]).await;
    assert!(ok, "logs failed: {err}");
    assert_eq!(out, "hello from kubectl\n");

    let (ok, out, err) = kubectl(&kc, &["delete", "job", "kubectl-job"]).await;
    assert!(ok, "delete failed: {err}");
    assert!(out.contains("deleted"), "{out}");
    assert!(sim.get::<Job>("default", "kubectl-job").is_none());
    eventually(T, "pods collected", || async {
        sim.list::<k8s_openapi::api::core::v1::Pod>(Some("default"))
            .is_empty()
            .then_some(())
    })
    .await;

    let (ok, _, err) = kubectl(&kc, &["get", "job", "kubectl-job"]).await;
    assert!(!ok);
    assert!(
        err.contains("jobs.batch \"kubectl-job\" not found"),
        "{err}"
    );
    sim.shutdown().await;
}
