//! The I/O passes that run over the *rendered* configuration: block documents
//! (`{"$ref": {"block_document_id": ...}}`, `{{ prefect.blocks.* }}`) and Prefect Variables
//! (`{{ prefect.variables.* }}`). Both cache per call, like Python.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use serde_json::{Map, Value};

use super::lookups::{LookupError, TemplateLookups};
use super::path::get_from_dict;
use super::placeholder::{
    BLOCK_DOCUMENT_PREFIX, Placeholder, PlaceholderType, VARIABLE_PREFIX, find_placeholders,
};
use super::pyrepr::{py_repr, py_str};

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a block-document or variable placeholder could not be resolved. Job configuration
/// turns it into its own error (`job_config::ConfigurationError`).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A value the template needs could not be produced (a block path that does not
    /// exist, a dict placed inside a string...). The message names it.
    #[error("{0}")]
    Value(String),
    /// Reading a block document or variable failed.
    #[error(transparent)]
    Lookup(#[from] LookupError),
}

/// Python `resolve_block_document_references`.
pub async fn resolve_block_document_references(
    template: Value,
    lookups: &dyn TemplateLookups,
) -> Result<Value, ResolveError> {
    let mut cache = BlockCache::default();
    resolve_blocks(template, lookups, &mut cache).await
}

#[derive(Default)]
struct BlockCache {
    by_id: HashMap<String, Value>,
    by_name: HashMap<(String, String), Value>,
}

fn resolve_blocks<'a>(
    tmpl: Value,
    lookups: &'a dyn TemplateLookups,
    cache: &'a mut BlockCache,
) -> Boxed<'a, Result<Value, ResolveError>> {
    Box::pin(async move {
        match tmpl {
            Value::Object(map) => {
                if let Some(id) = block_ref_id(&map) {
                    if !cache.by_id.contains_key(&id) {
                        let data = lookups.block_document(&id).await?;
                        cache.by_id.insert(id.clone(), data);
                    }
                    return Ok(cache.by_id.get(&id).cloned().unwrap_or(Value::Null));
                }
                let mut out = Map::new();
                for (k, v) in map {
                    let resolved = resolve_blocks(v, lookups, cache).await?;
                    out.insert(k, resolved);
                }
                Ok(Value::Object(out))
            }
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for v in items {
                    out.push(resolve_blocks(v, lookups, cache).await?);
                }
                Ok(Value::Array(out))
            }
            Value::String(s) => resolve_block_string(s, lookups, cache).await,
            other => Ok(other),
        }
    })
}

/// The id of a `{"$ref": {"block_document_id": <id>}}` reference; Python treats any
/// truthy id as a reference.
fn block_ref_id(map: &Map<String, Value>) -> Option<String> {
    match map.get("$ref")?.get("block_document_id")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.as_f64() != Some(0.0) => Some(n.to_string()),
        _ => None,
    }
}

async fn resolve_block_string(
    s: String,
    lookups: &dyn TemplateLookups,
    cache: &mut BlockCache,
) -> Result<Value, ResolveError> {
    let placeholders = find_placeholders(&s);
    if !placeholders
        .iter()
        .any(|p| p.kind == PlaceholderType::BlockDocument)
    {
        return Ok(Value::String(s));
    }
    if let [only] = placeholders.as_slice()
        && only.full_match == s
    {
        return resolve_single_block(only, &s, lookups, cache).await;
    }
    let mut result = s.clone();
    for p in placeholders
        .iter()
        .filter(|p| p.kind == PlaceholderType::BlockDocument)
    {
        let value = resolve_single_block(p, &s, lookups, cache).await?;
        if matches!(value, Value::Object(_) | Value::Array(_)) {
            let kind = if value.is_object() { "dict" } else { "list" };
            return Err(ResolveError::Value(format!(
                "Invalid template: {}. Block placeholder {} resolved to a {kind}, which cannot be \
                 used for inline string substitution. Resolve a scalar attribute instead (e.g., \
                 '.value' or '.url').",
                py_repr(&Value::String(s.clone())),
                py_repr(&Value::String(p.full_match.clone())),
            )));
        }
        // Python replaces sequentially with `str.replace`, so this is not single-pass.
        result = result.replace(&p.full_match, &py_str(&value));
    }
    Ok(Value::String(result))
}

