//! Prefect events as the server receives them on `/events/in` (spec §4.6): a resource, its
//! related resources, a payload and the ordering hints `id` / `follows`. Pure data.

use chrono::{DateTime, SecondsFormat, Utc};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

/// An event only `follows` an earlier one that happened less than this long before or
/// after it (Python's `TIGHT_TIMING`); otherwise ordering is left to `occurred`.
pub const TIGHT_TIMING: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// The labels of a resource, in the order they were added (Python keeps dict order, and
/// the examples in the spec show it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Resource(IndexMap<String, String>);

impl Resource {
    /// A resource with only `prefect.resource.id`.
    #[must_use]
    pub fn new(id: impl Into<String>) -> Self {
        let mut labels = IndexMap::new();
        labels.insert("prefect.resource.id".to_owned(), id.into());
        Self(labels)
    }

    /// A related resource: `prefect.resource.id`, `prefect.resource.role` and, when given,
    /// `prefect.resource.name`, in that order.
    #[must_use]
    pub fn related(id: impl Into<String>, role: &str, name: Option<&str>) -> Self {
        let r = Self::new(id).with("prefect.resource.role", role);
        match name {
            Some(n) => r.with("prefect.resource.name", n),
            None => r,
        }
    }

    /// Adds (or replaces) a label, keeping its first position.
    #[must_use]
    pub fn with(mut self, label: &str, value: impl Into<String>) -> Self {
        self.set(label, value);
        self
    }

    /// Sets a label in place.
    pub fn set(&mut self, label: &str, value: impl Into<String>) {
        self.0.insert(label.to_owned(), value.into());
    }

    /// The value of `label`.
    #[must_use]
    pub fn get(&self, label: &str) -> Option<&str> {
        self.0.get(label).map(String::as_str)
    }

    /// `prefect.resource.id`.
    #[must_use]
    pub fn id(&self) -> &str {
        self.get("prefect.resource.id").unwrap_or_default()
    }

    /// `prefect.resource.role` (related resources only).
    #[must_use]
    pub fn role(&self) -> Option<&str> {
        self.get("prefect.resource.role")
    }

    /// The labels, in order.
    pub fn labels(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// One event. Serialises to exactly the JSON Python's `Event.model_dump_json()` sends:
/// `occurred` (RFC 3339, microseconds, `Z`), `event`, `resource`, `related`, `payload`,
/// `id`, `follows`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// When it happened, from the emitter's point of view.
    #[serde(serialize_with = "rfc3339_micros")]
    pub occurred: DateTime<Utc>,
    /// Its name, e.g. `prefect.worker.started`.
    pub event: String,
    /// What it happened to.
    pub resource: Resource,
    /// Other resources involved, each with a `prefect.resource.role`.
    pub related: Vec<Resource>,
    /// Open-ended data (`{}` for every event this worker emits).
    pub payload: Map<String, Value>,
    /// Client-chosen id (UUIDv7 unless the emitter derives a deterministic one); the server
    /// stores an id once.
    pub id: Uuid,
    /// An event known to come before this one (see [`Event::following`]).
    pub follows: Option<Uuid>,
}

fn rfc3339_micros<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

impl Event {
    /// An event named `event` about `resource`, happening now, with a fresh UUIDv7.
    #[must_use]
    pub fn new(event: impl Into<String>, resource: Resource) -> Self {
        Self {
            occurred: Utc::now(),
            event: event.into(),
            resource,
            related: Vec::new(),
            payload: Map::new(),
            id: Uuid::now_v7(),
            follows: None,
        }
    }

    /// Sets the related resources.
    #[must_use]
    pub fn with_related(mut self, related: Vec<Resource>) -> Self {
        self.related = related;
        self
    }

    /// Sets when it happened.
    #[must_use]
    pub fn occurred_at(mut self, occurred: DateTime<Utc>) -> Self {
        self.occurred = occurred;
        self
    }

    /// Sets the id (deterministic ids let the server drop duplicates).
    #[must_use]
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Marks this event as following `earlier`, if `earlier` happened within
    /// [`TIGHT_TIMING`] of it (Python's `emit_event(follows=...)` rule).
    #[must_use]
    pub fn following(self, earlier: Option<(Uuid, DateTime<Utc>)>) -> Self {
        let follows = earlier.and_then(|(id, at)| {
            let gap = self.occurred - at;
            (-TIGHT_TIMING < gap && gap < TIGHT_TIMING).then_some(id)
        });
        Self { follows, ..self }
    }

    /// `(id, occurred)`, what a later event needs to follow this one.
    #[must_use]
    pub fn anchor(&self) -> (Uuid, DateTime<Utc>) {
        (self.id, self.occurred)
    }

    /// The first related resource with `role`.
    #[must_use]
    pub fn related_with_role(&self, role: &str) -> Option<&Resource> {
        self.related.iter().find(|r| r.role() == Some(role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn serialises_as_python_does() {
        let at = Utc.with_ymd_and_hms(2026, 11, 29, 2, 32, 37).unwrap()
            + chrono::TimeDelta::microseconds(232_455);
        let id = Uuid::parse_str("01a22525-b270-70f0-99f7-da834e2e7787").unwrap();
        let e = Event::new("x.y", Resource::new("r").with("prefect.resource.name", "n"))
            .with_related(vec![Resource::related("p", "pool", Some("k8s"))])
            .occurred_at(at)
            .with_id(id);
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"occurred":"2026-11-29T02:32:37.232455Z","event":"x.y","resource":{"prefect.resource.id":"r","prefect.resource.name":"n"},"related":[{"prefect.resource.id":"p","prefect.resource.role":"pool","prefect.resource.name":"k8s"}],"payload":{},"id":"01a22525-b270-70f0-99f7-da834e2e7787","follows":null}"#
        );
    }

    #[test]
    fn follows_only_close_events() {
        let now = Utc::now();
        let before = Uuid::now_v7();
        let e = Event::new("a", Resource::new("r")).occurred_at(now);
        assert_eq!(
            e.clone()
                .following(Some((before, now - chrono::TimeDelta::minutes(4))))
                .follows,
            Some(before)
        );
        assert_eq!(
            e.clone()
                .following(Some((before, now - chrono::TimeDelta::minutes(6))))
                .follows,
            None
        );
        assert_eq!(e.following(None).follows, None);
    }
}
