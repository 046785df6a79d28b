//! The resource kinds the simulator serves, and their names on the wire.

use serde::Serialize;

/// A resource kind served by the simulated API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Kind {
    /// `v1` Namespace (cluster-scoped).
    Namespace,
    /// `batch/v1` Job.
    Job,
    /// `v1` Pod.
    Pod,
    /// `v1` Secret.
    Secret,
    /// `v1` Event (core events).
    Event,
}

impl Kind {
    /// Every kind, in discovery order.
    pub const ALL: [Kind; 5] = [
        Kind::Namespace,
        Kind::Job,
        Kind::Pod,
        Kind::Secret,
        Kind::Event,
    ];

    /// `Job`, `Pod`, ...
    pub fn kind(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Job => "Job",
            Kind::Pod => "Pod",
            Kind::Secret => "Secret",
            Kind::Event => "Event",
        }
    }

    /// The lower-case plural used in URLs.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Job => "jobs",
            Kind::Pod => "pods",
            Kind::Secret => "secrets",
            Kind::Event => "events",
        }
    }

    /// The lower-case singular (discovery's `singularName`).
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Job => "job",
            Kind::Pod => "pod",
            Kind::Secret => "secret",
            Kind::Event => "event",
        }
    }

    /// API group, empty for the core group.
    pub fn group(self) -> &'static str {
        match self {
            Kind::Job => "batch",
            _ => "",
        }
    }

    /// `apiVersion` of objects of this kind.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Job => "batch/v1",
            _ => "v1",
        }
    }

    /// Whether objects live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace)
    }

    /// `jobs.batch` / `pods`: the resource name the real server uses in
    /// NotFound / AlreadyExists / Forbidden messages.
    pub fn qualified_resource(self) -> String {
        match self.group() {
            "" => self.plural().to_string(),
            g => format!("{}.{g}", self.plural()),
        }
    }

    /// `Job.batch` / `Pod`: the kind name the real server uses in Invalid messages.
    pub fn qualified_kind(self) -> String {
        match self.group() {
            "" => self.kind().to_string(),
            g => format!("{}.{g}", self.kind()),
        }
    }

    /// kubectl short names advertised in discovery.
    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Namespace => &["ns"],
            Kind::Pod => &["po"],
            Kind::Event => &["ev"],
            Kind::Job | Kind::Secret => &[],
        }
    }

    /// Resolve `(group, plural)` from a URL.
    pub fn from_url(group: &str, plural: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.plural() == plural)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}
