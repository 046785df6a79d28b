//! Serde models of the Prefect REST API objects the worker reads and writes.
//!
//! Every model tolerates fields it does not know (they are kept in `extra`, so a model
//! serialises back to the JSON it was read from, which templating against `ctx.flow_run`
//! relies on) and state types it does not know ([`StateType::Other`]). A flow run and its
//! state, held for as long as the run's infrastructure runs, keep theirs as JSON text
//! ([`RawFields`]); the other models as a parsed [`JsonMap`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use uuid::Uuid;

pub use super::raw_fields::RawFields;

/// A JSON object, in the order its keys arrived.
pub type JsonMap = Map<String, Value>;

/// The type of a Prefect state. Unknown types from newer servers are kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StateType {
    /// `SCHEDULED`: waiting for its start time.
    Scheduled,
    /// `PENDING`: claimed; infrastructure being prepared (also `Submitting`, `InfrastructurePending`).
    Pending,
    /// `RUNNING`: the flow is executing.
    Running,
    /// `COMPLETED` (final).
    Completed,
    /// `FAILED` (final).
    Failed,
    /// `CANCELLED` (final).
    Cancelled,
    /// `CRASHED` (final): the infrastructure failed, not the flow.
    Crashed,
    /// `PAUSED`: waiting for input or a resume.
    Paused,
    /// `CANCELLING`: a user cancelled it; the worker tears its infrastructure down.
    Cancelling,
    /// A state type this worker does not know.
    Other(String),
}

impl StateType {
    /// The wire name (`"SCHEDULED"`, ...).
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Scheduled => "SCHEDULED",
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::Crashed => "CRASHED",
            Self::Paused => "PAUSED",
            Self::Cancelling => "CANCELLING",
            Self::Other(s) => s,
        }
    }

    /// Parses a wire name; unknown names become [`StateType::Other`].
    #[must_use]
    pub fn parse(s: &str) -> Self {
        match s {
            "SCHEDULED" => Self::Scheduled,
            "PENDING" => Self::Pending,
            "RUNNING" => Self::Running,
            "COMPLETED" => Self::Completed,
            "FAILED" => Self::Failed,
            "CANCELLED" => Self::Cancelled,
            "CRASHED" => Self::Crashed,
            "PAUSED" => Self::Paused,
            "CANCELLING" => Self::Cancelling,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Final states: the run will not change again on its own.
    #[must_use]
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Cancelled | Self::Crashed
        )
    }
}

impl std::fmt::Display for StateType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for StateType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StateType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Self::parse(&s))
    }
}

/// A state as the server returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The state's id (absent in proposals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// The state type (`type` on the wire).
    #[serde(rename = "type")]
    pub state_type: StateType,
    /// The state's name, e.g. `Submitting`; `None` means the type's title-case name.
    #[serde(default)]
    pub name: Option<String>,
    /// The human-readable message shown in the UI.
    #[serde(default)]
    pub message: Option<String>,
    /// When the state was entered (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// `state_details` (scheduled time, `transition_id`, ...), as sent.
    #[serde(default)]
    pub state_details: RawFields,
    /// Fields this model does not type, kept so it serialises back to what was read.
    #[serde(flatten)]
    pub extra: RawFields,
}

impl State {
    /// The state's name, or its type's title-case name when the server sent none.
    #[must_use]
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => {
                let t = self.state_type.as_str().to_lowercase();
                let mut c = t.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            }
        }
    }
}

/// A flow run. Only the fields the worker uses are typed; the rest are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRun {
    /// The flow run's id.
    pub id: Uuid,
    /// The flow run's name (e.g. `crimson-kangaroo`).
    #[serde(default)]
    pub name: String,
    /// The id of the flow it runs.
    pub flow_id: Uuid,
    /// The deployment it was created from, if any.
    #[serde(default)]
    pub deployment_id: Option<Uuid>,
    /// The work queue it was scheduled in.
    #[serde(default)]
    pub work_queue_id: Option<Uuid>,
    /// The name of that work queue.
    #[serde(default)]
    pub work_queue_name: Option<String>,
    /// Job variables set on the run, applied over the deployment's.
    #[serde(default)]
    pub job_variables: Option<JsonMap>,
    /// The run's tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The current state.
    #[serde(default)]
    pub state: Option<State>,
    /// When it started running (RFC 3339), once it has.
    #[serde(default)]
    pub start_time: Option<String>,
    /// The worker-reported identifier of its infrastructure (e.g. `namespace:job-name`).
    #[serde(default)]
    pub infrastructure_pid: Option<String>,
    /// Fields this model does not type, kept so it serialises back to what was read.
    #[serde(flatten)]
    pub extra: RawFields,
}

