//! Verb handlers for resources: get, list, create, replace, patch, delete.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use http::{Method, Response};
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::kinds::Kind;
use crate::object::Object;
use crate::patch::PatchType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{DeleteOptions, DeleteOutcome, ListParams, Propagation};

use super::response;

/// A resource request, parsed.
#[derive(Debug)]
pub struct ResourceRequest {
    /// HTTP method.
    pub method: Method,
    /// Addressed kind.
    pub kind: Kind,
    /// Namespace from the URL.
    pub namespace: Option<String>,
    /// Object name from the URL.
    pub name: Option<String>,
    /// Subresource from the URL.
    pub subresource: Option<String>,
    /// Decoded query parameters.
    pub query: HashMap<String, String>,
    /// `Content-Type` of the body.
    pub content_type: String,
    /// `Accept` header (kubectl asks for Tables).
    pub accept: String,
    /// Request body.
    pub body: axum::body::Bytes,
}

/// Parse a URL query into a map (last value wins, as Go's `Get`... first wins there;
/// clients never repeat the parameters we read).
pub fn parse_query(q: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(q.as_bytes())
        .into_owned()
        .collect()
}

/// Truthy query flag (`true`/`1`).
pub fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v == "true" || v == "1")
}

fn body_json(req: &ResourceRequest) -> Result<Value, ApiError> {
    if req.body.is_empty() {
        return Ok(Value::Null);
    }
    if req.content_type.contains("protobuf") || req.content_type.contains("yaml") {
        return Err(ApiError::unsupported_media_type(&req.content_type));
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))
}

/// Dispatch a resource request (auth and faults were handled by the caller).
pub async fn handle(cluster: &Arc<Cluster>, req: ResourceRequest) -> Response<Body> {
    match dispatch(cluster, req).await {
        Ok(r) => r,
        Err(e) => response::error(&e),
    }
}

async fn dispatch(
    cluster: &Arc<Cluster>,
    req: ResourceRequest,
) -> Result<Response<Body>, ApiError> {
    let forbidden = cluster.faults().forbidden_namespaces;
    let ns_in_scope = match (req.kind, &req.namespace, &req.name) {
        (Kind::Namespace, _, Some(n)) => Some(n.clone()),
        (_, Some(ns), _) => Some(ns.clone()),
        _ => None,
    };
    if let Some(ns) = ns_in_scope.filter(|ns| forbidden.contains(ns)) {
        return Err(ApiError::forbidden(req.kind, verb(&req), &ns));
    }
    if let Some(rbac) = &cluster.faults().rbac {
        rbac.authorize(&crate::rbac::RequestAttributes::new(
            req.kind,
            req.method.as_str(),
            flag(&req.query, "watch"),
            req.namespace.clone(),
            req.name.clone(),
            req.subresource.clone(),
        ))?;
    }
    let sub = req.subresource.as_deref();
    match (&req.method, req.name.as_deref(), sub) {
        (&Method::GET, None, None) if flag(&req.query, "watch") => {
            super::watch::serve(cluster, req.kind, req.namespace.as_deref(), &req.query)
        }
        (&Method::GET, None, None) => list(cluster, &req),
        (&Method::POST, None, None) => create(cluster, &req),
        (&Method::DELETE, None, None) => delete_collection(cluster, &req),
        (&Method::GET, Some(name), None | Some("status")) => get(cluster, &req, name),
        (&Method::PUT, Some(name), None | Some("status")) => {
            replace(cluster, &req, name, sub.is_some())
        }
        (&Method::PATCH, Some(name), None | Some("status")) => {
            patch(cluster, &req, name, sub.is_some())
        }
        (&Method::DELETE, Some(name), None) => delete(cluster, &req, name),
        (&Method::GET, Some(name), Some("log")) if req.kind == Kind::Pod => super::pod_log::serve(
            cluster,
            req.namespace.as_deref().unwrap_or_default(),
            name,
            &req.query,
        ),
        (_, _, Some("log" | "status")) | (_, None, None) | (_, Some(_), None) => {
            Err(ApiError::method_not_allowed())
        }
        _ => Err(ApiError::path_not_found()),
    }
}

fn verb(req: &ResourceRequest) -> &'static str {
    match (&req.method, req.name.is_some()) {
        (&Method::GET, false) if flag(&req.query, "watch") => "watch",
        (&Method::GET, false) => "list",
        (&Method::GET, true) => "get",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, false) => "deletecollection",
        (&Method::DELETE, true) => "delete",
        _ => "get",
    }
}

