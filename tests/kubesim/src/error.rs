//! Errors: [`ApiError`] is what the API answers (a Kubernetes `Status`),
//! [`SimError`] is what starting or driving the simulator can fail with.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

use crate::kinds::Kind;

/// Failure to start or operate the simulator itself.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Binding, accepting or file I/O failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The self-signed certificate could not be generated.
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the generated certificate.
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    /// The kubeconfig could not be rendered.
    #[error("kubeconfig rendering failed: {0}")]
    Kubeconfig(#[from] serde_yaml::Error),
    /// A store operation made through the handle was refused.
    #[error("API error: {0}")]
    Api(#[from] ApiError),
}

/// One invalid field, as in a Kubernetes `Status.details.causes` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// `FieldValueInvalid`, `FieldValueRequired`, ...
    pub reason: &'static str,
    /// Dotted path, e.g. `metadata.name`.
    pub field: String,
    /// Full human message, e.g. `metadata.name: Invalid value: "X": ...`.
    pub message: String,
}

impl FieldError {
    /// `field: Invalid value: "value": detail`.
    pub fn invalid(field: &str, value: &str, detail: &str) -> Self {
        FieldError {
            reason: "FieldValueInvalid",
            field: field.to_string(),
            message: format!("{field}: Invalid value: \"{value}\": {detail}"),
        }
    }

    /// `field: Required value[: detail]`.
    pub fn required(field: &str, detail: &str) -> Self {
        let message = if detail.is_empty() {
            format!("{field}: Required value")
        } else {
            format!("{field}: Required value: {detail}")
        };
        FieldError {
            reason: "FieldValueRequired",
            field: field.to_string(),
            message,
        }
    }

    /// `field: Unsupported value: "v": supported values: ...`.
    pub fn unsupported(field: &str, value: &str, supported: &[&str]) -> Self {
        let list = supported
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ");
        FieldError {
            reason: "FieldValueNotSupported",
            field: field.to_string(),
            message: format!("{field}: Unsupported value: \"{value}\": supported values: {list}"),
        }
    }

    /// `field: Not found: "v"`.
    pub fn not_found(field: &str, value: &str) -> Self {
        FieldError {
            reason: "FieldValueNotFound",
            field: field.to_string(),
            message: format!("{field}: Not found: \"{value}\""),
        }
    }
}

/// An error answered by the API, rendered as a `Status` object.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `AlreadyExists`, ...).
    pub reason: &'static str,
    /// Human message in the real server's wording.
    pub message: String,
    /// `details`, when the real server sends them.
    pub details: Option<Box<StatusDetails>>,
    /// `Retry-After` seconds for 429/503/500 answers.
    pub retry_after: Option<u64>,
}

