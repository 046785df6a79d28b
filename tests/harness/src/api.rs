//! A thin JSON client for the Prefect REST API, written independently of the
//! product's client so that a shared misunderstanding cannot hide itself.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// What `create_deployment` sends. Start from [`DeploymentSpec::new`] and
/// set fields with struct update syntax.
#[derive(Debug, Clone, Default)]
pub struct DeploymentSpec {
    /// Flow the deployment belongs to.
    pub flow_id: Uuid,
    /// Deployment name.
    pub name: String,
    /// Work pool name.
    pub work_pool_name: Option<String>,
    /// Work queue name (the pool's default queue when `None`).
    pub work_queue_name: Option<String>,
    /// Deployment-level job variables.
    pub job_variables: Option<Value>,
    /// Default parameters.
    pub parameters: Option<Value>,
    /// Deployment concurrency limit.
    pub concurrency_limit: Option<u32>,
    /// Collision strategy for the concurrency limit.
    pub collision_strategy: Option<CollisionStrategy>,
    /// e.g. `flows/hello.py:hello`
    pub entrypoint: Option<String>,
    /// Working directory of the flow code.
    pub path: Option<String>,
    /// Pull steps (a JSON array).
    pub pull_steps: Option<Value>,
    /// Tags.
    pub tags: Vec<String>,
    /// Any further fields, merged into the request body last (an object).
    pub extra: Option<Value>,
}

impl DeploymentSpec {
    /// A deployment of `flow_id` named `name`, everything else unset.
    pub fn new(flow_id: Uuid, name: impl Into<String>) -> Self {
        Self {
            flow_id,
            name: name.into(),
            ..Self::default()
        }
    }

    /// The JSON body for `POST /deployments/`.
    pub fn to_json(&self) -> Value {
        let mut body = Map::new();
        body.insert("flow_id".into(), json!(self.flow_id));
        body.insert("name".into(), json!(self.name));
        put(&mut body, "work_pool_name", self.work_pool_name.as_ref());
        put(&mut body, "work_queue_name", self.work_queue_name.as_ref());
        put(&mut body, "job_variables", self.job_variables.as_ref());
        put(&mut body, "parameters", self.parameters.as_ref());
        put(
            &mut body,
            "concurrency_limit",
            self.concurrency_limit.as_ref(),
        );
        if let Some(s) = self.collision_strategy {
            body.insert(
                "concurrency_options".into(),
                json!({ "collision_strategy": s.as_str() }),
            );
        }
        put(&mut body, "entrypoint", self.entrypoint.as_ref());
        put(&mut body, "path", self.path.as_ref());
        put(&mut body, "pull_steps", self.pull_steps.as_ref());
        if !self.tags.is_empty() {
            body.insert("tags".into(), json!(self.tags));
        }
        merge(&mut body, self.extra.as_ref());
        Value::Object(body)
    }
}

/// Deployment concurrency collision strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollisionStrategy {
    /// Wait for a slot.
    Enqueue,
    /// Cancel the new run.
    CancelNew,
}

impl CollisionStrategy {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enqueue => "ENQUEUE",
            Self::CancelNew => "CANCEL_NEW",
        }
    }
}

/// What `create_flow_run_from_deployment` / `create_flow_run` send.
#[derive(Debug, Clone, Default)]
pub struct FlowRunSpec {
    /// Run name (the server picks one when `None`).
    pub name: Option<String>,
    /// Scheduled state at this time (e.g. `Utc::now()` or later).
    pub scheduled_time: Option<DateTime<Utc>>,
    /// A raw `state` object; wins over `scheduled_time`.
    pub state: Option<Value>,
    /// Run-level job variables (deployment runs only).
    pub job_variables: Option<Value>,
    /// Parameters.
    pub parameters: Option<Value>,
    /// Tags.
    pub tags: Vec<String>,
    /// Work queue override (deployment runs only).
    pub work_queue_name: Option<String>,
    /// Any further fields, merged into the request body last (an object).
    pub extra: Option<Value>,
}

