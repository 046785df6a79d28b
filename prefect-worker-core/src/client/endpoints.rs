//! The API calls the worker makes (API_CALLS.md §A), each with its error mapping.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::ClientError;
use super::models::{
    Deployment, Flow, FlowRun, JsonMap, LogCreate, OrchestrationResult, State, StateCreate,
    WorkPool, WorkPoolCreate, WorkPoolUpdate, WorkQueue, WorkerFlowRunResponse, WorkerHeartbeat,
    WorkerInfo,
};
use super::transport::{ApiRequest, RawResponse};
use super::{PrefectClient, bodies};

impl PrefectClient {
    async fn fetch<T: DeserializeOwned>(&self, req: ApiRequest) -> Result<T, ClientError> {
        self.inner.execute(&req).await?.json()
    }

    async fn call(&self, req: ApiRequest) -> Result<RawResponse, ClientError> {
        self.inner.execute(&req).await
    }

    /// `GET /deployments/name/{flow}/{deployment}`. 404 → [`ClientError::NotFound`].
    pub async fn read_deployment_by_name(
        &self,
        flow_name: &str,
        deployment_name: &str,
    ) -> Result<Deployment, ClientError> {
        self.fetch(
            ApiRequest::new(
                Method::GET,
                ["deployments", "name", flow_name, deployment_name],
            )
            .not_found_maps(),
        )
        .await
    }

    /// `GET /work_pools/{name}`. 404 → [`ClientError::NotFound`].
    pub async fn read_work_pool(&self, name: &str) -> Result<WorkPool, ClientError> {
        self.fetch(ApiRequest::new(Method::GET, ["work_pools", name]).not_found_maps())
            .await
    }

    /// `POST /work_pools/`. 409 (another worker won the race) → [`ClientError::AlreadyExists`].
    pub async fn create_work_pool(&self, body: &WorkPoolCreate) -> Result<WorkPool, ClientError> {
        self.fetch(
            ApiRequest::new(Method::POST, ["work_pools", ""])
                .json(body)?
                .conflict_maps(),
        )
        .await
    }

    /// `PATCH /work_pools/{name}` with `{"base_job_template": ...}` (204). 404 → NotFound.
    pub async fn update_work_pool_base_job_template(
        &self,
        name: &str,
        template: &Value,
    ) -> Result<(), ClientError> {
        let req = ApiRequest::new(Method::PATCH, ["work_pools", name])
            .json(&json!({ "base_job_template": template }))?
            .not_found_maps();
        self.call(req).await.map(drop)
    }

    /// `PATCH /work_pools/{name}` with the fields of `update` that are set (204).
    /// 404 → [`ClientError::NotFound`].
    pub async fn update_work_pool(
        &self,
        name: &str,
        update: &WorkPoolUpdate,
    ) -> Result<(), ClientError> {
        let req = ApiRequest::new(Method::PATCH, ["work_pools", name])
            .json(update)?
            .not_found_maps();
        self.call(req).await.map(drop)
    }

    /// `POST /work_pools/{pool}/queues/filter`: all queues, or only those named.
    pub async fn read_work_queues(
        &self,
        pool: &str,
        names: Option<&[String]>,
    ) -> Result<Vec<WorkQueue>, ClientError> {
        let req = ApiRequest::new(Method::POST, ["work_pools", pool, "queues", "filter"])
            .json(&bodies::work_queue_filter(names))?;
        self.fetch(req).await
    }

    /// `POST /work_pools/{pool}/workers/heartbeat` (OSS: 204, no body).
    pub async fn send_worker_heartbeat(
        &self,
        pool: &str,
        worker_name: &str,
        heartbeat_interval_seconds: u64,
    ) -> Result<(), ClientError> {
        self.send_worker_heartbeat_with(
            pool,
            &WorkerHeartbeat::new(worker_name, heartbeat_interval_seconds),
        )
        .await
        .map(drop)
    }

    /// `POST /work_pools/{pool}/workers/heartbeat` with Prefect Cloud's extras (spec §2.2C):
    /// `metadata`, and `return_id` to ask for the worker's id. Returns the id when one was
    /// asked for and the server answered 200 with it (Cloud answers with the bare UUID
    /// text; a self-hosted server answers 204 and there is none).
    pub async fn send_worker_heartbeat_with(
        &self,
        pool: &str,
        heartbeat: &WorkerHeartbeat<'_>,
    ) -> Result<Option<Uuid>, ClientError> {
        let req = ApiRequest::new(Method::POST, ["work_pools", pool, "workers", "heartbeat"])
            .json(&bodies::heartbeat(
                heartbeat.worker_name,
                heartbeat.heartbeat_interval_seconds,
                heartbeat.metadata,
                heartbeat.return_id,
            ))?;
        let resp = self.call(req).await?;
        if !heartbeat.return_id || resp.status != 200 {
            return Ok(None);
        }
        let text = resp.text();
        Ok(Uuid::parse_str(text.trim().trim_matches('"')).ok())
    }