impl FlowRun {
    /// The current state type, if the run has a state.
    #[must_use]
    pub fn state_type(&self) -> Option<&StateType> {
        self.state.as_ref().map(|s| &s.state_type)
    }

    /// How many times the run has entered Running (the server counts; it never goes down for
    /// a flow run). 0 when the server did not say.
    #[must_use]
    pub fn run_count(&self) -> u64 {
        self.extra
            .get("run_count")
            .as_ref()
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    /// One of the run's `labels` (e.g. `prefect.worker.name`), when it is a string.
    #[must_use]
    pub fn label(&self, key: &str) -> Option<String> {
        match self.extra.get("labels")?.get_mut(key)?.take() {
            Value::String(label) => Some(label),
            _ => None,
        }
    }
}

/// A worker of a pool as the server knows it (`POST /work_pools/{pool}/workers/filter`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The worker's name.
    pub name: String,
    /// `ONLINE` or `OFFLINE`, kept by the server's foreman service from the heartbeats.
    #[serde(default)]
    pub status: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub last_heartbeat_time: Option<String>,
    /// The interval the worker last reported.
    #[serde(default)]
    pub heartbeat_interval_seconds: Option<u64>,
    /// Fields this model does not type, kept so it serialises back to what was read.
    #[serde(flatten)]
    pub extra: JsonMap,
}

/// A deployment (`DeploymentResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// The deployment's id.
    pub id: Uuid,
    /// The deployment's name.
    pub name: String,
    /// The flow it deploys.
    #[serde(default)]
    pub flow_id: Option<Uuid>,
    /// RFC 3339 timestamp of the last update (`prefect.io/deployment-updated`).
    #[serde(default)]
    pub updated: Option<String>,
    /// Job variables set on the deployment, applied over the pool's defaults.
    #[serde(default)]
    pub job_variables: Option<JsonMap>,
    /// The deployment's tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Fields this model does not type, kept so it serialises back to what was read.
    #[serde(flatten)]
    pub extra: JsonMap,
}

/// A flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    /// The flow's id.
    pub id: Uuid,
    /// The flow's name.
    pub name: String,
    /// The flow's tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Fields this model does not type, kept so it serialises back to what was read.
    #[serde(flatten)]
    pub extra: JsonMap,
}

/// A work pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkPool {
    /// The pool's id.
    pub id: Uuid,
    /// The pool's name.
    pub name: String,
    /// The worker type it is for (`type` on the wire, e.g. `kubernetes`).
    #[serde(rename = "type")]
    pub pool_type: String,
    /// `{"job_configuration": {...}, "variables": {...}}`, or `{}` when unset.
    #[serde(default)]
    pub base_job_template: JsonMap,
    /// A paused pool hands out no flow runs.
    #[serde(default)]
    pub is_paused: bool,
    /// The most runs in flight across the pool, if limited.
    #[serde(default)]
    pub concurrency_limit: Option<u64>,
    /// The pool's default work queue.
    #[serde(default)]
    pub default_queue_id: Option<Uuid>,
    /// `READY`, `NOT_READY` or `PAUSED`, as the server reports it.
    #[serde(default)]
    pub status: Option<String>,
    /// Fields this model does not type, kept so it serialises back to what was read.
    #[serde(flatten)]
    pub extra: JsonMap,
}

/// The body of `PATCH /work_pools/{name}`: only the fields that are set, like Python's
/// `WorkPoolUpdate` dumped with `exclude_unset`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WorkPoolUpdate {
    /// A new description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A new base job template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_job_template: Option<Value>,
    /// A new concurrency limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<u64>,
}

