//! Scenario 5 of the chaos suite: malformed input. The cases, as data: job variables of the
//! wrong type (on a pool whose variables schema declares no types, so the server lets them
//! through), broken `cluster_config` kubeconfigs, base job templates that pass the server's
//! checks but not the worker's, and API replies that are truncated, HTML, of the wrong JSON
//! types or empty (through the fault proxy). Each case says how its run must end and what
//! its state message must contain (the field, and the fix).

use serde_json::{Value, json};

use crate::proxy::{Action, Rule};
use axum::http::Method;
use uuid::Uuid;

/// Where a case's malformation goes.
#[derive(Debug, Clone)]
pub enum Input {
    /// Job variables of a deployment on the loose pool (over the fake engine's `complete`).
    JobVariables(Value),
    /// A base job template of a pool of its own (Prefect's default with `edit` applied).
    Template(fn(&mut Value)),
    /// Fault-proxy rules for the run's requests (built from its ids).
    Api(fn(&Ids) -> Vec<Rule>),
}

/// The ids an API case's rules target.
#[derive(Debug, Clone)]
pub struct Ids {
    pub pool: String,
    pub flow: Uuid,
    pub deployment: Uuid,
    pub run: Uuid,
}

/// One malformed-input case.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub input: Input,
    /// The run's final state type.
    pub state: &'static str,
    /// Texts its state message must contain (Crashed runs: what failed and the fix).
    pub message: &'static [&'static str],
}

fn jv(
    name: &'static str,
    vars: Value,
    state: &'static str,
    message: &'static [&'static str],
) -> Case {
    Case {
        name,
        input: Input::JobVariables(vars),
        state,
        message,
    }
}

fn tp(
    name: &'static str,
    edit: fn(&mut Value),
    state: &'static str,
    message: &'static [&'static str],
) -> Case {
    Case {
        name,
        input: Input::Template(edit),
        state,
        message,
    }
}

fn api(
    name: &'static str,
    rules: fn(&Ids) -> Vec<Rule>,
    state: &'static str,
    message: &'static [&'static str],
) -> Case {
    Case {
        name,
        input: Input::Api(rules),
        state,
        message,
    }
}

const HTML: &str = "<html><body><h1>502 Bad Gateway</h1></body></html>";

fn html() -> Action {
    Action::raw(200, "text/html", HTML)
}

/// A kubeconfig with one cluster, user and context, `server` as given.
#[must_use]
pub fn kubeconfig(server: &str, context: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": true}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}],
        "current-context": context,
    })
}

fn deep(levels: usize) -> Value {
    let mut v = json!("bottom");
    for _ in 0..levels {
        v = json!({ "n": v });
    }
    v
}

fn containers(t: &mut Value) -> &mut Value {
    &mut t["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"]
}

