//! Label and field selectors, parsed from query strings and matched against objects.

use std::collections::BTreeMap;

use crate::error::ApiError;
use crate::kinds::Kind;
use crate::object::Object;

/// One label requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelRequirement {
    /// `k`
    Exists(String),
    /// `!k`
    NotExists(String),
    /// `k=v` / `k==v`
    Equals(String, String),
    /// `k!=v` (also true when the label is absent)
    NotEquals(String, String),
    /// `k in (a,b)`
    In(String, Vec<String>),
    /// `k notin (a,b)` (also true when the label is absent)
    NotIn(String, Vec<String>),
}

/// A parsed label selector: all requirements must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<LabelRequirement>);

impl LabelSelector {
    /// Parse the `labelSelector` query parameter syntax.
    pub fn parse(input: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in split_top_level(input) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            reqs.push(parse_requirement(part)?);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
        self.0.iter().all(|r| match r {
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::NotExists(k) => get(k).is_none(),
            LabelRequirement::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelRequirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
        })
    }

    /// True when the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Split on commas that are not inside a `( ... )` set.
fn split_top_level(input: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&input[start..]);
    out
}

fn bad_selector(part: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!(
        "unable to parse requirement: {why} (in \"{part}\")"
    ))
}

fn parse_set(part: &str, rest: &str) -> Result<Vec<String>, ApiError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| bad_selector(part, "found '', expected: '('"))?;
    Ok(inner
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

fn check_key(part: &str, key: &str) -> Result<String, ApiError> {
    let key = key.trim();
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(bad_selector(part, "invalid label key"));
    }
    Ok(key.to_string())
}

fn parse_requirement(part: &str) -> Result<LabelRequirement, ApiError> {
    if let Some(k) = part.strip_prefix('!') {
        return Ok(LabelRequirement::NotExists(check_key(part, k)?));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(LabelRequirement::NotEquals(
            check_key(part, k)?,
            v.trim().to_string(),
        ));
    }
    if let Some((k, v)) = part.split_once("==") {
        return Ok(LabelRequirement::Equals(
            check_key(part, k)?,
            v.trim().to_string(),
        ));
    }
    if let Some((k, v)) = part.split_once('=') {
        return Ok(LabelRequirement::Equals(
            check_key(part, k)?,
            v.trim().to_string(),
        ));
    }
    if let Some(idx) = part.find(" notin ") {
        let key = check_key(part, &part[..idx])?;
        return Ok(LabelRequirement::NotIn(
            key,
            parse_set(part, &part[idx + 7..])?,
        ));
    }
    if let Some(idx) = part.find(" in ") {
        let key = check_key(part, &part[..idx])?;
        return Ok(LabelRequirement::In(
            key,
            parse_set(part, &part[idx + 4..])?,
        ));
    }
    Ok(LabelRequirement::Exists(check_key(part, part)?))
}

/// One field requirement: `field=value` or `field!=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Dotted field path.
    pub field: String,
    /// Expected value.
    pub value: String,
    /// `!=` rather than `=`.
    pub negate: bool,
}

/// A parsed field selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

impl FieldSelector {
    /// Parse the `fieldSelector` query parameter, refusing fields the real
    /// server does not index for `kind` (a 400, as real).
    pub fn parse(kind: Kind, input: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, negate) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, false)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{input}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if !supported_field(kind, field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            reqs.push(FieldRequirement {
                field: field.to_string(),
                value: value.trim().to_string(),
                negate,
            });
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether `obj` satisfies every requirement.
    pub fn matches(&self, obj: &Object) -> bool {
        self.0.iter().all(|r| {
            let actual = field_value(obj, &r.field).unwrap_or_default();
            (actual == r.value) != r.negate
        })
    }

    /// The value required for `field` with `=`, if any (lets the store
    /// answer `metadata.name=x` without a scan).
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|r| r.field == field && !r.negate)
            .map(|r| r.value.as_str())
    }
}

fn supported_field(kind: Kind, field: &str) -> bool {
    if matches!(field, "metadata.name" | "metadata.namespace") {
        return true;
    }
    match kind {
        Kind::Pod => matches!(
            field,
            "status.phase" | "spec.nodeName" | "spec.restartPolicy"
        ),
        Kind::Namespace => field == "status.phase",
        Kind::Secret => field == "type",
        Kind::Event => matches!(
            field,
            "involvedObject.kind"
                | "involvedObject.name"
                | "involvedObject.namespace"
                | "involvedObject.uid"
                | "involvedObject.apiVersion"
                | "involvedObject.resourceVersion"
                | "involvedObject.fieldPath"
                | "reason"
                | "type"
                | "source"
                | "reportingComponent"
        ),
        Kind::Job => field == "status.successful",
    }
}

fn field_value(obj: &Object, field: &str) -> Option<String> {
    match field {
        "metadata.name" => return Some(obj.name().to_string()),
        "metadata.namespace" => return Some(obj.namespace().to_string()),
        "status.phase" => return obj.phase().map(str::to_string),
        _ => {}
    }
    match obj {
        Object::Pod(p) => {
            let spec = p.spec.as_ref()?;
            match field {
                "spec.nodeName" => spec.node_name.clone(),
                "spec.restartPolicy" => spec.restart_policy.clone(),
                _ => None,
            }
        }
        Object::Secret(s) => (field == "type").then(|| s.type_.clone()).flatten(),
        Object::Job(j) => (field == "status.successful").then(|| {
            j.status
                .as_ref()
                .and_then(|s| s.succeeded)
                .unwrap_or(0)
                .to_string()
        }),
        Object::Event(e) => {
            let io = &e.involved_object;
            match field {
                "involvedObject.kind" => io.kind.clone(),
                "involvedObject.name" => io.name.clone(),
                "involvedObject.namespace" => io.namespace.clone(),
                "involvedObject.uid" => io.uid.clone(),
                "involvedObject.apiVersion" => io.api_version.clone(),
                "involvedObject.resourceVersion" => io.resource_version.clone(),
                "involvedObject.fieldPath" => io.field_path.clone(),
                "reason" => e.reason.clone(),
                "type" => e.type_.clone(),
                "source" => e.source.as_ref().and_then(|s| s.component.clone()),
                "reportingComponent" => e.reporting_component.clone(),
                _ => None,
            }
        }
        Object::Namespace(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selector_operators() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(Some(&l));
        assert!(m("app=web"));
        assert!(m("app==web"));
        assert!(!m("app!=web"));
        assert!(m("missing!=x"));
        assert!(m("app in (web, db)"));
        assert!(!m("app notin (web,db)"));
        assert!(m("missing notin (a)"));
        assert!(m("app,tier=front"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(m(""));
        assert!(m("app in (web),tier notin (back)"));
    }

    #[test]
    fn field_selector_rejects_unknown_fields() {
        assert!(FieldSelector::parse(Kind::Pod, "status.phase=Running").is_ok());
        let err = FieldSelector::parse(Kind::Job, "spec.foo=1").unwrap_err();
        assert_eq!(err.code, 400);
    }
}
