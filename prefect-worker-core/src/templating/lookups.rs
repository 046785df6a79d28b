//! The I/O templating needs, behind a trait: Prefect Variables and block documents
//! ([`TemplateLookups`]). The REST client implements it (in `job_config`, above both);
//! [`MemoryLookups`] serves it from memory, for tests and offline previews
//! (`preview --input`).

use std::collections::HashMap;

use serde_json::Value;

/// A failed read of a block document or variable.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The block document does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The API could not be asked.
    #[error("{0}")]
    Api(String),
}

/// The I/O templating needs: Prefect Variables and block documents. The REST client
/// implements it; tests and `preview --input` serve it from memory.
#[async_trait::async_trait]
pub trait TemplateLookups: Send + Sync {
    /// `GET /variables/name/{name}` → its `value`; `None` when the variable does not exist.
    async fn variable(&self, name: &str) -> Result<Option<Value>, LookupError>;
    /// `GET /block_documents/{id}?include_secrets=true` → its `data`.
    async fn block_document(&self, id: &str) -> Result<Value, LookupError>;
    /// `GET /block_types/slug/{slug}/block_documents/name/{name}?include_secrets=true` → its `data`.
    async fn block_document_by_name(&self, slug: &str, name: &str) -> Result<Value, LookupError>;
}

/// Variables and block documents held in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryLookups {
    /// Prefect Variables by name. A variable whose value is `null` exists.
    pub variables: HashMap<String, Value>,
    /// Block document `data` by document id.
    pub blocks_by_id: HashMap<String, Value>,
    /// Block document `data` by (block type slug, document name).
    pub blocks_by_name: HashMap<(String, String), Value>,
}

impl MemoryLookups {
    /// Lookups with only these variables.
    #[must_use]
    pub fn with_variables(variables: impl IntoIterator<Item = (String, Value)>) -> Self {
        Self {
            variables: variables.into_iter().collect(),
            ..Self::default()
        }
    }
}

#[async_trait::async_trait]
impl TemplateLookups for MemoryLookups {
    async fn variable(&self, name: &str) -> Result<Option<Value>, LookupError> {
        Ok(self.variables.get(name).cloned())
    }

    async fn block_document(&self, id: &str) -> Result<Value, LookupError> {
        self.blocks_by_id.get(id).cloned().ok_or_else(|| {
            LookupError::NotFound(format!(
                "Block not found: ID '{id}'. This block was referenced in your deployment or work \
                 pool configuration but no longer exists. Create it again or remove the reference."
            ))
        })
    }

    async fn block_document_by_name(&self, slug: &str, name: &str) -> Result<Value, LookupError> {
        self.blocks_by_name
            .get(&(slug.to_owned(), name.to_owned()))
            .cloned()
            .ok_or_else(|| {
                LookupError::NotFound(format!(
                    "Block not found: '{name}' of type '{slug}'. This block was referenced in your \
                 deployment or work pool configuration but no longer exists. Create it again or \
                 remove the reference."
                ))
            })
    }
}
