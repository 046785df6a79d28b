//! Building HTTP responses: JSON objects, lists and `Status` errors.

use axum::body::Body;
use http::{HeaderValue, Response, StatusCode, header};

use crate::error::ApiError;

/// A JSON response with `status`.
pub fn json(status: u16, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Body::from(value.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A `Status` error response (with `Retry-After` when the error has one).
pub fn error(e: &ApiError) -> Response<Body> {
    let mut r = json(e.code, &e.to_json());
    if let Some(secs) = e.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// A plain-text response.
pub fn text(status: u16, body: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Body::from(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `{"kind":"Status","status":"Success",...}` for immediate deletes.
pub fn success_status(kind_plural: &str, group: &str, name: &str, uid: &str) -> serde_json::Value {
    serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": group, "kind": kind_plural, "uid": uid}
    })
}