async fn resolve_single_block(
    p: &Placeholder,
    tmpl: &str,
    lookups: &dyn TemplateLookups,
    cache: &mut BlockCache,
) -> Result<Value, ResolveError> {
    let rest = p.name.replace(BLOCK_DOCUMENT_PREFIX, "");
    let mut parts = rest.splitn(3, '.');
    let (Some(slug), Some(name)) = (parts.next(), parts.next()) else {
        return Err(ResolveError::Value(format!(
            "Invalid block placeholder format: '{}'. Expected format: \
             prefect.blocks.<block-type-slug>.<block-document-name>",
            p.name
        )));
    };
    let keypath = parts.next();
    let key = (slug.to_owned(), name.to_owned());
    if !cache.by_name.contains_key(&key) {
        let data = lookups.block_document_by_name(slug, name).await?;
        cache.by_name.insert(key.clone(), data);
    }
    let data = cache.by_name.get(&key).cloned().unwrap_or(Value::Null);
    // Single-value blocks (Secret, String...) unwrap to their value unless the key path
    // itself starts at `value`.
    let data = match &data {
        Value::Object(m) if m.len() == 1 && m.contains_key("value") => {
            let points_at_value = keypath.is_some_and(|k| {
                k == "value" || k.starts_with("value.") || k.starts_with("value[")
            });
            if points_at_value {
                data
            } else {
                m.get("value").cloned().unwrap_or(Value::Null)
            }
        }
        _ => data,
    };
    match keypath {
        None => Ok(data),
        Some(k) => get_from_dict(&data, k).map(std::borrow::Cow::into_owned).ok_or_else(|| {
            ResolveError::Value(format!(
                "Invalid template: {}. Could not resolve the keypath in the block document data.",
                py_repr(&Value::String(tmpl.to_owned()))
            ))
        }),
    }
}

/// Python `resolve_variables`: `{{ prefect.variables.NAME }}` becomes the variable's JSON
/// value when it is the whole string, else `str(value)`; missing variables give `""`.
pub async fn resolve_variables(
    template: Value,
    lookups: &dyn TemplateLookups,
) -> Result<Value, ResolveError> {
    let mut cache: HashMap<String, Option<Value>> = HashMap::new();
    resolve_vars(template, lookups, &mut cache).await
}

fn resolve_vars<'a>(
    tmpl: Value,
    lookups: &'a dyn TemplateLookups,
    cache: &'a mut HashMap<String, Option<Value>>,
) -> Boxed<'a, Result<Value, ResolveError>> {
    Box::pin(async move {
        match tmpl {
            Value::String(s) => {
                let placeholders = find_placeholders(&s);
                if !placeholders
                    .iter()
                    .any(|p| p.kind == PlaceholderType::Variable)
                {
                    return Ok(Value::String(s));
                }
                if let [only] = placeholders.as_slice()
                    && only.full_match == s
                {
                    return Ok(read_variable(&only.name, lookups, cache)
                        .await?
                        .unwrap_or_else(|| Value::String(String::new())));
                }
                let mut out = s.clone();
                for p in placeholders
                    .iter()
                    .filter(|p| p.kind == PlaceholderType::Variable)
                {
                    let text = read_variable(&p.name, lookups, cache)
                        .await?
                        .map(|v| py_str(&v))
                        .unwrap_or_default();
                    // Sequential `str.replace`, as Python does.
                    out = out.replace(&p.full_match, &text);
                }
                Ok(Value::String(out))
            }
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, v) in map {
                    let resolved = resolve_vars(v, lookups, cache).await?;
                    out.insert(k, resolved);
                }
                Ok(Value::Object(out))
            }
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for v in items {
                    out.push(resolve_vars(v, lookups, cache).await?);
                }
                Ok(Value::Array(out))
            }
            other => Ok(other),
        }
    })
}