/// Build list params (selectors, paging) from the query.
pub fn list_params(
    kind: Kind,
    namespace: Option<String>,
    q: &HashMap<String, String>,
) -> Result<ListParams, ApiError> {
    Ok(ListParams {
        namespace,
        labels: LabelSelector::parse(
            q.get("labelSelector")
                .map(String::as_str)
                .unwrap_or_default(),
        )?,
        fields: FieldSelector::parse(
            kind,
            q.get("fieldSelector")
                .map(String::as_str)
                .unwrap_or_default(),
        )?,
        limit: q.get("limit").and_then(|l| l.parse().ok()),
        continue_token: q.get("continue").cloned(),
    })
}

fn list(cluster: &Arc<Cluster>, req: &ResourceRequest) -> Result<Response<Body>, ApiError> {
    let params = list_params(req.kind, req.namespace.clone(), &req.query)?;
    let result = cluster.with_store(|s| s.list(req.kind, &params))?;
    if super::table::wants_table(&req.accept) {
        let t = super::table::render(
            req.kind,
            &result.items,
            result.resource_version,
            result.continue_token,
        );
        return Ok(response::json(200, &t));
    }
    let items: Vec<Value> = result.items.iter().map(|o| o.to_value()).collect();
    let mut metadata = json!({"resourceVersion": result.resource_version.to_string()});
    if let Some(c) = result.continue_token {
        metadata["continue"] = Value::String(c);
    }
    Ok(response::json(
        200,
        &json!({
            "kind": format!("{}List", req.kind.kind()),
            "apiVersion": req.kind.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    ))
}

fn get(
    cluster: &Arc<Cluster>,
    req: &ResourceRequest,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let ns = req.namespace.as_deref().unwrap_or_default();
    let obj = cluster
        .with_store(|s| s.get(req.kind, ns, name))
        .ok_or_else(|| ApiError::not_found(req.kind, name))?;
    if super::table::wants_table(&req.accept) && req.subresource.is_none() {
        let rv = obj.resource_version();
        return Ok(response::json(
            200,
            &super::table::render(req.kind, &[obj], rv, None),
        ));
    }
    Ok(response::json(200, &obj.to_value()))
}

/// Parse the body and reconcile its namespace with the URL's (400 on mismatch).
fn object_from_body(req: &ResourceRequest) -> Result<Object, ApiError> {
    let body = body_json(req)?;
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    let strict = req
        .query
        .get("fieldValidation")
        .is_some_and(|v| v == "Strict");
    let mut obj = Object::from_value(req.kind, body.clone())?;
    if strict {
        let mut unknown = Vec::new();
        unknown_fields(&body, &obj.to_value(), "", &mut unknown);
        if !unknown.is_empty() {
            let list = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {list}"
            )));
        }
    }
    if req.kind.namespaced() {
        let url_ns = req.namespace.clone().unwrap_or_default();
        match obj.meta().namespace.as_deref() {
            Some(ns) if !ns.is_empty() && ns != url_ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => obj.meta_mut().namespace = Some(url_ns),
        }
    }
    Ok(obj)
}

fn create(cluster: &Arc<Cluster>, req: &ResourceRequest) -> Result<Response<Body>, ApiError> {
    if req.kind.namespaced() && req.namespace.is_none() {
        return Err(ApiError::method_not_allowed());
    }
    let obj = object_from_body(req)?;
    if req.query.get("dryRun").is_some_and(|d| d == "All") {
        // Dry run: defaulting and validation without storing, on a scratch copy.
        let mut scratch = crate::store::Store::new(16);
        let ns = obj.namespace().to_string();
        if !ns.is_empty() && !matches!(ns.as_str(), "default" | "kube-system") {
            let exists = cluster.with_store(|s| s.namespace_exists(&ns));
            if !exists {
                return Err(ApiError::not_found(Kind::Namespace, &ns));
            }
            let _ = scratch.create(Object::Namespace(Box::new(
                k8s_openapi::api::core::v1::Namespace {
                    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                        name: Some(ns),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )));
        }
        let created = scratch.create(obj)?;
        return Ok(response::json(201, &created.to_value()));
    }
    let created = cluster.with_store(|s| s.create(obj))?;
    Ok(response::json(201, &created.to_value()))
}

fn replace(
    cluster: &Arc<Cluster>,
    req: &ResourceRequest,
    name: &str,
    status: bool,
) -> Result<Response<Body>, ApiError> {
    let obj = object_from_body(req)?;
    if obj.name() != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            obj.name()
        )));
    }
    let updated = cluster.with_store(|s| s.replace(obj, status))?;
    Ok(response::json(200, &updated.to_value()))
}

