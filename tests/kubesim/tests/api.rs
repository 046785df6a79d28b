//! The API server against kube-rs: CRUD, selectors, paging, watch, errors.
// Test helpers panic on failure by design (clippy's test allowance covers only #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;

fn secret(name: &str, labels: &[(&str, &str)]) -> Secret {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": labels},
        "stringData": {"token": "s3cret"}
    }))
    .unwrap()
}

fn api_err(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn crud_defaults_and_status_errors() {
    let sim = start().await;
    let client = client_for(&sim).await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");

    let created = jobs
        .create(&PostParams::default(), &job("crud", "sim/sleep:30", None))
        .await
        .unwrap();
    let uid = created.metadata.uid.clone().unwrap();
    let spec = created.spec.as_ref().unwrap();
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(spec.completions, Some(1));
    assert_eq!(spec.parallelism, Some(1));
    assert_eq!(spec.completion_mode.as_deref(), Some("NonIndexed"));
    assert_eq!(spec.suspend, Some(false));
    let sel = spec
        .selector
        .as_ref()
        .unwrap()
        .match_labels
        .as_ref()
        .unwrap();
    assert_eq!(sel.get("batch.kubernetes.io/controller-uid"), Some(&uid));
    let tl = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(tl.get("job-name").map(String::as_str), Some("crud"));
    assert_eq!(
        tl.get("batch.kubernetes.io/job-name").map(String::as_str),
        Some("crud")
    );
    let ps = spec.template.spec.as_ref().unwrap();
    assert_eq!(ps.termination_grace_period_seconds, Some(30));
    assert_eq!(ps.dns_policy.as_deref(), Some("ClusterFirst"));
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, Some(1));

    // 409 AlreadyExists, real wording.
    let e = api_err(
        jobs.create(&PostParams::default(), &job("crud", "sim/sleep:1", None))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(e.message, "jobs.batch \"crud\" already exists");

    // 404 NotFound.
    let e = api_err(jobs.get("nope").await.unwrap_err());
    assert_eq!(e.code, 404);
    assert_eq!(e.message, "jobs.batch \"nope\" not found");

    // generateName: 5 random chars.
    let mut g = job("", "sim/sleep:1", None);
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let g = jobs.create(&PostParams::default(), &g).await.unwrap();
    let n = g.metadata.name.unwrap();
    assert!(n.starts_with("gen-") && n.len() == 9, "{n}");

    // 422 Invalid: a job name that cannot be a label value.
    let long = "a".repeat(64);
    let e = api_err(
        jobs.create(&PostParams::default(), &job(&long, "sim/sleep:1", None))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    assert!(
        e.message
            .starts_with(&format!("Job.batch \"{long}\" is invalid: ")),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("must be no more than 63 characters"),
        "{}",
        e.message
    );
    let mut bad = job("", "sim/sleep:1", None);
    bad.metadata.name = None;
    bad.metadata.generate_name = Some("Bad_Name-".into());
    let e = api_err(jobs.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("metadata.generateName: Invalid value: \"Bad_Name-\""),
        "{}",
        e.message
    );
    let mut no_image = job("no-image", "x", None);
    no_image
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .image = None;
    let e = api_err(
        jobs.create(&PostParams::default(), &no_image)
            .await
            .unwrap_err(),
    );
    assert!(
        e.message
            .contains("spec.template.spec.containers[0].image: Required value"),
        "{}",
        e.message
    );
    let mut always = job("always", "x", None);
    always
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .restart_policy = Some("Always".into());
    let e = api_err(
        jobs.create(&PostParams::default(), &always)
            .await
            .unwrap_err(),
    );
    assert!(
        e.message.contains("Unsupported value: \"Always\""),
        "{}",
        e.message
    );

    // Namespace mismatch → 400; missing namespace → 404.
    let mut other = job("other-ns", "sim/sleep:1", None);
    other.metadata.namespace = Some("kube-system".into());
    let e = api_err(
        jobs.create(&PostParams::default(), &other)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
    let missing: Api<Job> = Api::namespaced(client.clone(), "missing");
    let e = api_err(
        missing
            .create(&PostParams::default(), &job("x", "sim/sleep:1", None))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
    assert_eq!(e.message, "namespaces \"missing\" not found");

    // Merge patch and strategic merge patch on labels / spec.suspend.
    let p = jobs
        .patch(
            "crud",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"a": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        p.metadata.labels.unwrap().get("a").map(String::as_str),
        Some("1")
    );
    let p = jobs
        .patch(
            "crud",
            &PatchParams::default(),
            &Patch::Strategic(serde_json::json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    assert_eq!(p.spec.unwrap().suspend, Some(true));
    assert_eq!(p.metadata.generation, Some(2));

    // Replace with a stale resourceVersion → 409 Conflict.
    let mut stale = created.clone();
    stale.metadata.labels = Some([("b".to_string(), "2".to_string())].into());
    let e = api_err(
        jobs.replace("crud", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    let mut fresh = jobs.get("crud").await.unwrap();
    fresh.metadata.labels = Some([("b".to_string(), "2".to_string())].into());
    let r = jobs
        .replace("crud", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert!(
        r.metadata.resource_version
            > fresh
                .metadata
                .resource_version
                .clone()
                .map(|_| String::new())
    );

    // Delete; a second delete is 404.
    jobs.delete("crud", &DeleteParams::default()).await.unwrap();
    eventually(T, "job gone", || async {
        sim.get::<Job>("default", "crud").is_none().then_some(())
    })
    .await;
    assert_eq!(
        api_err(
            jobs.delete("crud", &DeleteParams::default())
                .await
                .unwrap_err()
        )
        .code,
        404
    );

    // Built-in namespaces with stable uids.
    let nss: Api<Namespace> = Api::all(client);
    let d = nss.get("default").await.unwrap();
    assert_eq!(
        d.metadata.uid.as_deref(),
        Some(kubesim::DEFAULT_NAMESPACE_UID)
    );
    assert!(nss.get("kube-system").await.is_ok());
    sim.shutdown().await;
}

#[tokio::test]
async fn selectors_paging_and_cluster_wide_lists() {
    let sim = start().await;
    let client = client_for(&sim).await;
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({"metadata": {"name": "team-a"}})).unwrap(),
    )
    .await
    .unwrap();
    let a: Api<Secret> = Api::namespaced(client.clone(), "default");
    let b: Api<Secret> = Api::namespaced(client.clone(), "team-a");
    for (i, env) in ["prod", "dev", "test"].iter().enumerate() {
        a.create(
            &PostParams::default(),
            &secret(&format!("s{i}"), &[("env", env), ("app", "x")]),
        )
        .await
        .unwrap();
    }
    b.create(&PostParams::default(), &secret("other", &[("env", "prod")]))
        .await
        .unwrap();
    let names = |l: kube::core::ObjectList<Secret>| {
        let mut v: Vec<String> = l
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        v.sort();
        v
    };
    let q = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(a.list(&q("env=prod")).await.unwrap()), ["s0"]);
    assert_eq!(names(a.list(&q("env==prod")).await.unwrap()), ["s0"]);
    assert_eq!(names(a.list(&q("env!=prod")).await.unwrap()), ["s1", "s2"]);
    assert_eq!(
        names(a.list(&q("env in (dev,test)")).await.unwrap()),
        ["s1", "s2"]
    );
    assert_eq!(
        names(a.list(&q("env notin (dev,test)")).await.unwrap()),
        ["s0"]
    );
    assert_eq!(names(a.list(&q("app")).await.unwrap()), ["s0", "s1", "s2"]);
    assert_eq!(names(a.list(&q("!app")).await.unwrap()).len(), 0);
    assert_eq!(
        names(
            a.list(&ListParams::default().fields("metadata.name=s1"))
                .await
                .unwrap()
        ),
        ["s1"]
    );
    let all: Api<Secret> = Api::all(client.clone());
    assert_eq!(
        names(all.list(&q("env=prod")).await.unwrap()),
        ["other", "s0"]
    );
    assert_eq!(
        names(
            all.list(&ListParams::default().fields("metadata.namespace=team-a"))
                .await
                .unwrap()
        ),
        ["other"]
    );
    // Stored secrets fold stringData into data.
    let s0 = a.get("s0").await.unwrap();
    assert_eq!(s0.data.unwrap().get("token").unwrap().0, b"s3cret");
    assert!(s0.string_data.is_none());

    // Paging.
    let p1 = a.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(p1.items.len(), 2);
    let token = p1.metadata.continue_.clone().unwrap();
    let p2 = a
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(p2.items.len(), 1);
    assert!(
        p2.metadata
            .continue_
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    );

    // Unsupported field selector → 400 as real.
    let e = api_err(
        a.list(&ListParams::default().fields("spec.foo=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn raw_watch_events_bookmarks_and_gone() {
    let sim = kubesim::SimCluster::builder()
        .bookmark_interval(Duration::from_millis(200))
        .history_limit(16)
        .build()
        .start()
        .await
        .unwrap();
    let client = client_for(&sim).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let first = secrets
        .create(&PostParams::default(), &secret("w0", &[("w", "1")]))
        .await
        .unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    let mut stream = secrets
        .watch(&WatchParams::default().labels("w=1"), &rv)
        .await
        .unwrap()
        .boxed();
    secrets
        .create(&PostParams::default(), &secret("w1", &[("w", "1")]))
        .await
        .unwrap();
    secrets
        .create(&PostParams::default(), &secret("unrelated", &[("w", "2")]))
        .await
        .unwrap();
    secrets
        .delete("w1", &DeleteParams::default())
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut bookmark = false;
    while seen.len() < 2 || !bookmark {
        match tokio::time::timeout(T, stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(s) => seen.push(format!("ADDED {}", s.metadata.name.unwrap())),
            WatchEvent::Deleted(s) => seen.push(format!("DELETED {}", s.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => bookmark = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["ADDED w1", "DELETED w1"]);
    assert_eq!(sim.watch_counters().open("secrets", Some("default")), 1);
    drop(stream);

    // Churn past the 16-change history: resuming from `rv` is 410 Gone.
    for i in 0..20 {
        secrets
            .create(&PostParams::default(), &secret(&format!("c{i}"), &[]))
            .await
            .unwrap();
    }
    let mut stream = secrets
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
    eventually(T, "watch closed", || async {
        (sim.watch_counters().open("secrets", Some("default")) == 0).then_some(())
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn runtime_watcher_relists_after_forced_gone_and_cut() {
    let sim = start().await;
    let client = client_for(&sim).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    // Streams get cut after 1 event, and the next re-watch hits a 410.
    sim.cut_watches_after_events(Some(1));
    let stream = watcher(pods.clone(), watcher::Config::default()).boxed();
    sim.force_watch_gone(1);
    let handle = tokio::spawn(async move {
        let mut s = stream;
        let mut names = std::collections::BTreeSet::new();
        while names.len() < 3 {
            match s.try_next().await {
                Ok(Some(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => {
                    names.insert(p.metadata.name.unwrap());
                }
                Ok(_) => {}
                Err(_) => {} // the watcher backs off and recovers on its own
            }
        }
        names
    });
    for i in 0..3 {
        let mut j = job(&format!("wj{i}"), "sim/sleep:30", None);
        j.metadata.labels = Some([("t".to_string(), "w".to_string())].into());
        jobs.create(&PostParams::default(), &j).await.unwrap();
    }
    let names = tokio::time::timeout(T, handle).await.unwrap().unwrap();
    assert_eq!(names.len(), 3);
    let total = sim.watch_counters().opened_total("pods", Some("default"));
    assert!(
        total >= 2,
        "watch should have been re-opened, opened {total}"
    );
    let lists = sim
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/namespaces/default/pods" && !r.is_watch())
        .count();
    assert!(lists >= 2, "410 must trigger a relist, saw {lists} lists");
    sim.clear_faults();
    sim.shutdown().await;
}

#[tokio::test]
async fn token_auth_and_fault_knobs() {
    let sim = kubesim::SimCluster::builder()
        .token(Some("t0ken".into()))
        .build()
        .start()
        .await
        .unwrap();
    let client = client_for(&sim).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    secrets.list(&ListParams::default()).await.unwrap();

    // Wrong token → 401 Status.
    let http = reqwest_like(&sim, "/api/v1/namespaces/default/secrets", Some("wrong")).await;
    assert_eq!(http.0, 401);
    assert!(
        http.1.contains("\"kind\":\"Status\"") && http.1.contains("Unauthorized"),
        "{}",
        http.1
    );

    // 429 with Retry-After.
    sim.set_throttle(1.0, 7);
    let raw = reqwest_like(&sim, "/api/v1/namespaces/default/secrets", Some("t0ken")).await;
    assert_eq!(raw.0, 429);
    assert_eq!(raw.2.as_deref(), Some("7"));
    sim.clear_faults();

    // 500s.
    sim.set_error_rate(1.0);
    let e = api_err(secrets.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(e.code, 500);
    sim.clear_faults();

    // Forbidden namespace.
    sim.forbid_namespace("default");
    let e = api_err(secrets.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert!(
        e.message.contains("cannot list resource \"secrets\""),
        "{}",
        e.message
    );
    sim.allow_namespace("default");

    // Pause holds requests until resumed.
    sim.pause();
    let s2 = secrets.clone();
    let pending = tokio::spawn(async move { s2.list(&ListParams::default()).await });
    eventually(T, "the request to be held", || async {
        (sim.held_requests() == 1).then_some(())
    })
    .await;
    assert!(!pending.is_finished(), "request should hang while paused");
    sim.resume();
    tokio::time::timeout(T, pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // Latency.
    sim.set_latency(Duration::from_millis(300));
    let t = std::time::Instant::now();
    secrets.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    sim.clear_faults();

    // The request log saw all of it.
    let log = sim.requests();
    assert!(log.iter().any(|r| r.status == 401));
    assert!(log.iter().any(|r| r.status == 429));
    assert!(
        log.iter()
            .any(|r| r.status == 403 && r.path == "/api/v1/namespaces/default/secrets")
    );
    sim.shutdown().await;
}

/// Minimal raw HTTP/1.1 GET (to see status codes and headers kube-rs hides).
async fn reqwest_like(
    sim: &kubesim::SimHandle,
    path: &str,
    token: Option<&str>,
) -> (u16, String, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status: u16 = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
    let retry = buf
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("retry-after:"))
        .map(|l| l.split(':').nth(1).unwrap().trim().to_string());
    (status, buf, retry)
}

#[tokio::test]
async fn tls_with_written_kubeconfig() {
    let sim = kubesim::SimCluster::builder()
        .tls(true)
        .token(Some("abc".into()))
        .build()
        .start()
        .await
        .unwrap();
    assert!(sim.url().starts_with("https://127.0.0.1:"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&path, "sim-tls").unwrap();
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.minor, "33");
    let nss: Api<Namespace> = Api::all(client);
    assert!(nss.get("default").await.is_ok());
    sim.shutdown().await;
}