    /// `POST /work_pools/{pool}/get_scheduled_flow_runs`. 404 (unknown pool or queue) →
    /// [`ClientError::NotFound`]; the worker treats it as "no runs".
    pub async fn get_scheduled_flow_runs(
        &self,
        pool: &str,
        work_queue_names: &[String],
        scheduled_before: DateTime<Utc>,
    ) -> Result<Vec<WorkerFlowRunResponse>, ClientError> {
        let req = ApiRequest::new(
            Method::POST,
            ["work_pools", pool, "get_scheduled_flow_runs"],
        )
        .json(&bodies::scheduled_flow_runs(
            work_queue_names,
            scheduled_before,
        ))?
        .not_found_maps();
        self.fetch(req).await
    }

    /// `GET /flow_runs/{id}`. 404 → NotFound.
    pub async fn read_flow_run(&self, id: Uuid) -> Result<FlowRun, ClientError> {
        self.fetch(
            ApiRequest::new(Method::GET, ["flow_runs".to_owned(), id.to_string()]).not_found_maps(),
        )
        .await
    }

    /// `POST /flow_runs/{id}/set_state`. 404 → NotFound. Returns the orchestration result
    /// whatever its status; WAIT is the caller's loop.
    ///
    /// Each call gets a fresh `transition_id`; HTTP retries inside the call resend the same
    /// one, so if a first attempt was applied but its answer lost, the server's duplicate
    /// transition rule recognises the retry instead of treating it as a new proposal.
    pub async fn set_flow_run_state(
        &self,
        id: Uuid,
        state: &StateCreate,
        force: bool,
    ) -> Result<OrchestrationResult, ClientError> {
        let body = bodies::set_state(id, state, force, Uuid::new_v4());
        let req = ApiRequest::new(
            Method::POST,
            [
                "flow_runs".to_owned(),
                id.to_string(),
                "set_state".to_owned(),
            ],
        )
        .json(&body)?
        .not_found_maps();
        self.fetch(req).await
    }

    /// `PATCH /flow_runs/{id}/labels` (the server merges them; 204).
    pub async fn update_flow_run_labels(
        &self,
        id: Uuid,
        labels: &JsonMap,
    ) -> Result<(), ClientError> {
        let req = ApiRequest::new(
            Method::PATCH,
            ["flow_runs".to_owned(), id.to_string(), "labels".to_owned()],
        )
        .json(labels)?;
        self.call(req).await.map(drop)
    }

    /// `PATCH /flow_runs/{id}` with `{"infrastructure_pid": pid}` (204).
    pub async fn set_infrastructure_pid(&self, id: Uuid, pid: &str) -> Result<(), ClientError> {
        let req = ApiRequest::new(Method::PATCH, ["flow_runs".to_owned(), id.to_string()])
            .json(&json!({ "infrastructure_pid": pid }))?;
        self.call(req).await.map(drop)
    }

    /// `POST /flow_runs/filter` with a caller-built filter body.
    pub async fn filter_flow_runs(&self, filter: &Value) -> Result<Vec<FlowRun>, ClientError> {
        self.fetch(ApiRequest::new(Method::POST, ["flow_runs", "filter"]).json(filter)?)
            .await
    }

    /// `POST /flow_runs/filter`, with the server's clock at the time of the answer (its
    /// `Date` header, to second precision), so state ages can be measured on one clock.
    pub async fn filter_flow_runs_with_server_time(
        &self,
        filter: &Value,
    ) -> Result<(Vec<FlowRun>, Option<DateTime<Utc>>), ClientError> {
        let resp = self
            .call(ApiRequest::new(Method::POST, ["flow_runs", "filter"]).json(filter)?)
            .await?;
        Ok((resp.json()?, resp.date))
    }

