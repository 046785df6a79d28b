//! Opt-in RBAC: the API server refuses what a rule set does not grant, with the
//! 403 `Status` a real API server's RBAC authorizer sends. Off by default (every
//! request is allowed, as before); turned on with [`crate::SimHandle::set_rbac`],
//! the admin endpoint (`rbac` in `/_sim/faults`) or `kubesim --rbac ROLE.yaml`.
//!
//! Rules are Kubernetes `PolicyRule`s bound in one namespace (a Role and its
//! RoleBinding) or everywhere (a ClusterRole bound by a ClusterRoleBinding).
//! Requests are turned into RBAC attributes as the API server does: the verb
//! (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
//! `deletecollection`), the API group, the resource and subresource
//! (`pods/log`), the namespace and the object name. Discovery and health paths
//! are always allowed (every authenticated user has `system:discovery`).

use k8s_openapi::api::rbac::v1::Role;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::kinds::Kind;
use crate::server::route::{self, Route};

/// The user named in 403 messages unless the rule set names another.
pub const DEFAULT_USER: &str = "system:serviceaccount:default:kubesim";

/// One granted rule: a `PolicyRule` plus where it is bound.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RbacRule {
    /// The namespace the rule is bound in (a Role); `None`: every namespace and
    /// cluster-scoped resources (a ClusterRole with a ClusterRoleBinding).
    pub namespace: Option<String>,
    /// API groups (`""` is the core group, `"*"` any).
    pub api_groups: Vec<String>,
    /// Resources, with subresources as `pods/log`; `"*"` any, `"*/log"` any resource's `log`.
    pub resources: Vec<String>,
    /// Verbs (`"*"` any).
    pub verbs: Vec<String>,
    /// Object names the rule is limited to (empty: any).
    pub resource_names: Vec<String>,
}

/// A set of granted rules for one user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Rbac {
    /// The user named in 403 messages (default [`DEFAULT_USER`]).
    pub user: Option<String>,
    /// What is granted; anything else is refused.
    pub rules: Vec<RbacRule>,
}

/// Parsing a Role failed.
#[derive(Debug, thiserror::Error)]
pub enum RbacError {
    /// The YAML is not a list of Kubernetes objects.
    #[error("cannot parse the RBAC YAML: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// A `Role` without `metadata.namespace`, which a namespaced rule needs.
    #[error("Role '{0}' has no metadata.namespace: say where it is bound")]
    NoNamespace(String),
    /// No `Role` or `ClusterRole` in the document.
    #[error("no Role or ClusterRole found in the YAML")]
    NoRole,
}

impl Rbac {
    /// The rules of every `Role` (bound in its namespace) and `ClusterRole` (bound
    /// everywhere) in a multi-document YAML, e.g. a rendered Helm chart or
    /// `deploy/rbac.yaml`. Other kinds are skipped.
    pub fn from_yaml(text: &str) -> Result<Self, RbacError> {
        let mut rules = Vec::new();
        let mut found = false;
        for doc in serde_yaml::Deserializer::from_str(text) {
            let value = serde_yaml::Value::deserialize(doc)?;
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            let namespace = match kind {
                "Role" => {
                    let role: Role = serde_yaml::from_value(value.clone())?;
                    match role.metadata.namespace.clone() {
                        Some(ns) => Some(ns),
                        None => {
                            return Err(RbacError::NoNamespace(
                                role.metadata.name.unwrap_or_default(),
                            ));
                        }
                    }
                }
                "ClusterRole" => None,
                _ => continue,
            };
            found = true;
            let policy: Vec<k8s_openapi::api::rbac::v1::PolicyRule> = value
                .get("rules")
                .cloned()
                .map(serde_yaml::from_value)
                .transpose()?
                .unwrap_or_default();
            for r in policy {
                rules.push(RbacRule {
                    namespace: namespace.clone(),
                    api_groups: r.api_groups.unwrap_or_default(),
                    resources: r.resources.unwrap_or_default(),
                    verbs: r.verbs,
                    resource_names: r.resource_names.unwrap_or_default(),
                });
            }
        }
        if !found {
            return Err(RbacError::NoRole);
        }
        Ok(Rbac { user: None, rules })
    }

    /// The same rules, naming `user` in 403 messages.
    #[must_use]
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Whether some rule grants `request`.
    pub fn allows(&self, request: &RequestAttributes) -> bool {
        self.rules.iter().any(|r| r.grants(request))
    }

    /// `Ok` when granted, else the 403 the API server would answer.
    pub fn authorize(&self, request: &RequestAttributes) -> Result<(), ApiError> {
        if self.allows(request) {
            return Ok(());
        }
        Err(ApiError::rbac_forbidden(
            self.user.as_deref().unwrap_or(DEFAULT_USER),
            request,
        ))
    }
}

