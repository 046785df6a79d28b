//! The worker channel's wire format (`prefect/client/schemas/worker_channel.py`, spec §2.2A,
//! §5.3): the frames the worker sends, built as JSON in Python's key order, and the frames
//! it accepts, parsed and checked. Pure: no I/O, no clock (callers pass ids and times).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::client::models::WorkPool;

/// The one channel version (`worker.hello.v1` `supported_channel_versions`).
pub const CHANNEL_VERSION: &str = "work_pool_worker_channel.v1";
/// Capability: heartbeats over the channel replace the REST heartbeat (required).
pub const HEARTBEAT_CAPABILITY: &str = "worker_heartbeat.v1";
/// Capability: work-pool snapshots replace the REST pool read (required).
pub const SNAPSHOT_CAPABILITY: &str = "work_pool_snapshot.v1";
/// Capability: the server delivers cleanup work (optional).
pub const CLEANUP_CAPABILITY: &str = "cleanup_delivery.v1";
/// The cleanup kind sent when a run stayed CANCELLING past the server's timeout.
pub const CANCELLING_TIMEOUT_TEARDOWN: &str = "cancelling_timeout_teardown.v1";
/// The other cleanup kind the protocol defines (for claims; this worker does not handle it:
/// it releases them, which its tests check).
#[cfg(test)]
pub const PENDING_CLAIM_TEARDOWN: &str = "pending_claim_teardown.v1";

/// The close reasons of the protocol, with their policy (`WORKER_CHANNEL_CLOSE_POLICIES`):
/// `(reason, websocket code, retryable)`.
pub const CLOSE_POLICIES: [(&str, u16, bool); 6] = [
    ("authentication_failed", 1008, false),
    ("authorization_failed", 1008, false),
    ("unsupported_version", 1008, false),
    ("protocol_error", 1002, false),
    ("heartbeat_persistence_failed", 1011, true),
    ("transient_server_error", 1011, true),
];

/// Whether `reason` is one of the protocol's close reasons.
#[must_use]
pub fn is_close_reason(reason: &str) -> bool {
    CLOSE_POLICIES.iter().any(|(r, _, _)| *r == reason)
}

/// Prefect's timestamp form: microseconds and `Z`.
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `{"type": "auth", "token": ...}`: the first message after the upgrade. The token is the
/// raw auth string or API key; this text must never be logged.
#[must_use]
pub fn auth_message(token: Option<&str>) -> String {
    json!({"type": "auth", "token": token}).to_string()
}

/// What the worker announces in `worker.hello.v1`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    /// Fixed for the life of the process (one consumer across reconnects).
    pub consumer_id: Uuid,
    pub worker_name: String,
    pub worker_type: String,
    pub heartbeat_interval_seconds: u64,
    /// Sorted, as Python sends them; empty means every queue of the pool.
    pub work_queue_names: Vec<String>,
    /// Ask for `cleanup_delivery.v1` with these kinds; empty: no cleanup capability.
    pub handled_cleanup_kinds: Vec<String>,
    /// Cleanups at once; 0 exactly when no kinds are handled.
    pub max_cleanup_concurrency: u32,
    pub create_pool_if_not_found: bool,
    /// `--base-job-template` if given, else the worker's default template.
    pub default_base_job_template: Value,
    /// `{"integrations": [...]}`, only in the first hello of the process.
    pub worker_metadata: Option<Value>,
}

impl Hello {
    /// Whether this hello asks for cleanup delivery.
    #[must_use]
    pub fn requests_cleanup(&self) -> bool {
        !self.handled_cleanup_kinds.is_empty() && self.max_cleanup_concurrency > 0
    }

