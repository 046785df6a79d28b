//! Parsing request paths into what they address.

use crate::kinds::Kind;

/// What a request path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/version`
    Version,
    /// `/api`
    Api,
    /// `/api/v1`
    CoreV1,
    /// `/apis`
    Apis,
    /// `/apis/batch`
    BatchGroup,
    /// `/apis/batch/v1`
    BatchV1,
    /// `/healthz`, `/livez`, `/readyz`
    Health,
    /// A collection or an object, maybe with a subresource.
    Resource {
        /// The kind.
        kind: Kind,
        /// Namespace in the URL, for namespaced kinds.
        namespace: Option<String>,
        /// Object name, for object URLs.
        name: Option<String>,
        /// Subresource (`status`, `log`, ...).
        subresource: Option<String>,
    },
    /// `/openapi/v3`
    OpenApiRoot,
    /// `/openapi/v3/api/v1` (group "") or `/openapi/v3/apis/batch/v1`
    OpenApiGroup(&'static str),
    /// Nothing we serve.
    NotFound,
}

/// Parse a request path.
pub fn parse(path: &str) -> Route {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["version"] => Route::Version,
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["api"] => Route::Api,
        ["api", "v1"] => Route::CoreV1,
        ["apis"] => Route::Apis,
        ["apis", "batch"] => Route::BatchGroup,
        ["apis", "batch", "v1"] => Route::BatchV1,
        ["openapi", "v3"] => Route::OpenApiRoot,
        ["openapi", "v3", "api", "v1"] => Route::OpenApiGroup(""),
        ["openapi", "v3", "apis", "batch", "v1"] => Route::OpenApiGroup("batch"),
        ["api", "v1", rest @ ..] => resource("", rest),
        ["apis", "batch", "v1", rest @ ..] => resource("batch", rest),
        _ => Route::NotFound,
    }
}

fn resource(group: &str, rest: &[&str]) -> Route {
    let owned = |s: &str| Some(s.to_string());
    let make =
        |plural: &str, namespace: Option<String>, name: Option<String>, sub: Option<String>| {
            match Kind::from_url(group, plural) {
                Some(kind)
                    if kind.namespaced() == namespace.is_some()
                        || (name.is_none() && namespace.is_none()) =>
                {
                    Route::Resource {
                        kind,
                        namespace,
                        name,
                        subresource: sub,
                    }
                }
                _ => Route::NotFound,
            }
        };
    match rest {
        [plural] => make(plural, None, None, None),
        // `/api/v1/namespaces/{ns}` and its subresources address the Namespace itself.
        ["namespaces", ns] if group.is_empty() => make("namespaces", None, owned(ns), None),
        ["namespaces", ns, sub @ ("status" | "finalize")] if group.is_empty() => {
            make("namespaces", None, owned(ns), owned(sub))
        }
        ["namespaces", ns, plural] => make(plural, owned(ns), None, None),
        ["namespaces", ns, plural, name] => make(plural, owned(ns), owned(name), None),
        ["namespaces", ns, plural, name, sub] => make(plural, owned(ns), owned(name), owned(sub)),
        [plural, name] => make(plural, None, owned(name), None),
        [plural, name, sub] => make(plural, None, owned(name), owned(sub)),
        _ => Route::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            parse("/api/v1/namespaces/default/pods"),
            Route::Resource {
                kind: Kind::Pod,
                namespace: Some("default".into()),
                name: None,
                subresource: None
            }
        );
        assert_eq!(
            parse("/apis/batch/v1/jobs"),
            Route::Resource {
                kind: Kind::Job,
                namespace: None,
                name: None,
                subresource: None
            }
        );
        assert_eq!(
            parse("/api/v1/namespaces/x"),
            Route::Resource {
                kind: Kind::Namespace,
                namespace: None,
                name: Some("x".into()),
                subresource: None
            }
        );
        assert_eq!(
            parse("/api/v1/namespaces/x/pods/p/log"),
            Route::Resource {
                kind: Kind::Pod,
                namespace: Some("x".into()),
                name: Some("p".into()),
                subresource: Some("log".into())
            }
        );
        assert_eq!(parse("/api/v1/pods/x"), Route::NotFound);
        assert_eq!(parse("/apis/apps/v1"), Route::NotFound);
    }
}
