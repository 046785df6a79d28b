//! Creating the Job (spec §4.3): the manifest is sent as the exact JSON the configuration
//! holds (nulls included), with retries on errors that can pass, and hints on those that
//! cannot.

use k8s_openapi::api::batch::v1::Job;
use kube::Client;
use kube::api::PostParams;
use kube::core::Request;
use serde_json::{Map, Value};

use super::settings::KubernetesSettings;

/// The Job could not be created. The message follows Python's `InfrastructureError`
/// (`Unable to create Kubernetes job: <reason>: <message>. Hint: <hint>`).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CreateJobError {
    pub message: String,
    /// Whether the failure came from the API (an HTTP status) rather than the connection.
    pub is_api_error: bool,
    /// No attempt was made (or retried) because the claim deadline had passed.
    pub claim_expired: bool,
}

/// Whether another attempt can help: server errors, throttling and transport failures.
/// (Python retries 4xx too; a 403 or 422 does not change on retry.)
fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// `Unable to create Kubernetes job: ...` with the first matching hint.
#[must_use]
pub fn describe_failure(e: &kube::Error, namespace: &str) -> String {
    let kube::Error::Api(s) = e else {
        return format!(
            "Unable to create Kubernetes job: {}. Hint: check that the worker can reach the cluster's API server (the run's cluster_config, else the worker's kubeconfig or in-cluster configuration).",
            error_chain(e)
        );
    };
    let mut msg = "Unable to create Kubernetes job".to_owned();
    let phrase = http::StatusCode::from_u16(s.code)
        .ok()
        .and_then(|c| c.canonical_reason());
    if let Some(p) = phrase {
        msg.push_str(": ");
        msg.push_str(p);
    }
    if !s.message.is_empty() {
        msg.push_str(": ");
        msg.push_str(&s.message);
    }
    let body = format!("{} {}", s.message, s.reason).to_lowercase();
    let hint = if body.contains("quota") || body.contains("exceeded") {
        Some(
            "Check the resource quotas for the namespace and ensure the job does not exceed them."
                .to_owned(),
        )
    } else if s.code == 403 || s.reason.eq_ignore_ascii_case("forbidden") {
        Some(
            "Check that your service account has the required RBAC permissions for this operation."
                .to_owned(),
        )
    } else if s.code == 404 && body.contains(&namespace.to_lowercase()) {
        Some(format!(
            "Verify that the namespace '{namespace}' exists in the cluster."
        ))
    } else if s.code == 422 && body.contains("metadata.generatename") {
        Some(
            "Set the `name` job variable to lowercase letters, digits, '-' and '.' (at most 57 characters), or leave it unset."
                .to_owned(),
        )
    } else {
        None
    };
    if let Some(h) = hint {
        msg.push_str(". Hint: ");
        msg.push_str(&h);
    }
    msg
}

/// `e` and its sources, each once: kube's transport errors say what failed only there
/// ("client error (Connect)" → "tcp connect error" → "Connection refused").
fn error_chain(e: &kube::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// POSTs `manifest` to `namespace`'s Jobs, retrying as configured. No attempt starts at
/// or after `deadline` (the runner's claim timeout).
pub async fn create_job(
    client: &Client,
    settings: &KubernetesSettings,
    namespace: &str,
    manifest: &Map<String, Value>,
    deadline: Option<std::time::Instant>,
) -> Result<Job, CreateJobError> {
    let url = format!("/apis/batch/v1/namespaces/{namespace}/jobs");
    let body = serde_json::to_vec(manifest).map_err(|e| CreateJobError {
        message: format!("Unable to create Kubernetes job: {e}"),
        is_api_error: false,
        claim_expired: false,
    })?;
    let attempts = settings.create_job_attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Err(CreateJobError {
                message: "the claim timeout passed before the Kubernetes job could be created"
                    .into(),
                is_api_error: false,
                claim_expired: true,
            });
        }
        let request = Request::new(&url)
            .create(&PostParams::default(), body.clone())
            .map_err(|e| CreateJobError {
                message: format!("Unable to create Kubernetes job: {e}"),
                is_api_error: false,
                claim_expired: false,
            })?;
        match client.request::<Job>(request).await {
            Ok(job) => return Ok(job),
            Err(e) if attempt < attempts && retryable(&e) => {
                let (lo, hi) = settings.create_job_retry_jitter;
                let jitter = if hi > lo {
                    lo + (hi - lo).mul_f64(rand::random::<f64>())
                } else {
                    lo
                };
                let delay = settings.create_job_retry_delay + jitter;
                tracing::warn!(error = %e, attempt, retry_in = ?delay, "creating the Kubernetes job failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                return Err(CreateJobError {
                    message: describe_failure(&e, namespace),
                    is_api_error: matches!(e, kube::Error::Api(_)),
                    claim_expired: false,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        let status = serde_json::json!({"status": "Failure", "message": message, "reason": reason, "code": code});
        kube::Error::Api(Box::new(serde_json::from_value(status).unwrap()))
    }

    #[test]
    fn hints_as_python() {
        let m = describe_failure(
            &api(
                403,
                "Forbidden",
                "jobs.batch is forbidden: User \"x\" cannot create resource \"jobs\" in API group \"batch\" in the namespace \"fail403\"",
            ),
            "fail403",
        );
        assert_eq!(
            m,
            "Unable to create Kubernetes job: Forbidden: jobs.batch is forbidden: User \"x\" cannot create resource \"jobs\" in API group \"batch\" in the namespace \"fail403\". Hint: Check that your service account has the required RBAC permissions for this operation."
        );
        assert!(
            describe_failure(&api(403, "Forbidden", "exceeded quota: q"), "n")
                .ends_with("ensure the job does not exceed them.")
        );
        assert!(
            describe_failure(
                &api(404, "NotFound", "namespaces \"nope\" not found"),
                "nope"
            )
            .ends_with("Verify that the namespace 'nope' exists in the cluster.")
        );
        assert!(!describe_failure(&api(422, "Invalid", "bad name"), "n").contains("Hint"));
    }

    #[test]
    fn only_passing_errors_are_retried() {
        assert!(retryable(&api(503, "ServiceUnavailable", "")));
        assert!(retryable(&api(429, "TooManyRequests", "")));
        assert!(!retryable(&api(403, "Forbidden", "")));
        assert!(!retryable(&api(422, "Invalid", "")));
    }
}
