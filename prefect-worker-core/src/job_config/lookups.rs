//! Where templating's variables and block documents come from: the REST client
//! ([`TemplateLookups`] for [`PrefectClient`]), or memory
//! ([`MemoryLookups`](crate::templating::MemoryLookups)).
//! This lives here, above both the client and templating, so neither names the other.

use serde_json::Value;

use crate::client::{ClientError, PrefectClient};
use crate::templating::{LookupError, TemplateLookups};

fn lookup_error(e: ClientError) -> LookupError {
    match e {
        ClientError::NotFound(_) => LookupError::NotFound(e.to_string()),
        other => LookupError::Api(other.to_string()),
    }
}

#[async_trait::async_trait]
impl TemplateLookups for PrefectClient {
    async fn variable(&self, name: &str) -> Result<Option<Value>, LookupError> {
        self.read_variable_by_name(name).await.map_err(lookup_error)
    }

    async fn block_document(&self, id: &str) -> Result<Value, LookupError> {
        self.read_block_document(id).await.map_err(lookup_error)
    }

    async fn block_document_by_name(&self, slug: &str, name: &str) -> Result<Value, LookupError> {
        self.read_block_document_by_name(slug, name)
            .await
            .map_err(lookup_error)
    }
}