    /// The frame, with the traced example's key order.
    #[must_use]
    pub fn frame(&self, id: Uuid, sent_at: DateTime<Utc>) -> String {
        let mut capabilities = vec![HEARTBEAT_CAPABILITY, SNAPSHOT_CAPABILITY];
        let (kinds, max) = if self.requests_cleanup() {
            capabilities.push(CLEANUP_CAPABILITY);
            (
                self.handled_cleanup_kinds.clone(),
                self.max_cleanup_concurrency,
            )
        } else {
            (Vec::new(), 0)
        };
        json!({
            "type": "worker.hello.v1",
            "id": id,
            "sent_at": timestamp(sent_at),
            "payload": {
                "consumer_id": self.consumer_id,
                "worker_name": self.worker_name,
                "worker_type": self.worker_type,
                "heartbeat_interval_seconds": self.heartbeat_interval_seconds,
                "supported_channel_versions": [CHANNEL_VERSION],
                "requested_capabilities": capabilities,
                "work_queue_names": self.work_queue_names,
                "handled_cleanup_kinds": kinds,
                "max_cleanup_concurrency": max,
                "create_pool_if_not_found": self.create_pool_if_not_found,
                "default_base_job_template": self.default_base_job_template,
                "worker_metadata": self.worker_metadata,
            }
        })
        .to_string()
    }
}

/// `worker.heartbeat.v1`.
#[must_use]
pub fn heartbeat_frame(
    id: Uuid,
    sent_at: DateTime<Utc>,
    consumer_id: Uuid,
    worker_name: &str,
    heartbeat_interval_seconds: u64,
) -> String {
    json!({
        "type": "worker.heartbeat.v1",
        "id": id,
        "sent_at": timestamp(sent_at),
        "payload": {
            "consumer_id": consumer_id,
            "worker_name": worker_name,
            "heartbeat_interval_seconds": heartbeat_interval_seconds,
        }
    })
    .to_string()
}

/// What the worker answers about one cleanup reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `cleanup.ack.v1`: done (or nothing to do).
    Ack,
    /// `cleanup.release.v1`: give it back, with a reason.
    Release(String),
    /// `cleanup.renew.v1`: extend the lease.
    Renew,
}

impl Operation {
    /// The `operation` the server echoes in its result.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Release(_) => "release",
            Self::Renew => "renew",
        }
    }
}

/// `cleanup.ack.v1` / `cleanup.release.v1` / `cleanup.renew.v1`.
#[must_use]
pub fn operation_frame(
    id: Uuid,
    sent_at: DateTime<Utc>,
    operation: &Operation,
    message_id: Uuid,
    reservation_token: &str,
) -> String {
    let (kind, payload) = match operation {
        Operation::Ack => (
            "cleanup.ack.v1",
            json!({"message_id": message_id, "reservation_token": reservation_token}),
        ),
        Operation::Renew => (
            "cleanup.renew.v1",
            json!({"message_id": message_id, "reservation_token": reservation_token}),
        ),
        Operation::Release(reason) => (
            "cleanup.release.v1",
            json!({"message_id": message_id, "reservation_token": reservation_token, "reason": reason}),
        ),
    };
    json!({"type": kind, "id": id, "sent_at": timestamp(sent_at), "payload": payload}).to_string()
}

/// A work-pool snapshot (`initial_snapshot`, `work_pool.snapshot.v1`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Snapshot {
    /// 1 in `ready`, then increasing on this connection (it restarts on reconnect).
    pub snapshot_sequence: u64,
    /// Why it was sent (`initial`, `work_pool_updated`, `heartbeat_reconciliation`).
    pub reason: String,
    pub work_pool: WorkPool,
}

/// A queue the server resolved from the hello's names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ResolvedQueue {
    pub id: Uuid,
    pub name: String,
}

/// `worker.ready.v1`'s payload: what the server accepted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Ready {
    pub consumer_id: Uuid,
    /// Prefect Cloud's id for this worker; always null on a self-hosted server.
    pub worker_id: Option<Uuid>,
    pub selected_channel_version: String,
    pub effective_heartbeat_interval_seconds: u64,
    pub accepted_capabilities: Vec<String>,
    #[serde(default)]
    pub rejected_capabilities: Vec<String>,
    #[serde(default)]
    pub effective_max_cleanup_concurrency: u32,
    #[serde(default)]
    pub resolved_work_queues: Vec<ResolvedQueue>,
    pub initial_snapshot: Snapshot,
}

