//! [`MemoryLookups`]: Prefect Variables and block documents served from memory, for
//! tests and offline previews (`preview --input`).

use std::collections::HashMap;

use serde_json::Value;

use super::{LookupError, TemplateLookups};

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