impl RbacRule {
    /// Whether this rule grants `request`, with RBAC's matching rules.
    pub fn grants(&self, request: &RequestAttributes) -> bool {
        let namespace_ok = match (&self.namespace, &request.namespace) {
            (None, _) => true,
            (Some(bound), Some(ns)) => bound == ns,
            // A Role never grants cluster-scoped requests (e.g. a list across namespaces).
            (Some(_), None) => false,
        };
        let group_ok = self
            .api_groups
            .iter()
            .any(|g| g == "*" || *g == request.api_group);
        let resource_ok = self.resources.iter().any(|r| {
            if r == "*" {
                return true;
            }
            match (&request.subresource, r.split_once('/')) {
                (None, None) => *r == request.resource,
                (Some(sub), Some((res, rsub))) => {
                    (res == "*" || res == request.resource) && rsub == sub
                }
                _ => false,
            }
        });
        let verb_ok = self.verbs.iter().any(|v| v == "*" || *v == request.verb);
        let name_ok = self.resource_names.is_empty()
            || request
                .name
                .as_ref()
                .is_some_and(|n| self.resource_names.contains(n));
        namespace_ok && group_ok && resource_ok && verb_ok && name_ok
    }
}

/// What RBAC decides on: one resource request's attributes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RequestAttributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// `""` for the core group.
    pub api_group: String,
    /// Plural resource name (`pods`).
    pub resource: String,
    /// Subresource (`log`, `status`), if any.
    pub subresource: Option<String>,
    /// Namespace, `None` for cluster-scoped requests.
    pub namespace: Option<String>,
    /// Object name, for requests on one object.
    pub name: Option<String>,
}

impl RequestAttributes {
    /// The attributes of a request (`None` for discovery, health and unknown paths).
    pub fn of(method: &str, path: &str, query: &str) -> Option<Self> {
        let Route::Resource {
            kind,
            namespace,
            name,
            subresource,
        } = route::parse(path)
        else {
            return None;
        };
        let watch = url::form_urlencoded::parse(query.as_bytes())
            .any(|(k, v)| k == "watch" && (v == "true" || v == "1"));
        Some(Self::new(kind, method, watch, namespace, name, subresource))
    }

    /// The attributes of a request on `kind`.
    pub fn new(
        kind: Kind,
        method: &str,
        watch: bool,
        namespace: Option<String>,
        name: Option<String>,
        subresource: Option<String>,
    ) -> Self {
        let verb = match (method, name.is_some()) {
            ("GET" | "HEAD", _) if watch => "watch",
            ("GET" | "HEAD", false) => "list",
            ("GET" | "HEAD", true) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", false) => "deletecollection",
            ("DELETE", true) => "delete",
            _ => "get",
        };
        // The API server scopes a request on a Namespace object to that namespace.
        let namespace = match kind {
            Kind::Namespace => name.clone(),
            _ => namespace,
        };
        RequestAttributes {
            verb: verb.to_owned(),
            api_group: kind.group().to_owned(),
            resource: kind.plural().to_owned(),
            subresource,
            namespace,
            name,
        }
    }

    /// `pods/log`, or `pods` without a subresource.
    pub fn resource_path(&self) -> String {
        match &self.subresource {
            Some(s) => format!("{}/{s}", self.resource),
            None => self.resource.clone(),
        }
    }
}

impl std::fmt::Display for RequestAttributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource_path())?;
        if !self.api_group.is_empty() {
            write!(f, ".{}", self.api_group)?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}"),
            None => write!(f, " cluster-wide"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHART_LIKE: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: {name: w, namespace: prefect}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: w, namespace: prefect}