impl Ready {
    /// Whether the server will deliver cleanup work on this connection.
    #[must_use]
    pub fn cleanup_accepted(&self) -> bool {
        self.accepted_capabilities
            .iter()
            .any(|c| c == CLEANUP_CAPABILITY)
    }

    /// The checks Python's `WorkerReadyPayload` and `_validate_ready` make: the answer is
    /// for our hello, the required capabilities are there, cleanup only if we asked.
    ///
    /// # Errors
    /// What is wrong, for a `protocol_error`.
    pub fn validate(&self, hello: &Hello) -> Result<(), String> {
        const KNOWN: [&str; 3] = [
            HEARTBEAT_CAPABILITY,
            SNAPSHOT_CAPABILITY,
            CLEANUP_CAPABILITY,
        ];
        if self.consumer_id != hello.consumer_id {
            return Err("the ready frame's consumer_id does not match the hello".into());
        }
        if self.selected_channel_version != CHANNEL_VERSION {
            return Err(format!(
                "the server selected channel version {:?}, which this worker does not speak",
                self.selected_channel_version
            ));
        }
        if self.effective_heartbeat_interval_seconds == 0 {
            return Err("effective_heartbeat_interval_seconds must be positive".into());
        }
        if let Some(c) = self
            .accepted_capabilities
            .iter()
            .find(|c| !KNOWN.contains(&c.as_str()))
        {
            return Err(format!("the server accepted an unknown capability {c:?}"));
        }
        for required in [HEARTBEAT_CAPABILITY, SNAPSHOT_CAPABILITY] {
            if !self.accepted_capabilities.iter().any(|c| c == required) {
                return Err(format!(
                    "the server did not accept the required capability {required}"
                ));
            }
        }
        if let Some(c) = self
            .rejected_capabilities
            .iter()
            .find(|c| self.accepted_capabilities.contains(c))
        {
            return Err(format!("capability {c} is both accepted and rejected"));
        }
        let cleanup = self.cleanup_accepted();
        if cleanup && !hello.requests_cleanup() {
            return Err("the server accepted cleanup_delivery.v1, which was not requested".into());
        }
        if cleanup != (self.effective_max_cleanup_concurrency > 0) {
            return Err(
                "effective_max_cleanup_concurrency must be positive exactly when cleanup delivery is accepted"
                    .into(),
            );
        }
        if self.initial_snapshot.reason != "initial" || self.initial_snapshot.snapshot_sequence != 1
        {
            return Err("the initial snapshot must have reason 'initial' and sequence 1".into());
        }
        Ok(())
    }
}

/// What a cleanup targets. Both kinds carry the flow run; other fields are kept.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CleanupTarget {
    /// The flow run whose infrastructure is to be torn down.
    pub flow_run_id: Uuid,
    /// Its infrastructure, as the worker reported it (absent for claims not yet started).
    #[serde(default)]
    pub infrastructure_pid: Option<String>,
    /// Other fields of the target, kept as sent.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// `cleanup.message.v1`'s payload: one reservation of one cleanup message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CleanupMessage {
    pub message_id: Uuid,
    pub kind: String,
    pub reservation_token: String,
    pub lease_expires_at: DateTime<Utc>,
    pub delivery_count: u64,
    #[serde(default)]
    pub work_queue_id: Option<Uuid>,
    pub target: CleanupTarget,
    #[serde(default)]
    pub data: serde_json::Map<String, Value>,
}

/// `cleanup.operation_result.v1`'s payload: the server's answer to an ack/release/renew.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OperationResult {
    /// The `id` of the frame this answers.
    pub request_frame_id: Uuid,
    pub message_id: Uuid,
    pub operation: String,
    /// `accepted`, `not_current`, `not_found`, `expired`, `invalid_token`, `unauthorized`,
    /// `dead_lettered` or `error`.
    pub status: String,
    /// The new lease, on an accepted renew.
    #[serde(default)]
    pub lease_expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
}