/// The body of `POST /work_pools/`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkPoolCreate {
    /// The pool's name.
    pub name: String,
    /// The worker type (`type` on the wire).
    #[serde(rename = "type")]
    pub pool_type: String,
    /// Sent only when given (`--base-job-template`), like Python's exclude-unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_job_template: Option<Value>,
}

/// A worker heartbeat (`POST /work_pools/{pool}/workers/heartbeat`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkerHeartbeat<'a> {
    /// The worker's name.
    pub worker_name: &'a str,
    /// How often the worker heartbeats; the server marks it offline after a few misses.
    pub heartbeat_interval_seconds: u64,
    /// Ask for the worker's id (`return_id`; Prefect Cloud only).
    pub return_id: bool,
    /// `{"integrations": [...]}` (Prefect Cloud only, sent once).
    pub metadata: Option<&'a Value>,
}

impl<'a> WorkerHeartbeat<'a> {
    /// The self-hosted form: name and interval only.
    #[must_use]
    pub fn new(worker_name: &'a str, heartbeat_interval_seconds: u64) -> Self {
        Self {
            worker_name,
            heartbeat_interval_seconds,
            return_id: false,
            metadata: None,
        }
    }
}

/// A work queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkQueue {
    /// The queue's id.
    pub id: Uuid,
    /// The queue's name.
    pub name: String,
    /// A paused queue hands out no flow runs.
    #[serde(default)]
    pub is_paused: bool,
    /// The most runs in flight from this queue, if limited.
    #[serde(default)]
    pub concurrency_limit: Option<u64>,
    /// Fields this model does not type, kept so it serialises back to what was read.
    #[serde(flatten)]
    pub extra: JsonMap,
}

/// One item of `POST /work_pools/{pool}/get_scheduled_flow_runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerFlowRunResponse {
    /// The pool the run was scheduled in.
    pub work_pool_id: Uuid,
    /// The queue the run was scheduled in.
    pub work_queue_id: Uuid,
    /// The flow run.
    pub flow_run: FlowRun,
}

/// The status of a state proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SetStateStatus {
    /// The proposed state was entered.
    Accept,
    /// Refused; the returned state is where the run is.
    Reject,
    /// Refused for good (e.g. the run is gone or already further on).
    Abort,
    /// Try again after `details.delay_seconds`.
    Wait,
}

/// `details` of an orchestration result.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OrchestrationDetails {
    /// The kind of details (`type` on the wire, e.g. `reject_details`).
    #[serde(default, rename = "type")]
    pub details_type: Option<String>,
    /// Why the proposal was not accepted.
    #[serde(default)]
    pub reason: Option<String>,
    /// For `WAIT`: how long to wait before proposing again.
    #[serde(default)]
    pub delay_seconds: Option<f64>,
    /// Fields this model does not type, kept so it serialises back to what was read.
    #[serde(flatten)]
    pub extra: JsonMap,
}

/// The reply to `POST /flow_runs/{id}/set_state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrchestrationResult {
    /// The run's state after the proposal.
    #[serde(default)]
    pub state: Option<State>,
    /// What the server did with the proposal.
    pub status: SetStateStatus,
    /// Why, when not accepted.
    #[serde(default)]
    pub details: OrchestrationDetails,
}

/// A state proposed by the worker (the `state` of a `set_state` body).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateCreate {
    /// The state type (`type` on the wire).
    #[serde(rename = "type")]
    pub state_type: StateType,
    /// The state's name, e.g. `Submitting`.
    pub name: String,
    /// The message shown in the UI.
    pub message: Option<String>,
    /// `state_details` (the client adds `flow_run_id` and `transition_id`).
    pub state_details: JsonMap,
    /// The state's result data (the worker sends none).
    pub data: Option<Value>,
}

impl StateCreate {
    /// A state of `state_type` named `name`, with no message and empty details
    /// (the client fills in `flow_run_id` and a fresh `transition_id` per request).
    #[must_use]
    pub fn new(state_type: StateType, name: impl Into<String>) -> Self {
        Self {
            state_type,
            name: name.into(),
            message: None,
            state_details: JsonMap::new(),
            data: None,
        }
    }