async fn read_variable(
    placeholder_name: &str,
    lookups: &dyn TemplateLookups,
    cache: &mut HashMap<String, Option<Value>>,
) -> Result<Option<Value>, ResolveError> {
    // Python removes the prefix wherever it occurs in the name.
    let name = placeholder_name.replace(VARIABLE_PREFIX, "");
    if let Some(hit) = cache.get(&name) {
        return Ok(hit.clone());
    }
    let value = lookups.variable(&name).await?;
    cache.insert(name, value.clone());
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templating::MemoryLookups;
    use serde_json::json;

    fn lookups() -> MemoryLookups {
        let mut l = MemoryLookups::with_variables([
            ("ns".to_owned(), json!("analytics")),
            ("sel".to_owned(), json!({"disk": "ssd"})),
            ("n".to_owned(), json!(7)),
            ("nothing".to_owned(), json!(null)),
        ]);
        l.blocks_by_id.insert(
            "b1".to_owned(),
            json!({"config": {"a": 1}, "context_name": "ctx"}),
        );
        l.blocks_by_name.insert(
            ("secret".to_owned(), "token".to_owned()),
            json!({"value": "s3cr3t"}),
        );
        l.blocks_by_name.insert(
            ("json".to_owned(), "cfg".to_owned()),
            json!({"value": {"url": "http://x", "list": [1, 2]}}),
        );
        l
    }

    fn vars(t: Value) -> Result<Value, ResolveError> {
        futures::executor::block_on(resolve_variables(t, &lookups()))
    }

    fn blocks(t: Value) -> Result<Value, ResolveError> {
        futures::executor::block_on(resolve_block_document_references(t, &lookups()))
    }

    #[test]
    fn variables_full_and_partial() {
        let t = json!({
            "a": "{{ prefect.variables.ns }}",
            "b": "{{ prefect.variables.sel }}",
            "c": "x-{{ prefect.variables.n }}-{{ prefect.variables.missing }}-{{ prefect.variables.nothing }}",
            "d": "{{ prefect.variables.missing }}",
            "e": ["{{ prefect.variables.n }}"],
            "f": "{{ prefect.variables.nothing }}",
            "g": "{{ other }}"
        });
        assert_eq!(
            vars(t).unwrap(),
            json!({"a": "analytics", "b": {"disk": "ssd"}, "c": "x-7--None", "d": "", "e": [7], "f": null, "g": "{{ other }}"})
        );
    }

    #[test]
    fn block_references_and_placeholders() {
        assert_eq!(
            blocks(json!({"cluster_config": {"$ref": {"block_document_id": "b1"}}})).unwrap(),
            json!({"cluster_config": {"config": {"a": 1}, "context_name": "ctx"}})
        );
        assert_eq!(
            blocks(json!("{{ prefect.blocks.secret.token }}")).unwrap(),
            json!("s3cr3t")
        );
        assert_eq!(
            blocks(json!("Bearer {{ prefect.blocks.secret.token }}")).unwrap(),
            json!("Bearer s3cr3t")
        );
        assert_eq!(
            blocks(json!("{{ prefect.blocks.json.cfg.url }}")).unwrap(),
            json!("http://x")
        );
        assert_eq!(
            blocks(json!("{{ prefect.blocks.json.cfg.value.list[1] }}")).unwrap(),
            json!(2)
        );
        assert!(blocks(json!("x {{ prefect.blocks.json.cfg }}")).is_err());
        assert!(blocks(json!("{{ prefect.blocks.json.cfg.nope }}")).is_err());
        assert!(blocks(json!("{{ prefect.blocks.only }}")).is_err());
        assert!(matches!(
            blocks(json!({"$ref": {"block_document_id": "gone"}})),
            Err(ResolveError::Lookup(LookupError::NotFound(_)))
        ));
    }
}
