//! Job controller and kubelet: real processes, logs, retries, scripted
//! behaviours, garbage collection, deletion.
// Test helpers panic on failure by design (clippy's test allowance covers only #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kubesim::{Kind, SimHandle};

fn pods_of(sim: &SimHandle, job: &str) -> Vec<Pod> {
    sim.list::<Pod>(Some("default"))
        .into_iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("job-name"))
                .map(String::as_str)
                == Some(job)
        })
        .collect()
}

fn event_reasons(sim: &SimHandle, kind: Kind, name: &str) -> Vec<String> {
    sim.events_for(kind, "default", name)
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

fn waiting_reason(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

#[tokio::test]
async fn job_runs_a_real_process_to_complete_with_logs() {
    let sim = start().await;
    let client = client_for(&sim).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "creds"}, "stringData": {"key": "v4lue"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let mut j = job(
        "hello",
        "python:3.12",
        Some(vec![
            "sh",
            "-c",
            "echo hi; echo \"$SECRET $POD $LBL\"; echo oops >&2; exit 0",
        ]),
    );
    let c = &mut j
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0];
    c.env = Some(
        serde_json::from_value(serde_json::json!([
            {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "key"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "LBL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['job-name']"}}}
        ]))
        .unwrap(),
    );
    jobs.create(&PostParams::default(), &j).await.unwrap();
    let done = wait_job_condition(&sim, "default", "hello", "Complete", T).await;
    assert!(has_condition(&done, "SuccessCriteriaMet"));
    let st = done.status.unwrap();
    assert_eq!(st.succeeded, Some(1));
    assert!(st.start_time.is_some() && st.completion_time.is_some());

    let pods = pods_of(&sim, "hello");
    assert_eq!(pods.len(), 1);
    let pod = &pods[0];
    let name = pod.metadata.name.clone().unwrap();
    assert!(name.starts_with("hello-") && name.len() == "hello-".len() + 5);
    let labels = pod.metadata.labels.as_ref().unwrap();
    for k in [
        "controller-uid",
        "batch.kubernetes.io/controller-uid",
        "job-name",
        "batch.kubernetes.io/job-name",
    ] {
        assert!(labels.contains_key(k), "missing label {k}");
    }
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("Job", Some(true)));
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some("kubesim-node"));
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    let status = pod.status.as_ref().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
    assert!(status.pod_ip.is_some() && status.host_ip.is_some() && status.start_time.is_some());
    let cs = &status.container_statuses.as_ref().unwrap()[0];
    let term = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        (term.exit_code, term.reason.as_deref()),
        (0, Some("Completed"))
    );
    assert!(term.started_at.is_some() && term.finished_at.is_some());
    let conds: Vec<&str> = status
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.type_.as_str())
        .collect();
    for c in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert!(conds.contains(&c), "missing condition {c}");
    }

    // The log through the API, with tailLines and timestamps.
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let log = pods_api.logs(&name, &LogParams::default()).await.unwrap();
    assert!(log.contains("hi\n"), "{log}");
    assert!(log.contains(&format!("v4lue {name} hello\n")), "{log}");
    assert!(log.contains("oops\n"), "{log}");
    let tail = pods_api
        .logs(
            &name,
            &LogParams {
                tail_lines: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tail.lines().count(), 1);
    let ts = pods_api
        .logs(
            &name,
            &LogParams {
                timestamps: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        ts.lines()
            .all(|l| l.split(' ').next().unwrap().ends_with('Z')),
        "{ts}"
    );

    let reasons = event_reasons(&sim, Kind::Pod, &name);
    for r in ["Scheduled", "Pulling", "Pulled", "Created", "Started"] {
        assert!(
            reasons.iter().any(|x| x == r),
            "missing event {r} in {reasons:?}"
        );
    }
    assert!(
        event_reasons(&sim, Kind::Job, "hello")
            .iter()
            .any(|r| r == "Completed")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn follow_streams_live_and_delete_sends_sigterm() {
    let sim = start().await;
    let client = client_for(&sim).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let script = "trap 'echo got TERM; exit 3' TERM; echo started; while true; do sleep 0.05; done";
    jobs.create(
        &PostParams::default(),
        &job("follow", "x", Some(vec!["sh", "-c", script])),
    )
    .await
    .unwrap();
    let pod = eventually(T, "running pod", || async {
        pods_of(&sim, "follow")
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;
    let name = pod.metadata.name.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut stream = pods
        .log_stream(
            &name,
            &LogParams {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    use futures::AsyncBufReadExt;
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    assert_eq!(line, "started\n");
    assert_eq!(sim.running_processes(), 1);
    pods.delete(
        &name,
        &DeleteParams {
            grace_period_seconds: Some(5),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // SIGTERM goes to the whole process group, so the shell may first
    // report its `sleep` child as "Terminated".
    let mut rest = Vec::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await.unwrap() == 0 {
            break;
        }
        rest.push(line.clone());
    }
    assert!(rest.contains(&"got TERM\n".to_string()), "{rest:?}");
    eventually(T, "pod removed", || async {
        sim.get::<Pod>("default", &name).is_none().then_some(())
    })
    .await;
    assert_eq!(sim.running_processes(), 0);
    assert!(
        event_reasons(&sim, Kind::Pod, &name)
            .iter()
            .any(|r| r == "Killing")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn failed_after_backoff_limit_with_exit_code() {
    let sim = start().await;
    let client = client_for(&sim).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let mut j = job("fails", "x", Some(vec!["sh", "-c", "echo attempt; exit 7"]));
    j.spec.as_mut().unwrap().backoff_limit = Some(2);
    jobs.create(&PostParams::default(), &j).await.unwrap();
    let failed = wait_job_condition(&sim, "default", "fails", "Failed", T).await;
    assert_eq!(
        condition_reason(&failed, "Failed").as_deref(),
        Some("BackoffLimitExceeded")
    );
    assert!(has_condition(&failed, "FailureTarget"));
    let conds: Vec<String> = failed
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.type_.clone())
        .collect();
    assert_eq!(conds, ["FailureTarget", "Failed"]);
    assert_eq!(failed.status.as_ref().unwrap().failed, Some(3));
    let pods = pods_of(&sim, "fails");
    assert_eq!(pods.len(), 3);
    for p in &pods {
        let cs = &p
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0];
        let t = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((t.exit_code, t.reason.as_deref()), (7, Some("Error")));
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn on_failure_restarts_in_place_and_previous_log() {
    let sim = start().await;
    let client = client_for(&sim).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    // Fails on the first run, succeeds on the second (state in the pod's work dir).
    let script = "if [ -f ran ]; then echo second; exit 0; fi; touch ran; echo first; exit 1";
    let mut j = job("restart", "x", Some(vec!["sh", "-c", script]));
    j.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .restart_policy = Some("OnFailure".into());
    j.spec.as_mut().unwrap().backoff_limit = Some(3);
    jobs.create(&PostParams::default(), &j).await.unwrap();
    wait_job_condition(&sim, "default", "restart", "Complete", T).await;
    let pods = pods_of(&sim, "restart");
    assert_eq!(pods.len(), 1);
    let cs = &pods[0]
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert_eq!(cs.restart_count, 1);
    assert_eq!(
        cs.last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        1
    );
    let name = pods[0].metadata.name.clone().unwrap();
    let api: Api<Pod> = Api::namespaced(client, "default");
    assert_eq!(
        api.logs(&name, &LogParams::default()).await.unwrap(),
        "second\n"
    );
    assert_eq!(
        api.logs(
            &name,
            &LogParams {
                previous: true,
                ..Default::default()
            }
        )
        .await
        .unwrap(),
        "first\n"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn scripted_behaviours() {
    let sim = kubesim::SimCluster::builder()
        .image_pull_backoff(Duration::from_millis(100))
        .build()
        .start()
        .await
        .unwrap();
    let client = client_for(&sim).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    for (name, image) in [
        ("exit3", "sim/exit:3"),
        ("sleep", "sim/sleep:0.3"),
        ("pull", "sim/pull-error"),
        ("invalid", "sim/invalid-image"),
        ("config", "sim/config-error"),
        ("unsched", "sim/unschedulable"),
        ("oom", "sim/oom"),
        ("evict", "sim/evict:0.2"),
    ] {
        jobs.create(&PostParams::default(), &job(name, image, None))
            .await
            .unwrap();
    }
    let missing_secret = {
        let mut j = job("nosecret", "x", Some(vec!["true"]));
        j.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .env = Some(
            serde_json::from_value(serde_json::json!([
                {"name": "S", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}
            ]))
            .unwrap(),
        );
        j
    };
    jobs.create(&PostParams::default(), &missing_secret)
        .await
        .unwrap();

    let terminated = |job: &str| {
        let p = pods_of(&sim, job).pop()?;
        let t = p
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .state
            .as_ref()?
            .terminated
            .clone()?;
        Some((t.exit_code, t.reason.unwrap_or_default(), p))
    };
    let (code, _, _) = eventually(T, "exit3", || async { terminated("exit3") }).await;
    assert_eq!(code, 3);
    wait_job_condition(&sim, "default", "sleep", "Complete", T).await;
    let (code, reason, _) = eventually(T, "oom", || async { terminated("oom") }).await;
    assert_eq!((code, reason.as_str()), (137, "OOMKilled"));
    let evicted = eventually(T, "evicted", || async {
        pods_of(&sim, "evict")
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted"))
    })
    .await;
    assert_eq!(
        evicted.status.as_ref().unwrap().phase.as_deref(),
        Some("Failed")
    );
    assert!(
        evicted
            .status
            .as_ref()
            .unwrap()
            .message
            .as_ref()
            .unwrap()
            .contains("low on resource")
    );

    eventually(T, "pull backoff", || async {
        let p = pods_of(&sim, "pull").pop()?;
        let reasons = event_reasons(&sim, Kind::Pod, p.metadata.name.as_deref()?);
        (waiting_reason(&p).as_deref() == Some("ImagePullBackOff")
            && reasons.iter().any(|r| r == "BackOff"))
        .then_some(())
    })
    .await;
    let w = eventually(T, "invalid", || async {
        pods_of(&sim, "invalid")
            .pop()
            .and_then(|p| waiting_reason(&p))
    })
    .await;
    assert_eq!(w, "InvalidImageName");
    for j in ["config", "nosecret"] {
        let w = eventually(T, j, || async {
            pods_of(&sim, j)
                .pop()
                .and_then(|p| waiting_reason(&p))
                .filter(|w| w != "ContainerCreating")
        })
        .await;
        assert_eq!(w, "CreateContainerConfigError");
    }
    let p = eventually(T, "nosecret event", || async {
        let p = pods_of(&sim, "nosecret").pop()?;
        let evs = sim.events_for(Kind::Pod, "default", p.metadata.name.as_deref()?);
        evs.into_iter()
            .find(|e| e.message.as_deref() == Some("Error: secret \"absent\" not found"))
            .map(|_| p)
    })
    .await;
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Pending"));
    let unsched = eventually(T, "unschedulable", || async {
        let p = pods_of(&sim, "unsched").pop()?;
        let c = p
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "PodScheduled")?
            .clone();
        Some(c)
    })
    .await;
    assert_eq!(
        (unsched.status.as_str(), unsched.reason.as_deref()),
        ("False", Some("Unschedulable"))
    );
    assert!(
        unsched
            .message
            .unwrap()
            .contains("0/1 nodes are available: 1 Insufficient cpu.")
    );

    // Creating the missing secret lets the waiting container start.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                serde_json::json!({"metadata": {"name": "absent"}, "stringData": {"k": "v"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    wait_job_condition(&sim, "default", "nosecret", "Complete", T).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn quota_exceeded_records_failed_create() {
    let sim = start().await;
    let client = client_for(&sim).await;
    sim.set_quota_exceeded("default", true);
    let jobs: Api<Job> = Api::namespaced(client, "default");
    jobs.create(&PostParams::default(), &job("quota", "sim/exit:0", None))
        .await
        .unwrap();
    let ev = eventually(T, "FailedCreate", || async {
        sim.events_for(Kind::Job, "default", "quota")
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("FailedCreate"))
    })
    .await;
    let msg = ev.message.unwrap();
    assert!(
        msg.starts_with("Error creating: pods \"quota-")
            && msg.contains("is forbidden: exceeded quota"),
        "{msg}"
    );
    assert!(pods_of(&sim, "quota").is_empty());
    sim.set_quota_exceeded("default", false);
    wait_job_condition(&sim, "default", "quota", "Complete", T).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn deletion_propagation_and_gc() {
    let sim = start().await;
    let client = client_for(&sim).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");

    // Background (default): job goes, pods and an owned Secret follow.
    let j = jobs
        .create(&PostParams::default(), &job("bg", "sim/sleep:60", None))
        .await
        .unwrap();
    let owner = serde_json::json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "bg", "uid": j.metadata.uid.clone().unwrap()}]);
    secrets
        .create(&PostParams::default(), &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "bg-secret", "ownerReferences": owner}, "stringData": {"a": "b"}
        })).unwrap())
        .await
        .unwrap();
    eventually(T, "bg pod", || async {
        (!pods_of(&sim, "bg").is_empty()).then_some(())
    })
    .await;
    jobs.delete("bg", &DeleteParams::default()).await.unwrap();
    eventually(T, "bg gone", || async {
        (sim.get::<Job>("default", "bg").is_none()
            && sim.get::<Secret>("default", "bg-secret").is_none()
            && pods_of(&sim, "bg").is_empty())
        .then_some(())
    })
    .await;

    // Foreground: the job waits (deletionTimestamp + finalizer) for its pods. The pod's
    // process outlives SIGTERM until the test creates `release`, so the Job is seen
    // waiting however slowly the test runs.
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("release");
    let script = format!(
        "trap 'while [ ! -e {0} ]; do sleep 0.05; done; exit 0' TERM; while true; do sleep 0.05; done",
        release.display()
    );
    jobs.create(
        &PostParams::default(),
        &job("fg", "x", Some(vec!["sh", "-c", &script])),
    )
    .await
    .unwrap();
    eventually(T, "fg running", || async {
        pods_of(&sim, "fg")
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;
    jobs.delete(
        "fg",
        &DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let pending = sim
        .get::<Job>("default", "fg")
        .expect("job still there while pods terminate");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert!(
        pending
            .metadata
            .finalizers
            .unwrap()
            .contains(&"foregroundDeletion".to_string())
    );
    std::fs::write(&release, "").unwrap();
    eventually(T, "fg gone", || async {
        (sim.get::<Job>("default", "fg").is_none() && pods_of(&sim, "fg").is_empty()).then_some(())
    })
    .await;

    // Orphan: pods stay, without the owner reference.
    jobs.create(&PostParams::default(), &job("orphan", "sim/sleep:60", None))
        .await
        .unwrap();
    eventually(T, "orphan pod", || async {
        (!pods_of(&sim, "orphan").is_empty()).then_some(())
    })
    .await;
    jobs.delete(
        "orphan",
        &DeleteParams {
            propagation_policy: Some(PropagationPolicy::Orphan),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let left = pods_of(&sim, "orphan");
    assert_eq!(left.len(), 1);
    assert!(left[0].metadata.owner_references.is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn deadline_ttl_and_suspend() {
    let sim = start().await;
    let client = client_for(&sim).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let mut d = job("deadline", "sim/sleep:60", None);
    d.spec.as_mut().unwrap().active_deadline_seconds = Some(1);
    jobs.create(&PostParams::default(), &d).await.unwrap();
    let mut t = job("ttl", "sim/exit:0", None);
    t.spec.as_mut().unwrap().ttl_seconds_after_finished = Some(0);
    jobs.create(&PostParams::default(), &t).await.unwrap();
    let mut s = job("susp", "sim/sleep:0.2", None);
    s.spec.as_mut().unwrap().suspend = Some(true);
    jobs.create(&PostParams::default(), &s).await.unwrap();

    let failed = wait_job_condition(&sim, "default", "deadline", "Failed", T).await;
    assert_eq!(
        condition_reason(&failed, "Failed").as_deref(),
        Some("DeadlineExceeded")
    );
    eventually(T, "deadline pods removed", || async {
        pods_of(&sim, "deadline").is_empty().then_some(())
    })
    .await;
    eventually(T, "ttl job deleted", || async {
        sim.get::<Job>("default", "ttl").is_none().then_some(())
    })
    .await;

    let suspended = wait_job_condition(&sim, "default", "susp", "Suspended", T).await;
    assert!(suspended.status.unwrap().start_time.is_none());
    assert!(pods_of(&sim, "susp").is_empty());
    jobs.patch(
        "susp",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    wait_job_condition(&sim, "default", "susp", "Complete", T).await;
    let _ = ListParams::default();
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_leaves_no_process_behind() {
    let sim = start().await;
    let client = client_for(&sim).await;
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    // `$$$$`: the kubelet turns `$$` into `$` when expanding $(VAR) references.
    let script = format!("echo $$$$ > {}; exec sleep 30", pidfile.display());
    let jobs: Api<Job> = Api::namespaced(client, "default");
    jobs.create(
        &PostParams::default(),
        &job("lingering", "x", Some(vec!["sh", "-c", &script])),
    )
    .await
    .unwrap();
    let pid: u32 = eventually(T, "pid file", || async {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
    .await;
    assert_eq!(sim.running_processes(), 1);
    sim.shutdown().await;
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or_default()
            .trim_start()
            .starts_with('Z')
    });
    assert!(!alive, "process {pid} survived shutdown");
}