    /// Sets the message.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// `Pending`.
    #[must_use]
    pub fn pending() -> Self {
        Self::new(StateType::Pending, "Pending")
    }

    /// `Submitting` (a PENDING-type state).
    #[must_use]
    pub fn submitting() -> Self {
        Self::new(StateType::Pending, "Submitting")
    }

    /// `InfrastructurePending` (a PENDING-type state) with the observer's message.
    #[must_use]
    pub fn infrastructure_pending(message: impl Into<String>) -> Self {
        Self::new(StateType::Pending, "InfrastructurePending").with_message(message)
    }

    /// `Crashed` with a message.
    #[must_use]
    pub fn crashed(message: impl Into<String>) -> Self {
        Self::new(StateType::Crashed, "Crashed").with_message(message)
    }

    /// `Cancelled` built from the run's current state, as Python's `_mark_flow_run_as_cancelled`:
    /// the current details are copied, the type, name and message replaced.
    #[must_use]
    pub fn cancelled_from(current: Option<&State>, message: impl Into<String>) -> Self {
        let mut s = Self::new(StateType::Cancelled, "Cancelled").with_message(message);
        if let Some(cur) = current {
            s.state_details = cur.state_details.to_map();
            s.state_details.remove("transition_id");
        }
        s
    }
}

/// One flow-run log record for `POST /logs/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogCreate {
    /// The logger's name (e.g. `prefect.flow_runs.worker`).
    pub name: String,
    /// The Python logging level (10 DEBUG … 50 CRITICAL).
    pub level: u32,
    /// The log message.
    pub message: String,
    /// RFC 3339 with `Z`.
    pub timestamp: String,
    /// The flow run it belongs to.
    pub flow_run_id: Option<Uuid>,
    /// The task run it belongs to (the worker sends none).
    pub task_run_id: Option<Uuid>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_state_types_and_fields_are_kept() {
        let s: State = serde_json::from_value(serde_json::json!({
            "type": "HIBERNATING", "name": "Zzz", "novel": 1, "state_details": {}
        }))
        .unwrap();
        assert_eq!(s.state_type, StateType::Other("HIBERNATING".into()));
        assert_eq!(s.extra.get("novel"), Some(serde_json::json!(1)));
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["type"], "HIBERNATING");
    }

    #[test]
    fn scheduled_runs_response_parses() {
        let body = include_str!("../../tests/data/get_scheduled_flow_runs.response.json");
        let runs: Vec<WorkerFlowRunResponse> = serde_json::from_str(body).unwrap();
        assert!(!runs.is_empty());
        assert_eq!(runs[0].flow_run.state_type(), Some(&StateType::Scheduled));
    }

    #[test]
    fn a_flow_run_keeps_its_untyped_fields_and_writes_them_back() {
        let body = include_str!("../../tests/data/get_scheduled_flow_runs.response.json");
        let sent: Value = serde_json::from_str(body).unwrap();
        let runs: Vec<WorkerFlowRunResponse> = serde_json::from_str(body).unwrap();
        let run = &runs[0].flow_run;
        let back = serde_json::to_value(run).unwrap();
        // Every field comes back with its value (the typed ones first: `ctx.flow_run` in
        // templates sees the same object).
        assert_eq!(back, sent[0]["flow_run"]);
        assert_eq!(
            run.state
                .as_ref()
                .unwrap()
                .state_details
                .get("scheduled_time"),
            Some(sent[0]["flow_run"]["state"]["state_details"]["scheduled_time"].clone())
        );
        assert_eq!(
            run.run_count(),
            sent[0]["flow_run"]["run_count"].as_u64().unwrap()
        );
    }

    #[test]
    fn orchestration_results_parse() {
        for f in [
            include_str!("../../tests/data/set_state_pending.response.json"),
            include_str!("../../tests/data/set_state_submitting.response.json"),
        ] {
            let r: OrchestrationResult = serde_json::from_str(f).unwrap();
            assert_eq!(r.status, SetStateStatus::Accept);
            assert_eq!(r.state.unwrap().state_type, StateType::Pending);
        }
    }
}