fn patch(
    cluster: &Arc<Cluster>,
    req: &ResourceRequest,
    name: &str,
    status: bool,
) -> Result<Response<Body>, ApiError> {
    let ty = PatchType::from_content_type(&req.content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(&req.content_type))?;
    let body = body_json(req)?;
    let ns = req.namespace.clone().unwrap_or_default();
    let updated = cluster.with_store(|s| s.patch(req.kind, &ns, name, ty, &body, status))?;
    Ok(response::json(200, &updated.to_value()))
}

fn delete_options(req: &ResourceRequest) -> Result<DeleteOptions, ApiError> {
    let body = body_json(req)?;
    let q = &req.query;
    let policy = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| q.get("propagationPolicy").cloned());
    let orphan = body
        .get("orphanDependents")
        .and_then(Value::as_bool)
        .or_else(|| q.get("orphanDependents").map(|v| v == "true"));
    let propagation = match (policy.as_deref(), orphan) {
        (Some("Foreground"), _) => Some(Propagation::Foreground),
        (Some("Background"), _) => Some(Propagation::Background),
        (Some("Orphan"), _) | (None, Some(true)) => Some(Propagation::Orphan),
        (None, _) => None,
        (Some(other), _) => {
            return Err(ApiError::invalid(
                req.kind,
                req.name.as_deref().unwrap_or_default(),
                vec![crate::error::FieldError::unsupported(
                    "propagationPolicy",
                    other,
                    &["Foreground", "Background", "Orphan"],
                )],
            ));
        }
    };
    let grace = body
        .get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| q.get("gracePeriodSeconds").and_then(|g| g.parse().ok()));
    Ok(DeleteOptions {
        grace_period_seconds: grace,
        propagation,
        precondition_uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        precondition_rv: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

fn delete_response(kind: Kind, outcome: DeleteOutcome) -> Response<Body> {
    match outcome {
        DeleteOutcome::Pending(o) => response::json(200, &o.to_value()),
        // The real server returns the object for pods and namespaces and a
        // Success Status for the other kinds once they are gone.
        DeleteOutcome::Deleted(o) if matches!(kind, Kind::Pod | Kind::Namespace) => {
            response::json(200, &o.to_value())
        }
        DeleteOutcome::Deleted(o) => response::json(
            200,
            &response::success_status(kind.plural(), kind.group(), o.name(), o.uid()),
        ),
    }
}

fn delete(
    cluster: &Arc<Cluster>,
    req: &ResourceRequest,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let opts = delete_options(req)?;
    let ns = req.namespace.clone().unwrap_or_default();
    let outcome = cluster.with_store(|s| s.delete(req.kind, &ns, name, &opts))?;
    Ok(delete_response(req.kind, outcome))
}

fn delete_collection(
    cluster: &Arc<Cluster>,
    req: &ResourceRequest,
) -> Result<Response<Body>, ApiError> {
    let opts = delete_options(req)?;
    let params = list_params(req.kind, req.namespace.clone(), &req.query)?;
    let deleted = cluster.with_store(|s| {
        let items = s.list(
            req.kind,
            &ListParams {
                limit: None,
                continue_token: None,
                ..params
            },
        )?;
        let mut out = Vec::new();
        for o in items.items {
            if let Ok(DeleteOutcome::Deleted(d) | DeleteOutcome::Pending(d)) =
                s.delete(req.kind, o.namespace(), o.name(), &opts)
            {
                out.push(d.to_value());
            }
        }
        Ok::<_, ApiError>((out, s.resource_version()))
    })?;
    Ok(response::json(
        200,
        &json!({
            "kind": format!("{}List", req.kind.kind()),
            "apiVersion": req.kind.api_version(),
            "metadata": {"resourceVersion": deleted.1.to_string()},
            "items": deleted.0,
        }),
    ))
}

/// Fields present in the request but dropped by the typed round trip: the
/// ones the real server reports with `fieldValidation=Strict`.
fn unknown_fields(input: &Value, typed: &Value, prefix: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(i), Value::Object(t)) => {
            for (k, v) in i {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match t.get(k) {
                    Some(tv) => unknown_fields(v, tv, &path, out),
                    None if !v.is_null() => out.push(path),
                    None => {}
                }
            }
        }
        (Value::Array(i), Value::Array(t)) => {
            for (n, (iv, tv)) in i.iter().zip(t).enumerate() {
                unknown_fields(iv, tv, &format!("{prefix}[{n}]"), out);
            }
        }
        _ => {}
    }
}