fn details(kind: Kind, name: &str) -> StatusDetails {
    StatusDetails {
        name: Some(name.to_string()),
        group: Some(kind.group().to_string()),
        kind: Some(kind.plural().to_string()),
        ..Default::default()
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// 404: `jobs.batch "x" not found`.
    pub fn not_found(kind: Kind, name: &str) -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.qualified_resource()),
        );
        e.details = Some(Box::new(details(kind, name)));
        e
    }

    /// 404 for a path that names no resource.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 409: `jobs.batch "x" already exists`.
    pub fn already_exists(kind: Kind, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", kind.qualified_resource()),
        );
        e.details = Some(Box::new(details(kind, name)));
        e
    }

    /// 409 Conflict for a stale resourceVersion on update.
    pub fn conflict(kind: Kind, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                kind.qualified_resource()
            ),
        );
        e.details = Some(Box::new(details(kind, name)));
        e
    }

    /// 422: `Job.batch "x" is invalid: <causes joined by ", ">`.
    pub fn invalid(kind: Kind, name: &str, causes: Vec<FieldError>) -> Self {
        let joined = causes.iter().map(|c| c.message.clone()).collect::<Vec<_>>();
        let list = if joined.len() == 1 {
            joined.concat()
        } else {
            format!("[{}]", joined.join(", "))
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {list}", kind.qualified_kind()),
        );
        let mut d = details(kind, name);
        d.kind = Some(kind.kind().to_string());
        d.causes = Some(
            causes
                .into_iter()
                .map(|c| StatusCause {
                    reason: Some(c.reason.to_string()),
                    message: Some(c.message),
                    field: Some(c.field),
                })
                .collect(),
        );
        e.details = Some(Box::new(d));
        e
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden in the RBAC wording.
    pub fn forbidden(kind: Kind, verb: &str, namespace: &str) -> Self {
        let group = kind.group();
        let mut e = Self::new(
            403,
            "Forbidden",
            format!(
                "{} is forbidden: User \"system:serviceaccount:default:kubesim\" cannot {verb} resource \"{}\" in API group \"{group}\" in the namespace \"{namespace}\"",
                kind.qualified_resource(),
                kind.plural()
            ),
        );
        e.details = Some(Box::new(StatusDetails {
            group: Some(group.to_string()),
            kind: Some(kind.plural().to_string()),
            ..Default::default()
        }));
        e
    }

    /// 403 Forbidden from the RBAC authorizer: what `user` may not do, in the real
    /// server's wording and `details` (`kind` is the resource, as the server sends it).
    pub fn rbac_forbidden(user: &str, request: &crate::rbac::RequestAttributes) -> Self {
        let qualified = if request.api_group.is_empty() {
            request.resource.clone()
        } else {
            format!("{}.{}", request.resource, request.api_group)
        };
        let scope = match &request.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_owned(),
        };
        let denial = format!(
            "User \"{user}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
            request.verb,
            request.resource_path(),
            request.api_group
        );
        let message = match &request.name {
            Some(name) => format!("{qualified} \"{name}\" is forbidden: {denial}"),
            None => format!("{qualified} is forbidden: {denial}"),
        };
        let mut e = Self::new(403, "Forbidden", message);
        e.details = Some(Box::new(StatusDetails {
            name: request.name.clone(),
            group: Some(request.api_group.clone()).filter(|g| !g.is_empty()),
            kind: Some(request.resource.clone()),
            ..Default::default()
        }));
        e
    }

    /// 403 Forbidden with a custom message (admission, e.g. quota).
    pub fn forbidden_message(kind: Kind, name: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(403, "Forbidden", message);
        e.details = Some(Box::new(details(kind, name)));
        e
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 410 Gone: the watch resourceVersion left the retained history.
    pub fn gone(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 415 UnsupportedMediaType for an unknown patch type.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ct})"
            ),
        )
    }

    /// 429 TooManyRequests with a `Retry-After`.
    pub fn too_many_requests(retry_after: u64) -> Self {
        let mut e = Self::new(
            429,
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        );
        e.retry_after = Some(retry_after);
        e.details = Some(Box::new(StatusDetails {
            retry_after_seconds: i32::try_from(retry_after).ok(),
            ..Default::default()
        }));
        e
    }

    /// 500 InternalError (fault injection).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// 503 ServiceUnavailable (fault injection, paused API).
    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(503, "ServiceUnavailable", message);
        e.retry_after = Some(1);
        e
    }

    /// The `Status` object sent on the wire.
    pub fn to_status(&self) -> Status {
        Status {
            status: Some("Failure".to_string()),
            code: Some(i32::from(self.code)),
            reason: Some(self.reason.to_string()),
            message: Some(self.message.clone()),
            details: self.details.as_deref().cloned(),
            metadata: Default::default(),
        }
    }

    /// The `Status` as JSON with `kind`/`apiVersion`, which k8s-openapi's
    /// `Status` does not emit itself.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self.to_status()).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            map.insert("kind".into(), "Status".into());
            map.insert("apiVersion".into(), "v1".into());
            map.entry("metadata")
                .or_insert_with(|| serde_json::json!({}));
        }
        v
    }
}

impl ApiError {
    /// 422 for a JSON patch that cannot be applied (the real server's wording).
    pub fn invalid_patch(message: impl Into<String>) -> Self {
        ApiError::new(422, "Invalid", message)
    }
}