impl FlowRunSpec {
    /// The JSON body (without `flow_id`).
    pub fn to_json(&self) -> Value {
        let mut body = Map::new();
        put(&mut body, "name", self.name.as_ref());
        if let Some(state) = &self.state {
            body.insert("state".into(), state.clone());
        } else if let Some(at) = self.scheduled_time {
            body.insert("state".into(), scheduled_state(at));
        }
        put(&mut body, "job_variables", self.job_variables.as_ref());
        put(&mut body, "parameters", self.parameters.as_ref());
        put(&mut body, "work_queue_name", self.work_queue_name.as_ref());
        if !self.tags.is_empty() {
            body.insert("tags".into(), json!(self.tags));
        }
        merge(&mut body, self.extra.as_ref());
        Value::Object(body)
    }
}

/// A `Scheduled` state object for `at`.
pub fn scheduled_state(at: DateTime<Utc>) -> Value {
    json!({
        "type": "SCHEDULED",
        "name": "Scheduled",
        "state_details": { "scheduled_time": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true) },
    })
}

/// Prefect's display name for a state type: `AWAITING_RETRY` -> `AwaitingRetry`.
pub fn default_state_name(state_type: &str) -> String {
    state_type
        .split('_')
        .map(|w| {
            let lower = w.to_ascii_lowercase();
            let mut c = lower.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// `run["state"]["type"]`, e.g. `"RUNNING"`.
pub fn state_type(flow_run: &Value) -> Option<&str> {
    flow_run.pointer("/state/type").and_then(Value::as_str)
}

/// `run["state"]["name"]`, e.g. `"Late"`.
pub fn state_name(flow_run: &Value) -> Option<&str> {
    flow_run.pointer("/state/name").and_then(Value::as_str)
}

/// Reads `value["id"]` as a UUID.
pub fn id_of(value: &Value) -> Result<Uuid> {
    value
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("no id in {value}"))?
        .parse()
        .context("id is not a UUID")
}

fn put<T: serde::Serialize>(body: &mut Map<String, Value>, key: &str, v: Option<&T>) {
    if let Some(v) = v {
        body.insert(key.to_owned(), json!(v));
    }
}

fn merge(body: &mut Map<String, Value>, extra: Option<&Value>) {
    if let Some(Value::Object(extra)) = extra {
        for (k, v) in extra {
            body.insert(k.clone(), v.clone());
        }
    }
}

/// An error status from the API, with its body.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP method and path.
    pub request: String,
    /// Status code.
    pub status: StatusCode,
    /// Response body (JSON, or a string if it was not JSON).
    pub body: Value,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {}: {}", self.request, self.status, self.body)
    }
}

impl std::error::Error for ApiError {}

/// Thin JSON calls against one Prefect API URL. Cheap to clone. It keeps no
/// pooled connections, so it survives server restarts and may be used from
/// any tokio runtime.
#[derive(Debug, Clone)]
pub struct PrefectApi {
    base: String,
    http: reqwest::Client,
    retries: u32,
}