/// A frame the server sends once the channel is set up.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type")]
pub enum Incoming {
    #[serde(rename = "worker.ready.v1")]
    Ready {
        id: Uuid,
        sent_at: DateTime<Utc>,
        payload: Box<Ready>,
    },
    #[serde(rename = "work_pool.snapshot.v1")]
    Snapshot {
        id: Uuid,
        sent_at: DateTime<Utc>,
        payload: Box<Snapshot>,
    },
    #[serde(rename = "cleanup.message.v1")]
    CleanupMessage {
        id: Uuid,
        sent_at: DateTime<Utc>,
        payload: CleanupMessage,
    },
    #[serde(rename = "cleanup.operation_result.v1")]
    OperationResult {
        id: Uuid,
        sent_at: DateTime<Utc>,
        payload: OperationResult,
    },
}

impl Incoming {
    /// Parses one text frame. Any other type, invalid JSON or a malformed frame is an
    /// error (a terminal `protocol_error`). The message names the frame type and the
    /// field, never the frame's content.
    ///
    /// # Errors
    /// What is wrong with the frame.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| format!("the server sent invalid JSON ({e})"))?;
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("<none>")
            .to_owned();
        serde_json::from_value(value).map_err(|e| {
            format!("the server sent a malformed or unexpected frame of type {kind:?}: {e}")
        })
    }

    /// The frame's type, for logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ready { .. } => "worker.ready.v1",
            Self::Snapshot { .. } => "work_pool.snapshot.v1",
            Self::CleanupMessage { .. } => "cleanup.message.v1",
            Self::OperationResult { .. } => "cleanup.operation_result.v1",
        }
    }
}

/// What the server answered to the auth message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthAnswer {
    /// `{"type": "auth_success"}`.
    Success,
    /// Anything else: the `reason` it carried if that is a close reason, else `protocol_error`.
    Refused(String),
}

