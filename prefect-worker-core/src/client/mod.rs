//! The Prefect REST client (spec §1, API_CALLS.md §A).
//!
//! STUB: signatures fixed, bodies being written.

pub mod models;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use models::*;

/// A failed API call. Messages never contain the API key or auth string.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("server error: {0}")]
    Server(String),
    #[error("transport error: {0}")]
    Transport(String),
}

/// How to reach the API.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    pub api_url: String,
}

/// The Prefect REST client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PrefectClient {}

#[allow(clippy::unused_async, unused_variables)]
impl PrefectClient {
    pub fn new(options: ClientOptions) -> Result<Self, ClientError> { Ok(Self {}) }
    pub async fn read_work_pool(&self, name: &str) -> Result<WorkPool, ClientError> { unimplemented!() }
    pub async fn create_work_pool(&self, body: &WorkPoolCreate) -> Result<WorkPool, ClientError> { unimplemented!() }
    pub async fn update_work_pool_base_job_template(&self, name: &str, template: &Value) -> Result<(), ClientError> { unimplemented!() }
    pub async fn read_work_queues(&self, pool: &str, names: Option<&[String]>) -> Result<Vec<WorkQueue>, ClientError> { unimplemented!() }
    pub async fn send_worker_heartbeat(&self, pool: &str, worker_name: &str, heartbeat_interval_seconds: u64) -> Result<(), ClientError> { unimplemented!() }
    pub async fn get_scheduled_flow_runs(&self, pool: &str, work_queue_names: &[String], scheduled_before: DateTime<Utc>) -> Result<Vec<WorkerFlowRunResponse>, ClientError> { unimplemented!() }
    pub async fn read_flow_run(&self, id: Uuid) -> Result<FlowRun, ClientError> { unimplemented!() }
    pub async fn set_flow_run_state(&self, id: Uuid, state: &StateCreate, force: bool) -> Result<OrchestrationResult, ClientError> { unimplemented!() }
    pub async fn update_flow_run_labels(&self, id: Uuid, labels: &JsonMap) -> Result<(), ClientError> { unimplemented!() }
    pub async fn set_infrastructure_pid(&self, id: Uuid, pid: &str) -> Result<(), ClientError> { unimplemented!() }
    pub async fn filter_flow_runs(&self, filter: &Value) -> Result<Vec<FlowRun>, ClientError> { unimplemented!() }
    pub async fn read_deployment(&self, id: Uuid) -> Result<Deployment, ClientError> { unimplemented!() }
    pub async fn read_flow(&self, id: Uuid) -> Result<Flow, ClientError> { unimplemented!() }
    pub async fn read_variable_by_name(&self, name: &str) -> Result<Option<Value>, ClientError> { unimplemented!() }
    pub async fn read_block_document(&self, id: &str) -> Result<Value, ClientError> { unimplemented!() }
    pub async fn read_block_document_by_name(&self, slug: &str, name: &str) -> Result<Value, ClientError> { unimplemented!() }
    pub async fn create_logs(&self, logs: &[LogCreate]) -> Result<(), ClientError> { unimplemented!() }
}