/// Every case (`cluster_url`: a plain-HTTP cluster, spoken to over TLS by one case). Runs
/// that must still complete are the controls: the rest of the same poll.
#[must_use]
pub fn cases(cluster_url: &str) -> Vec<Case> {
    let tls_to_plain = cluster_url.replacen("http://", "https://", 1);
    const C: &str = "CRASHED";
    const OK: &str = "COMPLETED";
    vec![
        // Controls: claimed in the same polls as the malformed runs.
        jv("control-1", json!({}), OK, &[]),
        jv("control-2", json!({}), OK, &[]),
        jv("control-3", json!({}), OK, &[]),
        // Job variables of the wrong type or shape.
        jv(
            "image-int",
            json!({"image": 123}),
            C,
            &["containers[0].image", "`image` job variable"],
        ),
        jv(
            "image-list",
            json!({"image": ["a", "b"]}),
            C,
            &["containers[0].image", "got a list"],
        ),
        jv(
            "image-object",
            json!({"image": {"x": 1}}),
            C,
            &["containers[0].image", "got an object"],
        ),
        jv("namespace-int", json!({"namespace": 42}), C, &["namespace"]),
        jv(
            "namespace-invalid",
            json!({"namespace": "Not_Valid!"}),
            C,
            &["Not_Valid!", "exists"],
        ),
        jv(
            "namespace-missing",
            json!({"namespace": "no-such-namespace"}),
            C,
            &["no-such-namespace", "exists"],
        ),
        jv(
            "namespace-forbidden",
            json!({"namespace": "forbidden-ns"}),
            C,
            &["forbidden", "RBAC"],
        ),
        jv("env-string", json!({"env": "A=1"}), C, &["env"]),
        jv("env-list", json!({"env": ["A=1"]}), C, &["env"]),
        jv("env-nested", json!({"env": {"A": {"b": 1}}}), OK, &[]),
        jv("env-number", json!({"env": {"A": 1}}), OK, &[]),
        jv("env-null-value", json!({"env": {"A": null}}), OK, &[]),
        jv(
            "env-huge-value",
            json!({"env": {"BIG": "x".repeat(200_000)}}),
            C,
            &["status code 128", "could not be started"],
        ),
        jv(
            "env-many",
            json!({"env": (0..3000).map(|i| (format!("V{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()}),
            OK,
            &[],
        ),
        jv("labels-string", json!({"labels": "a=b"}), C, &["labels"]),
        jv(
            "labels-bad-key",
            json!({"labels": {"bad key!": "v"}}),
            OK,
            &[],
        ),
        jv(
            "labels-bad-value",
            json!({"labels": {"k": "has spaces"}}),
            OK,
            &[],
        ),
        jv(
            "labels-long-value",
            json!({"labels": {"k": "x".repeat(100)}}),
            OK,
            &[],
        ),
        jv(
            "labels-nested",
            json!({"labels": {"k": {"a": 1}}}),
            C,
            &["labels"],
        ),
        jv(
            "name-spaces",
            json!({"name": "My Flow Name!"}),
            C,
            &["generateName", "`name` job variable"],
        ),
        jv(
            "name-huge",
            json!({"name": "x".repeat(500)}),
            C,
            &["generateName", "`name` job variable"],
        ),
        jv("name-int", json!({"name": 12345}), C, &["name"]),
        jv(
            "name-unicode",
            json!({"name": "ñandú-🦀"}),
            C,
            &["generateName", "`name` job variable"],
        ),
        jv("command-int", json!({"command": 5}), C, &["command"]),
        jv(
            "command-list",
            json!({"command": ["python3", "x"]}),
            C,
            &["command"],
        ),
        jv(
            "command-unterminated-quote",
            json!({"command": "python3 'unterminated"}),
            C,
            &["command"],
        ),
        jv(
            "stream-output-string",
            json!({"stream_output": "yes"}),
            OK,
            &[],
        ),
        jv(
            "pod-watch-string",
            json!({"pod_watch_timeout_seconds": "sixty"}),
            C,
            &["pod_watch_timeout_seconds"],
        ),
        jv(
            "pod-watch-float",
            json!({"pod_watch_timeout_seconds": 1.5}),
            C,
            &["pod_watch_timeout_seconds"],
        ),
        jv(
            "job-watch-string",
            json!({"job_watch_timeout_seconds": "x"}),
            C,
            &["job_watch_timeout_seconds"],
        ),
        jv(
            "ttl-string",
            json!({"finished_job_ttl": "forever"}),
            C,
            &["spec.ttlSecondsAfterFinished", "finished_job_ttl"],
        ),
        jv(
            "ttl-negative",
            json!({"finished_job_ttl": -1}),
            C,
            &["ttlSecondsAfterFinished"],
        ),
        jv(
            "service-account-int",
            json!({"service_account_name": 7}),
            C,
            &["serviceAccountName", "service_account_name"],
        ),
        jv(
            "pull-policy-invalid",
            json!({"image_pull_policy": "Sometimes"}),
            C,
            &["imagePullPolicy", "Sometimes"],
        ),
        jv(
            "pull-policy-int",
            json!({"image_pull_policy": 3}),
            C,
            &["imagePullPolicy", "image_pull_policy"],
        ),
        jv(
            "cpu-request-invalid",
            json!({"cpu_request": "lots"}),
            C,
            &["resources.requests[cpu]"],
        ),
        jv("memory-limit-int", json!({"memory_limit": 123}), OK, &[]),
        jv("unknown-variable", json!({"no_such_variable": 1}), OK, &[]),
        jv(
            "nulls",
            json!({"image": null, "namespace": null, "env": null, "labels": null}),
            C,
            &["env", "got null"],
        ),
        jv(
            "deeply-nested-value",
            json!({"env": {"A": deep(200)}}),
            C,
            &["GET /deployments/", "128 levels"],
        ),
        // Broken kubeconfigs in cluster_config.
        jv(
            "cluster-config-string",
            json!({"cluster_config": "not-an-object"}),
            C,
            &["cluster_config"],
        ),
        jv(
            "cluster-config-no-config",
            json!({"cluster_config": {"context_name": "x"}}),
            C,
            &["cluster_config", "config"],
        ),
        jv(
            "cluster-config-not-yaml",
            json!({"cluster_config": {"config": ": : not yaml [", "context_name": "x"}}),
            C,
            &["cluster_config"],
        ),
        jv(
            "cluster-config-context-int",
            json!({"cluster_config": {"config": kubeconfig("https://127.0.0.1:1", "c"), "context_name": 5}}),
            C,
            &["context_name"],
        ),
        jv(
            "cluster-config-unknown-context",
            json!({"cluster_config": {"config": kubeconfig("https://127.0.0.1:1", "c"), "context_name": "nope"}}),
            C,
            &["cluster_config", "nope", "context_name"],
        ),
        jv(
            "cluster-config-bad-server",
            json!({"cluster_config": {"config": kubeconfig("not a url", "c"), "context_name": "c"}}),
            C,
            &["cluster_config", "server"],
        ),
        jv(
            "cluster-config-unreachable",
            json!({"cluster_config": {"config": kubeconfig("https://127.0.0.1:1", "c"), "context_name": "c"}}),
            C,
            &[
                "Unable to create Kubernetes job",
                "onnection refused",
                "reach the cluster",
            ],
        ),
        jv(
            "cluster-config-bad-ca",
            json!({"cluster_config": {"config": {
            "clusters": [{"name": "c", "cluster": {"server": tls_to_plain, "certificate-authority-data": "bm90LWEtY2VydA=="}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}, "context_name": "c"}}),
            C,
            &["Unable to create Kubernetes job", "reach the cluster"],
        ),
        // Base job templates the server accepts and the worker cannot use.
        tp(
            "template-manifest-string",
            |t| t["job_configuration"]["job_manifest"] = json!("not a manifest"),
            C,
            &["job_manifest"],
        ),
        tp(
            "template-manifest-missing",
            |t| {
                t["job_configuration"]
                    .as_object_mut()
                    .map(|m| m.remove("job_manifest"));
            },
            C,
            &["job_manifest"],
        ),
        tp(
            "template-manifest-no-spec",
            |t| {
                t["job_configuration"]["job_manifest"]
                    .as_object_mut()
                    .map(|m| m.remove("spec"));
            },
            C,
            &["job_manifest"],
        ),
        tp(
            "template-no-containers",
            |t| {
                t["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
                    .as_object_mut()
                    .map(|m| m.remove("containers"));
            },
            C,
            &["containers"],
        ),
        tp(
            "template-containers-object",
            |t| *containers(t) = json!({"name": "prefect-job"}),
            C,
            &["containers"],
        ),
        tp(
            "template-kind-pod",
            |t| t["job_configuration"]["job_manifest"]["kind"] = json!("Pod"),
            C,
            &["kind"],
        ),
        tp(
            "template-api-version",
            |t| t["job_configuration"]["job_manifest"]["apiVersion"] = json!("v1"),
            C,
            &["apiVersion"],
        ),
        tp(
            "template-container-env-string",
            |t| containers(t)[0]["env"] = json!("A=1"),
            OK,
            &[],
        ),
        tp(
            "template-metadata-list",
            |t| t["job_configuration"]["job_manifest"]["metadata"] = json!(["x"]),
            C,
            &["metadata"],
        ),
        tp(
            "template-missing-variable",
            |t| {
                t["variables"]["properties"]["image"]["default"] =
                    json!("{{ prefect.variables.no_such_variable }}")
            },
            OK,
            &[],
        ),
        tp(
            "template-missing-block",
            |t| {
                t["job_configuration"]["cluster_config"] =
                    json!({"$ref": {"block_document_id": "8a0e5d1e-0000-4000-8000-000000000000"}})
            },
            C,
            &["block_documents/8a0e5d1e", "not found"],
        ),
        tp(
            "template-extra-key",
            |t| t["job_configuration"]["unknown_key"] = json!(1),
            OK,
            &[],
        ),
        // API replies that no healthy server sends, for one run's requests.
        api(
            "reply-deployment-html",
            |i| {
                vec![Rule::new(
                    Method::GET,
                    format!("/deployments/{}", i.deployment),
                    html(),
                )]
            },
            C,
            &["GET /deployments/", "not JSON"],
        ),
        api(
            "reply-deployment-truncated",
            |i| {
                vec![Rule::new(
                    Method::GET,
                    format!("/deployments/{}", i.deployment),
                    Action::json(200, r#"{"id": ""#),
                )]
            },
            C,
            &["GET /deployments/"],
        ),
        api(
            "reply-deployment-empty",
            |i| {
                vec![Rule::new(
                    Method::GET,
                    format!("/deployments/{}", i.deployment),
                    Action::json(200, ""),
                )]
            },
            C,
            &["GET /deployments/", "empty"],
        ),
        api(
            "reply-deployment-wrong-types",
            |i| {
                vec![Rule::new(
                    Method::GET,
                    format!("/deployments/{}", i.deployment),
                    Action::json(200, r#"{"id": 5, "name": ["x"]}"#),
                )]
            },
            C,
            &["GET /deployments/"],
        ),
        api(
            "reply-flow-html",
            |i| vec![Rule::new(Method::GET, format!("/flows/{}", i.flow), html())],
            C,
            &["GET /flows/", "not JSON"],
        ),
        api(
            "reply-flow-truncated",
            |i| {
                vec![Rule::new(
                    Method::GET,
                    format!("/flows/{}", i.flow),
                    Action::json(200, r#"{"id": "abc"#),
                )]
            },
            C,
            &["GET /flows/"],
        ),
        api(
            "reply-flow-empty",
            |i| {
                vec![Rule::new(
                    Method::GET,
                    format!("/flows/{}", i.flow),
                    Action::json(200, ""),
                )]
            },
            C,
            &["GET /flows/", "empty"],
        ),
        api(
            "reply-flow-wrong-types",
            |i| {
                vec![Rule::new(
                    Method::GET,
                    format!("/flows/{}", i.flow),
                    Action::json(200, "[]"),
                )]
            },
            C,
            &["GET /flows/"],
        ),
        api(
            "reply-labels-500-html",
            |i| {
                vec![Rule::new(
                    Method::PATCH,
                    format!("/flow_runs/{}/labels", i.run),
                    Action::raw(500, "text/html", HTML),
                )]
            },
            C,
            &["PATCH /flow_runs/", "500"],
        ),
        api(
            "reply-pending-html-once",
            |i| {
                vec![
                    Rule::new(
                        Method::POST,
                        format!("/flow_runs/{}/set_state", i.run),
                        html(),
                    )
                    .body_contains(r#""type":"PENDING""#)
                    .times(1),
                ]
            },
            OK,
            &[],
        ),
        api(
            "reply-pending-wrong-types-once",
            |i| {
                vec![
                    Rule::new(
                        Method::POST,
                        format!("/flow_runs/{}/set_state", i.run),
                        Action::json(200, r#"{"status": 7}"#),
                    )
                    .body_contains(r#""type":"PENDING""#)
                    .times(1),
                ]
            },
            OK,
            &[],
        ),
        api(
            "reply-pid-patch-html",
            |i| {
                vec![
                    Rule::new(Method::PATCH, format!("/flow_runs/{}", i.run), html())
                        .body_contains("infrastructure_pid"),
                ]
            },
            OK,
            &[],
        ),
        api(
            "reply-reread-html",
            |i| vec![Rule::new(Method::GET, format!("/flow_runs/{}", i.run), html()).times(3)],
            OK,
            &[],
        ),
        // Replies to the pool-wide requests: every run is delayed, none harmed.
        api(
            "reply-poll-garbage",
            |i| {
                let path = format!("/work_pools/{}/get_scheduled_flow_runs", i.pool);
                vec![
                    Rule::new(Method::POST, path.clone(), html()).times(2),
                    Rule::new(Method::POST, path.clone(), Action::json(200, "")).times(2),
                    Rule::new(
                        Method::POST,
                        path,
                        Action::json(200, r#"{"not": "a list"}"#),
                    )
                    .times(2),
                ]
            },
            OK,
            &[],
        ),
        api(
            "reply-pool-truncated",
            |i| {
                vec![
                    Rule::new(
                        Method::GET,
                        format!("/work_pools/{}", i.pool),
                        Action::json(200, r#"{"name": "#),
                    )
                    .times(3),
                ]
            },
            OK,
            &[],
        ),
        api(
            "reply-logs-html",
            |_| vec![Rule::new(Method::POST, "/logs/", html()).times(5)],
            OK,
            &[],
        ),
        api(
            "reply-filter-garbage",
            |_| vec![Rule::new(Method::POST, "/flow_runs/filter", Action::json(200, "{")).times(3)],
            OK,
            &[],
        ),
    ]
}

/// Prefect's default Kubernetes template with a variables schema that declares no types,
/// enums or references (keeping the defaults): the server then lets job variables of any
/// type through to the worker, as it does for hand-written templates.
#[must_use]
pub fn loose_template(default: &Value) -> Value {
    let mut t = default.clone();
    if let Some(props) = t["variables"]["properties"].as_object_mut() {
        for (_, p) in props.iter_mut() {
            if let Some(p) = p.as_object_mut() {
                for k in [
                    "type",
                    "enum",
                    "allOf",
                    "anyOf",
                    "$ref",
                    "additionalProperties",
                    "format",
                ] {
                    p.remove(k);
                }
            }
        }
    }
    if let Some(v) = t["variables"].as_object_mut() {
        v.remove("definitions");
        v.remove("required");
    }
    t
}
