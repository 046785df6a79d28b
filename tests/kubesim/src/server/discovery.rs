//! Discovery documents (legacy, unaggregated form): enough for kube-rs and kubectl.
//! kubectl asks `/api` and `/apis` for the aggregated form too; answering
//! plain `application/json` makes it fall back to these, as it does with
//! older servers.

use serde_json::{Value, json};

use crate::kinds::Kind;

/// Kubernetes version the simulator claims to be.
pub const MINOR: &str = "33";

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": MINOR,
        "gitVersion": "v1.33.0-kubesim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `/api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

fn batch_group() -> Value {
    json!({
        "name": "batch",
        "versions": [{"groupVersion": "batch/v1", "version": "v1"}],
        "preferredVersion": {"groupVersion": "batch/v1", "version": "v1"}
    })
}

/// `/apis`.
pub fn api_groups() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [batch_group()]})
}

/// `/apis/batch`.
pub fn batch_group_doc() -> Value {
    let mut g = batch_group();
    if let Some(m) = g.as_object_mut() {
        m.insert("kind".into(), "APIGroup".into());
        m.insert("apiVersion".into(), "v1".into());
    }
    g
}

fn verbs(kind: Kind) -> Vec<&'static str> {
    match kind {
        Kind::Namespace => vec![
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
        _ => vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
    }
}

fn resource(kind: Kind) -> Value {
    let mut r = json!({
        "name": kind.plural(),
        "singularName": kind.singular(),
        "namespaced": kind.namespaced(),
        "kind": kind.kind(),
        "verbs": verbs(kind),
    });
    if let Some(m) = r.as_object_mut() {
        if !kind.short_names().is_empty() {
            m.insert("shortNames".into(), json!(kind.short_names()));
        }
        if matches!(kind, Kind::Pod | Kind::Job) {
            m.insert("categories".into(), json!(["all"]));
        }
    }
    r
}

fn subresource(kind: Kind, sub: &str, sub_kind: &str, verbs: &[&str]) -> Value {
    json!({
        "name": format!("{}/{sub}", kind.plural()),
        "singularName": "",
        "namespaced": kind.namespaced(),
        "kind": sub_kind,
        "verbs": verbs,
    })
}

/// `/api/v1` or `/apis/batch/v1`.
pub fn resource_list(group: &str) -> Value {
    let mut resources = Vec::new();
    for kind in Kind::ALL.into_iter().filter(|k| k.group() == group) {
        resources.push(resource(kind));
        match kind {
            Kind::Pod => {
                resources.push(subresource(kind, "log", "Pod", &["get"]));
                resources.push(subresource(
                    kind,
                    "status",
                    "Pod",
                    &["get", "patch", "update"],
                ));
            }
            Kind::Job | Kind::Namespace => {
                resources.push(subresource(
                    kind,
                    "status",
                    kind.kind(),
                    &["get", "patch", "update"],
                ));
            }
            _ => {}
        }
    }
    let gv = if group.is_empty() {
        "v1".to_string()
    } else {
        format!("{group}/v1")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

/// `/openapi/v3`: the index of per-group-version documents.
pub fn openapi_v3_root() -> Value {
    json!({"paths": {
        "api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=kubesim1"},
        "apis/batch/v1": {"serverRelativeURL": "/openapi/v3/apis/batch/v1?hash=kubesim1"},
    }})
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/batch/v1`: no schemas, only
/// the PATCH operations and their `fieldValidation` parameter. That is what
/// kubectl checks to decide that the server validates fields itself (so it
/// sends `fieldValidation=Strict` instead of validating client-side), and
/// `kubectl apply` falls back to its built-in types for patch metadata.
pub fn openapi_v3_group(group: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for kind in Kind::ALL.into_iter().filter(|k| k.group() == group) {
        let base = if group.is_empty() {
            "/api/v1".to_string()
        } else {
            format!("/apis/{group}/v1")
        };
        let path = if kind.namespaced() {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", kind.plural())
        } else {
            format!("{base}/{}/{{name}}", kind.plural())
        };
        let op = json!({
            "operationId": format!("patch{}", kind.kind()),
            "parameters": [
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}}
            ],
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": group, "version": "v1", "kind": kind.kind()}
        });
        paths.insert(path, json!({"patch": op}));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kubesim)", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}}
    })
}