impl AuthAnswer {
    /// Reads the answer to the auth message.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let is_success = value.as_object().is_some_and(|o| {
            o.len() == 1 && o.get("type").and_then(Value::as_str) == Some("auth_success")
        });
        if is_success {
            return Self::Success;
        }
        let reason = value
            .get("reason")
            .and_then(Value::as_str)
            .filter(|r| is_close_reason(r))
            .unwrap_or("protocol_error");
        Self::Refused(reason.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A traced payload (`tests/data`, copied from the spec's examples).
    fn example(name: &str) -> Value {
        let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn hello() -> Hello {
        Hello {
            consumer_id: Uuid::from_u128(7),
            worker_name: "trace-worker".into(),
            worker_type: "kubernetes".into(),
            heartbeat_interval_seconds: 30,
            work_queue_names: vec![],
            handled_cleanup_kinds: vec![CANCELLING_TIMEOUT_TEARDOWN.into()],
            max_cleanup_concurrency: 1,
            create_pool_if_not_found: true,
            default_base_job_template: json!({"job_configuration": {}, "variables": {}}),
            worker_metadata: Some(
                json!({"integrations": [{"name": "prefect-kubernetes", "version": "0.8.0"}]}),
            ),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-29T02:32:17.224918Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn hello_has_the_traced_shape() {
        let frame: Value = serde_json::from_str(&hello().frame(Uuid::from_u128(1), now())).unwrap();
        assert_eq!(frame["sent_at"], "2026-11-29T02:32:17.224918Z");
        let traced = example("worker_channel_worker.hello.v1.json");
        // Same keys in the same order, same values apart from ids and the template.
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&frame), keys(&traced));
        assert_eq!(keys(&frame["payload"]), keys(&traced["payload"]));
        for k in [
            "worker_name",
            "worker_type",
            "heartbeat_interval_seconds",
            "supported_channel_versions",
            "requested_capabilities",
            "work_queue_names",
            "handled_cleanup_kinds",
            "max_cleanup_concurrency",
            "create_pool_if_not_found",
            "worker_metadata",
        ] {
            assert_eq!(frame["payload"][k], traced["payload"][k], "{k}");
        }
    }

    #[test]
    fn a_worker_that_cannot_kill_asks_for_no_cleanup() {
        let mut h = hello();
        h.handled_cleanup_kinds.clear();
        h.max_cleanup_concurrency = 0;
        h.worker_metadata = None;
        let frame: Value = serde_json::from_str(&h.frame(Uuid::nil(), now())).unwrap();
        let p = &frame["payload"];
        assert_eq!(
            p["requested_capabilities"],
            json!(["worker_heartbeat.v1", "work_pool_snapshot.v1"])
        );
        assert_eq!(p["handled_cleanup_kinds"], json!([]));
        assert_eq!(p["max_cleanup_concurrency"], 0);
        assert_eq!(p["worker_metadata"], Value::Null);
    }

    #[test]
    fn heartbeat_and_operation_frames() {
        let hb: Value = serde_json::from_str(&heartbeat_frame(
            Uuid::from_u128(1),
            now(),
            Uuid::from_u128(2),
            "hb-worker",
            5,
        ))
        .unwrap();
        let traced = example("worker_channel_heartbeat_frame.json");
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&hb), keys(&traced));
        assert_eq!(keys(&hb["payload"]), keys(&traced["payload"]));
        assert_eq!(
            hb["payload"]["worker_name"],
            traced["payload"]["worker_name"]
        );
        assert_eq!(hb["type"], "worker.heartbeat.v1");
        assert_eq!(hb["payload"]["heartbeat_interval_seconds"], 5);
        let release: Value = serde_json::from_str(&operation_frame(
            Uuid::from_u128(3),
            now(),
            &Operation::Release("handler_failed".into()),
            Uuid::from_u128(4),
            "tok",
        ))
        .unwrap();
        assert_eq!(release["type"], "cleanup.release.v1");
        assert_eq!(
            release["payload"],
            json!({"message_id": Uuid::from_u128(4), "reservation_token": "tok", "reason": "handler_failed"})
        );
        let ack: Value = serde_json::from_str(&operation_frame(
            Uuid::from_u128(3),
            now(),
            &Operation::Ack,
            Uuid::from_u128(4),
            "tok",
        ))
        .unwrap();
        assert_eq!(ack["type"], "cleanup.ack.v1");
        assert!(ack["payload"].get("reason").is_none());
    }

    fn ready_json() -> Value {
        let mut traced = example("worker_channel_worker.ready.v1.json");
        traced["payload"]["consumer_id"] = json!(Uuid::from_u128(7));
        traced
    }

    fn parse_ready(v: &Value) -> Ready {
        match Incoming::parse(&v.to_string()).unwrap() {
            Incoming::Ready { payload, .. } => *payload,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_traced_ready_frame_parses_and_validates() {
        let ready = parse_ready(&ready_json());
        assert!(ready.cleanup_accepted());
        assert_eq!(ready.initial_snapshot.work_pool.name, "k8s-pool");
        assert_eq!(ready.validate(&hello()), Ok(()));
    }

    #[test]
    fn ready_frames_that_break_the_contract_are_refused() {
        let h = hello();
        let mut v = ready_json();
        v["payload"]["consumer_id"] = json!(Uuid::from_u128(8));
        assert!(
            parse_ready(&v)
                .validate(&h)
                .unwrap_err()
                .contains("consumer_id")
        );
        let mut v = ready_json();
        v["payload"]["accepted_capabilities"] = json!([HEARTBEAT_CAPABILITY]);
        v["payload"]["effective_max_cleanup_concurrency"] = json!(0);
        assert!(
            parse_ready(&v)
                .validate(&h)
                .unwrap_err()
                .contains("work_pool_snapshot")
        );
        let mut no_cleanup = h.clone();
        no_cleanup.handled_cleanup_kinds.clear();
        no_cleanup.max_cleanup_concurrency = 0;
        assert!(
            parse_ready(&ready_json())
                .validate(&no_cleanup)
                .unwrap_err()
                .contains("not requested")
        );
        let mut v = ready_json();
        v["payload"]["effective_max_cleanup_concurrency"] = json!(0);
        assert!(parse_ready(&v).validate(&h).is_err());
        let mut v = ready_json();
        v["payload"]["initial_snapshot"]["snapshot_sequence"] = json!(2);
        assert!(parse_ready(&v).validate(&h).is_err());
        let mut v = ready_json();
        v["payload"]["selected_channel_version"] = json!("v2");
        assert!(parse_ready(&v).validate(&h).is_err());
    }

    #[test]
    fn other_frames_and_garbage_are_protocol_errors() {
        assert!(
            Incoming::parse("not json")
                .unwrap_err()
                .contains("invalid JSON")
        );
        let e = Incoming::parse(r#"{"type":"worker.heartbeat.v1","id":"00000000-0000-0000-0000-000000000000","sent_at":"2026-01-01T00:00:00Z","payload":{}}"#).unwrap_err();
        assert!(e.contains("worker.heartbeat.v1"), "{e}");
        let e = Incoming::parse(r#"{"type":"work_pool.snapshot.v1","id":"00000000-0000-0000-0000-000000000000","sent_at":"2026-01-01T00:00:00Z","payload":{"snapshot_sequence":2}}"#).unwrap_err();
        assert!(e.contains("work_pool.snapshot.v1"), "{e}");
    }

    #[test]
    fn cleanup_messages_and_results_parse() {
        let msg = json!({
            "type": "cleanup.message.v1", "id": Uuid::from_u128(1), "sent_at": "2026-01-01T00:00:00Z",
            "payload": {"message_id": Uuid::from_u128(2), "kind": CANCELLING_TIMEOUT_TEARDOWN,
                "reservation_token": "tok", "lease_expires_at": "2026-01-01T00:00:30Z",
                "delivery_count": 1, "work_queue_id": null,
                "target": {"flow_run_id": Uuid::from_u128(3), "infrastructure_pid": "ns:job"}, "data": {}}
        });
        let Incoming::CleanupMessage { payload, .. } = Incoming::parse(&msg.to_string()).unwrap()
        else {
            panic!()
        };
        assert_eq!(payload.target.infrastructure_pid.as_deref(), Some("ns:job"));
        assert_eq!(payload.kind, CANCELLING_TIMEOUT_TEARDOWN);
        let res = json!({
            "type": "cleanup.operation_result.v1", "id": Uuid::from_u128(1), "sent_at": "2026-01-01T00:00:00Z",
            "payload": {"request_frame_id": Uuid::from_u128(5), "message_id": Uuid::from_u128(2),
                "operation": "renew", "status": "accepted", "lease_expires_at": "2026-01-01T00:01:00Z",
                "reason": null, "detail": null}
        });
        let Incoming::OperationResult { payload, .. } = Incoming::parse(&res.to_string()).unwrap()
        else {
            panic!()
        };
        assert_eq!(payload.status, "accepted");
        assert!(payload.lease_expires_at.is_some());
    }

    #[test]
    fn auth_answers() {
        assert_eq!(
            AuthAnswer::parse(r#"{"type":"auth_success"}"#),
            AuthAnswer::Success
        );
        assert_eq!(
            AuthAnswer::parse(r#"{"type":"auth_failure","reason":"authentication_failed"}"#),
            AuthAnswer::Refused("authentication_failed".into())
        );
        assert_eq!(
            AuthAnswer::parse("garbage"),
            AuthAnswer::Refused("protocol_error".into())
        );
        assert_eq!(
            auth_message(Some("tok")),
            r#"{"type":"auth","token":"tok"}"#
        );
        assert_eq!(auth_message(None), r#"{"type":"auth","token":null}"#);
    }
}