rules:
- apiGroups: [""]
  resources: ["pods", "pods/log", "pods/status"]
  verbs: ["get", "watch", "list"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
"#;

    fn attrs(method: &str, path: &str, query: &str) -> RequestAttributes {
        RequestAttributes::of(method, path, query).unwrap()
    }

    #[test]
    fn requests_become_rbac_attributes() {
        let a = attrs(
            "GET",
            "/api/v1/namespaces/prefect/pods/p1/log",
            "follow=true",
        );
        assert_eq!(
            (a.verb.as_str(), a.resource_path(), a.namespace.as_deref()),
            ("get", "pods/log".to_owned(), Some("prefect"))
        );
        assert_eq!(
            attrs(
                "GET",
                "/apis/batch/v1/namespaces/prefect/jobs",
                "watch=true&labelSelector=a"
            )
            .verb,
            "watch"
        );
        assert_eq!(
            attrs("GET", "/apis/batch/v1/namespaces/prefect/jobs", "").verb,
            "list"
        );
        assert_eq!(
            attrs("PUT", "/api/v1/namespaces/x/secrets/s", "").verb,
            "update"
        );
        assert_eq!(
            attrs("DELETE", "/api/v1/namespaces/x/pods", "").verb,
            "deletecollection"
        );
        let ns = attrs("GET", "/api/v1/namespaces/kube-system", "");
        assert_eq!(
            (ns.resource.as_str(), ns.namespace.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let all = attrs("GET", "/apis/batch/v1/jobs", "");
        assert_eq!(all.namespace, None);
        assert!(
            RequestAttributes::of("GET", "/api/v1", "").is_none(),
            "discovery"
        );
        assert!(RequestAttributes::of("GET", "/version", "").is_none());
    }

    #[test]
    fn a_role_grants_only_its_namespace_resources_and_verbs() {
        let rbac = Rbac::from_yaml(CHART_LIKE).unwrap();
        assert_eq!(rbac.rules.len(), 2);
        let ok = |m: &str, p: &str, q: &str| rbac.allows(&attrs(m, p, q));
        assert!(ok("GET", "/api/v1/namespaces/prefect/pods/p/log", ""));
        assert!(ok("GET", "/api/v1/namespaces/prefect/pods", "watch=1"));
        assert!(ok("POST", "/apis/batch/v1/namespaces/prefect/jobs", ""));
        assert!(ok("DELETE", "/apis/batch/v1/namespaces/prefect/jobs/j", ""));
        assert!(
            !ok("GET", "/api/v1/namespaces/prefect/events", ""),
            "no events"
        );
        assert!(
            !ok("POST", "/api/v1/namespaces/prefect/secrets", ""),
            "no secrets"
        );
        assert!(
            !ok("DELETE", "/api/v1/namespaces/prefect/pods/p", ""),
            "pods: read only"
        );
        assert!(
            !ok("GET", "/apis/batch/v1/namespaces/other/jobs", ""),
            "other namespace"
        );
        assert!(!ok("GET", "/apis/batch/v1/jobs", ""), "cluster-wide list");
        assert!(
            !ok("DELETE", "/apis/batch/v1/namespaces/prefect/jobs", ""),
            "deletecollection"
        );
        assert!(!ok("GET", "/api/v1/namespaces/prefect/pods/p/exec", ""));
    }

    #[test]
    fn wildcards_subresources_and_names() {
        let rule = |resources: &[&str], names: &[&str]| RbacRule {
            namespace: None,
            api_groups: vec!["*".into()],
            resources: resources.iter().map(|s| (*s).to_owned()).collect(),
            verbs: vec!["*".into()],
            resource_names: names.iter().map(|s| (*s).to_owned()).collect(),
        };
        let log = attrs("GET", "/api/v1/namespaces/a/pods/p/log", "");
        assert!(rule(&["*"], &[]).grants(&log));
        assert!(rule(&["*/log"], &[]).grants(&log));
        assert!(
            !rule(&["pods"], &[]).grants(&log),
            "pods does not grant pods/log"
        );
        assert!(!rule(&["pods/log"], &[]).grants(&attrs("GET", "/api/v1/namespaces/a/pods/p", "")));
        assert!(rule(&["pods/log"], &["p"]).grants(&log));
        assert!(!rule(&["pods/log"], &["q"]).grants(&log));
        assert!(
            !rule(&["pods"], &["p"]).grants(&attrs("GET", "/api/v1/namespaces/a/pods", "")),
            "resourceNames never grant a list"
        );
    }

    #[test]
    fn a_refusal_is_the_rbac_403_status() {
        let rbac = Rbac::from_yaml(CHART_LIKE)
            .unwrap()
            .with_user("system:serviceaccount:prefect:prefect-worker");
        let e = rbac
            .authorize(&attrs(
                "GET",
                "/api/v1/namespaces/prefect/events",
                "fieldSelector=x",
            ))
            .unwrap_err();
        assert_eq!((e.code, e.reason), (403, "Forbidden"));
        assert_eq!(
            e.message,
            "events is forbidden: User \"system:serviceaccount:prefect:prefect-worker\" cannot list resource \"events\" in API group \"\" in the namespace \"prefect\""
        );
        let e = Rbac::default()
            .authorize(&attrs("GET", "/api/v1/namespaces/x/pods/p1/log", ""))
            .unwrap_err();
        assert_eq!(
            e.message,
            "pods \"p1\" is forbidden: User \"system:serviceaccount:default:kubesim\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"x\""
        );
        let d = e.details.unwrap();
        assert_eq!(
            (d.name.as_deref(), d.kind.as_deref()),
            (Some("p1"), Some("pods"))
        );
        let e = Rbac::default()
            .authorize(&attrs("GET", "/apis/batch/v1/jobs", ""))
            .unwrap_err();
        assert!(
            e.message.starts_with("jobs.batch is forbidden:")
                && e.message.ends_with(
                    "cannot list resource \"jobs\" in API group \"batch\" at the cluster scope"
                ),
            "{}",
            e.message
        );
    }

    #[test]
    fn yaml_without_a_role_or_namespace_is_refused_clearly() {
        assert!(matches!(
            Rbac::from_yaml("kind: ConfigMap\napiVersion: v1\nmetadata: {name: x}\n"),
            Err(RbacError::NoRole)
        ));
        let e = Rbac::from_yaml(
            "kind: Role\napiVersion: rbac.authorization.k8s.io/v1\nmetadata: {name: r}\nrules: []\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("metadata.namespace"), "{e}");
    }
}