    /// `GET /flow_run_states/?flow_run_id=<id>`: the run's states, oldest first.
    pub async fn read_flow_run_states(&self, id: Uuid) -> Result<Vec<State>, ClientError> {
        let req = ApiRequest::new(Method::GET, ["flow_run_states", ""])
            .query("flow_run_id", id.to_string());
        let mut states: Vec<State> = self.fetch(req).await?;
        // The server orders them already; sort on parsed times in case it ever does not.
        states.sort_by_key(|s| {
            s.timestamp
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        });
        Ok(states)
    }

    /// `POST /work_pools/{pool}/workers/filter`: the pool's workers and their heartbeats.
    pub async fn read_workers(&self, pool: &str) -> Result<Vec<WorkerInfo>, ClientError> {
        let req = ApiRequest::new(Method::POST, ["work_pools", pool, "workers", "filter"])
            .json(&json!({"limit": 200, "offset": 0}))?
            .not_found_maps();
        self.fetch(req).await
    }

    /// `GET /deployments/{id}`. 404 → NotFound.
    pub async fn read_deployment(&self, id: Uuid) -> Result<Deployment, ClientError> {
        self.fetch(
            ApiRequest::new(Method::GET, ["deployments".to_owned(), id.to_string()])
                .not_found_maps(),
        )
        .await
    }

    /// `GET /flows/{id}`. No 404 mapping (spec §1): a 404 is a [`ClientError::Status`].
    pub async fn read_flow(&self, id: Uuid) -> Result<Flow, ClientError> {
        self.fetch(ApiRequest::new(
            Method::GET,
            ["flows".to_owned(), id.to_string()],
        ))
        .await
    }

    /// `GET /variables/name/{name}` → the variable's `value`; `Ok(None)` when it does not exist.
    pub async fn read_variable_by_name(&self, name: &str) -> Result<Option<Value>, ClientError> {
        let req = ApiRequest::new(Method::GET, ["variables", "name", name]).not_found_maps();
        match self.fetch::<JsonMap>(req).await {
            Ok(mut var) => Ok(Some(var.remove("value").unwrap_or(Value::Null))),
            Err(ClientError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /block_documents/{id}?include_secrets=true` → its `data`. 404 → NotFound.
    pub async fn read_block_document(&self, id: &str) -> Result<Value, ClientError> {
        let req = ApiRequest::new(Method::GET, ["block_documents", id])
            .query("include_secrets", "true")
            .not_found_maps();
        data_of(&self.call(req).await?)
    }

    /// `GET /block_types/slug/{slug}/block_documents/name/{name}?include_secrets=true` → its
    /// `data`. 404 → NotFound.
    pub async fn read_block_document_by_name(
        &self,
        slug: &str,
        name: &str,
    ) -> Result<Value, ClientError> {
        let req = ApiRequest::new(
            Method::GET,
            ["block_types", "slug", slug, "block_documents", "name", name],
        )
        .query("include_secrets", "true")
        .not_found_maps();
        data_of(&self.call(req).await?)
    }

    /// `GET /admin/version` → the server's Prefect version (checked before the events
    /// websockets connect, API_CALLS #2).
    pub async fn read_server_version(&self) -> Result<String, ClientError> {
        self.fetch(ApiRequest::new(Method::GET, ["admin", "version"]))
            .await
    }

    /// `POST /events/filter` with `{"filter": filter, "limit": limit}` → the `events` of the
    /// first page (the observer's start-up de-duplication, spec §6.1).
    pub async fn filter_events(
        &self,
        filter: &Value,
        limit: u32,
    ) -> Result<Vec<Value>, ClientError> {
        let body = json!({"filter": filter, "limit": limit});
        let resp = self
            .call(ApiRequest::new(Method::POST, ["events", "filter"]).json(&body)?)
            .await?;
        let mut page: JsonMap = resp.json()?;
        match page.remove("events") {
            Some(Value::Array(events)) => Ok(events),
            _ => Ok(Vec::new()),
        }
    }

    /// `POST /logs/` (201).
    pub async fn create_logs(&self, logs: &[LogCreate]) -> Result<(), ClientError> {
        self.call(ApiRequest::new(Method::POST, ["logs", ""]).json(&logs)?)
            .await
            .map(drop)
    }
}

/// The `data` of a block document.
fn data_of(resp: &RawResponse) -> Result<Value, ClientError> {
    let mut doc: JsonMap = resp.json()?;
    doc.remove("data").ok_or_else(|| ClientError::Decode {
        method: resp.method.clone(),
        path: resp.path.clone(),
        message: "the block document has no `data`".into(),
    })
}
