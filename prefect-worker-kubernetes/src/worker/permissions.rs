//! Permissions the worker's service account turned out not to have. Optional features
//! (API-key and env Secrets) degrade when RBAC refuses them: the refusal is remembered
//! per cluster and namespace, warned about once, and the request is not made again
//! while the worker runs (a Role granted later takes effect at the next start).

use std::collections::HashSet;
use std::sync::Mutex;

/// A request the worker makes only for an optional feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// get/create/update `secrets`: the API key in a Secret.
    ApiKeySecret,
    /// create `secrets`: a Job's env in a Secret.
    EnvSecret,
    /// patch `secrets`: an env Secret owned by its Job.
    EnvSecretOwner,
}

/// Refusals seen so far, by (cluster key, namespace, permission).
#[derive(Debug, Default)]
pub struct MissingPermissions {
    seen: Mutex<HashSet<(String, String, Permission)>>,
}

impl MissingPermissions {
    /// Whether `permission` was refused in `namespace` of `cluster` before.
    #[must_use]
    pub fn is_missing(&self, cluster: &str, namespace: &str, permission: Permission) -> bool {
        self.seen
            .lock()
            .is_ok_and(|s| s.contains(&(cluster.to_owned(), namespace.to_owned(), permission)))
    }

    /// Remembers a refusal; `true` the first time (when to warn).
    pub fn record(&self, cluster: &str, namespace: &str, permission: Permission) -> bool {
        self.seen
            .lock()
            .is_ok_and(|mut s| s.insert((cluster.to_owned(), namespace.to_owned(), permission)))
    }
}

/// Whether `e` is RBAC refusing the request (403 `... cannot <verb> resource ...`), as
/// opposed to another 403 such as an admission quota (`exceeded quota`), which may pass.
#[must_use]
pub fn is_rbac_denial(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            s.code == 403 && s.message.contains(" cannot ") && !s.message.contains("quota")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        let status = serde_json::json!({"status": "Failure", "message": message, "reason": "Forbidden", "code": code});
        kube::Error::Api(Box::new(serde_json::from_value(status).unwrap()))
    }

    #[test]
    fn rbac_refusals_are_told_from_other_403s() {
        assert!(is_rbac_denial(&api(
            403,
            "secrets is forbidden: User \"system:serviceaccount:prefect:w\" cannot create resource \"secrets\" in API group \"\" in the namespace \"prefect\""
        )));
        assert!(!is_rbac_denial(&api(
            403,
            "secrets \"s\" is forbidden: exceeded quota: q, requested: count/secrets=1"
        )));
        assert!(!is_rbac_denial(&api(500, "cannot do it")));
    }

    #[test]
    fn a_refusal_is_recorded_once_per_namespace_and_cluster() {
        let m = MissingPermissions::default();
        assert!(!m.is_missing("", "a", Permission::ApiKeySecret));
        assert!(m.record("", "a", Permission::ApiKeySecret));
        assert!(
            !m.record("", "a", Permission::ApiKeySecret),
            "second time: no warning"
        );
        assert!(m.is_missing("", "a", Permission::ApiKeySecret));
        assert!(!m.is_missing("", "b", Permission::ApiKeySecret));
        assert!(!m.is_missing("other", "a", Permission::ApiKeySecret));
        assert!(!m.is_missing("", "a", Permission::EnvSecret));
    }
}