impl PrefectApi {
    /// A client for `api_url` (`http://127.0.0.1:<port>/api`).
    pub fn new(api_url: impl Into<String>) -> Self {
        let base = api_url.into().trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            // No keep-alive pool: a connection pooled before a server restart
            // would fail the next request ("connection closed before message
            // completed"). New loopback connections are cheap, and this makes
            // the client usable from any tokio runtime.
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            base,
            http,
            // About 33 s of backoff in all: 30 concurrent writers queue on SQLite's one
            // write lock for longer than 8 retries' 10 s on a loaded 2-core machine.
            retries: 20,
        }
    }

    /// The same client with at most `retries` retries of 429/502/503 in
    /// [`PrefectApi::call`] (0: every such answer is an error at once).
    #[must_use]
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The API URL this client talks to.
    pub fn api_url(&self) -> &str {
        &self.base
    }

    /// Raw request: any status is returned, not turned into an error.
    /// `path` is relative to the API URL (`/flow_runs/filter`).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value)> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .with_context(|| format!("{method} {path}: reading body"))?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((status, value))
    }

    /// Request that fails (with an [`ApiError`] inside) on a non-2xx status.
    ///
    /// Like Prefect's own client, it retries 503 (Prefect's answer to
    /// "database is locked" on SQLite, which two concurrent writers already
    /// provoke), 502 and 429, with exponential backoff and jitter, up to
    /// `retries` times (default 20, about 33 s in all); see
    /// [`PrefectApi::with_retries`].
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let mut attempt = 0;
        let (status, value) = loop {
            let (status, value) = self.request(method.clone(), path, body).await?;
            let retryable = matches!(status.as_u16(), 429 | 502 | 503);
            if !retryable || attempt >= self.retries {
                break (status, value);
            }
            attempt += 1;
            let base = 50u64 << attempt.min(6);
            let jitter = u64::try_from(Uuid::new_v4().as_u128() % 100).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(base.min(2000) + jitter)).await;
        };
        if !status.is_success() {
            return Err(ApiError {
                request: format!("{method} {path}"),
                status,
                body: value,
            }
            .into());
        }
        Ok(value)
    }

    /// `GET path`
    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `PATCH path` with a JSON body.
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    /// `DELETE path`
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.call(Method::DELETE, path, None).await.map(drop)
    }

    /// `GET /health` answered `true`.
    pub async fn healthy(&self) -> bool {
        matches!(self.get("/health").await, Ok(Value::Bool(true)))
    }

    /// `GET /version`, e.g. `"0.8.4"` (the API version, not Prefect's).
    pub async fn api_version(&self) -> Result<String> {
        let v = self.get("/version").await?;
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("version is not a string: {v}"))
    }

    // ----------------------------------------------------------------- work pools

    /// `POST /work_pools/`; `base_job_template` `None` leaves the server's default (`{}`).
    pub async fn create_work_pool(
        &self,
        name: &str,
        pool_type: &str,
        base_job_template: Option<&Value>,
    ) -> Result<Value> {
        let mut body = json!({ "name": name, "type": pool_type });
        if let Some(t) = base_job_template {
            body["base_job_template"] = t.clone();
        }
        self.post("/work_pools/", &body).await
    }

    /// `GET /work_pools/{name}`
    pub async fn read_work_pool(&self, name: &str) -> Result<Value> {
        self.get(&format!("/work_pools/{name}")).await
    }

    /// `PATCH /work_pools/{name}` (e.g. `{"is_paused": true}`, `{"concurrency_limit": 1}`).
    pub async fn update_work_pool(&self, name: &str, patch: &Value) -> Result<()> {
        self.patch(&format!("/work_pools/{name}"), patch)
            .await
            .map(drop)
    }

    /// `POST /work_pools/{pool}/queues/`
    pub async fn create_work_queue(
        &self,
        pool: &str,
        name: &str,
        concurrency_limit: Option<u32>,
    ) -> Result<Value> {
        let mut body = json!({ "name": name });
        if let Some(c) = concurrency_limit {
            body["concurrency_limit"] = json!(c);
        }
        self.post(&format!("/work_pools/{pool}/queues/"), &body)
            .await
    }

    /// `POST /work_pools/{pool}/workers/filter`: workers that heartbeated.
    pub async fn read_workers(&self, pool: &str) -> Result<Vec<Value>> {
        array(
            self.post(&format!("/work_pools/{pool}/workers/filter"), &json!({}))
                .await?,
        )
    }

    // ----------------------------------------------------------------- flows and deployments

    /// `POST /flows/` (returns the existing flow's id if the name exists).
    pub async fn create_flow(&self, name: &str) -> Result<Uuid> {
        id_of(&self.post("/flows/", &json!({ "name": name })).await?)
    }

    /// `POST /deployments/` (an upsert by flow and name).
    pub async fn create_deployment(&self, spec: &DeploymentSpec) -> Result<Uuid> {
        id_of(&self.post("/deployments/", &spec.to_json()).await?)
    }

    /// `GET /deployments/{id}`
    pub async fn read_deployment(&self, id: Uuid) -> Result<Value> {
        self.get(&format!("/deployments/{id}")).await
    }

    /// `DELETE /deployments/{id}`
    pub async fn delete_deployment(&self, id: Uuid) -> Result<()> {
        self.delete(&format!("/deployments/{id}")).await
    }

    // ----------------------------------------------------------------- flow runs

    /// `POST /deployments/{id}/create_flow_run`; returns the flow run.
    pub async fn create_flow_run_from_deployment(
        &self,
        deployment_id: Uuid,
        spec: &FlowRunSpec,
    ) -> Result<Value> {
        self.post(
            &format!("/deployments/{deployment_id}/create_flow_run"),
            &spec.to_json(),
        )
        .await
    }

    /// `POST /flow_runs/`: an ad-hoc run of `flow_id` with no deployment.
    pub async fn create_flow_run(&self, flow_id: Uuid, spec: &FlowRunSpec) -> Result<Value> {
        let mut body = spec.to_json();
        body["flow_id"] = json!(flow_id);
        self.post("/flow_runs/", &body).await
    }

    /// `GET /flow_runs/{id}`
    pub async fn read_flow_run(&self, id: Uuid) -> Result<Value> {
        self.get(&format!("/flow_runs/{id}")).await
    }

    /// `POST /flow_runs/filter` with a raw body (e.g. `{"flow_runs": {...}, "limit": 200}`).
    pub async fn filter_flow_runs(&self, body: &Value) -> Result<Vec<Value>> {
        array(self.post("/flow_runs/filter", body).await?)
    }

    /// `POST /flow_runs/{id}/set_state` with `{"type": state_type, "name": ...}`;
    /// returns the orchestration result (`{"status": "ACCEPT"|"REJECT"|..., "state": ...}`).
    pub async fn set_flow_run_state(
        &self,
        id: Uuid,
        state_type: &str,
        name: Option<&str>,
        force: bool,
    ) -> Result<Value> {
        let name = name.map_or_else(|| default_state_name(state_type), str::to_owned);
        self.set_flow_run_state_raw(id, &json!({ "type": state_type, "name": name }), force)
            .await
    }

    /// `POST /flow_runs/{id}/set_state` with a raw state object.
    pub async fn set_flow_run_state_raw(
        &self,
        id: Uuid,
        state: &Value,
        force: bool,
    ) -> Result<Value> {
        self.post(
            &format!("/flow_runs/{id}/set_state"),
            &json!({ "state": state, "force": force }),
        )
        .await
    }

    /// `GET /flow_run_states/?flow_run_id=`: every state the run had, oldest first.
    pub async fn read_flow_run_states(&self, id: Uuid) -> Result<Vec<Value>> {
        let mut states = array(
            self.get(&format!("/flow_run_states/?flow_run_id={id}"))
                .await?,
        )?;
        states.sort_by(|a, b| {
            let ts = |v: &Value| {
                v.get("timestamp")
                    .and_then(Value::as_str)
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            };
            ts(a).cmp(&ts(b))
        });
        Ok(states)
    }

    /// The `type`s of [`PrefectApi::read_flow_run_states`], oldest first.
    pub async fn read_flow_run_state_types(&self, id: Uuid) -> Result<Vec<String>> {
        Ok(self
            .read_flow_run_states(id)
            .await?
            .iter()
            .filter_map(|s| s.get("type").and_then(Value::as_str).map(str::to_owned))
            .collect())
    }

    /// `POST /logs/filter` for one flow run, all pages, oldest first.
    pub async fn read_flow_run_logs(&self, id: Uuid) -> Result<Vec<Value>> {
        const PAGE: usize = 200;
        let mut all = Vec::new();
        loop {
            let page = array(
                self.post(
                    "/logs/filter",
                    &json!({
                        "logs": { "flow_run_id": { "any_": [id] } },
                        "sort": "TIMESTAMP_ASC",
                        "limit": PAGE,
                        "offset": all.len(),
                    }),
                )
                .await?,
            )?;
            let n = page.len();
            all.extend(page);
            if n < PAGE {
                return Ok(all);
            }
        }
    }

    /// The `message`s of [`PrefectApi::read_flow_run_logs`].
    pub async fn read_flow_run_log_messages(&self, id: Uuid) -> Result<Vec<String>> {
        Ok(self
            .read_flow_run_logs(id)
            .await?
            .iter()
            .filter_map(|l| l.get("message").and_then(Value::as_str).map(str::to_owned))
            .collect())
    }

    /// Polls `GET /flow_runs/{id}` every 200 ms until `done(&run)` holds, or
    /// fails after `timeout` with the last state seen. Request errors (e.g.
    /// while the server restarts) are retried until the deadline.
    pub async fn wait_for_flow_run<F>(&self, id: Uuid, done: F, timeout: Duration) -> Result<Value>
    where
        F: Fn(&Value) -> bool,
    {
        let desc = format!("flow run {id}");
        poll(&desc, timeout, || async {
            let run = self.read_flow_run(id).await?;
            let summary = format!(
                "{} ({})",
                state_type(&run).unwrap_or("no state"),
                state_name(&run).unwrap_or("")
            );
            Ok((done(&run).then_some(run), summary))
        })
        .await
    }

    /// Waits until the run's state type is one of `types` (e.g. `&["COMPLETED"]`).
    pub async fn wait_for_flow_run_state(
        &self,
        id: Uuid,
        types: &[&str],
        timeout: Duration,
    ) -> Result<Value> {
        self.wait_for_flow_run(
            id,
            |run| state_type(run).is_some_and(|t| types.contains(&t)),
            timeout,
        )
        .await
    }

    /// Waits until the run is in a final state (COMPLETED, FAILED, CRASHED, CANCELLED).
    pub async fn wait_for_flow_run_final(&self, id: Uuid, timeout: Duration) -> Result<Value> {
        self.wait_for_flow_run_state(
            id,
            &["COMPLETED", "FAILED", "CRASHED", "CANCELLED"],
            timeout,
        )
        .await
    }

    // ----------------------------------------------------------------- variables and blocks

    /// `POST /variables/`
    pub async fn create_variable(&self, name: &str, value: &Value) -> Result<Value> {
        self.post("/variables/", &json!({ "name": name, "value": value }))
            .await
    }

    /// Creates a block document of a block type the server knows (e.g.
    /// `kubernetes-cluster-config`, `secret`), using that type's newest schema.
    pub async fn create_block_document(
        &self,
        block_type_slug: &str,
        name: &str,
        data: &Value,
    ) -> Result<Value> {
        let block_type = self
            .get(&format!("/block_types/slug/{block_type_slug}"))
            .await?;
        let block_type_id = id_of(&block_type)?;
        let schemas = array(
            self.post(
                "/block_schemas/filter",
                &json!({ "block_schemas": { "block_type_id": { "any_": [block_type_id] } } }),
            )
            .await?,
        )?;
        let newest = schemas
            .iter()
            .max_by_key(|s| s.get("created").and_then(Value::as_str).unwrap_or_default())
            .ok_or_else(|| anyhow!("no block schema for {block_type_slug}"))?;
        self.post(
            "/block_documents/",
            &json!({
                "name": name,
                "block_type_id": block_type_id,
                "block_schema_id": id_of(newest)?,
                "data": data,
            }),
        )
        .await
    }

    /// `GET /block_documents/{id}?include_secrets=true`
    pub async fn read_block_document(&self, id: Uuid) -> Result<Value> {
        self.get(&format!("/block_documents/{id}?include_secrets=true"))
            .await
    }
}

fn array(v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        other => bail!("expected a JSON array, got {other}"),
    }
}

/// Calls `probe` every 200 ms until it returns `Some`, or fails after
/// `timeout`, naming `what` and the last summary or error seen. `probe`
/// returns `(result, summary-of-what-it-saw)`.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(Option<T>, String)>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok((Some(v), _)) => return Ok(v),
            Ok((None, seen)) => seen,
            Err(e) => format!("error: {e:#}"),
        };
        if tokio::time::Instant::now() >= deadline {
            bail!("{what}: condition not met within {timeout:?}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
