//! [`RawFields`]: the fields of a per-run model that the worker does not type, kept as
//! JSON text.
//!
//! A flow run stays in memory for as long as its infrastructure runs, so with a thousand
//! runs tracked its untyped fields (parameters, context, policies, labels, the state's
//! details) are a large share of the worker's memory. Parsed into a `serde_json::Map` the
//! fields of a typical run take about 5 KB in some fifty allocations; as the JSON text they
//! came in, under 1 KB in one. They are read rarely (a run's count, one label), so each
//! read parses the text.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::models::JsonMap;

/// A JSON object kept as its compact text, in the order its keys arrived. It serialises as
/// the object (so a model with `#[serde(flatten)] extra: RawFields` writes back what it
/// read) and compares by that text.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RawFields {
    /// `None` for an empty object (the common case for a state's extra fields).
    text: Option<Box<str>>,
}

impl RawFields {
    /// An empty object.
    #[must_use]
    pub const fn new() -> Self {
        Self { text: None }
    }

    /// Whether the object has no fields.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.text.is_none()
    }

    /// The object, parsed.
    #[must_use]
    pub fn to_map(&self) -> JsonMap {
        self.text
            .as_deref()
            // The text is always what `serde_json` wrote from a map (`From<JsonMap>`).
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }

    /// One field's value, parsed.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<Value> {
        self.to_map().remove(key)
    }

    /// Sets a field, returning its previous value.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) -> Option<Value> {
        let mut map = self.to_map();
        let previous = map.insert(key.into(), value);
        *self = Self::from(map);
        previous
    }

    /// Removes a field, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let mut map = self.to_map();
        let previous = map.shift_remove(key);
        if previous.is_some() {
            *self = Self::from(map);
        }
        previous
    }
}

impl From<JsonMap> for RawFields {
    fn from(map: JsonMap) -> Self {
        if map.is_empty() {
            return Self::new();
        }
        // Writing a `Map<String, Value>` to a string cannot fail (string keys, no I/O).
        let text = serde_json::to_string(&map).unwrap_or_default();
        Self {
            text: Some(text.into_boxed_str()),
        }
    }
}

impl fmt::Debug for RawFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text.as_deref().unwrap_or("{}"))
    }
}

impl Serialize for RawFields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_map().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        JsonMap::deserialize(deserializer).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Model {
        id: u32,
        #[serde(flatten)]
        extra: RawFields,
    }

    #[test]
    fn a_flattened_model_writes_back_what_it_read_in_order() {
        let text = r#"{"id":1,"zeta":{"b":[1,2.5,null],"a":"x"},"alpha":true}"#;
        let model: Model = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&model).unwrap(), text);
        assert_eq!(model.extra.get("alpha"), Some(json!(true)));
        assert_eq!(model.extra.get("zeta").unwrap()["b"][1], json!(2.5));
        assert_eq!(model.extra.get("missing"), None);
        let keys: Vec<String> = model.extra.to_map().keys().cloned().collect();
        assert_eq!(keys, ["zeta", "alpha"]);
    }

    #[test]
    fn an_empty_object_is_kept_without_text() {
        let model: Model = serde_json::from_str(r#"{"id":1}"#).unwrap();
        assert!(model.extra.is_empty());
        assert_eq!(model.extra, RawFields::new());
        assert_eq!(serde_json::to_string(&model).unwrap(), r#"{"id":1}"#);
        let standalone: RawFields = serde_json::from_str("{}").unwrap();
        assert!(standalone.is_empty());
    }

    #[test]
    fn insert_and_remove_keep_the_other_fields_in_order() {
        let mut fields = RawFields::from(
            json!({"a": 1, "b": 2, "c": 3})
                .as_object()
                .cloned()
                .unwrap(),
        );
        assert_eq!(fields.remove("b"), Some(json!(2)));
        assert_eq!(fields.remove("b"), None);
        assert_eq!(fields.insert("d", json!(4)), None);
        assert_eq!(fields.insert("a", json!(0)), Some(json!(1)));
        assert_eq!(format!("{fields:?}"), r#"{"a":0,"c":3,"d":4}"#);
        assert_eq!(fields.remove("a"), Some(json!(0)));
        assert_eq!(fields.remove("c"), Some(json!(3)));
        assert_eq!(fields.remove("d"), Some(json!(4)));
        assert!(fields.is_empty());
    }
}
