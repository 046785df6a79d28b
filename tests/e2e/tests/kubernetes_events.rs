//! (The pods run `sim/exit:0`, not Prefect: what is measured is the worker's tracking.)
//!
//! The FailedCreate/quota diagnosis reads events through ONE shared, lazily started events
//! watch per namespace (never a list per run on a timer), and degrades to one refused
//! request when the worker may not read events (a Role without `events`, like the
//! prefect-helm chart's).

// Fixtures: a server that cannot start is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Result;
use e2e::k8s::{InProcessWorker, flow_deployment, pool_name, start_cluster};
use e2e::until;
use prefect_test_harness::{Backend, FlowRunSpec, PrefectApi, PrefectServer, id_of};
use prefect_worker_kubernetes::KubernetesSettings;
use serde_json::json;
use uuid::Uuid;

const T: Duration = Duration::from_secs(120);

fn server() -> &'static PrefectServer {
    static SERVER: OnceLock<PrefectServer> = OnceLock::new();
    SERVER.get_or_init(|| PrefectServer::start(Backend::Sqlite).expect("start the Prefect server"))
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

/// Whether every Job of the test's runs has completed.
fn jobs_completed(sim: &kubesim::SimHandle, n: usize) -> bool {
    let jobs = sim.list::<k8s_openapi::api::batch::v1::Job>(Some("default"));
    jobs.len() == n
        && jobs.iter().all(|j| {
            j.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Complete" && c.status == "True")
                })
        })
}

/// Requests on events: (lists, watches, refused).
fn events_requests(sim: &kubesim::SimHandle) -> (usize, usize, usize) {
    let reqs: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/events"))
        .collect();
    let watches = reqs.iter().filter(|r| r.is_watch()).count();
    let refused = reqs.iter().filter(|r| r.status == 403).count();
    (reqs.len() - watches, watches, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_failed_create_reaches_three_runs_through_one_events_watch() -> Result<()> {
    let api = server().api();
    let sim = start_cluster().await?;
    sim.set_quota_exceeded("default", true);
    let pool = pool_name("events");
    let w = InProcessWorker::start(
        server().api_url(),
        &sim,
        &pool,
        KubernetesSettings::default(),
    )
    .await?;
    let dep = flow_deployment(
        &api,
        &pool,
        "hello.py:hello",
        json!({"image": "sim/exit:0"}),
    )
    .await?;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(run_now(&api, dep).await?);
    }
    for id in &ids {
        until("the FailedCreate diagnosis in every run", T, || async {
            Ok(logs(&api, *id).await.iter().any(|m| {
                m.starts_with("Kubernetes cannot create the Job's pod")
                    && m.contains("exceeded quota")
            }))
        })
        .await?;
    }
    let (lists, watches, _) = events_requests(&sim);
    assert!(
        lists <= 2 && watches <= 2,
        "one shared watch (a list, then a watch), not a list per run: {lists} lists, {watches} watches"
    );
    assert!(
        sim.requests()
            .iter()
            .filter(|r| r.path.ends_with("/events"))
            .all(|r| r.query.contains("reason%3DFailedCreate")
                || r.query.contains("reason=FailedCreate")),
        "filtered on the server: {:?}",
        sim.requests()
    );
    assert_eq!(sim.watch_counters().open("events", Some("default")), 1);

    // Quota lifted: the pods start, the Jobs complete, and nobody needs events any more.
    sim.set_quota_exceeded("default", false);
    until("the three Jobs to complete", T, || async {
        Ok(jobs_completed(&sim, 3))
    })
    .await?;
    until("the events watch to stop", T, || async {
        Ok(sim.watch_counters().open("events", Some("default")) == 0)
    })
    .await?;
    w.stop().await?;
    sim.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_events_permission_one_refusal_and_the_runs_still_complete() -> Result<()> {
    let api = server().api();
    let sim = start_cluster().await?;
    // A Role with everything the worker uses but `events`.
    sim.set_rbac(Some(kubesim::rbac::Rbac::from_yaml(ROLE_WITHOUT_EVENTS)?));
    sim.set_quota_exceeded("default", true);
    let pool = pool_name("noevents");
    let w = InProcessWorker::start(
        server().api_url(),
        &sim,
        &pool,
        KubernetesSettings::default(),
    )
    .await?;
    let dep = flow_deployment(
        &api,
        &pool,
        "hello.py:hello",
        json!({"image": "sim/exit:0"}),
    )
    .await?;
    let first = run_now(&api, dep).await?;
    until("the events request to be refused", T, || async {
        Ok(events_requests(&sim).2 == 1)
    })
    .await?;
    // A run that needs events after the refusal does not ask again; it says why its pod
    // is missing without a diagnosis.
    let second = run_now(&api, dep).await?;
    until(
        "the second run to explain the missing diagnosis",
        T,
        || async {
            Ok(logs(&api, second).await.iter().any(|m| {
                m.contains("has no pod yet") && m.contains("`list` and `watch` on `events`")
            }))
        },
    )
    .await?;
    let (lists, watches, refused) = events_requests(&sim);
    assert_eq!(
        (lists, watches, refused),
        (1, 0, 1),
        "one refused list, never asked again"
    );

    sim.set_quota_exceeded("default", false);
    until("both Jobs to complete", T, || async {
        Ok(jobs_completed(&sim, 2))
    })
    .await?;
    let _ = first;
    assert_eq!(events_requests(&sim), (1, 0, 1));
    w.stop().await?;
    sim.shutdown().await;
    Ok(())
}

/// The worker's Role (`deploy/rbac.yaml`) in `default`, without `events`.
const ROLE_WITHOUT_EVENTS: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: worker-without-events
  namespace: default
rules:
  - apiGroups: ["batch"]
    resources: ["jobs"]
    verbs: ["create", "get", "list", "watch", "delete"]
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["list", "watch"]
  - apiGroups: [""]
    resources: ["pods/log"]
    verbs: ["get"]
"#;
