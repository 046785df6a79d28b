//! Opt-in RBAC through the real HTTP server, seen by kube-rs: what a Role grants
//! works, the rest is a 403 `Status` in the RBAC authorizer's wording, subresources
//! (`pods/log`) are separate resources, and the request log says what was refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::api::{Api, ListParams, LogParams, PostParams};
use kubesim::{Rbac, RequestAttributes};

const ROLE: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: worker, namespace: default}
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "watch", "list"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
"#;

fn status(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_role_is_enforced_by_resource_subresource_verb_and_namespace() {
    let sim = start().await;
    let client = client_for(&sim).await;
    sim.set_rbac(Some(
        Rbac::from_yaml(ROLE)
            .unwrap()
            .with_user("system:serviceaccount:default:worker"),
    ));
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // Granted: create a Job, its pod runs, list and watch both.
    jobs.create(
        &PostParams::default(),
        &job("j", "busybox", Some(vec!["sh", "-c", "echo hi"])),
    )
    .await
    .unwrap();
    let pod = eventually(Duration::from_secs(30), "the Job's pod", || async {
        pods.list(&ListParams::default().labels("job-name=j"))
            .await
            .unwrap()
            .items
            .pop()
    })
    .await;
    let pod_name = pod.metadata.name.clone().unwrap();

    // Refused: the log subresource, events, secrets, another namespace, a verb.
    let e = status(
        pods.logs(&pod_name, &LogParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        e.message,
        format!(
            "pods \"{pod_name}\" is forbidden: User \"system:serviceaccount:default:worker\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"default\""
        )
    );
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let e = status(events.list(&ListParams::default()).await.unwrap_err());
    assert!(
        e.message.starts_with("events is forbidden:")
            && e.message.contains("cannot list resource \"events\""),
        "{}",
        e.message
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    assert_eq!(
        status(secrets.get("x").await.unwrap_err()).code,
        403,
        "refused before the 404: RBAC runs first"
    );
    let other: Api<Job> = Api::namespaced(client.clone(), "kube-system");
    assert_eq!(
        status(other.list(&ListParams::default()).await.unwrap_err()).code,
        403
    );
    let all: Api<Job> = Api::all(client.clone());
    let e = status(all.list(&ListParams::default()).await.unwrap_err());
    assert!(e.message.ends_with("at the cluster scope"), "{}", e.message);
    assert_eq!(
        status(
            pods.delete(&pod_name, &Default::default())
                .await
                .unwrap_err()
        )
        .code,
        403
    );

    // The request log names what was refused, as RBAC attributes.
    let refused: Vec<String> = sim
        .requests()
        .iter()
        .filter(|r| r.status == 403)
        .filter_map(|r| r.attributes().map(|a| a.to_string()))
        .collect();
    assert_eq!(
        refused,
        [
            "get pods/log in namespace default",
            "list events in namespace default",
            "get secrets in namespace default",
            "list jobs.batch in namespace kube-system",
            "list jobs.batch cluster-wide",
            "delete pods in namespace default",
        ]
    );

    // Off again: everything is allowed.
    sim.set_rbac(None);
    assert!(events.list(&ListParams::default()).await.is_ok());
    let logged = RequestAttributes::of(
        "GET",
        &format!("/api/v1/namespaces/default/pods/{pod_name}/log"),
        "",
    );
    assert!(!Rbac::from_yaml(ROLE).unwrap().allows(&logged.unwrap()));
    sim.shutdown().await;
}
